//! Stores: the conformance suite against every store tollgate ships, and the gate's use of a
//! store: write-ahead order, the audit trail, failing closed, restarts, and unreadable files.

#[path = "../support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::SystemTime;

use serde_json::json;
use tollgate::notify::{RecordingNotifier, notifier_fn};
use tollgate::policy::CapabilityTable;
use tollgate::store::{
    AuditEntry, AuditEvent, AuditFilter, BoxFuture, MemoryStore, SqliteStore, Store, Transition,
    Write, conformance,
};
use tollgate::{
    AccessRequest, Approve, Deny, Error, ErrorKind, Gate, Outcome, RequestId, RequireApproval,
    Revoke, Scope, Status,
};
use tower::{Layer, ServiceExt};

use support::{Tools, code, gate, policy, refund, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    conformance::run(MemoryStore::new, MemoryStore::clone).await;
    conformance::writes_now(MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_conforms() {
    let dir = TempDir::new("conformance");
    let made = AtomicUsize::new(0);
    conformance::run(
        || {
            let n = made.fetch_add(1, Ordering::Relaxed);
            SqliteStore::open(dir.path.join(format!("{n}.db"))).unwrap()
        },
        |store| SqliteStore::open(store.path()).unwrap(),
    )
    .await;
}

/// Notifiers hear of a request only once the store has it; the caller resumes only once the
/// store has the decision, its rule and the `executing` transition.
#[tokio::test]
async fn requests_and_decisions_are_stored_before_anyone_acts_on_them() {
    let store = MemoryStore::new();
    let alerts = RecordingNotifier::new();
    let seen_at_alert = Arc::new(std::sync::Mutex::new(None));
    let (checker, seen) = (store.clone(), seen_at_alert.clone());
    let gate = gate(&alerts)
        .notifier(notifier_fn(move |alert| {
            let (store, seen) = (checker.clone(), seen.clone());
            let id = alert.request().id();
            async move {
                let stored = store.request(id).await.unwrap().map(|s| s.status);
                *seen.lock().unwrap() = Some(stored);
                Ok(())
            }
        }))
        .store(store.clone())
        .build()
        .unwrap();
    let checked_at_run = Arc::new(std::sync::Mutex::new(None));
    let (checker, checked) = (store.clone(), checked_at_run.clone());
    let inner = tower::service_fn(move |call: tollgate::ToolCall| {
        let (store, checked) = (checker.clone(), checked.clone());
        async move {
            let executing = store
                .audit(&AuditFilter::new().event(AuditEvent::Executing))
                .await?;
            let id = executing.last().and_then(|e| e.request).unwrap();
            let status = store.request(id).await?.unwrap().status;
            let rules = store.rules(SystemTime::now()).await?.len();
            *checked.lock().unwrap() = Some((status, rules));
            Ok::<_, tollgate::BoxError>(call.capability().to_owned())
        }
    });
    let svc = gate.layer(policy(Scope::Value)).layer(inner);
    let task = tokio::spawn(svc.clone().oneshot(refund(10)));
    let alert = alerts.next_alert().await;
    support::until(|| seen_at_alert.lock().unwrap().is_some()).await;
    assert_eq!(
        *seen_at_alert.lock().unwrap(),
        Some(Some(Status::Pending)),
        "the notifier found the request pending in the store"
    );
    gate.approve(
        Approve::new(alert.request().id(), alert.code().reveal())
            .scope(Scope::Value)
            .by("alice"),
    )
    .await
    .unwrap();
    assert_eq!(task.await.unwrap().unwrap(), "payments.refund");
    assert_eq!(
        *checked_at_run.lock().unwrap(),
        Some((Status::Executing, 1)),
        "when the call ran, the store had it executing, with its rule"
    );
}

/// Every transition of a request is in the audit trail, in order, with the approver, the
/// principal, the capability and the args digest, and never the arguments unless asked for.
#[tokio::test]
async fn the_audit_trail_records_every_transition() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).max_attempts(2).build().unwrap();
    let tools = Tools::default();
    let svc = gate.layer(policy(Scope::Value)).layer(tools.clone());
    let events = |id: RequestId| {
        let gate = gate.clone();
        async move {
            let trail = gate.audit(AuditFilter::new().request(id)).await.unwrap();
            trail.into_iter().map(|e| e.event).collect::<Vec<_>>()
        }
    };
    use AuditEvent::*;

    // Approved with a value rule, after a wrong code.
    let task = tokio::spawn(svc.clone().oneshot(refund(1)));
    let alert = alerts.next_alert().await;
    let id = alert.request().id();
    let wrong = gate
        .approve(Approve::new(id, "00000000").by("mallory"))
        .await;
    assert_eq!(wrong.unwrap_err().kind(), ErrorKind::AccessRequestNotFound);
    let approval = Approve::new(id, alert.code().reveal())
        .scope(Scope::Value)
        .by("alice");
    gate.approve(approval).await.unwrap();
    task.await.unwrap().unwrap();
    let trail = gate.audit(AuditFilter::new().request(id)).await.unwrap();
    let kinds: Vec<_> = trail.iter().map(|e| e.event).collect();
    assert_eq!(
        kinds,
        [
            Requested,
            Notified,
            CodeRejected,
            Approved,
            Executing,
            RuleGranted,
            Executed
        ]
    );
    assert!(
        trail
            .windows(2)
            .all(|w| w[0].seq < w[1].seq && w[0].at <= w[1].at)
    );
    let rejected = &trail[2];
    assert_eq!(
        rejected.approver.as_deref(),
        Some("mallory"),
        "who tried is recorded"
    );
    let approved = &trail[3];
    assert_eq!(approved.approver.as_deref(), Some("alice"));
    assert_eq!(approved.scope, Some(Scope::Value));
    assert_eq!(approved.principal.as_deref(), Some("agent-7"));
    assert_eq!(&*approved.capability, "payments.refund");
    assert_eq!(approved.args_digest, Some(alert.request().args_digest()));
    assert_eq!(trail[0].reason.as_deref(), Some("customer ticket #4421"));
    assert_eq!(trail[0].detail.as_deref(), Some("refunds move money"));
    assert!(
        trail.iter().all(|e| e.args.is_none()),
        "no arguments unless asked for"
    );
    let json = serde_json::to_string(&trail).unwrap();
    assert!(
        !json.contains(alert.code().reveal()),
        "the code is never in the trail"
    );

    // Denied and remembered; then the rule is revoked.
    let task = tokio::spawn(svc.clone().oneshot(refund(2)));
    let alert = alerts.next_alert().await;
    let denial = Deny::new(alert.request().id(), alert.code().reveal())
        .reason("not today")
        .remember(Scope::Value)
        .by("bob");
    let rule = gate.deny(denial).await.unwrap().rule().unwrap().id();
    assert_eq!(
        code(&task.await.unwrap().unwrap_err()),
        "access_request_denied"
    );
    gate.revoke(Revoke::rule(rule).by("carol")).await.unwrap();
    let denied = events(alert.request().id()).await;
    assert_eq!(
        denied,
        [Requested, Notified, Denied, RuleGranted, RuleRevoked]
    );
    let revoked = gate
        .audit(AuditFilter::new().event(RuleRevoked))
        .await
        .unwrap();
    assert_eq!(revoked[0].approver.as_deref(), Some("carol"));

    // Too many wrong codes.
    let task = tokio::spawn(svc.clone().oneshot(refund(3)));
    let id = alerts.next_alert().await.request().id();
    for _ in 0..2 {
        let _ = gate
            .approve(Approve::new(id, "00000000").by("mallory"))
            .await;
    }
    assert_eq!(code(&task.await.unwrap().unwrap_err()), "too_many_attempts");
    assert_eq!(
        events(id).await,
        [Requested, Notified, CodeRejected, CodeRejected, Denied]
    );

    // Cancelled by the caller going away.
    let task = tokio::spawn(svc.clone().oneshot(refund(4)));
    let id = alerts.next_alert().await.request().id();
    task.abort();
    let _ = task.await;
    let gate2 = gate.clone();
    let trail = async move || gate2.audit(AuditFilter::new().request(id)).await.unwrap();
    assert_eq!(trail().await.last().map(|e| e.event), Some(Cancelled));

    // Filters: by principal, capability and event.
    let mine = gate
        .audit(AuditFilter::new().principal("agent-7").event(Approved))
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    let other = gate
        .audit(AuditFilter::new().principal("nobody"))
        .await
        .unwrap();
    assert!(other.is_empty());
    let all = gate.audit(AuditFilter::new()).await.unwrap();
    assert!(all.iter().all(|e| &*e.capability == "payments.refund"));
}

/// Nobody waits in paused time for an expiry to be written: it is in the trail right after.
#[tokio::test(start_paused = true)]
async fn expiry_is_recorded_and_arguments_only_when_asked() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).audit_args(true).build().unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let task = tokio::spawn(svc.oneshot(refund(5)));
    let id = alerts.next_alert().await.request().id();
    tokio::time::advance(support::TTL).await;
    assert_eq!(
        code(&task.await.unwrap().unwrap_err()),
        "access_request_expired"
    );
    let trail = gate.audit(AuditFilter::new().request(id)).await.unwrap();
    let kinds: Vec<_> = trail.iter().map(|e| e.event).collect();
    assert_eq!(
        kinds,
        [
            AuditEvent::Requested,
            AuditEvent::Notified,
            AuditEvent::Expired
        ]
    );
    assert_eq!(
        trail[0].args.as_deref(),
        Some(r#"{"amount":5,"charge":"ch_1"}"#),
        "audit_args records the canonical arguments"
    );
}

/// A store that fails its writes on demand, around a memory store.
#[derive(Clone, Debug, Default)]
struct Flaky {
    inner: MemoryStore,
    fail_inserts: Arc<AtomicBool>,
    /// The next insert panics, as a store with a bug would.
    panic_insert: Arc<AtomicBool>,
    fail_transitions: Arc<AtomicBool>,
    /// Transitions wait while the test holds this for writing; `held` counts those waiting.
    hold: Arc<tokio::sync::RwLock<()>>,
    held: Arc<AtomicUsize>,
    /// How many writes each batch held, in order.
    batches: Arc<std::sync::Mutex<Vec<usize>>>,
}

fn broken() -> Error {
    Error::new(ErrorKind::StoreFailed).with_source(std::io::Error::other("the disk is full"))
}

/// A gate on a store that fails on demand: the store, what the gate alerts, the gate, the tools
/// behind it and the service that calls them.
fn on_flaky(max_scope: Scope) -> (Flaky, RecordingNotifier, Gate, Tools, Gated) {
    let store = Flaky::default();
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).store(store.clone()).build().unwrap();
    let tools = Tools::default();
    let svc = gate.layer(policy(max_scope)).layer(tools.clone());
    (store, alerts, gate, tools, svc)
}

type Gated = RequireApproval<Tools, CapabilityTable>;

impl Store for Flaky {
    fn insert<'a>(
        &'a self,
        request: &'a AccessRequest,
        audit: &'a [AuditEntry],
    ) -> BoxFuture<'a, Result<(), Error>> {
        if self.fail_inserts.load(Ordering::SeqCst) {
            return Box::pin(async { Err(broken()) });
        }
        if self.panic_insert.swap(false, Ordering::SeqCst) {
            panic!("a bug in the store");
        }
        self.inner.insert(request, audit)
    }
    fn transition<'a>(&'a self, change: &'a Transition) -> BoxFuture<'a, Result<bool, Error>> {
        if self.fail_transitions.load(Ordering::SeqCst) {
            return Box::pin(async { Err(broken()) });
        }
        Box::pin(async move {
            self.held.fetch_add(1, Ordering::SeqCst);
            let open = self.hold.read().await;
            self.held.fetch_sub(1, Ordering::SeqCst);
            drop(open);
            self.inner.transition(change).await
        })
    }
    fn append<'a>(&'a self, audit: &'a [AuditEntry]) -> BoxFuture<'a, Result<(), Error>> {
        self.inner.append(audit)
    }
    fn write_batch<'a>(
        &'a self,
        writes: &'a [Write<'a>],
    ) -> BoxFuture<'a, Vec<Result<bool, Error>>> {
        self.batches.lock().unwrap().push(writes.len());
        Box::pin(async move {
            let mut results = Vec::new();
            for write in writes {
                results.push(write.apply(self).await);
            }
            results
        })
    }
    store_reads!();
}

/// A decision already being written when the gate shuts down takes effect as usual, and the
/// shutdown returns only once the store has it; a request still pending is abandoned.
#[tokio::test]
async fn shutdown_waits_for_a_decision_being_written_and_lets_it_take_effect() {
    let (store, alerts, gate, _, svc) = on_flaky(Scope::Value);
    let approved = tokio::spawn(svc.clone().oneshot(refund(1)));
    let decided = alerts.next_alert().await;
    let pending = tokio::spawn(svc.clone().oneshot(refund(2)));
    let left = alerts.next_alert().await;

    let hold = store.hold.write().await;
    let approve = tokio::spawn({
        let gate = gate.clone();
        let id = decided.request().id();
        let approve = Approve::new(id, decided.code().reveal()).by("alice");
        async move { gate.approve(approve).await }
    });
    until(|| store.held.load(Ordering::SeqCst) == 1).await;
    let shutdown = tokio::spawn({
        let gate = gate.clone();
        async move { gate.shutdown().await }
    });
    until(|| gate.status(left.request().id()).ok() == Some(Status::Abandoned)).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!shutdown.is_finished(), "shutdown waits for the store");

    drop(hold);
    shutdown.await.unwrap().unwrap();
    approve.await.unwrap().unwrap();
    approved.await.unwrap().unwrap();
    assert_eq!(code(&pending.await.unwrap().unwrap_err()), "gate_shut_down");
    let stored = |id| store.inner.request(id);
    let abandoned = stored(left.request().id()).await.unwrap().unwrap();
    assert_eq!(abandoned.status, Status::Abandoned);
    let ran = stored(decided.request().id()).await.unwrap().unwrap();
    assert!(
        matches!(ran.status, Status::Executing | Status::Executed),
        "{}",
        ran.status
    );
}

/// A store that cannot write fails closed: a request it cannot take fails its call and alerts
/// nobody; a decision it cannot take is not made, the request stays pending, and a retry works.
#[tokio::test]
async fn a_failing_store_fails_closed_and_loses_nothing() {
    let (store, alerts, gate, tools, svc) = on_flaky(Scope::Value);

    store.fail_inserts.store(true, Ordering::SeqCst);
    let refused = svc.clone().oneshot(refund(1)).await.unwrap_err();
    assert_eq!(code(&refused), "store_failed");
    assert!(
        alerts.alerts().is_empty(),
        "nobody hears of a request the store does not have"
    );
    store.fail_inserts.store(false, Ordering::SeqCst);

    let task = tokio::spawn(svc.clone().oneshot(refund(2)));
    let alert = alerts.next_alert().await;
    let id = alert.request().id();
    store.fail_transitions.store(true, Ordering::SeqCst);
    let approval = || {
        Approve::new(id, alert.code().reveal())
            .scope(Scope::Value)
            .by("alice")
    };
    let error = gate.approve(approval()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::StoreFailed);
    assert!(
        std::error::Error::source(&error).is_some(),
        "the store's error is the cause"
    );
    assert_eq!(
        gate.status(id).unwrap(),
        Status::Pending,
        "nothing was decided"
    );
    assert_eq!(gate.pending().len(), 1);
    assert!(gate.rules().is_empty());
    assert_eq!(tools.total(), 0, "the call did not run");
    let denial = gate
        .deny(Deny::new(id, alert.code().reveal()).by("bob"))
        .await;
    assert_eq!(denial.unwrap_err().kind(), ErrorKind::StoreFailed);
    assert_eq!(gate.status(id).unwrap(), Status::Pending);

    store.fail_transitions.store(false, Ordering::SeqCst);
    gate.approve(approval()).await.unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(tools.total(), 1);
    assert_eq!(gate.rules().len(), 1);
}

/// After a restart on the same file: the request that was pending is abandoned (an approve
/// says so, and the notifiers hear it), standing rules and remembered denials apply, and a
/// `once` approval is not used again.
#[tokio::test]
async fn a_restart_abandons_pending_requests_and_keeps_rules() {
    let dir = TempDir::new("restart");
    let path = dir.path.join("tollgate.db");
    let alerts = RecordingNotifier::new();
    let before = gate(&alerts)
        .store(SqliteStore::open(&path).unwrap())
        .build()
        .unwrap();
    let tools = Tools::default();
    let svc = before.layer(policy(Scope::Capability)).layer(tools.clone());
    let decide = async |call: tollgate::ToolCall, approve: Option<Scope>| {
        let task = tokio::spawn(svc.clone().oneshot(call));
        let alert = alerts.next_alert().await;
        let (id, code) = (alert.request().id(), alert.code().reveal().to_owned());
        match approve {
            Some(scope) => {
                let approval = Approve::new(id, &code).scope(scope).by("alice");
                before.approve(approval).await.unwrap();
                task.await.unwrap().unwrap();
            }
            None => {
                let denial = Deny::new(id, &code).remember(Scope::Capability).by("bob");
                before.deny(denial).await.unwrap();
                task.await.unwrap().unwrap_err();
            }
        }
    };
    decide(refund(1), Some(Scope::Value)).await;
    decide(refund(2), Some(Scope::Once)).await;
    decide(refund(3).principal("agent-8"), None).await;
    // A call left parked when the process stops: its future is never dropped or polled again.
    let mut stranded = Box::pin(svc.clone().oneshot(refund(4)));
    assert!(futures_poll_once(stranded.as_mut()).await.is_none());
    let alert = alerts.next_alert().await;
    let (stranded_id, stranded_code) = (alert.request().id(), alert.code().reveal().to_owned());
    std::mem::forget(stranded);
    // The first gate is still alive here, unlike a stopped process: let its last write land.
    for _ in 0..10_000 {
        let trail = before
            .audit(AuditFilter::new().request(stranded_id))
            .await
            .unwrap();
        if trail.iter().any(|e| e.event == AuditEvent::Notified) {
            break;
        }
        tokio::task::yield_now().await;
    }

    let after_alerts = RecordingNotifier::new();
    let after = gate(&after_alerts)
        .store(SqliteStore::open(&path).unwrap())
        .build()
        .unwrap();
    let resolution = after_alerts.next_resolution().await;
    assert_eq!(resolution.request().id(), stranded_id);
    assert_eq!(
        resolution.outcome(),
        &Outcome::Abandoned,
        "the notifiers hear of it"
    );
    let late = after
        .approve(Approve::new(stranded_id, &stranded_code).by("alice"))
        .await;
    assert_eq!(late.unwrap_err().kind(), ErrorKind::AccessRequestAbandoned);
    let wrong = after
        .approve(Approve::new(stranded_id, "00000000").by("alice"))
        .await;
    assert_eq!(wrong.unwrap_err().kind(), ErrorKind::AccessRequestNotFound);
    // What the approval page and API show for it: the store's answer, not `not found`.
    let (request, status) = after.lookup(stranded_id).await.unwrap();
    assert_eq!((request.id(), status), (stranded_id, Status::Abandoned));

    let rules = after.rules();
    assert_eq!(rules.len(), 2, "the value rule and the remembered denial");
    let svc = after.layer(policy(Scope::Capability)).layer(tools.clone());
    svc.clone()
        .oneshot(refund(1))
        .await
        .expect("the value rule still allows");
    let denied = svc.clone().oneshot(refund(9).principal("agent-8")).await;
    assert_eq!(code(&denied.unwrap_err()), "access_request_denied");
    assert_eq!(tools.calls_of(&refund(2)), 1);
    let again = tokio::spawn(svc.clone().oneshot(refund(2)));
    let asked = after_alerts.next_alert().await;
    assert_eq!(
        asked.request().args(),
        json!({"charge": "ch_1", "amount": 2}),
        "once asks again"
    );
    again.abort();
    let entries = after
        .audit(AuditFilter::new().request(stranded_id))
        .await
        .unwrap();
    assert_eq!(entries.last().map(|e| e.event), Some(AuditEvent::Abandoned));
}

/// Polls a future once; `Some` if it finished.
async fn futures_poll_once<F: Future + Unpin>(future: F) -> Option<F::Output> {
    let mut future = future;
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// Files that are not tollgate databases are refused at open with `store_unreadable`, never a
/// panic: garbage, another program's SQLite file, a newer schema, and a damaged database.
#[test]
fn unreadable_files_are_refused_at_open() {
    let dir = TempDir::new("unreadable");
    let refused = |path: &std::path::Path| {
        let error = SqliteStore::open(path).expect_err("refused");
        assert_eq!(error.kind(), ErrorKind::StoreUnreadable, "{error}");
        error.to_string()
    };

    let garbage = dir.path.join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    assert!(refused(&garbage).contains("not a SQLite database"));

    let foreign = dir.path.join("foreign.db");
    let conn = rusqlite::Connection::open(&foreign).unwrap();
    conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
        .unwrap();
    drop(conn);
    assert!(refused(&foreign).contains("another program"));

    let newer = dir.path.join("newer.db");
    drop(SqliteStore::open(&newer).unwrap());
    let conn = rusqlite::Connection::open(&newer).unwrap();
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    assert!(refused(&newer).contains("newer tollgate"));

    // A real database with its pages overwritten in the middle.
    let damaged = dir.path.join("damaged.db");
    let store = SqliteStore::open(&damaged).unwrap();
    let gate = Gate::builder()
        .secret(support::SECRET)
        .park_when_unnotified()
        .store(store)
        .build()
        .unwrap();
    drop(gate);
    let conn = rusqlite::Connection::open(&damaged).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")
        .unwrap();
    drop(conn);
    let mut bytes = std::fs::read(&damaged).unwrap();
    assert!(bytes.len() >= 3 * 4096, "the schema spans several pages");
    for b in &mut bytes[4096..] {
        *b = 0xa5;
    }
    std::fs::write(&damaged, &bytes).unwrap();
    let error = refused(&damaged);
    assert!(
        error.contains("damaged") || error.contains("not a SQLite"),
        "{error}"
    );

    // And a gate built on such a file reports the same, without a panic.
    let error = SqliteStore::open(&garbage).map(|store| {
        Gate::builder()
            .secret(support::SECRET)
            .park_when_unnotified()
            .store(store)
            .build()
    });
    assert!(error.is_err());
}

#[tokio::test]
async fn rules_written_into_the_file_or_made_with_another_secret_are_not_honoured() {
    let dir = TempDir::new("forged");
    let path = dir.path.join("tollgate.db");
    let alerts = RecordingNotifier::new();
    let build = |secret: &str| {
        gate(&alerts)
            .secret(secret)
            .store(SqliteStore::open(&path).unwrap())
            .build()
            .unwrap()
    };
    let by = |principal: &str| refund(5).principal(principal);

    // agent-7's refunds are approved for the capability: a sealed rule in the file.
    let first = build(support::SECRET);
    let svc = first.layer(policy(Scope::Global)).layer(Tools::default());
    let task = tokio::spawn(svc.oneshot(by("agent-7")));
    let alert = alerts.next_alert().await;
    let approval = first
        .approve(
            Approve::new(alert.request().id(), alert.code().reveal())
                .scope(Scope::Capability)
                .by("alice"),
        )
        .await
        .unwrap();
    task.await.unwrap().unwrap();
    let genuine = approval.rule().unwrap().clone();
    first.shutdown().await.unwrap(); // every write is in the file
    drop(first);

    // An agent with the file in reach copies the rule into a `global` one for every principal.
    let (forged_id, _) = support::forge_global_rule(&path);

    // The gate started again honours its own rule and not the forged one: agent-9 is asked.
    // (`tests/logs` checks what it logs.)
    let second = build(support::SECRET);
    let rules: Vec<String> = second.rules().iter().map(|r| r.id().to_string()).collect();
    assert_eq!(rules, [genuine.id().to_string()]);
    let svc = second.layer(policy(Scope::Global)).layer(Tools::default());
    svc.clone().oneshot(by("agent-7")).await.unwrap();
    let asked = tokio::spawn(svc.oneshot(by("agent-9")));
    let alert = alerts.next_alert().await;
    assert_eq!(alert.request().principal(), "agent-9");
    asked.abort();
    let rejected = second
        .audit(AuditFilter::new().event(AuditEvent::RuleRejected))
        .await
        .unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].rule.unwrap().to_string(), forged_id);
    drop(second);

    // A gate with another secret honours none of them.
    let third = build("a different secret of sixteen bytes or more");
    assert!(third.rules().is_empty());
}

/// A directory under `target/`, removed when dropped.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(name: &str) -> Self {
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("store-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The memory store keeps the most recently finished requests up to its bound, and every
/// request not yet finished: a gate deciding calls for months does not grow without end.
#[tokio::test]
async fn the_memory_store_forgets_the_oldest_finished_requests_beyond_its_bound() {
    let store = MemoryStore::new().keep_finished(2);
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).store(store.clone()).build().unwrap();
    let svc = gate.layer(policy(Scope::Once)).layer(Tools::default());
    let mut ids = Vec::new();
    for amount in 1..=3 {
        let task = tokio::spawn(svc.clone().oneshot(refund(amount)));
        let alert = alerts.next_alert().await;
        ids.push(alert.request().id());
        gate.deny(Deny::new(alert.request().id(), alert.code().reveal()).by("bob"))
            .await
            .unwrap();
        assert_eq!(
            code(&task.await.unwrap().unwrap_err()),
            "access_request_denied"
        );
    }
    let pending = tokio::spawn(svc.clone().oneshot(refund(4)));
    let waiting = alerts.next_alert().await.request().id();
    let status = |id| {
        let store = store.clone();
        async move { store.request(id).await.unwrap().map(|s| s.status) }
    };
    assert_eq!(
        status(ids[0]).await,
        None,
        "the oldest finished is forgotten"
    );
    assert_eq!(status(ids[1]).await, Some(Status::Denied));
    assert_eq!(status(ids[2]).await, Some(Status::Denied));
    assert_eq!(status(waiting).await, Some(Status::Pending));
    pending.abort();
}

/// A store that panics while the gate writes to it loses that write, as a task would, but does
/// not stall the gate's store queue: the next call is stored, alerted and approved.
#[tokio::test]
async fn a_store_that_panics_once_does_not_stall_the_queue() {
    let (store, alerts, gate, _, svc) = on_flaky(Scope::Once);
    store.panic_insert.store(true, Ordering::SeqCst);
    let panicked = tokio::spawn(svc.clone().oneshot(refund(1))).await;
    assert!(panicked.unwrap_err().is_panic());

    let call = tokio::spawn(svc.clone().oneshot(refund(2)));
    let alert = tokio::time::timeout(std::time::Duration::from_secs(10), alerts.next_alert())
        .await
        .expect("the next request is stored and alerted");
    gate.approve(Approve::new(alert.request().id(), alert.code().reveal()).by("alice"))
        .await
        .unwrap();
    call.await.unwrap().unwrap();
}

/// A gate whose store answers later (SQLite) hands those writes to a task on the runtime of its
/// first use; once that runtime has shut down, a gate used from another runtime starts the task
/// again there, and its calls are stored, approved and run.
#[test]
fn a_gate_outlives_the_runtime_it_was_first_used_on() {
    let dir = TempDir::new("runtimes");
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts)
        .store(SqliteStore::open(dir.path.join("tollgate.db")).unwrap())
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Once)).layer(Tools::default());
    let round = |amount| {
        let runtime = support::runtime();
        runtime.block_on(async {
            let decided = async {
                let call = tokio::spawn(svc.clone().oneshot(refund(amount)));
                let alert = alerts.next_alert().await;
                let approve = Approve::new(alert.request().id(), alert.code().reveal());
                gate.approve(approve.by("alice")).await.unwrap();
                call.await.unwrap().unwrap();
            };
            tokio::time::timeout(std::time::Duration::from_secs(20), decided)
                .await
                .expect("the call is stored, approved and run");
        });
    };
    round(1);
    round(2);
}

/// A caller dropped while its task unwinds from a panic does not take the store queue from the
/// task that runs it: a request made meanwhile waits behind the decision being written.
#[tokio::test]
async fn a_caller_dropped_by_a_panic_does_not_break_the_write_order() {
    let (store, alerts, gate, _, svc) = on_flaky(Scope::Once);
    let first = tokio::spawn(svc.clone().oneshot(refund(1)));
    let alert = alerts.next_alert().await;

    let hold = store.hold.write().await;
    let approve = tokio::spawn({
        let gate = gate.clone();
        let approve = Approve::new(alert.request().id(), alert.code().reveal()).by("alice");
        async move { gate.approve(approve).await }
    });
    until(|| store.held.load(Ordering::SeqCst) == 1).await;
    let panicked = tokio::spawn({
        let svc = svc.clone();
        async move {
            let mut parked = Box::pin(svc.oneshot(refund(2)));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(std::future::Future::poll(parked.as_mut(), &mut cx).is_pending());
            panic!("the caller's task fails while it waits");
        }
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());
    let third = tokio::spawn(svc.clone().oneshot(refund(3)));
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        alerts.alerts().len(),
        1,
        "nothing is written ahead of the held decision"
    );

    drop(hold);
    approve.await.unwrap().unwrap();
    first.await.unwrap().unwrap();
    let alert = alerts.next_alert().await;
    assert_eq!(alert.request().args()["amount"], 3);
    third.abort();
}

/// Writes that queue while the store is busy reach it together, in one batch, in the order they
/// were made; each takes effect as it would alone.
#[tokio::test]
async fn writes_queued_behind_a_busy_store_are_committed_together() {
    let (store, alerts, gate, _, svc) = on_flaky(Scope::Once);
    let mut calls = Vec::new();
    let mut parked = Vec::new();
    for amount in 1..=8 {
        calls.push(tokio::spawn(svc.clone().oneshot(refund(amount))));
        parked.push(alerts.next_alert().await);
    }

    let hold = store.hold.write().await;
    let mut approvals = Vec::new();
    for alert in &parked {
        let approve = Approve::new(alert.request().id(), alert.code().reveal()).by("alice");
        let mut approval = Box::pin({
            let gate = gate.clone();
            async move { gate.approve(approve).await }
        });
        assert!(
            futures_poll_once(&mut approval).await.is_none(),
            "a decision waits for the store"
        );
        approvals.push(approval);
    }
    assert_eq!(
        store.held.load(Ordering::SeqCst),
        1,
        "the first decision is being written"
    );
    assert!(store.batches.lock().unwrap().is_empty());

    drop(hold);
    for approval in approvals {
        approval.await.unwrap();
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let batches = store.batches.lock().unwrap().clone();
    assert_eq!(
        batches.first(),
        Some(&7),
        "the seven decisions queued behind the first go together: {batches:?}"
    );
    for alert in &parked {
        let trail = gate
            .audit(AuditFilter::new().request(alert.request().id()))
            .await
            .unwrap();
        let kinds: Vec<_> = trail.iter().map(|e| e.event).collect();
        assert_eq!(
            kinds[..3],
            [
                AuditEvent::Requested,
                AuditEvent::Notified,
                AuditEvent::Approved
            ],
            "each request's trail is in order"
        );
        assert!(kinds.contains(&AuditEvent::Executing));
    }
}

/// A quorum's deciding approval that the store could not record leaves the request pending with
/// the approvals counted so far; the same approver can decide once the store is back.
#[tokio::test]
async fn a_quorums_deciding_approval_the_store_refused_can_be_made_again() {
    use tollgate::policy::Ask;
    let store = Flaky::default();
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).store(store.clone()).build().unwrap();
    let tools = Tools::default();
    let ask = Ask::new("pays out").approvers(["alice", "bob"]).quorum(2);
    let svc = gate
        .layer(CapabilityTable::new().ask("payments.payout", ask))
        .layer(tools.clone());
    let call = tollgate::ToolCall::new("payments.payout", json!({"amount": 1}));
    let task = tokio::spawn(svc.oneshot(call));
    let alert = alerts.next_alert().await;
    let id = alert.request().id();
    let approve = |who: &str| {
        let code = alert.code_for(who).unwrap().reveal();
        Approve::new(id, code).by(who)
    };
    assert_eq!(
        gate.approve(approve("alice")).await.unwrap().outstanding(),
        1
    );

    store.fail_transitions.store(true, Ordering::SeqCst);
    let refused = gate.approve(approve("bob")).await.unwrap_err();
    assert_eq!(refused.code(), "store_failed");
    assert_eq!(gate.status(id).unwrap(), Status::Pending);
    assert_eq!(gate.approved_by(id), ["alice"]);

    store.fail_transitions.store(false, Ordering::SeqCst);
    assert_eq!(gate.approve(approve("bob")).await.unwrap().outstanding(), 0);
    task.await.unwrap().unwrap();
    assert_eq!(tools.total(), 1);
}
