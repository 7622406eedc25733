//! Watching a policy before enforcing it: every call runs, and what would have been asked or
//! refused is recorded.

use super::{Decision, Policy};

/// Wraps `policy` so that no call waits and none is refused: an `Ask` or a `Deny` becomes a
/// [`Decision::Observe`], which the gate records (an `observed` audit entry, a metric and a log
/// line) before running the call. A standing rule that covers an observed ask lets the call run
/// unrecorded, as it would have when enforced.
///
/// Teams adopt a gate on a live service this way: a week of `observed` entries says what
/// enforcing the policy would ask people, before anyone is asked. The configuration file's
/// `mode = "observe"` (or `observe = true` on one capability) does the same.
///
/// ```
/// use serde_json::json;
/// use tollgate::policy::{observe, CapabilityTable, Decision, Policy};
/// use tollgate::ToolCall;
///
/// let policy = observe(CapabilityTable::new().allow("search.*").deny("fs.delete", "never"));
/// let check = |name: &str| policy.check(&ToolCall::new(name, json!({})));
/// assert!(matches!(check("search.web"), Decision::Allow(_)));
/// assert!(matches!(check("fs.delete"), Decision::Observe(d) if matches!(*d, Decision::Deny(_))));
/// assert!(matches!(check("shell.exec"), Decision::Observe(d) if matches!(*d, Decision::Ask(_))));
/// ```
pub fn observe<P>(policy: P) -> Observe<P> {
    Observe { policy }
}

/// The policy made by [`observe`].
#[derive(Clone, Debug)]
pub struct Observe<P> {
    policy: P,
}

impl<R: ?Sized, P: Policy<R>> Policy<R> for Observe<P> {
    fn check(&self, call: &R) -> Decision {
        Decision::observe(self.policy.check(call))
    }
}
