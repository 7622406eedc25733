//! The audit trail's entries: what happened to a request or rule, when, and by whom.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::args::ArgsDigest;
use crate::id::{RequestId, RuleId};
use crate::request::AccessRequest;
use crate::rule::Rule;
use crate::scope::Scope;
use crate::time::rfc3339;

/// What happened, in an [`AuditEntry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditEvent {
    /// A call asked and an access request was made.
    Requested,
    /// At least one notifier accepted the alert.
    Notified,
    /// Nobody decided in time, and the escalation notifiers were alerted.
    Escalated,
    /// One of several approvers a request needs approved; it waits for the others. The entry
    /// names the approver and the scope they gave.
    Endorsed,
    /// A person approved with other arguments than the call asked with: the entry holds the
    /// new arguments' digest (and the arguments, if the gate records them), and is followed by
    /// `approved`.
    Edited,
    /// A person approved.
    Approved,
    /// A person denied, or too many wrong codes were entered.
    Denied,
    /// Nobody decided in time.
    Expired,
    /// The callers went away before the call ran.
    Cancelled,
    /// An approved call started.
    Executing,
    /// An approved call completed.
    Executed,
    /// The request or its call failed: no notifier, the inner service, the store.
    Failed,
    /// A decision filed a standing rule or remembered denial.
    RuleGranted,
    /// A rule was revoked.
    RuleRevoked,
    /// A wrong verification code was entered.
    CodeRejected,
    /// The process stopped before the request finished.
    Abandoned,
    /// A rule read from the store was not honoured: its seal does not verify (not made with this
    /// gate's secret, or changed since).
    RuleRejected,
    /// A request read from a store replicas share was not honoured: its seal does not verify
    /// (not filed with this gate's secret, or changed since), or it is not the call that would
    /// have joined it or run on its verdict. The entry describes the request as stored.
    RequestRejected,
    /// A call ran under an observed policy ([`Decision::Observe`](crate::policy::Decision::Observe))
    /// that, enforced, would have asked a person or refused it; `detail` says which and why.
    /// No request was made.
    Observed,
}

impl AuditEvent {
    /// Every event, in the order of a request's life.
    pub const ALL: &'static [AuditEvent] = &[
        Self::Requested,
        Self::Notified,
        Self::Escalated,
        Self::Endorsed,
        Self::Edited,
        Self::Approved,
        Self::Denied,
        Self::Expired,
        Self::Cancelled,
        Self::Executing,
        Self::Executed,
        Self::Failed,
        Self::RuleGranted,
        Self::RuleRevoked,
        Self::CodeRejected,
        Self::Abandoned,
        Self::RuleRejected,
        Self::RequestRejected,
        Self::Observed,
    ];

    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Notified => "notified",
            Self::Escalated => "escalated",
            Self::Endorsed => "endorsed",
            Self::Edited => "edited",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Executing => "executing",
            Self::Executed => "executed",
            Self::Failed => "failed",
            Self::RuleGranted => "rule_granted",
            Self::RuleRevoked => "rule_revoked",
            Self::CodeRejected => "code_rejected",
            Self::Abandoned => "abandoned",
            Self::RuleRejected => "rule_rejected",
            Self::RequestRejected => "request_rejected",
            Self::Observed => "observed",
        }
    }

    /// The event named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|e| e.as_str() == name)
    }
}

impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the audit trail: what happened, when, to which request or rule, and who decided.
///
/// Entries carry the args digest, never the arguments themselves unless the gate was built with
/// [`audit_args`](crate::gate::GateBuilder::audit_args). They never carry a verification code.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditEntry {
    /// The entry's place in the trail, from 1, given by the store when it is written; 0 before.
    pub seq: u64,
    /// When it happened (wall clock, to the millisecond).
    pub at: SystemTime,
    /// What happened.
    pub event: AuditEvent,
    /// The access request it concerns.
    pub request: Option<RequestId>,
    /// The rule it concerns.
    pub rule: Option<RuleId>,
    /// Who asked; `None` for a global rule.
    pub principal: Option<Arc<str>>,
    /// The capability.
    pub capability: Arc<str>,
    /// The digest of the call's arguments.
    pub args_digest: Option<ArgsDigest>,
    /// The arguments as canonical JSON, when the gate records them.
    pub args: Option<Box<str>>,
    /// Who decided, granted or revoked.
    pub approver: Option<Arc<str>>,
    /// The caller's reason for `requested`; the person's reason for `denied`.
    pub reason: Option<Arc<str>>,
    /// The scope of an approval or rule.
    pub scope: Option<Scope>,
    /// Anything else: why the policy asked, why a call failed.
    pub detail: Option<Box<str>>,
}

impl AuditEntry {
    /// An entry with just an event, a time and a capability; set the other fields as needed.
    pub fn new(event: AuditEvent, at: SystemTime, capability: impl Into<Arc<str>>) -> Self {
        AuditEntry {
            seq: 0,
            at,
            event,
            request: None,
            rule: None,
            principal: None,
            capability: capability.into(),
            args_digest: None,
            args: None,
            approver: None,
            reason: None,
            scope: None,
            detail: None,
        }
    }

    /// An entry about `request`: its id, principal, capability and args digest.
    pub fn for_request(event: AuditEvent, at: SystemTime, request: &AccessRequest) -> Self {
        let mut entry = Self::new(event, at, request.capability.clone());
        entry.request = Some(request.id);
        entry.principal = Some(request.principal.clone());
        entry.args_digest = Some(request.args_digest);
        entry
    }

    /// An entry about `rule`: its id, request, principal, capability, digest and scope.
    pub fn for_rule(event: AuditEvent, at: SystemTime, rule: &Rule) -> Self {
        let mut entry = Self::new(event, at, rule.capability.clone());
        entry.request = Some(rule.request);
        entry.rule = Some(rule.id);
        entry.principal = rule.principal.clone();
        entry.args_digest = rule.args_digest;
        entry.scope = Some(rule.scope);
        entry
    }

    /// The `rule_revoked` entry a store appends for each rule [`Store::revoke`](crate::store::Store::revoke) deletes.
    pub fn rule_revoked(rule: &Rule, by: &str, at: SystemTime) -> Self {
        let mut entry = Self::for_rule(AuditEvent::RuleRevoked, at, rule);
        entry.approver = Some(by.into());
        entry
    }

    /// The `abandoned` entry a store appends for each request [`Store::recover`](crate::store::Store::recover) ends.
    pub fn abandoned(request: &AccessRequest, at: SystemTime) -> Self {
        let mut entry = Self::for_request(AuditEvent::Abandoned, at, request);
        entry.detail = Some("the process stopped before the request finished".into());
        entry
    }

    /// Whether `filter` selects this entry.
    pub fn matches(&self, filter: &AuditFilter) -> bool {
        filter.selects(
            self.seq,
            self.at,
            self.event,
            self.request,
            self.principal.as_deref(),
            &self.capability,
        )
    }
}

/// The JSON form: times in RFC 3339, absent fields left out.
impl Serialize for AuditEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut out = s.serialize_map(None)?;
        out.serialize_entry("seq", &self.seq)?;
        out.serialize_entry("at", &rfc3339(self.at))?;
        out.serialize_entry("event", &self.event)?;
        out.serialize_entry("capability", &*self.capability)?;
        macro_rules! some {
            ($($name:ident),*) => {$(
                if let Some(value) = &self.$name {
                    out.serialize_entry(stringify!($name), &value.to_string())?;
                }
            )*};
        }
        some!(
            request,
            rule,
            principal,
            args_digest,
            args,
            approver,
            reason,
            scope,
            detail
        );
        out.end()
    }
}

/// Which audit entries to return; every field left `None` matches everything.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tollgate::store::{AuditEvent, AuditFilter};
///
/// let filter = AuditFilter::new()
///     .since(SystemTime::now() - Duration::from_secs(3600))
///     .principal("agent-7")
///     .event(AuditEvent::Approved)
///     .limit(100);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditFilter {
    /// Entries at or after this time.
    pub since: Option<SystemTime>,
    /// Entries before this time.
    pub until: Option<SystemTime>,
    /// Entries about this principal.
    pub principal: Option<String>,
    /// Entries about this capability.
    pub capability: Option<String>,
    /// Entries of this event: the outcome (`approved`, `denied`, `expired`...) or any other.
    pub event: Option<AuditEvent>,
    /// Entries about this request.
    pub request: Option<RequestId>,
    /// Entries after this sequence number, for paging.
    pub after: Option<u64>,
    /// At most this many entries, the oldest that match. Default and most: 1,000.
    pub limit: Option<usize>,
}

impl AuditFilter {
    /// The most entries one query returns.
    pub const MAX_LIMIT: usize = 1000;

    /// Whether an entry with these fields is selected: [`AuditEntry::matches`], for a store
    /// that keeps entries in a form of its own.
    pub(crate) fn selects(
        &self,
        seq: u64,
        at: SystemTime,
        event: AuditEvent,
        request: Option<RequestId>,
        principal: Option<&str>,
        capability: &str,
    ) -> bool {
        self.since.is_none_or(|t| at >= t)
            && self.until.is_none_or(|t| at < t)
            && self
                .principal
                .as_deref()
                .is_none_or(|p| principal == Some(p))
            && self.capability.as_deref().is_none_or(|c| capability == c)
            && self.event.is_none_or(|e| event == e)
            && self.request.is_none_or(|r| request == Some(r))
            && self.after.is_none_or(|s| seq > s)
    }

    /// Matches every entry.
    pub fn new() -> Self {
        Self::default()
    }
    /// Entries at or after `time`.
    #[must_use]
    pub fn since(mut self, time: SystemTime) -> Self {
        self.since = Some(time);
        self
    }
    /// Entries before `time`.
    #[must_use]
    pub fn until(mut self, time: SystemTime) -> Self {
        self.until = Some(time);
        self
    }
    /// Entries about `principal`.
    #[must_use]
    pub fn principal(mut self, principal: impl Into<String>) -> Self {
        self.principal = Some(principal.into());
        self
    }
    /// Entries about `capability`.
    #[must_use]
    pub fn capability(mut self, capability: impl Into<String>) -> Self {
        self.capability = Some(capability.into());
        self
    }
    /// Entries of `event`.
    #[must_use]
    pub fn event(mut self, event: AuditEvent) -> Self {
        self.event = Some(event);
        self
    }
    /// Entries about request `id`.
    #[must_use]
    pub fn request(mut self, id: RequestId) -> Self {
        self.request = Some(id);
        self
    }
    /// Entries after sequence number `seq`.
    #[must_use]
    pub fn after(mut self, seq: u64) -> Self {
        self.after = Some(seq);
        self
    }
    /// At most `n` entries (capped at [`MAX_LIMIT`](Self::MAX_LIMIT)).
    #[must_use]
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }
    /// The limit in force.
    pub fn effective_limit(&self) -> usize {
        self.limit.unwrap_or(Self::MAX_LIMIT).min(Self::MAX_LIMIT)
    }
}
