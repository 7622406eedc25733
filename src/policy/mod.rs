//! Deciding, per call, whether it runs, is refused, or waits for a person.
//!
//! A [`Policy`] answers [`Decision::Allow`], [`Decision::Deny`] with a reason, or
//! [`Decision::Ask`] with the reasoning shown to the approver and the widest [`Scope`] and longest
//! rule TTL an approval may grant. It runs synchronously on every call, so keep it cheap: an
//! allowed call through the gate allocates nothing unless the policy does.
//!
//! ```
//! use std::time::Duration;
//! use serde_json::json;
//! use tollgate::policy::{policy_fn, Ask, CapabilityTable, Decision, Policy};
//! use tollgate::{Call, Scope, ToolCall};
//!
//! // A closure: refunds over 100 need a person, smaller ones pass.
//! let refunds = policy_fn(|call: &ToolCall| {
//!     match call.args()["amount"].as_u64() {
//!         Some(amount) if amount <= 100 => Decision::Allow,
//!         _ => Decision::Ask(Ask::new("refunds over 100 need a person").max_scope(Scope::Value)),
//!     }
//! });
//! assert!(matches!(refunds.check(&ToolCall::new("payments.refund", json!({"amount": 5}))), Decision::Allow));
//!
//! // A table: per-capability settings; anything not listed asks (security first).
//! let table = CapabilityTable::new()
//!     .allow("search.web")
//!     .deny("fs.delete", "deleting files is never allowed")
//!     .ask("payments.refund", Ask::new("moves money").max_rule_ttl(Duration::from_secs(600)));
//! assert!(matches!(table.check(&ToolCall::new("search.web", json!({}))), Decision::Allow));
//! assert!(matches!(table.check(&ToolCall::new("fs.delete", json!({}))), Decision::Deny(_)));
//! assert!(matches!(table.check(&ToolCall::new("shell.exec", json!({}))), Decision::Ask(_)));
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::call::Call;
use crate::scope::Scope;

/// Decides what happens to a call of type `R`.
pub trait Policy<R: ?Sized> {
    /// The decision for `call`. Called once per call, synchronously.
    fn check(&self, call: &R) -> Decision;
}

/// A policy's answer for one call.
#[derive(Clone, Debug)]
pub enum Decision {
    /// The call runs now.
    Allow,
    /// The call fails with `access_request_denied`; the reason is given to the caller.
    Deny(Cow<'static, str>),
    /// A person must approve, unless a standing rule already covers the call.
    Ask(Ask),
}

/// What an approver is asked, and the most an approval may grant.
///
/// Defaults are the safe ones: an approval covers only the waiting request ([`Scope::Once`]) and
/// any rule it makes lasts at most an hour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub(crate) reasoning: Cow<'static, str>,
    pub(crate) max_scope: Scope,
    pub(crate) max_rule_ttl: Duration,
}

impl Ask {
    /// The default longest rule TTL: one hour.
    pub const DEFAULT_MAX_RULE_TTL: Duration = Duration::from_secs(3600);

    /// Asks a person, showing them `reasoning`.
    pub fn new(reasoning: impl Into<Cow<'static, str>>) -> Self {
        Ask {
            reasoning: reasoning.into(),
            max_scope: Scope::Once,
            max_rule_ttl: Self::DEFAULT_MAX_RULE_TTL,
        }
    }

    /// The widest scope an approval may grant.
    #[must_use]
    pub fn max_scope(mut self, scope: Scope) -> Self {
        self.max_scope = scope;
        self
    }

    /// The longest TTL a rule made from an approval or denial may have.
    #[must_use]
    pub fn max_rule_ttl(mut self, ttl: Duration) -> Self {
        self.max_rule_ttl = ttl;
        self
    }

    /// Why the policy asks, as shown to the approver.
    pub fn reasoning(&self) -> &str {
        &self.reasoning
    }
}

/// Wraps a closure as a [`Policy`]; see the [module docs](self).
pub fn policy_fn<F>(f: F) -> PolicyFn<F> {
    PolicyFn { f }
}

/// A [`Policy`] made from a closure by [`policy_fn`].
#[derive(Clone, Copy)]
pub struct PolicyFn<F> {
    f: F,
}

impl<F> fmt::Debug for PolicyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyFn").finish_non_exhaustive()
    }
}

impl<R: ?Sized, F: Fn(&R) -> Decision> Policy<R> for PolicyFn<F> {
    fn check(&self, call: &R) -> Decision {
        (self.f)(call)
    }
}

/// Every call asks, with this [`Ask`].
#[derive(Clone, Debug)]
pub struct AlwaysAsk(pub Ask);

impl<R: ?Sized> Policy<R> for AlwaysAsk {
    fn check(&self, _: &R) -> Decision {
        Decision::Ask(self.0.clone())
    }
}

impl<R: ?Sized, P: Policy<R> + ?Sized> Policy<R> for Arc<P> {
    fn check(&self, call: &R) -> Decision {
        (**self).check(call)
    }
}

impl<R: ?Sized, P: Policy<R> + ?Sized> Policy<R> for &P {
    fn check(&self, call: &R) -> Decision {
        (**self).check(call)
    }
}

/// Per-capability decisions by exact name; capabilities not listed get the fallback, which asks
/// unless changed.
#[derive(Clone, Debug)]
pub struct CapabilityTable {
    // FxHash, not SipHash: the keys are fixed by configuration, so callers choosing capability
    // names cannot flood the table, and lookups on every call stay a few nanoseconds.
    entries: Arc<FxHashMap<Box<str>, Decision>>,
    fallback: Decision,
}

impl Default for CapabilityTable {
    fn default() -> Self {
        Self::new()
    }
}

impl CapabilityTable {
    /// An empty table whose fallback asks with `Ask::new("not listed in the policy")`.
    pub fn new() -> Self {
        CapabilityTable {
            entries: Arc::default(),
            fallback: Decision::Ask(Ask::new("this capability is not listed in the policy")),
        }
    }

    fn with(mut self, capability: &str, decision: Decision) -> Self {
        Arc::make_mut(&mut self.entries).insert(capability.into(), decision);
        self
    }

    /// Calls of `capability` run without asking.
    #[must_use]
    pub fn allow(self, capability: &str) -> Self {
        self.with(capability, Decision::Allow)
    }

    /// Calls of `capability` are refused with `reason`.
    #[must_use]
    pub fn deny(self, capability: &str, reason: impl Into<Cow<'static, str>>) -> Self {
        self.with(capability, Decision::Deny(reason.into()))
    }

    /// Calls of `capability` ask a person.
    #[must_use]
    pub fn ask(self, capability: &str, ask: Ask) -> Self {
        self.with(capability, Decision::Ask(ask))
    }

    /// The decision for capabilities not listed.
    #[must_use]
    pub fn fallback(mut self, decision: Decision) -> Self {
        self.fallback = decision;
        self
    }
}

impl<R: Call + ?Sized> Policy<R> for CapabilityTable {
    fn check(&self, call: &R) -> Decision {
        self.entries
            .get(call.capability())
            .unwrap_or(&self.fallback)
            .clone()
    }
}
