//! Seals on standing rules and on requests replicas share: a MAC over every field, so a record
//! read back from a store is honoured only if this gate's secret made it, unchanged.
//!
//! Someone who can write the store (an agent with the SQLite file in reach) could otherwise
//! insert a `global` allow rule for themselves, or widen, retarget or extend one; or, in a
//! database replicas share, rewrite a pending request into another call for callers to join. The
//! seal key is derived from the gate's secret and separated from the code key by its domain, so
//! a seal says nothing about any verification code, and a gate started with another secret
//! honours no record the old one made.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::request::AccessRequest;
use crate::rule::Rule;
use crate::time::millis;

/// Derives the seal key from the secret: `HMAC-SHA256(secret, KEY_DOMAIN)`.
const KEY_DOMAIN: &[u8] = b"tollgate/rule-seal-key/v1";
/// Starts every sealed message, so a seal can never be confused with another MAC of that key.
const SEAL_DOMAIN: &[u8] = b"tollgate/rule-seal/v1";
/// Starts every request's seal.
const REQUEST_DOMAIN: &[u8] = b"tollgate/request-seal/v1";

/// The key rules are sealed with.
pub(crate) struct SealKey {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

impl SealKey {
    pub(crate) fn new(secret: &[u8]) -> Self {
        let mut derive = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        derive.update(KEY_DOMAIN);
        let key = derive.finalize().into_bytes();
        SealKey {
            mac: Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length"),
        }
    }

    /// The seal of `rule`: every field, each length-prefixed, an absent one told apart from an
    /// empty one, times in whole milliseconds as stores keep them.
    fn seal_of(&self, rule: &Rule) -> [u8; 32] {
        let mut mac = Fields(self.mac.clone());
        mac.field(Some(SEAL_DOMAIN));
        mac.field(Some(rule.id.as_bytes()));
        mac.field(Some(effect_name(rule).as_bytes()));
        mac.field(Some(rule.scope.as_str().as_bytes()));
        mac.field(Some(rule.capability.as_bytes()));
        mac.text(rule.principal.as_deref());
        mac.text(rule.session.as_deref());
        mac.field(rule.args_digest.as_ref().map(|d| &d.as_bytes()[..]));
        mac.field(Some(rule.granted_by.as_bytes()));
        mac.field(Some(&millis(rule.granted_at).to_be_bytes()));
        mac.field(Some(&millis(rule.expires_at).to_be_bytes()));
        mac.field(Some(rule.request.as_bytes()));
        mac.text(rule.reason.as_deref());
        // Only when more than one: rules sealed before the field existed still verify.
        if rule.approvals != 1 {
            mac.field(Some(&[rule.approvals]));
        }
        mac.0.finalize().into_bytes().into()
    }

    /// The seal of what `request` asks, made when it is filed in a store replicas share: its id,
    /// the call (capability, principal, session, arguments' digest), everything an approval of
    /// it may grant (key fields, widest scope, longest rule, who decides, how many, edits) and
    /// everything shown to the approver (reason, reasoning, times; the expiry it was made
    /// with). A replica joins a stored request, and carries out a verdict on it, only for a
    /// call this seal shows it to be.
    pub(crate) fn request_seal(&self, request: &AccessRequest) -> [u8; 32] {
        let mut mac = Fields(self.mac.clone());
        mac.field(Some(REQUEST_DOMAIN));
        mac.field(Some(request.id.as_bytes()));
        mac.field(Some(request.capability.as_bytes()));
        mac.field(Some(request.principal.as_bytes()));
        mac.text(request.session.as_deref());
        mac.field(Some(request.args_digest.as_bytes()));
        match request.key_fields() {
            None => mac.field(None),
            Some(fields) => {
                mac.field(Some(&(fields.len() as u64).to_be_bytes()));
                fields.iter().for_each(|f| mac.field(Some(f.as_bytes())));
            }
        }
        mac.field(Some(request.max_scope.as_str().as_bytes()));
        mac.field(Some(&request.max_rule_ttl_ms.to_be_bytes()));
        match request.approvers() {
            None => mac.field(None),
            Some(list) => {
                mac.field(Some(&(list.len() as u64).to_be_bytes()));
                list.iter().for_each(|a| mac.field(Some(a.as_bytes())));
            }
        }
        mac.field(Some(&[request.quorum, u8::from(request.editable)]));
        mac.text(request.reason.as_deref());
        mac.field(Some(request.reasoning.as_bytes()));
        let made_to_expire = request
            .expires_at
            .get()
            .saturating_sub(u64::from(request.extended_secs) * 1000);
        mac.field(Some(&request.created_at.get().to_be_bytes()));
        mac.field(Some(&made_to_expire.to_be_bytes()));
        mac.0.finalize().into_bytes().into()
    }

    /// Whether `seal`, hex as a store keeps it, is this key's seal of `request`; constant time.
    pub(crate) fn request_verifies(&self, request: &AccessRequest, seal: Option<&str>) -> bool {
        let expected = crate::hex::lower(&self.request_seal(request));
        seal.is_some_and(|seal| bool::from(seal.as_bytes().ct_eq(expected.as_bytes())))
    }

    /// A MAC over `parts` under this key, each length-prefixed after `domain`: for other sealed
    /// records (a verdict), never confusable with a rule's seal, whose domain differs.
    pub(crate) fn mac(&self, domain: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        for part in std::iter::once(domain).chain(parts.iter().copied()) {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Seals a rule this gate made.
    pub(crate) fn seal(&self, rule: &mut Rule) {
        rule.seal = Some(self.seal_of(rule));
    }

    /// Whether `rule` carries this key's seal over exactly its fields; constant time.
    pub(crate) fn verifies(&self, rule: &Rule) -> bool {
        rule.seal
            .is_some_and(|seal| bool::from(seal.ct_eq(&self.seal_of(rule))))
    }
}

/// A MAC fed field by field: each length-prefixed, an absent one told apart from an empty one.
struct Fields(Hmac<Sha256>);

impl Fields {
    fn field(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            None => self.0.update(&[0]),
            Some(bytes) => {
                self.0.update(&[1]);
                self.0.update(&(bytes.len() as u64).to_be_bytes());
                self.0.update(bytes);
            }
        }
    }

    fn text(&mut self, text: Option<&str>) {
        self.field(text.map(str::as_bytes));
    }
}

fn effect_name(rule: &Rule) -> &'static str {
    match rule.effect {
        crate::rule::RuleEffect::Allow => "allow",
        crate::rule::RuleEffect::Deny => "deny",
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::args::ArgsDigest;
    use crate::id::{RequestId, RuleId};
    use crate::rule::RuleEffect;
    use crate::scope::Scope;
    use crate::time::to_millis;

    fn rule() -> Rule {
        let at = to_millis(SystemTime::now());
        Rule {
            id: RuleId::random(),
            effect: RuleEffect::Allow,
            scope: Scope::Value,
            capability: "payments.refund".into(),
            principal: Some("agent-7".into()),
            session: None,
            args_digest: Some(ArgsDigest::of(&serde_json::json!({"amount": 5}))),
            granted_by: "alice".into(),
            granted_at: at,
            expires_at: at + Duration::from_secs(3600),
            request: RequestId::random(),
            reason: None,
            approvals: 1,
            seal: None,
        }
    }

    #[test]
    fn a_seal_covers_every_field_and_only_its_key_makes_it() {
        let key = SealKey::new(b"a test secret of at least sixteen bytes");
        let mut sealed = rule();
        assert!(!key.verifies(&sealed), "unsealed");
        key.seal(&mut sealed);
        assert!(key.verifies(&sealed));
        let other = SealKey::new(b"another secret of at least sixteen bytes");
        assert!(!other.verifies(&sealed));

        let changes: [fn(&mut Rule); 14] = [
            |r| r.id = RuleId::random(),
            |r| r.effect = RuleEffect::Deny,
            |r| r.scope = Scope::Global,
            |r| r.capability = "payments.refunds".into(),
            |r| r.principal = None,
            |r| r.session = Some(String::new().into()),
            |r| r.args_digest = None,
            |r| r.granted_by = "alicf".into(),
            |r| r.granted_at += Duration::from_millis(1),
            |r| r.expires_at += Duration::from_millis(1),
            |r| r.request = RequestId::random(),
            |r| r.reason = Some("".into()),
            |r| r.approvals = 2,
            |r| r.seal.as_mut().unwrap()[31] ^= 1,
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut forged = sealed.clone();
            change(&mut forged);
            assert!(!key.verifies(&forged), "change {i} kept the seal");
        }
    }

    fn request() -> AccessRequest {
        let now = crate::time::Millis::of(SystemTime::now());
        AccessRequest {
            id: RequestId::random(),
            capability: "payments.payout".into(),
            args: r#"{"amount":50}"#.into(),
            args_digest: ArgsDigest::of_canonical(r#"{"amount":50}"#),
            principal: "agent-7".into(),
            session: None,
            reason: None,
            reasoning: "payouts move money".into(),
            max_scope: Scope::Value,
            max_rule_ttl_ms: 60_000,
            approvers: None,
            key_fields: None,
            editable: false,
            quorum: 1,
            extended_secs: 0,
            created_at: now,
            expires_at: now + Duration::from_secs(60),
            approval_url: None,
        }
    }

    #[test]
    fn a_request_seal_covers_the_call_its_limits_and_what_the_approver_sees() {
        let key = SealKey::new(b"a test secret of at least sixteen bytes");
        let asked = request();
        let seal = crate::hex::lower(&key.request_seal(&asked));
        assert!(key.request_verifies(&asked, Some(&seal)));
        assert!(!key.request_verifies(&asked, None), "unsealed");
        let other = SealKey::new(b"another secret of at least sixteen bytes");
        assert!(!other.request_verifies(&asked, Some(&seal)));

        let changes: [fn(&mut AccessRequest); 15] = [
            |r| r.id = RequestId::random(),
            |r| r.capability = "payments.refund".into(),
            |r| r.principal = "agent-8".into(),
            |r| r.session = Some("".into()),
            |r| r.args_digest = ArgsDigest::of_canonical(r#"{"amount":5000}"#),
            |r| r.key_fields = Some(crate::args::KeyFields::new(["/amount"]).unwrap()),
            |r| r.max_scope = Scope::Global,
            |r| r.max_rule_ttl_ms += 1,
            |r| r.approvers = Some(std::sync::Arc::new(vec!["mallory".into()].into())),
            |r| r.quorum = 2,
            |r| r.editable = true,
            |r| r.reason = Some("".into()),
            |r| r.reasoning = "payouts are fine".into(),
            |r| r.created_at = r.created_at + Duration::from_millis(1),
            |r| r.expires_at = r.expires_at + Duration::from_millis(1),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut forged = asked.clone();
            change(&mut forged);
            assert!(
                !key.request_verifies(&forged, Some(&seal)),
                "change {i} kept the seal"
            );
        }
    }
}
