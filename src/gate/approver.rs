//! The approver's side of the gate: the decisions they send ([`Approve`], [`Deny`],
//! [`Revoke`]) and the answers they get back ([`Approval`], [`Denial`]).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::call::Edit;
use crate::error::Error;
use crate::id::{RequestId, RuleId};
use crate::request::AccessRequest;
use crate::rule::Rule;
use crate::scope::Scope;
use crate::store::Revocation;

/// An approval: who, which request, how far it reaches.
pub struct Approve {
    pub(super) id: RequestId,
    // Boxed, as the edit: an approval moves through several futures, and stays small.
    pub(super) code: Box<str>,
    pub(super) scope: Scope,
    pub(super) ends: Option<Ends>,
    pub(super) approver: Option<Arc<str>>,
    pub(super) authority: Option<Box<dyn Authority>>,
    pub(super) edit: Option<Box<NewArgs>>,
}

/// An approver's new arguments: a value, or JSON text the approval API read and the gate parses
/// strictly once the code is verified (so that text is judged only for whoever may decide).
#[derive(Debug)]
pub(crate) enum NewArgs {
    Value(Value),
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    Json(Box<str>),
}

impl NewArgs {
    /// The arguments, JSON text parsed strictly (`invalid_arguments` for a repeated key or a
    /// number no 64-bit integer or double holds).
    pub(crate) fn value(&self) -> Result<std::borrow::Cow<'_, Value>, Error> {
        match self {
            NewArgs::Value(value) => Ok(std::borrow::Cow::Borrowed(value)),
            NewArgs::Json(text) => crate::args::parse_strict(text).map(std::borrow::Cow::Owned),
        }
    }
}

/// When the rule a decision makes ends: after a duration, or at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ends {
    After(Duration),
    At(SystemTime),
}

/// What one approver may do beyond what the request itself allows: the approval API's
/// [`Approver`](crate::approval::Approver) limits. Who may decide a request is asked before its code
/// is looked at, so someone who may not decide cannot spend its attempts; how far they may
/// grant is asked once the code is verified.
#[cfg_attr(not(feature = "axum"), allow(dead_code))]
pub(crate) trait Authority: Send + Sync {
    /// Whether this approver may decide `request` at all.
    fn decides(&self, request: &AccessRequest) -> bool;
    /// Refuses a decision of `scope` beyond this approver's rights.
    fn grants(&self, scope: Scope) -> Result<(), Error>;
}

impl fmt::Debug for Approve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Approve")
            .field("id", &self.id)
            .field("code", &"<redacted>")
            .field("scope", &self.scope)
            .field("ends", &self.ends)
            .field("approver", &self.approver)
            .field("edit", &self.edit)
            .finish()
    }
}

impl Approve {
    /// Approves request `id` with the code its alert carried. The scope defaults to
    /// [`Scope::Once`].
    pub fn new(id: RequestId, code: impl Into<String>) -> Self {
        Approve {
            id,
            code: code.into().into_boxed_str(),
            scope: Scope::Once,
            ends: None,
            approver: None,
            authority: None,
            edit: None,
        }
    }

    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn authority(mut self, authority: impl Authority + 'static) -> Self {
        self.authority = Some(Box::new(authority));
        self
    }

    /// Approves the call with these arguments instead of the ones it asked with ("refund 50,
    /// not 500"), if its policy lets approvers edit it
    /// ([`Ask::editable`](crate::policy::Ask::editable)). The call is rebuilt with them and
    /// checked by its policy again first: `edit_not_allowed` if the request may not be edited,
    /// the policy would deny the edited call, or the edit changes more than the arguments;
    /// `edit_unsupported` if the call's type cannot be rebuilt. Either way nothing was decided
    /// and the request is still pending. Arguments equal to the asked ones are no edit.
    ///
    /// A gate whose store replicas share refuses edits (`edit_not_allowed`): callers on other
    /// replicas that joined the request would run it as asked.
    #[must_use]
    pub fn edit(mut self, args: Value) -> Self {
        self.edit = Some(Box::new(NewArgs::Value(args)));
        self
    }

    /// The arguments as the approval API reads them: `None` leaves them as asked.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn edits(mut self, json: Option<Box<str>>) -> Self {
        self.edit = json.map(|text| Box::new(NewArgs::Json(text))).or(self.edit);
        self
    }

    /// How far the approval reaches; at most the request's maximum scope.
    #[must_use]
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// How long the rule lasts; at most, and by default, the request's maximum rule TTL.
    /// Replaces an earlier [`until`](Self::until).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ends = Some(Ends::After(ttl));
        self
    }

    /// When the rule ends, to the millisecond: a given time rather than a duration ("until
    /// the end of the shift"). It must be in the future, and no later than the request's
    /// maximum rule TTL from now (`scope_not_allowed` otherwise). Replaces an earlier
    /// [`ttl`](Self::ttl).
    #[must_use]
    pub fn until(mut self, end: SystemTime) -> Self {
        self.ends = Some(Ends::At(end));
        self
    }

    /// When the rule ends, as the approval API reads it: `None` leaves the default.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn ends(mut self, ends: Option<Ends>) -> Self {
        self.ends = ends.or(self.ends);
        self
    }

    /// Who approves. Required: every decision records its approver.
    #[must_use]
    pub fn by(mut self, approver: impl Into<Arc<str>>) -> Self {
        self.approver = Some(approver.into());
        self
    }
}

/// A denial: who, which request, why, and whether to remember it.
pub struct Deny {
    pub(super) id: RequestId,
    pub(super) code: String,
    pub(super) reason: Option<Arc<str>>,
    pub(super) approver: Option<Arc<str>>,
    pub(super) remember: Scope,
    pub(super) ends: Option<Ends>,
    pub(super) authority: Option<Box<dyn Authority>>,
}

impl fmt::Debug for Deny {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deny")
            .field("id", &self.id)
            .field("code", &"<redacted>")
            .field("reason", &self.reason)
            .field("approver", &self.approver)
            .field("remember", &self.remember)
            .field("ends", &self.ends)
            .finish()
    }
}

impl Deny {
    /// Denies request `id` with the code its alert carried.
    pub fn new(id: RequestId, code: impl Into<String>) -> Self {
        Deny {
            id,
            code: code.into(),
            reason: None,
            approver: None,
            remember: Scope::Once,
            ends: None,
            authority: None,
        }
    }

    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn authority(mut self, authority: impl Authority + 'static) -> Self {
        self.authority = Some(Box::new(authority));
        self
    }

    /// The reason, given to the caller.
    #[must_use]
    pub fn reason(mut self, reason: impl Into<Arc<str>>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Who denies. Required: every decision records its approver.
    #[must_use]
    pub fn by(mut self, approver: impl Into<Arc<str>>) -> Self {
        self.approver = Some(approver.into());
        self
    }

    /// Remembers the denial as a rule of this scope, so covered calls fail without asking.
    #[must_use]
    pub fn remember(mut self, scope: Scope) -> Self {
        self.remember = scope;
        self
    }

    /// How long a remembered denial lasts; at most, and by default, the request's maximum rule TTL.
    /// Replaces an earlier [`until`](Self::until).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ends = Some(Ends::After(ttl));
        self
    }

    /// When a remembered denial ends, as the approval API reads it: `None` leaves the default.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn ends(mut self, ends: Option<Ends>) -> Self {
        self.ends = ends.or(self.ends);
        self
    }

    /// When a remembered denial ends, as [`Approve::until`] says.
    #[must_use]
    pub fn until(mut self, end: SystemTime) -> Self {
        self.ends = Some(Ends::At(end));
        self
    }
}

/// A successful approval: a waiting call received it.
#[derive(Clone, Debug)]
pub struct Approval {
    pub(super) request: Arc<AccessRequest>,
    pub(super) scope: Scope,
    pub(super) rule: Option<Rule>,
    pub(super) edit: Option<Arc<Edit>>,
    pub(super) outstanding: u8,
}

impl Approval {
    /// The approved request.
    pub fn request(&self) -> &AccessRequest {
        &self.request
    }
    /// What the approval covers.
    pub fn scope(&self) -> Scope {
        self.scope
    }
    /// The standing rule it made; `None` for [`Scope::Once`].
    pub fn rule(&self) -> Option<&Rule> {
        self.rule.as_ref()
    }
    /// The edit the call ran with, if the approval changed its arguments.
    pub fn edit(&self) -> Option<&Edit> {
        self.edit.as_deref()
    }
    /// How many more approvals the request needs before its call runs: 0 once this approval
    /// decided it. For a request several approvers must approve
    /// ([`Ask::quorum`](crate::policy::Ask::quorum)), an approval before the last is counted
    /// (audited as `endorsed`) and decides nothing: no rule, no call yet.
    pub fn outstanding(&self) -> u8 {
        self.outstanding
    }
}

/// A successful denial.
#[derive(Clone, Debug)]
pub struct Denial {
    pub(super) request: Arc<AccessRequest>,
    pub(super) rule: Option<Rule>,
}

impl Denial {
    /// The denied request.
    pub fn request(&self) -> &AccessRequest {
        &self.request
    }
    /// The remembered denial, if one was asked for.
    pub fn rule(&self) -> Option<&Rule> {
        self.rule.as_ref()
    }
}

/// Which rules to revoke, and who revokes them; see [`Gate::revoke`](crate::Gate::revoke).
#[derive(Clone, Debug)]
pub struct Revoke {
    pub(super) which: Revocation,
    pub(super) by: Option<Arc<str>>,
}

impl Revoke {
    /// Revokes one rule.
    pub fn rule(id: RuleId) -> Self {
        Revoke {
            which: Revocation::Rule(id),
            by: None,
        }
    }

    /// Revokes every rule for `capability`.
    pub fn capability(capability: impl Into<Arc<str>>) -> Self {
        Revoke {
            which: Revocation::Capability(capability.into()),
            by: None,
        }
    }

    /// Revokes every rule.
    pub fn all() -> Self {
        Revoke {
            which: Revocation::All,
            by: None,
        }
    }

    /// Who revokes. Required: the audit trail records it.
    #[must_use]
    pub fn by(mut self, who: impl Into<Arc<str>>) -> Self {
        self.by = Some(who.into());
        self
    }
}
