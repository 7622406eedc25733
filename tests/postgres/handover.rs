//! A request lives while a caller waits on any replica: when the last caller on the replica
//! holding it leaves, an identical call still waiting on another replica keeps it decidable, and
//! the approval runs there; once no caller waits anywhere, it ends cancelled.

use std::time::Duration;

use tollgate::notify::RecordingNotifier;
use tollgate::{Approve, ErrorKind, Gate, Scope, Status};
use tower::{Layer, ServiceExt};

use crate::support::postgres::url;
use crate::support::{self, Tools, code, policy, refund};

/// Reads the store until it says request `id` is `status` (real I/O on another connection:
/// each read paces the next; no sleep).
async fn ended_as(gate: &Gate, id: tollgate::RequestId, status: Status) {
    let mut now = None;
    let reached = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let read = gate.lookup(id).await.expect("stored").1;
            if read == status {
                return;
            }
            now = Some(read);
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(reached.is_ok(), "the store says {now:?}, not {status}");
}

/// Reads the database until replica `instance` holds request `id`.
async fn holder_is(db: &str, id: tollgate::RequestId, instance: &str) {
    let (client, connection) = tokio_postgres::connect(&url(db), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let held = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let row = client
                .query_one(
                    "SELECT owner FROM tollgate_requests WHERE id = $1",
                    &[&&id.as_bytes()[..]],
                )
                .await
                .expect("the request is stored");
            if row.get::<_, &str>(0) == instance {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(held.is_ok(), "not handed to {instance}");
}

fn resolutions(alerts: &[&RecordingNotifier]) -> Vec<String> {
    alerts
        .iter()
        .flat_map(|a| a.resolutions())
        .map(|r| r.outcome().status().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_on_another_replica_keeps_the_request_and_runs_its_approval() {
    for on_a in [true, false] {
        handed_over_and_approved(on_a).await;
    }
}

/// The caller on A leaves, and the approver approves on A (`on_a`) or on B, where the request
/// then is.
async fn handed_over_and_approved(approve_on_a: bool) {
    let name = if approve_on_a {
        "handover_a"
    } else {
        "handover_b"
    };
    let (a, alerts_a, b, alerts_b, db) = crate::pair_on(name, true).await;
    let tools = Tools::default();
    let on_a = a.layer(policy(Scope::Once)).layer(tools.clone());
    let on_b = b.layer(policy(Scope::Once)).layer(tools.clone());
    let first = tokio::spawn(on_a.oneshot(refund(31)));
    let alert = alerts_a.next_alert().await;
    let id = alert.request().id();
    let second = tokio::spawn(on_b.oneshot(refund(31)));
    support::within(Duration::from_secs(10), || b.stats().following == 1).await;
    // The only caller on A, the replica that holds the request, goes away.
    first.abort();
    support::within(Duration::from_secs(10), || a.stats().parked == 0).await;
    // The database has handed it to B (B's own approval must then reach B's callers too).
    holder_is(&db, id, "b").await;
    // The approver approves what they were alerted about: the call waiting on B runs, once.
    let decider = if approve_on_a { &a } else { &b };
    tokio::time::timeout(
        Duration::from_secs(10),
        decider.approve(Approve::new(id, alert.code().reveal()).by("alice")),
    )
    .await
    .expect("the approver hears at once")
    .expect("approved: a caller still waits on B");
    let ran = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the caller on B ran");
    assert!(ran.unwrap().is_ok());
    assert_eq!(tools.total(), 1);
    ended_as(&a, id, Status::Executed).await;
    support::within(Duration::from_secs(10), || {
        !resolutions(&[&alerts_a, &alerts_b]).is_empty()
    })
    .await;
    assert_eq!(
        resolutions(&[&alerts_a, &alerts_b]),
        ["approved"],
        "the notifiers heard one ending, the approval"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_ends_cancelled_once_no_replica_has_a_caller() {
    let (a, alerts_a, b, alerts_b) = crate::pair("handover_gone", true).await;
    let tools = Tools::default();
    for (round, a_leaves_first) in [(0u64, true), (1, false)] {
        let on_a = a.layer(policy(Scope::Once)).layer(tools.clone());
        let on_b = b.layer(policy(Scope::Once)).layer(tools.clone());
        let first = tokio::spawn(on_a.oneshot(refund(40 + round)));
        let alert = alerts_a.next_alert().await;
        let id = alert.request().id();
        let second = tokio::spawn(on_b.oneshot(refund(40 + round)));
        support::within(Duration::from_secs(10), || b.stats().following == 1).await;
        let (leaves, stays) = if a_leaves_first {
            (first, second)
        } else {
            (second, first)
        };
        leaves.abort();
        support::within(Duration::from_secs(10), || {
            a.stats().parked + b.stats().parked == 1
        })
        .await;
        assert_eq!(
            a.lookup(id).await.expect("stored").1,
            Status::Pending,
            "round {round}: one caller still waits"
        );
        stays.abort();
        ended_as(&b, id, Status::Cancelled).await;
        let refused = a
            .approve(Approve::new(id, alert.code().reveal()).by("alice"))
            .await
            .expect_err("nobody waits");
        assert_eq!(refused.kind(), ErrorKind::AccessRequestCancelled);
        support::within(Duration::from_secs(10), || {
            resolutions(&[&alerts_a, &alerts_b]).len() == round as usize + 1
        })
        .await;
    }
    assert_eq!(
        resolutions(&[&alerts_a, &alerts_b]),
        ["cancelled", "cancelled"]
    );
    assert_eq!(tools.total(), 0);
}

/// A request handed to a replica whose own requests live longer still expires when it was
/// filed to: its callers there hear `access_request_expired` then, not at their own deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_handed_over_expires_when_it_was_filed_to() {
    let (a, alerts_a, b, _, db) = crate::pair_with("handover_expiry", |instance, options, gate| {
        let ttl = if instance == "a" { 3 } else { 600 };
        (options, gate.request_ttl(Duration::from_secs(ttl)))
    })
    .await;
    let tools = Tools::default();
    let first = tokio::spawn(
        a.layer(policy(Scope::Once))
            .layer(tools.clone())
            .oneshot(refund(77)),
    );
    let alert = alerts_a.next_alert().await;
    let id = alert.request().id();
    let second = tokio::spawn(
        b.layer(policy(Scope::Once))
            .layer(tools.clone())
            .oneshot(refund(77)),
    );
    support::within(Duration::from_secs(10), || b.stats().following == 1).await;
    first.abort();
    holder_is(&db, id, "b").await;
    let ended = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the caller on B heard the request expire with its own expiry");
    assert_eq!(code(&ended.unwrap().unwrap_err()), "access_request_expired");
    ended_as(&a, id, Status::Expired).await;
    assert_eq!(tools.total(), 0);
}

/// The replica that finds a stopped replica's request abandoned ends its own callers that
/// joined it too (the change it wrote does not come back to it on the feed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_of_the_replica_that_abandons_a_request_hear_so() {
    // A's lease is long: B, whose lease is short, is the replica that sweeps.
    let (a, alerts_a, b, _, db) = crate::pair_with("handover_sweep", |instance, options, gate| {
        let lease = if instance == "a" { 600 } else { 1 };
        (options.lease(Duration::from_secs(lease)), gate)
    })
    .await;
    let tools = Tools::default();
    let first = tokio::spawn(
        a.layer(policy(Scope::Once))
            .layer(tools.clone())
            .oneshot(refund(66)),
    );
    alerts_a.next_alert().await;
    let second = tokio::spawn(
        b.layer(policy(Scope::Once))
            .layer(tools.clone())
            .oneshot(refund(66)),
    );
    support::within(Duration::from_secs(10), || b.stats().following == 1).await;
    // A stops renewing its lease, as a replica that died would.
    let (client, connection) = tokio_postgres::connect(&url(&db), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .execute("DELETE FROM tollgate_instances WHERE id = 'a'", &[])
        .await
        .unwrap();
    for (caller, on) in [(first, "A"), (second, "B")] {
        let ended = tokio::time::timeout(Duration::from_secs(15), caller)
            .await
            .unwrap_or_else(|_| panic!("the caller on {on} still waits"));
        assert_eq!(
            code(&ended.unwrap().unwrap_err()),
            "gate_shut_down",
            "on {on}"
        );
    }
    assert_eq!(tools.total(), 0);
}
