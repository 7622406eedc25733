//! Standing rules: approvals and remembered denials that outlive their request.

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::args::ArgsDigest;
use crate::id::RequestId;
pub use crate::id::RuleId;
use crate::scope::Scope;
use crate::time::rfc3339;

/// Whether a rule lets calls through or refuses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleEffect {
    /// Covered calls run without asking.
    Allow,
    /// Covered calls fail with `access_request_denied` without asking.
    Deny,
}

/// A standing decision made from an approval or a remembered denial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub(crate) id: RuleId,
    pub(crate) effect: RuleEffect,
    pub(crate) scope: Scope,
    pub(crate) capability: Arc<str>,
    pub(crate) principal: Option<Arc<str>>,
    pub(crate) session: Option<Arc<str>>,
    pub(crate) args_digest: Option<ArgsDigest>,
    pub(crate) granted_by: Arc<str>,
    pub(crate) granted_at: SystemTime,
    pub(crate) expires_at: SystemTime,
    pub(crate) request: RequestId,
    pub(crate) reason: Option<Arc<str>>,
    /// How many distinct approvers made it: the quorum the request needed for an approval, 1
    /// otherwise. It covers only calls whose ask needs no more.
    pub(crate) approvals: u8,
    /// The gate's MAC over every other field; see `seal.rs`. `None` until sealed.
    pub(crate) seal: Option<[u8; 32]>,
}

impl Rule {
    /// How many distinct approvers made the rule (a quorum's size, else 1): an approval rule
    /// covers only later calls whose own ask needs no more approvers, and names its granter
    /// among its approvers if it names any.
    pub fn approvals(&self) -> u8 {
        self.approvals
    }
    /// The rule's id, for [`Gate::revoke`](crate::Gate::revoke).
    pub fn id(&self) -> RuleId {
        self.id
    }
    /// Allow or deny.
    pub fn effect(&self) -> RuleEffect {
        self.effect
    }
    /// How far the rule reaches.
    pub fn scope(&self) -> Scope {
        self.scope
    }
    /// The capability it covers.
    pub fn capability(&self) -> &str {
        &self.capability
    }
    /// The principal it covers; `None` for [`Scope::Global`].
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }
    /// The session it covers, for [`Scope::Session`].
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }
    /// The args digest it covers, for [`Scope::Value`].
    pub fn args_digest(&self) -> Option<ArgsDigest> {
        self.args_digest
    }
    /// Who made the decision.
    pub fn granted_by(&self) -> &str {
        &self.granted_by
    }
    /// When.
    pub fn granted_at(&self) -> SystemTime {
        self.granted_at
    }
    /// When the rule stops applying.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
    /// The access request whose decision made the rule.
    pub fn request(&self) -> RequestId {
        self.request
    }
    /// The denial's reason, for deny rules.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

/// The JSON form, as the HTTP API lists rules: times in RFC 3339, absent fields as `null`.
impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("Rule", 12)?;
        out.serialize_field("id", &self.id)?;
        out.serialize_field("effect", &self.effect)?;
        out.serialize_field("scope", &self.scope)?;
        out.serialize_field("capability", &*self.capability)?;
        out.serialize_field("principal", &self.principal.as_deref())?;
        out.serialize_field("session", &self.session.as_deref())?;
        out.serialize_field("args_digest", &self.args_digest.map(|d| d.to_string()))?;
        out.serialize_field("granted_by", &*self.granted_by)?;
        out.serialize_field("granted_at", &rfc3339(self.granted_at))?;
        out.serialize_field("expires_at", &rfc3339(self.expires_at))?;
        out.serialize_field("request_id", &self.request)?;
        out.serialize_field("reason", &self.reason.as_deref())?;
        out.end()
    }
}
