//! Verdicts: a decision made on one replica for callers parked on another.
//!
//! The deciding replica stores the approval with its verdict, the outcome and the rule it files
//! once taken, sealed under the gate's seal key together with the request's own seal (what was
//! asked: the call, its limits, its id); the replica holding the callers carries out only a
//! verdict whose seal verifies for the very request it holds, and a replica whose callers joined
//! only one for the request it checked they are. So someone who can write the shared database
//! cannot approve a request by changing its row, nor carry an old approval over to another call:
//! it takes the secret, as a code does.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::seal::SealKey;
use crate::id::RequestId;
use crate::request::{AccessRequest, Outcome};
use crate::rule::Rule;

/// Starts every verdict's MAC.
const DOMAIN: &[u8] = b"tollgate/verdict/v2";

#[derive(Serialize, Deserialize)]
struct Sealed {
    outcome: String,
    rule: Option<String>,
    seal: String,
}

/// `asked` is the request's seal ([`SealKey::request_seal`]), which covers its id.
fn mac(seals: &SealKey, asked: &[u8; 32], outcome: &str, rule: Option<&str>) -> [u8; 32] {
    let rule = rule.map_or(&b"\0none"[..], str::as_bytes);
    seals.mac(DOMAIN, &[asked, outcome.as_bytes(), rule])
}

/// The sealed verdict of `outcome` on `request`, with the rule it files once taken.
pub(crate) fn seal(
    seals: &SealKey,
    request: &AccessRequest,
    outcome: &Outcome,
    rule: Option<&Rule>,
) -> Arc<str> {
    let outcome = outcome.to_record();
    let rule = rule.map(Rule::to_record);
    let asked = seals.request_seal(request);
    let seal = crate::hex::lower(&mac(seals, &asked, &outcome, rule.as_deref()));
    let sealed = Sealed {
        outcome,
        rule,
        seal,
    };
    serde_json::to_string(&sealed)
        .expect("a verdict serializes")
        .into()
}

/// The outcome and rule of a verdict on request `id`, whose seal is `asked`, if the verdict's
/// seal verifies for it, its rule is sealed too and belongs to `id`; `None` otherwise.
pub(crate) fn open(
    seals: &SealKey,
    id: RequestId,
    asked: &[u8; 32],
    verdict: &str,
) -> Option<(Outcome, Option<Rule>)> {
    let sealed: Sealed = serde_json::from_str(verdict).ok()?;
    let expected = crate::hex::lower(&mac(seals, asked, &sealed.outcome, sealed.rule.as_deref()));
    if !bool::from(expected.as_bytes().ct_eq(sealed.seal.as_bytes())) {
        return None;
    }
    let outcome = Outcome::from_record(&sealed.outcome).ok()?;
    let rule = match &sealed.rule {
        Some(record) => {
            let rule = Rule::from_record(record).ok()?;
            if !(seals.verifies(&rule) && rule.request == id) {
                return None;
            }
            Some(rule)
        }
        None => None,
    };
    Some((outcome, rule))
}
