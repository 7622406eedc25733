//! A policy that can be replaced while the service runs.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use super::{Decision, Policy};

/// A policy operators can replace at run time: every clone shares one current policy, and
/// [`replace`](Self::replace) swaps it for the next call.
///
/// Calls already parked keep what the policy asked when they arrived (the widest scope, the
/// longest rule, who may decide, the key fields): a replacement changes only later calls, and
/// drops no parked call. Standing rules stay too; revoke them if the new policy should not
/// honour them.
///
/// Each call reads the current policy under a read lock, held while the policy decides: cheap
/// and uncontended except for the moment of a replacement.
///
/// ```
/// use serde_json::json;
/// use tollgate::policy::{Ask, CapabilityTable, Decision, LivePolicy, Policy};
/// use tollgate::ToolCall;
///
/// let live = LivePolicy::new(CapabilityTable::new().allow("search.*"));
/// let search = ToolCall::new("search.web", json!({}));
/// assert!(matches!(live.check(&search), Decision::Allow(_)));
/// live.replace(CapabilityTable::new().ask("search.*", Ask::new("searches cost money now")));
/// assert!(matches!(live.check(&search), Decision::Ask(_)));
/// ```
pub struct LivePolicy<P> {
    current: Arc<RwLock<Arc<P>>>,
}

impl<P> LivePolicy<P> {
    /// Starts with `policy`.
    pub fn new(policy: P) -> Self {
        LivePolicy {
            current: Arc::new(RwLock::new(Arc::new(policy))),
        }
    }

    /// Puts `policy` in place for every later call, and returns the one it replaces.
    pub fn replace(&self, policy: P) -> Arc<P> {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *current, Arc::new(policy))
    }

    /// The policy in place now.
    pub fn current(&self) -> Arc<P> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl<P> Clone for LivePolicy<P> {
    fn clone(&self) -> Self {
        LivePolicy {
            current: self.current.clone(),
        }
    }
}

impl<P: fmt::Debug> fmt::Debug for LivePolicy<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LivePolicy").field(&self.current()).finish()
    }
}

impl<R: ?Sized, P: Policy<R>> Policy<R> for LivePolicy<P> {
    fn check(&self, call: &R) -> Decision {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .check(call)
    }
}
