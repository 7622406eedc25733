//! Access requests: the question a parked call asks a person, its id, where it stands
//! ([`Status`]) and how it ended ([`Outcome`]).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::args::{ArgsDigest, KeyFields};
use crate::error::{Error, ErrorKind};
pub use crate::id::RequestId;
use crate::scope::Scope;
use crate::time::{Millis, rfc3339};

/// A question to a person: may this call run?
///
/// Carries everything an approver needs to decide, but never the verification code; notifiers
/// receive that separately in an [`Alert`](crate::notify::Alert).
#[derive(Clone, Debug)]
pub struct AccessRequest {
    pub(crate) id: RequestId,
    pub(crate) capability: Arc<str>,
    /// Canonical JSON: compact, and exactly what the digest covers.
    pub(crate) args: Box<str>,
    pub(crate) args_digest: ArgsDigest,
    pub(crate) principal: Arc<str>,
    pub(crate) session: Option<Arc<str>>,
    pub(crate) reason: Option<Arc<str>>,
    pub(crate) reasoning: Cow<'static, str>,
    pub(crate) max_scope: Scope,
    /// In whole milliseconds, as stores keep it and the code binds it.
    pub(crate) max_rule_ttl_ms: u64,
    /// One pointer wide, shared with the policy that asked.
    pub(crate) approvers: Option<Arc<Box<[Box<str>]>>>,
    /// The fields a `value` approval is about, when the policy names some and the call has
    /// them all; `None` when it is about the whole arguments.
    pub(crate) key_fields: Option<KeyFields>,
    /// Whether an approver may edit the arguments ([`Ask::editable`](crate::policy::Ask::editable)).
    pub(crate) editable: bool,
    /// How many distinct approvers must approve (1 unless the policy asks for a quorum).
    pub(crate) quorum: u8,
    /// How far an escalation moved the expiry, in seconds (0 unless it did): the code binds the
    /// expiry the request was made with, `expires_at` less this.
    pub(crate) extended_secs: u32,
    pub(crate) created_at: Millis,
    pub(crate) expires_at: Millis,
    pub(crate) approval_url: Option<Box<str>>,
}

impl AccessRequest {
    /// The request's id.
    pub fn id(&self) -> RequestId {
        self.id
    }
    /// The capability the call wants to use.
    pub fn capability(&self) -> &str {
        &self.capability
    }
    /// The call's arguments.
    pub fn args(&self) -> Value {
        serde_json::from_str(&self.args).expect("canonical JSON parses")
    }
    /// The call's arguments as canonical JSON text: sorted keys, no spaces, one number form.
    /// The args digest is SHA-256 of exactly this text.
    pub fn args_json(&self) -> &str {
        &self.args
    }
    /// The digest of the arguments that an approval is bound to.
    pub fn args_digest(&self) -> ArgsDigest {
        self.args_digest
    }
    /// Who asks; `anonymous` when the call named nobody.
    pub fn principal(&self) -> &str {
        &self.principal
    }
    /// The session the call belongs to.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }
    /// The caller's reason.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
    /// Why the policy asks.
    pub fn reasoning(&self) -> &str {
        &self.reasoning
    }
    /// The widest scope an approval of this request may grant.
    pub fn max_scope(&self) -> Scope {
        self.max_scope
    }
    /// The longest TTL of a rule made from this request's decision.
    pub fn max_rule_ttl(&self) -> Duration {
        Duration::from_millis(self.max_rule_ttl_ms)
    }
    /// Who may decide; `None` when any approver may.
    pub fn approvers(&self) -> Option<&[Box<str>]> {
        self.approvers.as_deref().map(|list| &**list)
    }
    /// The argument fields a [`Scope::Value`] approval of this request is about (JSON
    /// pointers, sorted): its rule covers later calls whose key fields are equal, whatever
    /// their other arguments hold. `None` when it covers only identical arguments.
    pub fn key_fields(&self) -> Option<&[Box<str>]> {
        self.key_fields.as_ref().map(KeyFields::as_slice)
    }
    /// Whether an approver may edit the call's arguments before it runs
    /// ([`Ask::editable`](crate::policy::Ask::editable)).
    pub fn editable(&self) -> bool {
        self.editable
    }
    /// How many distinct approvers must approve before the call runs: 1 unless the policy asks
    /// for a quorum ([`Ask::quorum`](crate::policy::Ask::quorum)). Each of them then has a code
    /// of their own.
    pub fn quorum(&self) -> u8 {
        self.quorum
    }
    /// The arguments a `value` rule from this request binds: the key fields' digest (the call
    /// had them all when the request was made), or the arguments' digest.
    pub(crate) fn value_digest(&self) -> ArgsDigest {
        self.key_fields
            .as_ref()
            .and_then(|fields| fields.digest(&self.args()))
            .unwrap_or(self.args_digest)
    }
    /// Whether `approver` may decide this request.
    pub(crate) fn admits(&self, approver: &str) -> bool {
        self.approvers()
            .is_none_or(|list| list.iter().any(|a| &**a == approver))
    }
    /// When the request was made.
    pub fn created_at(&self) -> SystemTime {
        self.created_at.time()
    }
    /// When the request expires if nobody decides (after an escalation that extends it, the
    /// later time).
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at.time()
    }
    /// How much later an escalation made the request expire, if it did
    /// ([`GateBuilder::escalation_extends`](crate::gate::GateBuilder::escalation_extends)).
    pub fn extended_by(&self) -> Option<Duration> {
        (self.extended_secs > 0).then(|| Duration::from_secs(u64::from(self.extended_secs)))
    }
    /// Where a person can decide, when the gate has an approval base URL.
    pub fn approval_url(&self) -> Option<&str> {
        self.approval_url.as_deref()
    }
}

/// The JSON form, as webhooks and the HTTP API send it: times in RFC 3339, the rule TTL in
/// seconds, the arguments as JSON. Never the code.
impl Serialize for AccessRequest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("AccessRequest", 17)?;
        out.serialize_field("id", &self.id)?;
        out.serialize_field("capability", &*self.capability)?;
        out.serialize_field("args", &self.args())?;
        out.serialize_field("args_digest", &self.args_digest.to_string())?;
        out.serialize_field("principal", &*self.principal)?;
        out.serialize_field("session", &self.session.as_deref())?;
        out.serialize_field("reason", &self.reason.as_deref())?;
        out.serialize_field("reasoning", &*self.reasoning)?;
        out.serialize_field("max_scope", &self.max_scope)?;
        out.serialize_field("max_rule_ttl_secs", &self.max_rule_ttl().as_secs())?;
        out.serialize_field("approvers", &self.approvers())?;
        out.serialize_field("key_fields", &self.key_fields())?;
        out.serialize_field("editable", &self.editable)?;
        out.serialize_field("quorum", &self.quorum)?;
        out.serialize_field("created_at", &rfc3339(self.created_at()))?;
        out.serialize_field("expires_at", &rfc3339(self.expires_at()))?;
        out.serialize_field("approval_url", &self.approval_url.as_deref())?;
        out.end()
    }
}

/// Where an access request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Status {
    /// Waiting for a person.
    Pending,
    /// Approved; no waiting call has taken the approval yet.
    Approved,
    /// Approved, and the call is running.
    Executing,
    /// Approved, and the call completed successfully.
    Executed,
    /// The call did not complete: its inner service failed, no approver could be notified, or
    /// its caller went away while it ran.
    Failed,
    /// Denied by a person, or after too many wrong codes.
    Denied,
    /// Nobody decided in time.
    Expired,
    /// Every caller went away before an approval reached one of them.
    Cancelled,
    /// The process stopped before the request finished; its callers are gone. If it was
    /// executing, the call may have run in part.
    Abandoned,
}

impl Status {
    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Executing => "executing",
            Status::Executed => "executed",
            Status::Failed => "failed",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
            Status::Abandoned => "abandoned",
        }
    }

    /// Every status.
    pub const ALL: &'static [Status] = &[
        Status::Pending,
        Status::Approved,
        Status::Executing,
        Status::Executed,
        Status::Failed,
        Status::Denied,
        Status::Expired,
        Status::Cancelled,
        Status::Abandoned,
    ];

    /// The status named `name`, if any.
    pub fn from_name(name: &str) -> Option<Status> {
        Status::ALL.iter().copied().find(|s| s.as_str() == name)
    }

    /// Whether a person can still decide.
    pub fn is_pending(self) -> bool {
        self == Status::Pending
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an access request ended, as notifiers hear of it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// A person approved and a waiting call received the approval.
    Approved {
        /// Who approved.
        approver: Arc<str>,
        /// What the approval covers.
        scope: Scope,
        /// When the rule made from it ends; `None` for [`Scope::Once`].
        until: Option<SystemTime>,
    },
    /// A person denied.
    Denied {
        /// Who denied.
        approver: Arc<str>,
        /// The reason they gave.
        reason: Option<Arc<str>>,
    },
    /// Denied after too many wrong codes.
    TooManyAttempts,
    /// Nobody decided in time.
    Expired,
    /// Every caller went away first.
    Cancelled,
    /// No notifier accepted the alert.
    NotificationFailed,
    /// The process stopped before the request was decided.
    Abandoned,
    /// The store could not record the request or its decision, so nothing ran.
    StoreFailed,
}

/// The JSON form: `{"status": "approved", "approver": "alice", "scope": "value", "until": …}`,
/// `{"status": "denied", "approver": "bob", "reason": …}`, or just the status.
impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut out = s.serialize_map(None)?;
        out.serialize_entry("status", &self.status())?;
        match self {
            Outcome::Approved {
                approver,
                scope,
                until,
            } => {
                out.serialize_entry("approver", &**approver)?;
                out.serialize_entry("scope", scope)?;
                out.serialize_entry("until", &until.map(rfc3339))?;
            }
            Outcome::Denied { approver, reason } => {
                out.serialize_entry("approver", &**approver)?;
                out.serialize_entry("reason", &reason.as_deref())?;
            }
            Outcome::TooManyAttempts => out.serialize_entry("reason", "too_many_attempts")?,
            Outcome::Expired
            | Outcome::Cancelled
            | Outcome::NotificationFailed
            | Outcome::Abandoned
            | Outcome::StoreFailed => {}
        }
        out.end()
    }
}

impl Outcome {
    /// The status a request with this outcome has.
    pub fn status(&self) -> Status {
        match self {
            Outcome::Approved { .. } => Status::Approved,
            Outcome::Denied { .. } | Outcome::TooManyAttempts => Status::Denied,
            Outcome::Expired => Status::Expired,
            Outcome::Cancelled => Status::Cancelled,
            Outcome::NotificationFailed | Outcome::StoreFailed => Status::Failed,
            Outcome::Abandoned => Status::Abandoned,
        }
    }

    /// The error the callers waiting on a request that ended this way fail with.
    pub(crate) fn error(&self, id: RequestId) -> Option<Error> {
        let error = match self {
            Outcome::Approved { .. } => return None,
            Outcome::Denied { reason, .. } => {
                let error = Error::new(ErrorKind::AccessRequestDenied);
                match reason {
                    Some(reason) => error.with_detail(format!("reason: {reason}")),
                    None => error,
                }
            }
            Outcome::TooManyAttempts => Error::new(ErrorKind::TooManyAttempts),
            Outcome::Expired => Error::new(ErrorKind::AccessRequestExpired),
            Outcome::Cancelled => Error::new(ErrorKind::AccessRequestCancelled),
            Outcome::NotificationFailed => Error::new(ErrorKind::NotificationFailed),
            // A live caller's request is abandoned only when its gate shuts down.
            Outcome::Abandoned => Error::new(ErrorKind::ShutDown)
                .with_detail("the gate shut down before anyone decided"),
            Outcome::StoreFailed => Error::new(ErrorKind::StoreFailed),
        };
        Some(error.with_request(id))
    }
}

#[cfg(test)]
mod tests {
    /// Every parked call holds one (identical calls share it): its size is most of what a
    /// parked call costs, which `BENCHMARKS.md` records. Key fields and approvers are one
    /// pointer each, shared with the policy.
    #[test]
    fn a_request_stays_within_its_recorded_size() {
        assert_eq!(std::mem::size_of::<super::AccessRequest>(), 216);
    }
}
