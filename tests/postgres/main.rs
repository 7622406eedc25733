//! `PostgresStore` on a real PostgreSQL server: the conformance suite, and replicas of a gate
//! sharing one database.

mod attempts;
mod endings;
mod handover;
#[path = "../support/mod.rs"]
mod support;
mod writer;

use std::time::Duration;

use tollgate::gate::GateBuilder;
use tollgate::notify::RecordingNotifier;
use tollgate::store::{PostgresOptions, PostgresStore, Store, conformance};
use tollgate::{Approve, Deny, ErrorKind, Gate, Scope, Status};
use tower::{Layer, ServiceExt};

use support::postgres::{database, url};
use support::{Tools, code, policy, refund};

fn block<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

fn options(instance: &str) -> PostgresOptions {
    PostgresOptions::new()
        .instance(instance)
        .rescan(Duration::from_millis(100))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms() {
    // Each store is an instance named after its database, so reopening finds both again.
    let open =
        |db: &str| block(PostgresStore::connect_with(&url(db), options(db))).expect("connect");
    conformance::run(
        || open(&block(database("conformance"))),
        |store| open(store.instance()),
    )
    .await;
}

/// Two gates on one database, as two replicas in one process: for the decisions' logic. The
/// replicas as separate processes are tested in `replicas`.
async fn pair(name: &str, listen: bool) -> (Gate, RecordingNotifier, Gate, RecordingNotifier) {
    let (a, alerts_a, b, alerts_b, _) = pair_on(name, listen).await;
    (a, alerts_a, b, alerts_b)
}

/// [`pair`], and the name of their database.
async fn pair_on(
    name: &str,
    listen: bool,
) -> (Gate, RecordingNotifier, Gate, RecordingNotifier, String) {
    pair_with(name, |_, options, gate| (options.listen(listen), gate)).await
}

/// Two gates on one database, `a` and `b`, each as `configure` sets it up from the test
/// defaults (given the instance's name), and the name of their database.
async fn pair_with(
    name: &str,
    configure: impl Fn(&str, PostgresOptions, GateBuilder) -> (PostgresOptions, GateBuilder),
) -> (Gate, RecordingNotifier, Gate, RecordingNotifier, String) {
    let db = database(name).await;
    let mut gates = Vec::new();
    for instance in ["a", "b"] {
        let alerts = RecordingNotifier::new();
        let defaults = support::gate(&alerts).unlimited_alert_rate();
        let (options, gate) = configure(instance, options(instance), defaults);
        let store = PostgresStore::connect_with(&url(&db), options)
            .await
            .expect("connect");
        let gate = gate.store(store).build().expect("build");
        gates.push((gate, alerts));
    }
    let (b, a) = (gates.pop().unwrap(), gates.pop().unwrap());
    (a.0, a.1, b.0, b.1, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_parked_on_one_replica_is_approved_on_another() {
    for listen in [true, false] {
        let (a, alerts, b, _) = pair("approve_elsewhere", listen).await;
        let tools = Tools::default();
        let svc = a.layer(policy(Scope::Capability)).layer(tools.clone());
        let call = tokio::spawn(svc.oneshot(refund(40)));
        let alert = alerts.next_alert().await;
        let id = alert.request().id();
        let approval = b
            .approve(
                Approve::new(id, alert.code().reveal())
                    .scope(Scope::Capability)
                    .by("alice"),
            )
            .await
            .expect("approved on the other replica");
        let rule = approval.rule().expect("a capability rule").clone();
        assert!(
            call.await.unwrap().is_ok(),
            "the caller on the first replica ran"
        );
        assert_eq!(tools.total(), 1);
        assert_eq!(a.status(id).unwrap(), Status::Executed);
        // The rule reaches both replicas: B filed... A filed it with the take; B from the feed.
        assert!(a.rules().iter().any(|r| r.id() == rule.id()));
        assert!(
            b.rules().iter().any(|r| r.id() == rule.id()),
            "listen: {listen}"
        );
        // A call on B now passes by the rule, without asking.
        let on_b = b.layer(policy(Scope::Capability)).layer(tools.clone());
        on_b.oneshot(refund(41))
            .await
            .expect("allowed by the rule on B");
        assert_eq!(tools.total(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_and_wrong_codes_on_other_replicas_count_once() {
    let (a, alerts, b, _) = pair("deny_elsewhere", true).await;
    let tools = Tools::default();
    let svc = a.layer(policy(Scope::Capability)).layer(tools.clone());
    let call = tokio::spawn(svc.clone().oneshot(refund(40)));
    let alert = alerts.next_alert().await;
    let id = alert.request().id();
    // Four wrong codes on A and B together, then a fifth on B: locked, for everyone.
    for (i, gate) in [&a, &b, &a, &b].into_iter().enumerate() {
        let error = gate
            .approve(Approve::new(id, format!("wrong-{i}")).by("alice"))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::AccessRequestNotFound);
    }
    let error = b
        .approve(Approve::new(id, "wrong-5").by("alice"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::TooManyAttempts);
    let error = call.await.unwrap().unwrap_err();
    assert_eq!(code(&error), "too_many_attempts");

    // A denial on B fails the caller on A.
    let call = tokio::spawn(svc.oneshot(refund(50)));
    let alert = alerts.next_alert().await;
    b.deny(Deny::new(alert.request().id(), alert.code().reveal()).by("bob"))
        .await
        .expect("denied on B");
    let error = call.await.unwrap().unwrap_err();
    assert_eq!(code(&error), "access_request_denied");
    assert_eq!(tools.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_decision_wins_when_both_replicas_decide_at_once() {
    let (a, alerts, b, _) = pair("race", true).await;
    let tools = Tools::default();
    let svc = a.layer(policy(Scope::Capability)).layer(tools.clone());
    for round in 0..10 {
        let call = tokio::spawn(svc.clone().oneshot(refund(100 + round)));
        let alert = alerts.next_alert().await;
        let (id, code_) = (alert.request().id(), alert.code().reveal().to_owned());
        let on_a = a.approve(Approve::new(id, code_.clone()).by("alice"));
        let on_b = b.approve(Approve::new(id, code_).by("bob"));
        let (ra, rb) = tokio::join!(on_a, on_b);
        let won = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "exactly one approval wins: {ra:?} {rb:?}");
        let lost = if ra.is_ok() { rb } else { ra }.unwrap_err();
        assert_eq!(lost.kind(), ErrorKind::AlreadyResolved, "{lost:?}");
        assert!(call.await.unwrap().is_ok());
    }
    assert_eq!(tools.total(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identical_call_on_another_replica_joins_the_pending_request() {
    let (a, alerts_a, b, alerts_b) = pair("join", true).await;
    let tools = Tools::default();
    let on_a = a.layer(policy(Scope::Capability)).layer(tools.clone());
    let on_b = b.layer(policy(Scope::Capability)).layer(tools.clone());
    let first = tokio::spawn(on_a.oneshot(refund(7)));
    let alert = alerts_a.next_alert().await;
    let second = tokio::spawn(on_b.clone().oneshot(refund(7)));
    // The second call is filed (as a join) before anything is decided: B lists nothing of its
    // own, and nobody was alerted twice.
    support::within(Duration::from_secs(10), || b.stats().following == 1).await;
    let pending = b.pending_anywhere().await.unwrap();
    assert_eq!(pending.len(), 1, "one request across both replicas");
    assert_eq!(pending[0].id(), alert.request().id());
    b.approve(Approve::new(alert.request().id(), alert.code().reveal()).by("alice"))
        .await
        .expect("approved");
    assert!(first.await.unwrap().is_ok());
    assert!(second.await.unwrap().is_ok(), "the joined call ran too");
    assert_eq!(tools.total(), 2);
    assert!(alerts_b.alerts().is_empty(), "B alerted nobody");
    assert_eq!(alerts_a.alerts().len(), 1);

    // Approved on A, which holds the request: the approval binds B's join, and both run.
    let first = tokio::spawn(
        a.layer(policy(Scope::Once))
            .layer(tools.clone())
            .oneshot(refund(6)),
    );
    let alert = alerts_a.next_alert().await;
    let second = tokio::spawn(on_b.clone().oneshot(refund(6)));
    support::within(Duration::from_secs(10), || b.stats().following == 1).await;
    a.approve(Approve::new(alert.request().id(), alert.code().reveal()).by("alice"))
        .await
        .expect("approved on the replica holding the request");
    assert!(first.await.unwrap().is_ok());
    let joined = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the joined call heard the approval");
    assert!(joined.unwrap().is_ok(), "the joined call ran too");
    assert_eq!(tools.total(), 4);

    // A denial ends the joined call the same way.
    let first = tokio::spawn(
        a.layer(policy(Scope::Capability))
            .layer(tools.clone())
            .oneshot(refund(8)),
    );
    let alert = alerts_a.next_alert().await;
    let second = tokio::spawn(on_b.oneshot(refund(8)));
    support::within(Duration::from_secs(10), || b.stats().following == 1).await;
    a.deny(Deny::new(alert.request().id(), alert.code().reveal()).by("bob"))
        .await
        .expect("denied");
    assert_eq!(
        code(&first.await.unwrap().unwrap_err()),
        "access_request_denied"
    );
    assert_eq!(
        code(&second.await.unwrap().unwrap_err()),
        "access_request_denied"
    );
    assert_eq!(tools.total(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_the_schema_once() {
    let db = database("migrate").await;
    let starts = (0..6).map(|i| {
        let url = url(&db);
        tokio::spawn(
            async move { PostgresStore::connect_with(&url, options(&format!("r{i}"))).await },
        )
    });
    let mut stores = Vec::new();
    for start in starts.collect::<Vec<_>>() {
        stores.push(start.await.unwrap().expect("every replica starts"));
    }
    let (client, connection) = tokio_postgres::connect(&url(&db), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let versions: Vec<i32> = client
        .query("SELECT version FROM tollgate_schema", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, [3], "one schema row, at the latest version");
    // A schema from a newer tollgate is refused, not written over.
    client
        .execute("UPDATE tollgate_schema SET version = 99", &[])
        .await
        .unwrap();
    let error = PostgresStore::connect_with(&url(&db), options("newer"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::StoreUnreadable);
    drop(stores);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_a_typed_error() {
    let options = PostgresOptions::new().connect_timeout(Duration::from_secs(2));
    let refused = format!(
        "host=127.0.0.1 port={} user=postgres",
        support::closed_port()
    );
    let error = PostgresStore::connect_with(&refused, options.clone())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::StoreFailed, "{error}");
    let error = PostgresStore::connect_with("postgres://u:secret-pw@[bad", options)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidConfig, "{error}");
    assert!(
        !format!("{error:?} {error}").contains("secret-pw"),
        "the password is not repeated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_verify_the_server_against_the_given_roots() {
    let db = database("tls").await;
    let ca = std::fs::read(support::server_env("TOLLGATE_TEST_POSTGRES_CA")).unwrap();
    let required = format!("{} sslmode=require", url(&db));
    let store = PostgresStore::connect_with(&required, options("tls").tls_roots(&ca))
        .await
        .expect("TLS to a server whose certificate the given root signed");
    // The store's own connections are encrypted, as the server sees them.
    let (client, connection) = tokio_postgres::connect(&url(&db), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let encrypted: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'tollgate' AND a.datname = $1 AND s.ssl",
            &[&db],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted >= 1, "the store's connections use TLS");
    // Without that root the certificate does not verify, and nothing connects.
    let error = PostgresStore::connect_with(&required, options("tls-untrusted"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::StoreFailed, "{error}");
    // A root that is not a certificate is a configuration error.
    let garbled = "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n";
    let error = PostgresStore::connect_with(&required, options("tls-bad").tls_roots(garbled))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidConfig, "{error}");
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_replica_abandons_nothing_of_a_live_one() {
    let db = database("late").await;
    let store = PostgresStore::connect_with(&url(&db), options("a"))
        .await
        .unwrap();
    let alerts = RecordingNotifier::new();
    let a = support::gate(&alerts).store(store).build().unwrap();
    let tools = Tools::default();
    let call = tokio::spawn(
        a.layer(policy(Scope::Capability))
            .layer(tools)
            .oneshot(refund(1)),
    );
    let alert = alerts.next_alert().await;
    let late = PostgresStore::connect_with(&url(&db), options("late"))
        .await
        .expect("a replica starts beside a live one");
    let recovered = late.recover(std::time::SystemTime::now()).unwrap();
    assert!(
        recovered.abandoned.is_empty(),
        "nothing of a live replica is abandoned"
    );
    let b = support::gate(&RecordingNotifier::new())
        .store(late)
        .build()
        .unwrap();
    b.approve(Approve::new(alert.request().id(), alert.code().reveal()).by("alice"))
        .await
        .expect("the request is still pending, and the new replica decides it");
    assert!(call.await.unwrap().is_ok());
}
