//! Per-capability decisions by exact name or glob.

use std::borrow::Cow;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::{Ask, Decision, Pattern, Policy};
use crate::call::Call;
use crate::error::Error;

/// Per-capability decisions by exact name or glob pattern; capabilities that match nothing get
/// the fallback, which asks unless changed.
///
/// An exact name beats any glob; among globs the most specific wins (more literal characters,
/// then a longer text before the first `*`). Setting the same pattern twice keeps the last.
///
/// ```
/// use serde_json::json;
/// use tollgate::policy::{Ask, CapabilityTable, Decision, Policy};
/// use tollgate::ToolCall;
///
/// let table = CapabilityTable::new()
///     .allow("payments.*")
///     .ask("payments.refund", Ask::new("moves money back"))
///     .deny("payments.admin.*", "never from an agent");
/// let check = |name: &str| table.check(&ToolCall::new(name, json!({})));
/// assert!(matches!(check("payments.list"), Decision::Allow(_)));
/// assert!(matches!(check("payments.refund"), Decision::Ask(_)));      // exact beats glob
/// assert!(matches!(check("payments.admin.wipe"), Decision::Deny(_))); // more specific glob
/// assert!(matches!(check("shell.exec"), Decision::Ask(_)));           // not listed: ask
/// ```
#[derive(Clone, Debug)]
pub struct CapabilityTable {
    // FxHash, not SipHash: the keys are fixed by configuration, so callers choosing capability
    // names cannot flood the table, and lookups on every call stay a few nanoseconds.
    exact: Arc<FxHashMap<Box<str>, Decision>>,
    /// Most specific first, so the first match wins.
    globs: Arc<Vec<(Pattern, Decision)>>,
    fallback: Decision,
}

impl Default for CapabilityTable {
    fn default() -> Self {
        Self::new()
    }
}

impl CapabilityTable {
    /// An empty table whose fallback asks.
    pub fn new() -> Self {
        CapabilityTable {
            exact: Arc::default(),
            globs: Arc::default(),
            fallback: Decision::Ask(Ask::new("this capability is not listed in the policy")),
        }
    }

    /// Sets the decision for a pattern, as the builder methods do; an empty pattern is
    /// `invalid_config`.
    pub fn try_with(mut self, pattern: &str, decision: Decision) -> Result<Self, Error> {
        let pattern = Pattern::new(pattern)?;
        if !pattern.is_glob() {
            Arc::make_mut(&mut self.exact).insert(pattern.as_str().into(), decision);
            return Ok(self);
        }
        let globs = Arc::make_mut(&mut self.globs);
        match globs.binary_search_by(|(p, _)| p.precedence(&pattern)) {
            Ok(same) => globs[same].1 = decision,
            Err(at) => globs.insert(at, (pattern, decision)),
        }
        Ok(self)
    }

    fn with(self, pattern: &str, decision: Decision) -> Self {
        self.try_with(pattern, decision)
            .expect("a capability pattern must not be empty")
    }

    /// Calls matching `pattern` run without asking.
    ///
    /// # Panics
    /// If `pattern` is empty; [`try_with`](Self::try_with) returns an error instead.
    #[must_use]
    pub fn allow(self, pattern: &str) -> Self {
        self.with(pattern, Decision::allow("listed as allowed"))
    }

    /// Calls matching `pattern` are refused with `reason`.
    ///
    /// # Panics
    /// If `pattern` is empty; [`try_with`](Self::try_with) returns an error instead.
    #[must_use]
    pub fn deny(self, pattern: &str, reason: impl Into<Cow<'static, str>>) -> Self {
        self.with(pattern, Decision::deny(reason))
    }

    /// Calls matching `pattern` ask a person.
    ///
    /// # Panics
    /// If `pattern` is empty; [`try_with`](Self::try_with) returns an error instead.
    #[must_use]
    pub fn ask(self, pattern: &str, ask: Ask) -> Self {
        self.with(pattern, Decision::Ask(ask))
    }

    /// The decision for capabilities no pattern matches.
    #[must_use]
    pub fn fallback(mut self, decision: Decision) -> Self {
        self.fallback = decision;
        self
    }

    /// The decision that applies to `capability`, and the pattern it came from (`None` for the
    /// fallback).
    pub fn lookup(&self, capability: &str) -> (&Decision, Option<&str>) {
        // A few names are found sooner by comparing them than by hashing the capability
        // (callgrind: 55 instructions against 88 for a table of two).
        let exact = if self.exact.len() <= 8 {
            self.exact.iter().find(|(name, _)| ***name == *capability)
        } else {
            self.exact.get_key_value(capability)
        };
        if let Some((name, decision)) = exact {
            return (decision, Some(name));
        }
        self.globs
            .iter()
            .find(|(pattern, _)| pattern.matches(capability))
            .map_or((&self.fallback, None), |(pattern, decision)| {
                (decision, Some(pattern.as_str()))
            })
    }
}

impl<R: Call + ?Sized> Policy<R> for CapabilityTable {
    fn check(&self, call: &R) -> Decision {
        match self.lookup(call.capability()).0 {
            // The common answer, copied without the general clone's branches (callgrind: the
            // allowed call's whole overhead over a bare service is a few hundred instructions).
            Decision::Allow(Cow::Borrowed(why)) => Decision::Allow(Cow::Borrowed(why)),
            decision => cloned(decision),
        }
    }
}

/// Any other answer, cloned out of line: the allowed path stays small enough to be inlined into
/// the middleware (an `Ask` is a dozen fields to clone).
#[inline(never)]
fn cloned(decision: &Decision) -> Decision {
    decision.clone()
}
