//! The checks every [`Store`] implementation must pass (feature `test-util`).
//!
//! Long by design: one self-contained check per promise of the `Store` trait.
//!
//! Call [`run`] from a test with two functions: one that makes an empty store, and one that
//! opens the same data again, as a process restarting on it would. Each check panics with a
//! message naming the promise of the [`Store`] contract that was broken.
//!
#![cfg_attr(feature = "sqlite", doc = "```")]
#![cfg_attr(not(feature = "sqlite"), doc = "```text")]
//! use tollgate::store::{SqliteStore, conformance};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let dir = std::env::temp_dir().join(format!("tollgate-conformance-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let counter = std::sync::atomic::AtomicUsize::new(0);
//! conformance::run(
//!     || {
//!         let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
//!         SqliteStore::open(dir.join(format!("{n}.db"))).unwrap()
//!     },
//!     |store| SqliteStore::open(store.path()).unwrap(),
//! )
//! .await;
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # }
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::{Revocation, ScopeKey, Store, Transition, Write, is_finished};

use crate::args::{ArgsDigest, canonical_json};
use crate::audit::{AuditEntry, AuditEvent, AuditFilter};
use crate::gate::{Gate, SealKey};
use crate::id::{RequestId, RuleId};
use crate::request::{AccessRequest, Outcome, Status};
use crate::rule::{Rule, RuleEffect};
use crate::scope::Scope;
use crate::time::{Millis, to_millis};

/// Runs every check. `fresh` makes an empty store; `reopen` opens the same data as `store` in a
/// new handle, as a restarted process would (for an in-memory store, a clone).
pub async fn run<S, F, R>(fresh: F, reopen: R)
where
    S: Store + Clone,
    F: Fn() -> S,
    R: Fn(&S) -> S,
{
    records_round_trip(fresh()).await;
    single_winner(&fresh(), &reopen).await;
    nothing_half_written(fresh()).await;
    batched_writes(fresh()).await;
    rules_by_every_scope(fresh()).await;
    revocation(fresh()).await;
    ttl_purge(fresh()).await;
    audit_order_and_filters(fresh()).await;
    restart(&fresh(), &reopen).await;
    sealed_rules(&fresh(), &reopen).await;
}

fn now() -> SystemTime {
    to_millis(SystemTime::now())
}

/// A pending request of `principal` for `capability`, with a session, a reason and two approvers,
/// expiring in five minutes.
pub fn request(principal: &str, capability: &str, args: serde_json::Value) -> AccessRequest {
    let args = canonical_json(&args);
    let created_at = now();
    let id = RequestId::random();
    AccessRequest {
        id,
        capability: capability.into(),
        args_digest: ArgsDigest::of_canonical(&args),
        args: args.into_boxed_str(),
        principal: principal.into(),
        session: Some("session-1".into()),
        reason: Some("ticket #4421".into()),
        reasoning: "refunds move money".into(),
        max_scope: Scope::Global,
        max_rule_ttl_ms: 3_600_000,
        approvers: Some(Arc::new(vec!["alice".into(), "bob".into()].into())),
        key_fields: None,
        editable: false,
        quorum: 1,
        extended_secs: 0,
        created_at: Millis::of(created_at),
        expires_at: Millis::of(created_at) + Duration::from_secs(300),
        approval_url: Some(format!("https://approvals.example/{id}").into()),
    }
}

/// A rule of `scope` made from `request`'s approval, lasting `ttl`.
pub fn rule(request: &AccessRequest, effect: RuleEffect, scope: Scope, ttl: Duration) -> Rule {
    let granted_at = now();
    Rule {
        approvals: 1,
        seal: None,
        id: RuleId::random(),
        effect,
        scope,
        capability: request.capability.clone(),
        principal: (scope != Scope::Global).then(|| request.principal.clone()),
        session: (scope == Scope::Session)
            .then(|| request.session.clone())
            .flatten(),
        args_digest: (scope == Scope::Value).then_some(request.args_digest),
        granted_by: "alice".into(),
        granted_at,
        expires_at: granted_at + ttl,
        request: request.id,
        reason: (effect == RuleEffect::Deny).then(|| "not this one".into()),
    }
}

fn entry(event: AuditEvent, request: &AccessRequest) -> AuditEntry {
    AuditEntry::for_request(event, now(), request)
}

fn approval(request: &AccessRequest, approver: &str) -> Transition {
    let mut approved = entry(AuditEvent::Approved, request);
    approved.approver = Some(approver.into());
    approved.scope = Some(Scope::Once);
    Transition {
        id: request.id,
        from: Status::Pending,
        to: Status::Approved,
        outcome: Some(Outcome::Approved {
            approver: approver.into(),
            scope: Scope::Once,
            until: None,
        }),
        rule: None,
        audit: vec![approved],
        sealed: None,
    }
}

fn denial(request: &AccessRequest, approver: &str, remember: Option<Rule>) -> Transition {
    let mut denied = entry(AuditEvent::Denied, request);
    denied.approver = Some(approver.into());
    let mut audit = vec![denied];
    if let Some(rule) = &remember {
        audit.push(AuditEntry::for_rule(AuditEvent::RuleGranted, now(), rule));
    }
    Transition {
        id: request.id,
        from: Status::Pending,
        to: Status::Denied,
        outcome: Some(Outcome::Denied {
            approver: approver.into(),
            reason: Some("no".into()),
        }),
        rule: remember.map(Box::new),
        audit,
        sealed: None,
    }
}

/// The transition of an approved request a caller takes, filing `rule`.
fn take(request: &AccessRequest, rule: Option<Rule>) -> Transition {
    let mut audit = vec![entry(AuditEvent::Executing, request)];
    if let Some(rule) = &rule {
        audit.push(AuditEntry::for_rule(AuditEvent::RuleGranted, now(), rule));
    }
    Transition {
        id: request.id,
        from: Status::Approved,
        to: Status::Executing,
        outcome: None,
        rule: rule.map(Box::new),
        audit,
        sealed: None,
    }
}

/// Applies a transition that must apply.
async fn applies(store: &impl Store, change: Transition) {
    let applied = store.transition(&change).await.expect("a transition runs");
    assert!(
        applied,
        "{} moves from {} to {}",
        change.id, change.from, change.to
    );
}

async fn insert(store: &impl Store, request: &AccessRequest) {
    store
        .insert(request, &[entry(AuditEvent::Requested, request)])
        .await
        .expect("insert a new request");
}

async fn status(store: &impl Store, id: RequestId) -> Status {
    store
        .request(id)
        .await
        .expect("read a request")
        .expect("an inserted request is found")
        .status
}

async fn trail(store: &impl Store, id: RequestId) -> Vec<AuditEvent> {
    let entries = store
        .audit(&AuditFilter::new().request(id))
        .await
        .expect("read the audit trail");
    entries.into_iter().map(|e| e.event).collect()
}

/// A request, its outcome and its rules read back equal to what was written, to the
/// millisecond, so that its verification code still verifies.
pub async fn records_round_trip(store: impl Store) {
    let request = request(
        "agent-7",
        "payments.refund",
        json!({"charge": "ch_1", "amount": 1e3}),
    );
    insert(&store, &request).await;
    let stored = store.request(request.id).await.unwrap().unwrap();
    assert_eq!(
        stored.request.to_record(),
        request.to_record(),
        "a request reads back as written"
    );
    assert_eq!(stored.status, Status::Pending, "a new request is pending");
    assert_eq!(stored.outcome, None, "a new request has no outcome");
    let mut keyed =
        super::conformance::request("agent-7", "sms.send", json!({"to": "+1", "body": "hi"}));
    keyed.key_fields = Some(crate::args::KeyFields::new(["/to"]).expect("a pointer"));
    keyed.editable = true;
    keyed.quorum = 2;
    insert(&store, &keyed).await;
    let stored = store.request(keyed.id).await.unwrap().unwrap();
    assert_eq!(
        stored.request.to_record(),
        keyed.to_record(),
        "key fields, editability and the quorum read back"
    );
    assert!(stored.request.editable());
    assert_eq!(stored.request.quorum(), 2);
    assert_eq!(stored.request.value_digest(), keyed.value_digest());
    assert!(
        store.request(RequestId::random()).await.unwrap().is_none(),
        "unknown ids are None"
    );

    let ttl = Duration::from_secs(600);
    let value = rule(&request, RuleEffect::Allow, Scope::Value, ttl);
    applies(&store, approval(&request, "alice")).await;
    applies(&store, take(&request, Some(value.clone()))).await;
    let stored = store.request(request.id).await.unwrap().unwrap();
    assert_eq!(stored.status, Status::Executing);
    assert_eq!(
        stored.outcome,
        Some(Outcome::Approved {
            approver: "alice".into(),
            scope: Scope::Once,
            until: None
        }),
        "the outcome of the decision stays once later transitions carry none"
    );
    let rules = store.rules(now()).await.unwrap();
    assert_eq!(rules, vec![value], "a rule reads back as written");
}

/// Of concurrent decisions on one pending request, from two handles on the same data, exactly
/// one wins, and only the winner's audit entry and rule are written.
pub async fn single_winner<S: Store + Clone>(store: &S, reopen: &impl Fn(&S) -> S) {
    let other = reopen(store);
    for round in 0..20 {
        let request = request("agent-7", "payments.refund", json!({"round": round}));
        insert(store, &request).await;
        let mut racers = Vec::new();
        for i in 0..8 {
            let handle = if i % 2 == 0 {
                store.clone()
            } else {
                other.clone()
            };
            let approver = format!("approver-{i}");
            let change = if i % 3 == 0 {
                let remember = rule(
                    &request,
                    RuleEffect::Deny,
                    Scope::Capability,
                    Duration::from_secs(60),
                );
                denial(&request, &approver, Some(remember))
            } else {
                approval(&request, &approver)
            };
            racers.push(tokio::spawn(async move {
                let won = handle.transition(&change).await.expect("a transition runs");
                (won, change)
            }));
        }
        let mut winners = Vec::new();
        for racer in racers {
            let (won, change) = racer.await.expect("no panic");
            if won {
                winners.push(change);
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "exactly one of 8 concurrent decisions wins"
        );
        let winner = &winners[0];
        let stored = store.request(request.id).await.unwrap().unwrap();
        assert_eq!(stored.status, winner.to, "the winner's status stands");
        assert_eq!(
            stored.outcome.as_ref(),
            winner.outcome.as_ref(),
            "the winner's outcome stands"
        );
        let decisions = trail(store, request.id)
            .await
            .into_iter()
            .filter(|e| matches!(e, AuditEvent::Approved | AuditEvent::Denied))
            .count();
        assert_eq!(
            decisions, 1,
            "only the winner's decision is in the audit trail"
        );
        let rules = store.rules(now()).await.unwrap();
        let expected = usize::from(winner.rule.is_some());
        let mine = rules.iter().filter(|r| r.request == request.id).count();
        assert_eq!(mine, expected, "only the winner's rule is filed");
        store.revoke(&Revocation::All, "test", now()).await.unwrap();
    }
}

/// A transition whose `from` does not match changes nothing: no status, no rule, no entry.
pub async fn nothing_half_written(store: impl Store) {
    let request = request("agent-7", "payments.refund", json!({}));
    insert(&store, &request).await;
    let before = store.audit(&AuditFilter::new()).await.unwrap().len();
    let ttl = Duration::from_secs(60);
    let stale = take(
        &request,
        Some(rule(&request, RuleEffect::Allow, Scope::Capability, ttl)),
    );
    assert!(
        !store.transition(&stale).await.unwrap(),
        "a pending request cannot be taken"
    );
    assert_eq!(status(&store, request.id).await, Status::Pending);
    assert!(
        store.rules(now()).await.unwrap().is_empty(),
        "a failed transition files no rule"
    );
    let after = store.audit(&AuditFilter::new()).await.unwrap().len();
    assert_eq!(before, after, "a failed transition appends nothing");

    let mut unknown = approval(&request, "alice");
    unknown.id = RequestId::random();
    assert!(
        !store.transition(&unknown).await.unwrap(),
        "an unknown request does not move"
    );
    assert!(
        store
            .insert(&request, &[entry(AuditEvent::Requested, &request)])
            .await
            .is_err(),
        "inserting an id twice is an error"
    );
    let after = store.audit(&AuditFilter::new()).await.unwrap().len();
    assert_eq!(before, after, "a failed insert appends nothing");
}

/// Writes in one batch apply in order, each on its own: one that does not apply or fails
/// changes nothing, and the others still apply.
pub async fn batched_writes(store: impl Store) {
    writes_in_order(store, Applied::Together).await;
}

/// [`Store::write_now`], for a store that offers it (one in memory): every write is applied
/// at once, with the result [`batched_writes`] expects of a batch.
pub async fn writes_now(store: impl Store) {
    writes_in_order(store, Applied::Now).await;
}

/// How [`writes_in_order`] hands the store its writes.
enum Applied {
    Together,
    Now,
}

async fn writes_in_order(store: impl Store, applied: Applied) {
    let first = Arc::new(request("agent-7", "payments.refund", json!({"n": 1})));
    let unknown = request("agent-7", "payments.refund", json!({"n": 2}));
    let ttl = Duration::from_secs(600);
    let value = rule(&first, RuleEffect::Allow, Scope::Value, ttl);
    let requested = [entry(AuditEvent::Requested, &first)];
    let (approve, stale, taken) = (
        approval(&first, "alice"),
        take(&unknown, None),
        take(&first, Some(value.clone())),
    );
    let note = [AuditEntry::for_request(AuditEvent::Notified, now(), &first)];
    let writes = [
        Write::Insert(&first, &requested),
        Write::Transition(&approve),
        Write::Transition(&stale),
        Write::Insert(&first, &requested),
        Write::Append(&note),
        Write::Transition(&taken),
    ];
    let results = match applied {
        Applied::Together => store.write_batch(&writes).await,
        Applied::Now => writes
            .iter()
            .map(|write| {
                store
                    .write_now(write)
                    .expect("this store applies writes at once")
            })
            .collect(),
    };
    let applied: Vec<_> = results.iter().map(|r| r.as_ref().ok().copied()).collect();
    assert_eq!(
        applied,
        [
            Some(true),
            Some(true),
            Some(false),
            None,
            Some(true),
            Some(true)
        ],
        "each write of a batch has its own result, in order: {results:?}"
    );
    assert_eq!(status(&store, first.id).await, Status::Executing);
    assert_eq!(
        store.rules(now()).await.unwrap(),
        vec![value],
        "a batched transition files its rule"
    );
    let events = trail(&store, first.id).await;
    assert_eq!(
        events[..4],
        [
            AuditEvent::Requested,
            AuditEvent::Approved,
            AuditEvent::Notified,
            AuditEvent::Executing
        ],
        "a batch's entries are written in its order, the failed insert's not at all"
    );
    assert!(
        store.request(unknown.id).await.unwrap().is_none(),
        "a transition of an unknown request writes nothing"
    );
}

/// Rules of every scope are found by the keys of the calls they cover, and only those; a rule
/// replaces the rule in its slot; expired rules are never found.
pub async fn rules_by_every_scope(store: impl Store) {
    let base = request("agent-7", "payments.refund", json!({"charge": "ch_1"}));
    let hour = Duration::from_secs(3600);
    let mut filed = Vec::new();
    for (i, scope) in [
        Scope::Value,
        Scope::Session,
        Scope::Capability,
        Scope::Global,
    ]
    .into_iter()
    .enumerate()
    {
        let mut request = base.clone();
        request.id = RequestId::random();
        request.capability = format!("cap.{i}").into();
        insert(&store, &request).await;
        let rule = rule(&request, RuleEffect::Allow, scope, hour);
        applies(&store, approval(&request, "alice")).await;
        applies(&store, take(&request, Some(rule.clone()))).await;
        filed.push((request, rule));
    }
    let digest = base.args_digest;
    let other = ArgsDigest::of(&json!({"charge": "ch_2"}));
    for (request, rule) in &filed {
        let cap = &*request.capability;
        let find = |principal: &str, session: Option<&str>, digest: ArgsDigest| {
            let keys = ScopeKey::covering(cap, principal, session, digest);
            let store = &store;
            async move { store.covering(&keys, now()).await.unwrap() }
        };
        let exact = find("agent-7", Some("session-1"), digest).await;
        assert_eq!(
            exact,
            vec![rule.clone()],
            "the {} rule covers its own call",
            rule.scope
        );
        let expect = |covers: bool| if covers { vec![rule.clone()] } else { vec![] };
        assert_eq!(
            find("agent-7", Some("session-1"), other).await,
            expect(rule.scope != Scope::Value),
            "{} rule, other arguments",
            rule.scope
        );
        assert_eq!(
            find("agent-7", Some("session-2"), digest).await,
            expect(rule.scope != Scope::Session),
            "{} rule, other session",
            rule.scope
        );
        assert_eq!(
            find("agent-8", Some("session-1"), digest).await,
            expect(rule.scope == Scope::Global),
            "{} rule, other principal",
            rule.scope
        );
        let elsewhere = ScopeKey::covering("cap.other", "agent-7", Some("session-1"), digest);
        assert!(store.covering(&elsewhere, now()).await.unwrap().is_empty());
    }

    // A later decision replaces the rule in the same slot.
    let (request, old) = &filed[2];
    let mut again = request.clone();
    again.id = RequestId::random();
    insert(&store, &again).await;
    let newer = rule(&again, RuleEffect::Deny, Scope::Capability, hour);
    applies(&store, denial(&again, "bob", Some(newer.clone()))).await;
    let keys = ScopeKey::covering(&request.capability, "agent-7", None, digest);
    assert_eq!(
        store.covering(&keys, now()).await.unwrap(),
        vec![newer.clone()]
    );
    let live = store.rules(now()).await.unwrap();
    assert_eq!(live.len(), 4, "the replaced rule is gone");
    assert!(!live.contains(old), "the replaced rule is gone");

    // Expired rules are not found, even before a purge.
    let later = now() + 2 * hour;
    assert!(store.covering(&keys, later).await.unwrap().is_empty());
    assert!(store.rules(later).await.unwrap().is_empty());
}

/// Revocation by id, by capability and of everything deletes exactly those rules and records
/// who revoked each.
pub async fn revocation(store: impl Store) {
    let hour = Duration::from_secs(3600);
    let mut rules = Vec::new();
    for capability in ["a.one", "a.one", "b.two"] {
        let mut request = request("agent-7", capability, json!({}));
        request.principal = format!("agent-{}", rules.len()).into();
        insert(&store, &request).await;
        let rule = rule(&request, RuleEffect::Deny, Scope::Capability, hour);
        applies(&store, denial(&request, "alice", Some(rule.clone()))).await;
        rules.push(rule);
    }
    let at = now();
    let one = store
        .revoke(&Revocation::Rule(rules[0].id), "bob", at)
        .await
        .unwrap();
    assert_eq!(one, vec![rules[0].clone()]);
    let none = store
        .revoke(&Revocation::Rule(rules[0].id), "bob", at)
        .await
        .unwrap();
    assert!(none.is_empty(), "a revoked rule is gone");
    let cap = Revocation::Capability("a.one".into());
    assert_eq!(
        store.revoke(&cap, "bob", at).await.unwrap(),
        vec![rules[1].clone()]
    );
    assert_eq!(
        store.revoke(&Revocation::All, "carol", at).await.unwrap(),
        vec![rules[2].clone()]
    );
    assert!(store.rules(now()).await.unwrap().is_empty());
    let revoked = store
        .audit(&AuditFilter::new().event(AuditEvent::RuleRevoked))
        .await
        .unwrap();
    let who: Vec<_> = revoked
        .iter()
        .map(|e| (e.rule, e.approver.as_deref()))
        .collect();
    assert_eq!(
        who,
        vec![
            (Some(rules[0].id), Some("bob")),
            (Some(rules[1].id), Some("bob")),
            (Some(rules[2].id), Some("carol")),
        ],
        "each revocation is in the trail with who revoked"
    );
}

/// `purge` deletes expired rules and finished requests past their expiry, and nothing else.
pub async fn ttl_purge(store: impl Store) {
    let mut short = request("agent-7", "payments.refund", json!({"n": 1}));
    short.expires_at = short.created_at + Duration::from_secs(1);
    let mut long = request("agent-7", "payments.refund", json!({"n": 2}));
    long.expires_at = long.created_at + Duration::from_secs(3600);
    let mut unfinished = request("agent-7", "payments.refund", json!({"n": 3}));
    unfinished.expires_at = unfinished.created_at + Duration::from_secs(1);
    for request in [&short, &long, &unfinished] {
        insert(&store, request).await;
    }
    let brief = rule(
        &short,
        RuleEffect::Deny,
        Scope::Value,
        Duration::from_secs(1),
    );
    let lasting = rule(
        &long,
        RuleEffect::Deny,
        Scope::Value,
        Duration::from_secs(3600),
    );
    applies(&store, denial(&short, "alice", Some(brief))).await;
    applies(&store, denial(&long, "alice", Some(lasting.clone()))).await;

    let later = now() + Duration::from_secs(60);
    let purged = store.purge(later).await.unwrap();
    assert_eq!(purged.rules, 1, "the expired rule is purged");
    assert_eq!(
        purged.requests, 1,
        "the finished, expired request is purged"
    );
    assert!(store.request(short.id).await.unwrap().is_none());
    assert!(
        store.request(long.id).await.unwrap().is_some(),
        "an unexpired request stays"
    );
    assert!(
        store.request(unfinished.id).await.unwrap().is_some(),
        "an unfinished request stays until recovery ends it"
    );
    assert_eq!(store.rules(now()).await.unwrap(), vec![lasting]);
    assert!(
        !trail(&store, short.id).await.is_empty(),
        "the audit trail outlives purged requests"
    );
    assert_eq!(
        store.purge(later).await.unwrap().rules,
        0,
        "purging twice deletes nothing more"
    );
}

/// The audit trail comes back in the order it was written, numbered upwards, and every filter
/// selects what it says.
pub async fn audit_order_and_filters(store: impl Store) {
    let a = request("agent-a", "fs.write", json!({"path": "/tmp/a"}));
    let b = request("agent-b", "payments.refund", json!({"charge": "ch_1"}));
    insert(&store, &a).await;
    insert(&store, &b).await;
    let mut rejected = entry(AuditEvent::CodeRejected, &a);
    rejected.approver = Some("mallory".into());
    store.append(&[rejected]).await.unwrap();
    applies(&store, approval(&a, "alice")).await;
    applies(&store, denial(&b, "bob", None)).await;
    applies(&store, take(&a, None)).await;

    let all = store.audit(&AuditFilter::new()).await.unwrap();
    let events: Vec<_> = all.iter().map(|e| (e.event, e.request)).collect();
    use AuditEvent::*;
    assert_eq!(
        events,
        vec![
            (Requested, Some(a.id)),
            (Requested, Some(b.id)),
            (CodeRejected, Some(a.id)),
            (Approved, Some(a.id)),
            (Denied, Some(b.id)),
            (Executing, Some(a.id)),
        ],
        "entries come back in the order they were written"
    );
    assert!(
        all.windows(2).all(|w| w[0].seq < w[1].seq),
        "sequence numbers go up"
    );
    assert!(all[0].seq >= 1, "sequence numbers start at 1");
    assert_eq!(
        all[3].approver.as_deref(),
        Some("alice"),
        "the approver is recorded"
    );
    assert_eq!(
        all[0].args_digest,
        Some(a.args_digest),
        "the args digest is recorded"
    );

    let select = |filter: AuditFilter| {
        let store = &store;
        async move {
            let found = store.audit(&filter).await.unwrap();
            found.into_iter().map(|e| e.seq).collect::<Vec<_>>()
        }
    };
    let seqs = |pick: &dyn Fn(&AuditEntry) -> bool| {
        all.iter()
            .filter(|e| pick(e))
            .map(|e| e.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        select(AuditFilter::new().principal("agent-b")).await,
        seqs(&|e| e.request == Some(b.id))
    );
    assert_eq!(
        select(AuditFilter::new().capability("fs.write")).await,
        seqs(&|e| e.request == Some(a.id))
    );
    assert_eq!(
        select(AuditFilter::new().event(Denied)).await,
        seqs(&|e| e.event == Denied)
    );
    assert_eq!(
        select(AuditFilter::new().request(a.id).event(Executing)).await,
        vec![all[5].seq]
    );
    assert_eq!(
        select(AuditFilter::new().after(all[3].seq)).await,
        vec![all[4].seq, all[5].seq]
    );
    assert_eq!(
        select(AuditFilter::new().limit(2)).await,
        vec![all[0].seq, all[1].seq]
    );
    let future = now() + Duration::from_secs(60);
    assert!(select(AuditFilter::new().since(future)).await.is_empty());
    assert_eq!(
        select(AuditFilter::new().until(future)).await.len(),
        all.len()
    );
    let past = now() - Duration::from_secs(60);
    assert!(select(AuditFilter::new().until(past)).await.is_empty());
}

/// After a restart, unfinished requests are abandoned (once), finished ones keep their status,
/// and live rules come back.
pub async fn restart<S: Store + Clone>(store: &S, reopen: &impl Fn(&S) -> S) {
    let hour = Duration::from_secs(3600);
    let pending = request("agent-7", "payments.refund", json!({"n": "pending"}));
    let approved = request("agent-7", "payments.refund", json!({"n": "approved"}));
    let executing = request("agent-7", "payments.refund", json!({"n": "executing"}));
    let denied = request("agent-7", "payments.refund", json!({"n": "denied"}));
    for request in [&pending, &approved, &executing, &denied] {
        insert(store, request).await;
    }
    let allow = rule(&executing, RuleEffect::Allow, Scope::Value, hour);
    let deny = rule(&denied, RuleEffect::Deny, Scope::Capability, hour);
    applies(store, approval(&approved, "alice")).await;
    applies(store, approval(&executing, "alice")).await;
    applies(store, take(&executing, Some(allow.clone()))).await;
    applies(store, denial(&denied, "bob", Some(deny.clone()))).await;

    let restarted = reopen(store);
    let recovered = restarted.recover(now()).expect("recover");
    let mut abandoned: Vec<_> = recovered.abandoned.iter().map(|r| r.id).collect();
    let mut expected = vec![pending.id, approved.id, executing.id];
    abandoned.sort();
    expected.sort();
    assert_eq!(abandoned, expected, "every unfinished request is abandoned");
    let mut rules = recovered.rules.clone();
    rules.sort_by_key(|r| r.id);
    let mut want = vec![allow, deny];
    want.sort_by_key(|r| r.id);
    assert_eq!(rules, want, "live rules and remembered denials come back");
    for id in expected {
        let stored = restarted.request(id).await.unwrap().unwrap();
        assert_eq!(stored.status, Status::Abandoned);
        assert!(is_finished(stored.status));
        assert_eq!(
            trail(&restarted, id).await.last(),
            Some(&AuditEvent::Abandoned)
        );
    }
    let kept = restarted.request(executing.id).await.unwrap().unwrap();
    assert!(
        matches!(kept.outcome, Some(Outcome::Approved { .. })),
        "an abandoned request keeps the decision it had"
    );
    let undecided = restarted.request(pending.id).await.unwrap().unwrap();
    assert_eq!(
        undecided.outcome,
        Some(Outcome::Abandoned),
        "an undecided one is abandoned"
    );
    assert_eq!(
        status(&restarted, denied.id).await,
        Status::Denied,
        "finished requests stay"
    );
    let pending_again = restarted
        .transition(&approval(&pending, "alice"))
        .await
        .unwrap();
    assert!(!pending_again, "an abandoned request cannot be approved");
    let twice = reopen(store).recover(now()).expect("recover again");
    assert!(twice.abandoned.is_empty(), "a request is abandoned once");
}

/// Sealed rules: a gate started on the store honours only the rules its own secret sealed and
/// nobody changed since; every other rule the store returns (one written into it directly, one
/// widened or retargeted there, one sealed with another secret) is not honoured and is written
/// to the audit trail as `rule_rejected`. A gate with another secret honours none.
///
/// The store's part is to keep a rule's record exactly, seal included.
pub async fn sealed_rules<S: Store + Clone>(store: &S, reopen: &impl Fn(&S) -> S) {
    const SECRET: &str = "the conformance suite's secret, sixteen bytes and more";
    let seals = SealKey::new(SECRET.as_bytes());
    let hour = Duration::from_secs(3600);
    let file = |capability: &'static str, make: Box<dyn FnOnce(&AccessRequest) -> Rule>| {
        let request = request("agent-7", capability, json!({"charge": "ch_1"}));
        let rule = make(&request);
        async move {
            insert(store, &request).await;
            applies(store, approval(&request, "alice")).await;
            applies(store, take(&request, Some(rule.clone()))).await;
            rule
        }
    };
    let genuine = file(
        "sealed.value",
        Box::new(|request| {
            let mut rule = rule(request, RuleEffect::Allow, Scope::Value, hour);
            seals.seal(&mut rule);
            rule
        }),
    )
    .await;
    let forged = file(
        "forged.global",
        Box::new(|request| rule(request, RuleEffect::Allow, Scope::Global, hour)),
    )
    .await;
    let widened = file(
        "widened.value",
        Box::new(|request| {
            let mut rule = rule(request, RuleEffect::Allow, Scope::Capability, hour);
            seals.seal(&mut rule);
            rule.principal = Some("agent-8".into());
            rule.expires_at += hour * 24;
            rule
        }),
    )
    .await;
    let foreign = file(
        "foreign.deny",
        Box::new(|request| {
            let mut rule = rule(request, RuleEffect::Deny, Scope::Capability, hour);
            SealKey::new(b"another secret of sixteen bytes and more").seal(&mut rule);
            rule
        }),
    )
    .await;

    let gate = Gate::builder()
        .secret(SECRET)
        .park_when_unnotified()
        .store(reopen(store))
        .build()
        .expect("a gate starts on the store");
    let honoured: Vec<RuleId> = gate.rules().iter().map(Rule::id).collect();
    assert_eq!(
        honoured,
        vec![genuine.id],
        "Sealed rules: only the rule this secret sealed is honoured"
    );
    let rejected = gate
        .audit(AuditFilter::new().event(AuditEvent::RuleRejected))
        .await
        .expect("read the audit trail");
    let mut rejected: Vec<RuleId> = rejected.iter().filter_map(|e| e.rule).collect();
    let mut expected = vec![forged.id, widened.id, foreign.id];
    rejected.sort_by_key(|id| id.to_string());
    expected.sort_by_key(|id| id.to_string());
    assert_eq!(
        rejected, expected,
        "Sealed rules: each rule not honoured is audited as rule_rejected"
    );

    let other = Gate::builder()
        .secret("a secret the rules were not sealed with")
        .park_when_unnotified()
        .store(reopen(store))
        .build()
        .expect("a gate starts on the store");
    assert!(
        other.rules().is_empty(),
        "Sealed rules: a gate with another secret honours none"
    );
}
