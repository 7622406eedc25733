//! Deciding, per call, whether it runs, is refused, or waits for a person.
//!
//! A [`Policy`] answers a [`Decision`]: [`Allow`](Decision::Allow), [`Deny`](Decision::Deny) or
//! [`Ask`](Decision::Ask), each with the reasoning behind it, or one of the last two
//! [observed](Decision::Observe) rather than enforced. An [`Ask`] also carries what the
//! approver may grant: the widest [`Scope`], the longest rule TTL, who may decide, and whether the
//! caller must give a reason. A policy runs synchronously on every call, so keep it cheap: an
//! allowed call through the gate allocates nothing unless the policy does.
//!
//! The building blocks:
//!
//! - [`CapabilityTable`]: per-capability decisions by exact name or glob (`payments.*`); what
//!   it does not list asks. A [configuration file](crate::config) becomes one.
//! - [`policy_fn`]: any closure over the call and its arguments.
//! - [`threshold`]: a cost rule: a number read from the call; above a limit asks, above
//!   another denies, at or below passes.
//! - [`and`], [`or`] and [`first_match`] compose them.
//! - [`LivePolicy`] holds any of them so that it can be replaced while the service runs.
//! - [`observe`] lets every call of any of them run, recording what it would have asked or
//!   refused ([`Decision::Observe`]): how a team watches a policy before it enforces it.
//!
//! ```
//! use std::time::Duration;
//! use serde_json::json;
//! use tollgate::policy::{self, arg, first_match, threshold, Ask, CapabilityTable, Decision, Policy};
//! use tollgate::{Scope, ToolCall};
//!
//! // Refunds over 100 need a person, over 10,000 are refused; smaller ones pass.
//! let refunds = threshold(arg("/amount"), 100.0)
//!     .deny_above(10_000.0, "refunds over 10,000 go through finance")
//!     .ask(Ask::new("refunds move money").max_scope(Scope::Value));
//! let refund = |amount: u64| ToolCall::new("payments.refund", json!({"amount": amount}));
//! assert!(matches!(refunds.check(&refund(5)), Decision::Allow(_)));
//! assert_eq!(refunds.check(&refund(500)).reasoning(), "refunds move money: 500 is above 100");
//! assert!(matches!(refunds.check(&refund(50_000)), Decision::Deny(_)));
//!
//! // A table for everything else: anything not listed asks (security first).
//! let table = CapabilityTable::new()
//!     .allow("search.*")
//!     .deny("fs.delete", "deleting files is never allowed")
//!     .ask("deploy.*", Ask::new("reaches customers").max_rule_ttl(Duration::from_secs(600)));
//!
//! // Refund calls follow the threshold; every other call follows the table.
//! let policy = first_match()
//!     .when(|call: &ToolCall| call.capability() == "payments.refund", refunds)
//!     .otherwise(table);
//! assert!(matches!(policy.check(&ToolCall::new("search.web", json!({}))), Decision::Allow(_)));
//! assert!(matches!(policy.check(&ToolCall::new("fs.delete", json!({}))), Decision::Deny(_)));
//! assert!(matches!(policy.check(&ToolCall::new("shell.exec", json!({}))), Decision::Ask(_)));
//! assert!(matches!(policy.check(&refund(500)), Decision::Ask(_)));
//! ```

mod combine;
mod live;
mod observe;
mod pattern;
mod table;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::args::KeyFields;
use crate::error::Error;
use crate::scope::Scope;

pub use self::combine::{And, FirstMatch, Or, Threshold, and, arg, first_match, or, threshold};
pub use self::live::LivePolicy;
pub use self::observe::{Observe, observe};
pub use self::table::CapabilityTable;

pub(crate) use self::pattern::Pattern;

/// Decides what happens to a call of type `R`.
pub trait Policy<R: ?Sized> {
    /// The decision for `call`. Called once per call, synchronously.
    fn check(&self, call: &R) -> Decision;
}

/// A policy's answer for one call, with its reasoning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The call runs now, for this reason.
    Allow(Cow<'static, str>),
    /// The call fails with `access_request_denied`; the reason is given to the caller.
    Deny(Cow<'static, str>),
    /// A person must approve, unless a standing rule already covers the call. The reasoning is
    /// shown to the approver.
    Ask(Ask),
    /// The call runs, and the gate records what this decision (an `Ask` or a `Deny`) would
    /// have done had it been enforced: an `observed` audit entry, the
    /// `tollgate_calls_total{decision="observed"}` counter and a log line naming the capability
    /// and principal. Nobody is alerted. Made by [`Decision::observe`] and [`observe`].
    Observe(Box<Decision>),
}

impl Decision {
    /// Allows the call, saying why.
    pub fn allow(reasoning: impl Into<Cow<'static, str>>) -> Self {
        Decision::Allow(reasoning.into())
    }

    /// Refuses the call with `reason`.
    pub fn deny(reason: impl Into<Cow<'static, str>>) -> Self {
        Decision::Deny(reason.into())
    }

    /// `decision`, not enforced: the call runs and what `decision` would have done is recorded.
    /// An `Allow` stays an `Allow` (there is nothing to record), and an observed decision stays
    /// as it is.
    pub fn observe(decision: Decision) -> Self {
        match decision {
            Decision::Ask(_) | Decision::Deny(_) => Decision::Observe(Box::new(decision)),
            decision => decision,
        }
    }

    /// Why: the allow's reasoning, the denial's reason, or what the approver is shown (for an
    /// observed decision, that of the decision observed).
    pub fn reasoning(&self) -> &str {
        match self {
            Decision::Allow(why) | Decision::Deny(why) => why,
            Decision::Ask(ask) => &ask.reasoning,
            Decision::Observe(decision) => decision.reasoning(),
        }
    }

    /// How strict the decision is: allow < observe < ask < deny. An observed decision runs the
    /// call as an allow does, but is kept over an allow where both apply (`and`), so that what
    /// it records is not lost.
    pub(crate) fn strictness(&self) -> u8 {
        match self {
            Decision::Allow(_) => 0,
            Decision::Observe(_) => 1,
            Decision::Ask(_) => 2,
            Decision::Deny(_) => 3,
        }
    }
}

/// A fixed decision is a policy that always answers it.
impl<R: ?Sized> Policy<R> for Decision {
    fn check(&self, _: &R) -> Decision {
        self.clone()
    }
}

/// What an approver is asked, and the most an approval may grant.
///
/// Defaults are the safe ones: an approval covers only the waiting request ([`Scope::Once`]),
/// any rule it makes lasts at most an hour, and every approver the gate accepts may decide.
///
/// An `Ask` is itself a policy: every call asks, with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub(crate) reasoning: Cow<'static, str>,
    pub(crate) max_scope: Scope,
    pub(crate) max_rule_ttl: Duration,
    pub(crate) approvers: Option<Arc<Box<[Box<str>]>>>,
    pub(crate) require_reason: bool,
    pub(crate) key_fields: Option<KeyFields>,
    pub(crate) editable: bool,
    pub(crate) quorum: u8,
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
            approvers: None,
            require_reason: false,
            key_fields: None,
            editable: false,
            quorum: 1,
        }
    }

    /// Whether an approval by `approvals` distinct approvers, decided by `by`, meets this ask:
    /// as many approvers as it needs and, if it names who may decide, `by` among them. What an
    /// edit's approval and a standing rule must both show.
    pub(crate) fn met(&self, approvals: u8, by: &str) -> bool {
        approvals >= self.quorum
            && self
                .allowed_approvers()
                .is_none_or(|list| list.iter().any(|a| **a == *by))
    }

    /// Whether approval `rule` may stand for a person's answer to this ask ([`met`](Self::met)
    /// by the approvals that made it): so one approver's `value` rule about an account does not
    /// let through a payout to it that needs two.
    pub(crate) fn met_by(&self, rule: &crate::rule::Rule) -> bool {
        self.met(rule.approvals, &rule.granted_by)
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

    /// Only these approvers may decide; anyone else's approve or deny fails with
    /// `access_request_not_found`, as for an unknown id, even with the right code, and spends
    /// none of the request's attempts.
    #[must_use]
    pub fn approvers<I, A>(mut self, approvers: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<Box<str>>,
    {
        self.approvers = Some(Arc::new(approvers.into_iter().map(Into::into).collect()));
        self
    }

    /// Calls must give a reason ([`Call::reason`](crate::Call::reason)); a call without one
    /// fails at once with `reason_required`, before any rule or person is consulted.
    #[must_use]
    pub fn require_reason(mut self) -> Self {
        self.require_reason = true;
        self
    }

    /// The argument fields a [`Scope::Value`] approval is about, as JSON pointers (`/to`,
    /// `/recipient/email`). The rule it makes then covers later calls of the same principal and
    /// capability whose key fields are equal (as canonical JSON), whatever their other
    /// arguments hold: approve a message to one number, and later messages to that number pass
    /// whatever their text. A remembered `value` denial covers the same calls.
    ///
    /// The key set is bound into the verification code, and the alert and the approval page
    /// say which fields an approval covers and which it leaves free. A call that lacks one of
    /// the fields (or whose field holds another type: `"42"` is not `42`) is never covered by a
    /// key-field rule; its own `value` approval covers only calls with identical arguments,
    /// as it does without key fields.
    ///
    /// # Panics
    /// If a field is not a JSON pointer to a field (`/` and a name), or none is given;
    /// [`try_key_fields`](Self::try_key_fields) returns `invalid_config` instead.
    #[must_use]
    pub fn key_fields<I, F>(self, fields: I) -> Self
    where
        I: IntoIterator<Item = F>,
        F: Into<Box<str>>,
    {
        self.try_key_fields(fields)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`key_fields`](Self::key_fields), with `invalid_config` for a field that is not a JSON
    /// pointer to a field.
    pub fn try_key_fields<I, F>(mut self, fields: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = F>,
        F: Into<Box<str>>,
    {
        self.key_fields = Some(KeyFields::new(fields)?);
        Ok(self)
    }

    /// Approvers may change the call's arguments before it runs ("refund 50, not 500"):
    /// [`Approve::edit`](crate::Approve::edit), the approval API's `args`, the page's argument
    /// box. The call is rebuilt with the new arguments ([`Call::edited`](crate::Call::edited);
    /// a type that cannot be rebuilt refuses with `edit_unsupported`) and checked by the same
    /// policy again before the approval counts: an edit the policy would deny, or one that
    /// changes the capability, principal or session, is refused with `edit_not_allowed` and
    /// the request stays pending. An edited call that the policy asks about again is held to
    /// that ask's limits too (scope, rule TTL, approvers). Whether a request may be edited is
    /// bound into its verification code; an edit is audited as `edited` beside the original
    /// arguments, and the edited call is what the inner service runs. A rule of scope `value`
    /// made by an edited approval covers the edited arguments.
    #[must_use]
    pub fn editable(mut self) -> Self {
        self.editable = true;
        self
    }

    /// Whether approvers may edit the call's arguments.
    pub fn is_editable(&self) -> bool {
        self.editable
    }

    /// `n` distinct approvers must approve before the call runs (Vault's control groups): a
    /// quorum of the [`approvers`](Self::approvers) named, who must be at least `n`. Each
    /// approver then has a code of their own, bound to their name
    /// ([`Alert::codes`](crate::notify::Alert::codes)); an approval with another approver's
    /// code is a wrong code. The request stays pending, each approval audited as `endorsed`,
    /// until the `n`th approves: that approval decides, and may grant no wider a scope or
    /// longer TTL than any earlier one gave (`scope_not_allowed`). One denial denies. An approver approves once (`already_approved`
    /// the second time). A call whose ask names fewer than `n` approvers is refused with
    /// `invalid_config`, as is one on a gate whose store replicas share. `n` of 0 or 1 is one
    /// approver, as by default.
    #[must_use]
    pub fn quorum(mut self, n: u8) -> Self {
        self.quorum = n.max(1);
        self
    }

    /// How many distinct approvers must approve: 1 unless [`quorum`](Self::quorum) says more.
    pub fn required_approvals(&self) -> u8 {
        self.quorum
    }

    /// The argument fields a `value` approval is about; `None` when it is about all of them.
    pub fn keyed_by(&self) -> Option<&[Box<str>]> {
        self.key_fields.as_ref().map(KeyFields::as_slice)
    }

    /// Why the policy asks, as shown to the approver.
    pub fn reasoning(&self) -> &str {
        &self.reasoning
    }

    /// Who may decide; `None` when any approver may.
    pub fn allowed_approvers(&self) -> Option<&[Box<str>]> {
        self.approvers.as_deref().map(|list| &**list)
    }

    /// Both asks at once: the narrower grant, the approvers both accept, both reasonings.
    fn narrowed(self, other: Ask) -> Ask {
        let approvers = match (self.approvers, other.approvers) {
            (Some(a), Some(b)) => Some(Arc::new(
                a.iter().filter(|x| b.contains(x)).cloned().collect(),
            )),
            (a, b) => a.or(b),
        };
        Ask {
            reasoning: format!("{}; {}", self.reasoning, other.reasoning).into(),
            max_scope: self.max_scope.min(other.max_scope),
            max_rule_ttl: self.max_rule_ttl.min(other.max_rule_ttl),
            approvers,
            require_reason: self.require_reason || other.require_reason,
            // Every field either binds; arguments as a whole if either binds them whole.
            key_fields: match (self.key_fields, other.key_fields) {
                (Some(a), Some(b)) => Some(a.union(&b)),
                _ => None,
            },
            // Editable only if both allow it; the larger quorum.
            editable: self.editable && other.editable,
            quorum: self.quorum.max(other.quorum),
        }
    }
}

/// Every call is asked about with a clone of this [`Ask`].
impl<R: ?Sized> Policy<R> for Ask {
    fn check(&self, _: &R) -> Decision {
        Decision::Ask(self.clone())
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

impl<R: ?Sized, P: Policy<R> + ?Sized> Policy<R> for Arc<P> {
    fn check(&self, call: &R) -> Decision {
        (**self).check(call)
    }
}

impl<R: ?Sized, P: Policy<R> + ?Sized> Policy<R> for Box<P> {
    fn check(&self, call: &R) -> Decision {
        (**self).check(call)
    }
}

impl<R: ?Sized, P: Policy<R> + ?Sized> Policy<R> for &P {
    fn check(&self, call: &R) -> Decision {
        (**self).check(call)
    }
}
