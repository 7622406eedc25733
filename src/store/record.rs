//! The lossless text form of requests, rules and outcomes that stores keep.
//!
//! Unlike the JSON the HTTP API and webhooks send (times to the second, for people), a record
//! keeps times to the millisecond, which is what verification codes are bound to, so a request
//! read back from a store verifies exactly as it did when it was made.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::args::{ArgsDigest, KeyFields, canonical_json, parse_strict};
use crate::error::{Error, ErrorKind};
use crate::id::{RequestId, RuleId};
use crate::request::{AccessRequest, Outcome};
use crate::rule::{Rule, RuleEffect};
use crate::scope::Scope;
use crate::time::{Millis, from_millis, millis};

fn unreadable(what: &'static str, cause: impl Into<crate::BoxError>) -> Error {
    Error::new(ErrorKind::StoreUnreadable)
        .with_detail(format!("a stored {what} cannot be read"))
        .with_source(cause)
}

fn one() -> u8 {
    1
}

fn is_one(n: &u8) -> bool {
    *n == 1
}

#[derive(Serialize, Deserialize)]
struct RequestRecord {
    id: RequestId,
    capability: String,
    args: String,
    args_digest: String,
    principal: String,
    session: Option<String>,
    reason: Option<String>,
    reasoning: String,
    max_scope: Scope,
    max_rule_ttl_ms: u64,
    approvers: Option<Vec<String>>,
    /// Absent on requests without key fields, as on those written before they existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_fields: Option<Vec<String>>,
    /// Absent unless approvers may edit it, as on requests written before edits existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    editable: bool,
    /// Absent when one approver decides, as on requests written before quorums existed.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    quorum: u8,
    created_at_ms: i64,
    expires_at_ms: i64,
    approval_url: Option<String>,
}

impl AccessRequest {
    /// The request as lossless JSON text, for [`Store`](crate::store::Store) implementations to
    /// keep. [`from_record`](Self::from_record) reads it back.
    pub fn to_record(&self) -> String {
        let record = RequestRecord {
            id: self.id,
            capability: self.capability.to_string(),
            args: self.args.to_string(),
            args_digest: self.args_digest.to_string(),
            principal: self.principal.to_string(),
            session: self.session.as_deref().map(Into::into),
            reason: self.reason.as_deref().map(Into::into),
            reasoning: self.reasoning.to_string(),
            max_scope: self.max_scope,
            max_rule_ttl_ms: self.max_rule_ttl_ms,
            approvers: self
                .approvers
                .as_deref()
                .map(|list| list.iter().map(|a| a.to_string()).collect()),
            key_fields: self
                .key_fields()
                .map(|list| list.iter().map(|f| f.to_string()).collect()),
            editable: self.editable,
            quorum: self.quorum,
            created_at_ms: millis(self.created_at()),
            expires_at_ms: millis(self.expires_at()),
            approval_url: self.approval_url.as_deref().map(Into::into),
        };
        serde_json::to_string(&record).expect("records serialize")
    }

    /// Reads a request written by [`to_record`](Self::to_record). The arguments must still match
    /// their digest; anything else is `store_unreadable`.
    pub fn from_record(text: &str) -> Result<Self, Error> {
        let r: RequestRecord = serde_json::from_str(text).map_err(|e| unreadable("request", e))?;
        let value = parse_strict(&r.args).map_err(|e| unreadable("request", e))?;
        let args = canonical_json(&value);
        let args_digest = ArgsDigest::of_canonical(&args);
        let key_fields = match r.key_fields {
            Some(fields) => {
                let fields = KeyFields::new(fields).map_err(|e| unreadable("request", e))?;
                if fields.digest(&value).is_none() {
                    return Err(unreadable(
                        "request",
                        "its arguments lack one of its key fields",
                    ));
                }
                Some(fields)
            }
            None => None,
        };
        if args_digest.to_string() != r.args_digest {
            return Err(unreadable(
                "request",
                "its arguments do not match their digest",
            ));
        }
        Ok(AccessRequest {
            id: r.id,
            capability: r.capability.into(),
            args: args.into_boxed_str(),
            args_digest,
            principal: r.principal.into(),
            session: r.session.map(Into::into),
            reason: r.reason.map(Into::into),
            reasoning: r.reasoning.into(),
            max_scope: r.max_scope,
            max_rule_ttl_ms: r.max_rule_ttl_ms,
            approvers: r
                .approvers
                .map(|list| Arc::new(list.into_iter().map(String::into_boxed_str).collect())),
            key_fields,
            editable: r.editable,
            quorum: r.quorum.max(1),
            // The store keeps the expiry a request was made with; an extension lives in memory.
            extended_secs: 0,
            created_at: Millis::of(from_millis(r.created_at_ms)),
            expires_at: Millis::of(from_millis(r.expires_at_ms)),
            approval_url: r.approval_url.map(String::into_boxed_str),
        })
    }
}

#[derive(Serialize, Deserialize)]
struct RuleRecord {
    id: RuleId,
    effect: RuleEffect,
    scope: Scope,
    capability: String,
    principal: Option<String>,
    session: Option<String>,
    args_digest: Option<String>,
    granted_by: String,
    granted_at_ms: i64,
    expires_at_ms: i64,
    request: RequestId,
    reason: Option<String>,
    /// Absent when one approver made it, as on rules written before quorums' rules said so.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    approvals: u8,
    /// Hex; absent on rules no gate sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seal: Option<String>,
}

impl Rule {
    /// The rule as lossless JSON text, for [`Store`](crate::store::Store) implementations to keep.
    pub fn to_record(&self) -> String {
        let record = RuleRecord {
            id: self.id,
            effect: self.effect,
            scope: self.scope,
            capability: self.capability.to_string(),
            principal: self.principal.as_deref().map(Into::into),
            session: self.session.as_deref().map(Into::into),
            args_digest: self.args_digest.map(|d| d.to_string()),
            granted_by: self.granted_by.to_string(),
            granted_at_ms: millis(self.granted_at),
            expires_at_ms: millis(self.expires_at),
            request: self.request,
            reason: self.reason.as_deref().map(Into::into),
            approvals: self.approvals,
            seal: self.seal.map(|seal| crate::hex::lower(&seal)),
        };
        serde_json::to_string(&record).expect("records serialize")
    }

    /// Reads a rule written by [`to_record`](Self::to_record); anything else is
    /// `store_unreadable`.
    pub fn from_record(text: &str) -> Result<Self, Error> {
        let r: RuleRecord = serde_json::from_str(text).map_err(|e| unreadable("rule", e))?;
        let args_digest = match r.args_digest {
            Some(hex) => Some(
                ArgsDigest::from_hex(&hex)
                    .ok_or_else(|| unreadable("rule", "its args digest is not 64 hex digits"))?,
            ),
            None => None,
        };
        let keyed = match r.scope {
            Scope::Once => false,
            Scope::Value => r.principal.is_some() && args_digest.is_some(),
            Scope::Session => r.principal.is_some() && r.session.is_some(),
            Scope::Capability => r.principal.is_some(),
            Scope::Global => true,
        };
        if !keyed {
            return Err(unreadable(
                "rule",
                "its scope lacks the principal, session or digest it needs",
            ));
        }
        Ok(Rule {
            id: r.id,
            effect: r.effect,
            scope: r.scope,
            capability: r.capability.into(),
            principal: r.principal.map(Into::into),
            session: r.session.map(Into::into),
            args_digest,
            granted_by: r.granted_by.into(),
            granted_at: from_millis(r.granted_at_ms),
            expires_at: from_millis(r.expires_at_ms),
            request: r.request,
            reason: r.reason.map(Into::into),
            approvals: r.approvals.max(1),
            // A malformed seal is no seal: the rule is read, and refused by the gate.
            seal: r.seal.and_then(|hex| crate::hex::decode::<32>(&hex)),
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum OutcomeRecord {
    Approved {
        approver: String,
        scope: Scope,
        until_ms: Option<i64>,
    },
    Denied {
        approver: String,
        reason: Option<String>,
    },
    TooManyAttempts,
    Expired,
    Cancelled,
    NotificationFailed,
    Abandoned,
    StoreFailed,
}

impl Outcome {
    /// The outcome as lossless JSON text, for [`Store`](crate::store::Store) implementations to
    /// keep.
    pub fn to_record(&self) -> String {
        let record = match self {
            Outcome::Approved {
                approver,
                scope,
                until,
            } => OutcomeRecord::Approved {
                approver: approver.to_string(),
                scope: *scope,
                until_ms: until.map(millis),
            },
            Outcome::Denied { approver, reason } => OutcomeRecord::Denied {
                approver: approver.to_string(),
                reason: reason.as_deref().map(Into::into),
            },
            Outcome::TooManyAttempts => OutcomeRecord::TooManyAttempts,
            Outcome::Expired => OutcomeRecord::Expired,
            Outcome::Cancelled => OutcomeRecord::Cancelled,
            Outcome::NotificationFailed => OutcomeRecord::NotificationFailed,
            Outcome::Abandoned => OutcomeRecord::Abandoned,
            Outcome::StoreFailed => OutcomeRecord::StoreFailed,
        };
        serde_json::to_string(&record).expect("records serialize")
    }

    /// Reads an outcome written by [`to_record`](Self::to_record).
    pub fn from_record(text: &str) -> Result<Self, Error> {
        let record: OutcomeRecord =
            serde_json::from_str(text).map_err(|e| unreadable("outcome", e))?;
        let approver = |a: String| -> Arc<str> { a.into() };
        Ok(match record {
            OutcomeRecord::Approved {
                approver: a,
                scope,
                until_ms,
            } => Outcome::Approved {
                approver: approver(a),
                scope,
                until: until_ms.map(from_millis),
            },
            OutcomeRecord::Denied {
                approver: a,
                reason,
            } => Outcome::Denied {
                approver: approver(a),
                reason: reason.map(Into::into),
            },
            OutcomeRecord::TooManyAttempts => Outcome::TooManyAttempts,
            OutcomeRecord::Expired => Outcome::Expired,
            OutcomeRecord::Cancelled => Outcome::Cancelled,
            OutcomeRecord::NotificationFailed => Outcome::NotificationFailed,
            OutcomeRecord::Abandoned => Outcome::Abandoned,
            OutcomeRecord::StoreFailed => Outcome::StoreFailed,
        })
    }
}
