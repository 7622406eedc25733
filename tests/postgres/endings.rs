//! Replicas agree on how a request ended: an expiry here and an approval elsewhere, stored the
//! other way round, leave the database saying what the callers and the approver heard; an
//! ending entered on the replica of a caller that joined the request reaches that caller.

use std::time::Duration;

use tollgate::notify::RecordingNotifier;
use tollgate::store::{PostgresOptions, PostgresStore};
use tollgate::{Approve, ErrorKind, Gate, Scope, Status};
use tower::{Layer, ServiceExt};

use crate::support::postgres::{database, url};
use crate::support::{self, Tools, code, policy, refund};

async fn replica(
    db: &str,
    instance: &str,
    listen: bool,
    ttl: Duration,
) -> (Gate, RecordingNotifier) {
    // The first replica learns of nothing another does until long after the test.
    let options = PostgresOptions::new()
        .instance(instance)
        .listen(listen)
        .rescan(if listen {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(600)
        });
    let store = PostgresStore::connect_with(&url(db), options)
        .await
        .expect("connect");
    let alerts = RecordingNotifier::new();
    let gate = support::gate(&alerts)
        .request_ttl(ttl)
        .unlimited_alert_rate()
        .store(store)
        .build()
        .expect("build");
    (gate, alerts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_here_and_an_approval_elsewhere_end_the_request_one_way() {
    let db = database("endings").await;
    let ttl = Duration::from_secs(2);
    let (a, alerts) = replica(&db, "a", false, ttl).await;
    let (b, _) = replica(&db, "b", true, ttl).await;
    let tools = Tools::default();
    let call = tokio::spawn(
        a.layer(policy(Scope::Once))
            .layer(tools.clone())
            .oneshot(refund(70)),
    );
    let alert = alerts.next_alert().await;
    let id = alert.request().id();
    // Approved on B in time; A, which hears nothing of it, expires its caller.
    let approval = b.approve(Approve::new(id, alert.code().reveal()).by("alice"));
    let (approval, ran) = tokio::join!(approval, call);
    assert_eq!(code(&ran.unwrap().unwrap_err()), "access_request_expired");
    assert_eq!(tools.total(), 0);
    assert_eq!(
        approval.expect_err("nothing ran").kind(),
        ErrorKind::AccessRequestExpired,
        "the approver hears what the caller heard"
    );
    let stored = b.lookup(id).await.expect("stored").1;
    assert_eq!(
        stored,
        Status::Expired,
        "the database says what everyone heard"
    );
    support::within(Duration::from_secs(5), || !alerts.resolutions().is_empty()).await;
    assert_eq!(alerts.resolutions().len(), 1);
}

/// A denial, or the last wrong code, entered on the replica where a joined caller waits ends
/// that caller too, though the feed brings a replica no word of its own writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_on_the_replica_of_a_joined_caller_reaches_it() {
    let (a, alerts, b, _) = crate::pair("joined_end", true).await;
    let tools = Tools::default();
    for (round, wrong_codes) in [(0u64, false), (1, true)] {
        let on_a = a.layer(policy(Scope::Once)).layer(tools.clone());
        let on_b = b.layer(policy(Scope::Once)).layer(tools.clone());
        let first = tokio::spawn(on_a.oneshot(refund(80 + round)));
        let alert = alerts.next_alert().await;
        let id = alert.request().id();
        let second = tokio::spawn(on_b.oneshot(refund(80 + round)));
        support::within(Duration::from_secs(10), || b.stats().following == 1).await;
        let expected = if wrong_codes {
            for i in 0..5 {
                let _ = b
                    .approve(Approve::new(id, format!("wrong-{i}")).by("alice"))
                    .await;
            }
            "too_many_attempts"
        } else {
            b.deny(tollgate::Deny::new(id, alert.code().reveal()).by("alice"))
                .await
                .expect("denied on B");
            "access_request_denied"
        };
        for (caller, on) in [(first, "A"), (second, "B")] {
            let ended = tokio::time::timeout(Duration::from_secs(10), caller)
                .await
                .unwrap_or_else(|_| panic!("the caller on {on} still waits"));
            assert_eq!(code(&ended.unwrap().unwrap_err()), expected, "on {on}");
        }
    }
    assert_eq!(tools.total(), 0);
}
