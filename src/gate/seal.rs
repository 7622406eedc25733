//! Seals on standing rules: a MAC over every field, so a rule read back from a store is honoured
//! only if this gate's secret made it, unchanged.
//!
//! Someone who can write the store (an agent with the SQLite file in reach) could otherwise
//! insert a `global` allow rule for themselves, or widen, retarget or extend one. The seal key is
//! derived from the gate's secret and separated from the code key by its domain, so a seal says
//! nothing about any verification code, and a gate started with another secret honours no rule
//! the old one made.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::rule::Rule;
use crate::time::millis;

/// Derives the seal key from the secret: `HMAC-SHA256(secret, KEY_DOMAIN)`.
const KEY_DOMAIN: &[u8] = b"tollgate/rule-seal-key/v1";
/// Starts every sealed message, so a seal can never be confused with another MAC of that key.
const SEAL_DOMAIN: &[u8] = b"tollgate/rule-seal/v1";

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
        let mut mac = self.mac.clone();
        let mut field = |bytes: Option<&[u8]>| match bytes {
            None => mac.update(&[0]),
            Some(bytes) => {
                mac.update(&[1]);
                mac.update(&(bytes.len() as u64).to_be_bytes());
                mac.update(bytes);
            }
        };
        field(Some(SEAL_DOMAIN));
        field(Some(rule.id.as_bytes()));
        field(Some(effect_name(rule).as_bytes()));
        field(Some(rule.scope.as_str().as_bytes()));
        field(Some(rule.capability.as_bytes()));
        field(rule.principal.as_deref().map(str::as_bytes));
        field(rule.session.as_deref().map(str::as_bytes));
        field(rule.args_digest.as_ref().map(|d| &d.as_bytes()[..]));
        field(Some(rule.granted_by.as_bytes()));
        field(Some(&millis(rule.granted_at).to_be_bytes()));
        field(Some(&millis(rule.expires_at).to_be_bytes()));
        field(Some(rule.request.as_bytes()));
        field(rule.reason.as_deref().map(str::as_bytes));
        mac.finalize().into_bytes().into()
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

        let changes: [fn(&mut Rule); 13] = [
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
            |r| r.seal.as_mut().unwrap()[31] ^= 1,
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut forged = sealed.clone();
            change(&mut forged);
            assert!(!key.verifies(&forged), "change {i} kept the seal");
        }
    }
}
