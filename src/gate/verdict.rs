//! Verdicts: a decision made on one replica for callers parked on another.
//!
//! The deciding replica stores the approval with its verdict, the outcome and the rule it files
//! once taken, sealed under the gate's seal key together with the request's own seal (what was
//! asked: the call, its limits, its id); the replica holding the callers carries out only a
//! verdict whose seal verifies for the very request it holds, and a replica whose callers joined
//! only one for the request it checked they are, among whose *tickets* (one per join, made at
//! random by the joining replica, and stored with the request) is the ticket of their own join.
//! So someone who can write the shared database cannot approve a request by changing its row,
//! nor carry an old approval over to another call, nor replay it for a repeat of the same call
//! that joined later: it takes the secret, as a code does.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::seal::SealKey;
use crate::id::RequestId;
use crate::request::{AccessRequest, Outcome};
use crate::rule::Rule;

/// Starts every verdict's MAC.
const DOMAIN: &[u8] = b"tollgate/verdict/v3";

#[derive(Serialize, Deserialize)]
struct Sealed {
    outcome: String,
    rule: Option<String>,
    /// The request's tickets when the verdict was stored.
    #[serde(default)]
    tickets: Vec<String>,
    seal: String,
}

/// `asked` is the request's seal ([`SealKey::request_seal`]), which covers its id.
fn mac(
    seals: &SealKey,
    asked: &[u8; 32],
    outcome: &str,
    rule: Option<&str>,
    tickets: &[impl AsRef<str>],
) -> [u8; 32] {
    let rule = rule.map_or(&b"\0none"[..], str::as_bytes);
    let count = (tickets.len() as u64).to_be_bytes();
    let mut parts: Vec<&[u8]> = vec![asked, outcome.as_bytes(), rule, &count];
    parts.extend(tickets.iter().map(|t| t.as_ref().as_bytes()));
    seals.mac(DOMAIN, &parts)
}

/// The sealed verdict of `outcome` on `request`, with the rule it files once taken, binding the
/// request's `tickets` as they are when it is stored.
pub(crate) fn seal(
    seals: &SealKey,
    request: &AccessRequest,
    outcome: &Outcome,
    rule: Option<&Rule>,
    tickets: &[Arc<str>],
) -> Arc<str> {
    let outcome = outcome.to_record();
    let rule = rule.map(Rule::to_record);
    let asked = seals.request_seal(request);
    let seal = crate::hex::lower(&mac(seals, &asked, &outcome, rule.as_deref(), tickets));
    let sealed = Sealed {
        outcome,
        rule,
        tickets: tickets.iter().map(|t| String::from(&**t)).collect(),
        seal,
    };
    serde_json::to_string(&sealed)
        .expect("a verdict serializes")
        .into()
}

/// How many times a decision is sealed again over the tickets of joins made while it was being
/// stored, before it fails `store_failed`.
pub(crate) const RESEALS: u32 = 8;

/// `verdict`, which this gate sealed on `request`, sealed again over `tickets`.
pub(crate) fn reseal(
    seals: &SealKey,
    request: &AccessRequest,
    verdict: &str,
    tickets: &[Arc<str>],
) -> Option<Arc<str>> {
    let opened = open(seals, request.id, &seals.request_seal(request), verdict)?;
    Some(seal(
        seals,
        request,
        &opened.outcome,
        opened.rule.as_ref(),
        tickets,
    ))
}

/// A verdict that verified: its outcome, rule and tickets.
pub(crate) struct Opened {
    pub(crate) outcome: Outcome,
    pub(crate) rule: Option<Rule>,
    tickets: Vec<String>,
}

impl Opened {
    /// Whether the join whose ticket is `ticket` had been made when the verdict was stored.
    pub(crate) fn binds(&self, ticket: &str) -> bool {
        self.tickets.iter().any(|t| t == ticket)
    }
}

/// A verdict on request `id`, whose seal is `asked`, if the verdict's seal verifies for it, its
/// rule is sealed too and belongs to `id`; `None` otherwise.
pub(crate) fn open(
    seals: &SealKey,
    id: RequestId,
    asked: &[u8; 32],
    verdict: &str,
) -> Option<Opened> {
    let sealed: Sealed = serde_json::from_str(verdict).ok()?;
    let expected = crate::hex::lower(&mac(
        seals,
        asked,
        &sealed.outcome,
        sealed.rule.as_deref(),
        &sealed.tickets,
    ));
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
    Some(Opened {
        outcome,
        rule,
        tickets: sealed.tickets,
    })
}
