//! A soak under faults: waves of calls on a multi-threaded runtime and a SQLite store, under a
//! random policy, with random decisions, wrong codes, callers leaving and requests expiring,
//! while the store and the notifier fail or stall at random. After every wave: nothing ran
//! without an approval or a policy that allows it, no approval was reported that no caller
//! received, nothing ran twice, every request ended, and the audit trail says what the callers
//! saw. At the end the gate holds nothing and the heap is back where the first wave left it.
//!
//! `TOLLGATE_SOAK_CALLS` sets the number of calls (100,000 unless set); `scripts/soak` runs a
//! million, optimized.

#[path = "../support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tollgate::notify::{Alert, NotifyError};
use tollgate::policy::{Ask, CapabilityTable};
use tollgate::store::{
    AuditEntry, AuditEvent, AuditFilter, BoxFuture, SqliteStore, Store, Transition, Write,
};
use tollgate::{
    AccessRequest, Approve, BoxError, Deny, Error, ErrorKind, Gate, Scope, Status, ToolCall,
};
use tower::{Layer, ServiceExt};

use support::{Rng, SECRET, Tools, call_key, code};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const WAVE: u64 = 2_000;
/// Calls before the heap is measured: enough to fill the history of decided requests.
const WARM_UP: u64 = 5 * WAVE;
const REQUEST_TTL: Duration = Duration::from_millis(400);
const NOTIFY_TIMEOUT: Duration = Duration::from_millis(50);

/// One draw in a thousand, from a generator shared by the faulty parts.
#[derive(Clone)]
struct Dice(Arc<AtomicU64>);

impl Dice {
    fn per_mille(&self) -> u64 {
        // SplitMix64 over a shared counter: lock-free, and fine for picking faults.
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % 1000
    }
}

fn broken() -> Error {
    Error::new(ErrorKind::StoreFailed).with_source(std::io::Error::other("injected fault"))
}

/// SQLite, except that a batch of writes fails whole one time in a hundred (nothing of it
/// applied, as a failed commit) and stalls one time in a hundred.
struct FaultyStore {
    inner: SqliteStore,
    dice: Dice,
}

impl std::fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FaultyStore")
    }
}

impl Store for FaultyStore {
    fn insert<'a>(
        &'a self,
        request: &'a AccessRequest,
        audit: &'a [AuditEntry],
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.inner.insert(request, audit)
    }
    fn transition<'a>(&'a self, change: &'a Transition) -> BoxFuture<'a, Result<bool, Error>> {
        self.inner.transition(change)
    }
    fn append<'a>(&'a self, audit: &'a [AuditEntry]) -> BoxFuture<'a, Result<(), Error>> {
        self.inner.append(audit)
    }
    fn write_batch<'a>(
        &'a self,
        writes: &'a [Write<'a>],
    ) -> BoxFuture<'a, Vec<Result<bool, Error>>> {
        let roll = self.dice.per_mille();
        Box::pin(async move {
            match roll {
                0..10 => return writes.iter().map(|_| Err(broken())).collect(),
                10..20 => tokio::time::sleep(Duration::from_millis(5)).await,
                _ => {}
            }
            self.inner.write_batch(writes).await
        })
    }
    store_reads!();
}

/// Hands each alert to the deciders, except that one fails in thirty and one in fifty stalls
/// past the notify timeout (and arrives late, as from a slow channel). It keeps nothing.
struct FaultyNotifier {
    alerts: mpsc::UnboundedSender<Alert>,
    dice: Dice,
}

impl tollgate::notify::Notifier for FaultyNotifier {
    fn notify<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
        let roll = self.dice.per_mille();
        Box::pin(async move {
            match roll {
                0..33 => return Err(NotifyError::new("injected fault")),
                33..53 => tokio::time::sleep(NOTIFY_TIMEOUT * 3).await,
                _ => {}
            }
            let _ = self.alerts.send(alert.clone());
            Ok(())
        })
    }
}

/// Counts a caller done when its task ends, however it ends (an abort drops the future).
struct Done(Arc<(AtomicU64, Notify)>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.0.fetch_add(1, Ordering::SeqCst);
        self.0.1.notify_one();
    }
}

/// What a decider did to a request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    Approve(Scope),
    Deny,
    WrongCodes,
    Leave,
    Expire,
}

/// What the decider heard back.
#[derive(Debug)]
struct Decided {
    action: Action,
    answer: Result<(), &'static str>,
}

/// What callers may hear, besides a run.
const CALLER_ERRORS: [&str; 7] = [
    "access_request_denied",
    "access_request_expired",
    "too_many_attempts",
    "notification_failed",
    "store_failed",
    "left",
    "access_request_cancelled",
];

fn policy() -> CapabilityTable {
    CapabilityTable::new()
        .allow("read")
        .deny("drop", "never")
        // Rules last a wave or two, so the table's size stays level and the heap can be compared.
        .ask(
            "pay",
            Ask::new("money moves")
                .max_scope(Scope::Value)
                .max_rule_ttl(Duration::from_secs(1)),
        )
}

type Gated = tollgate::RequireApproval<Tools, CapabilityTable>;

async fn wave(
    gate: &Gate,
    svc: &Gated,
    alerts: &mut mpsc::UnboundedReceiver<Alert>,
    tools: &Tools,
    rng: &mut Rng,
    first: u64,
) {
    // The calls: a few allowed or denied by policy; most ask; about one in ten repeats an
    // earlier call of the wave, and joins its request or meets the rule its approval made.
    let mut calls = Vec::new();
    for i in first..first + WAVE {
        let capability = match rng.below(20) {
            0 => "read",
            1 => "drop",
            _ => "pay",
        };
        let n = if rng.below(10) == 0 {
            first + rng.below(i - first + 1)
        } else {
            i
        };
        let call = ToolCall::new(capability, json!({ "n": n })).principal(format!("p{}", n % 50));
        calls.push(call);
    }
    let done = Arc::new((AtomicU64::new(0), Notify::new()));
    let tasks: Vec<JoinHandle<Result<String, BoxError>>> = calls
        .iter()
        .map(|call| {
            let (svc, call, done) = (svc.clone(), call.clone(), Done(done.clone()));
            tokio::spawn(async move {
                let _done = done;
                svc.oneshot(call).await
            })
        })
        .collect();

    // A decider per request alerted, with a random action, until every caller has its answer.
    // Callers left waiting wait on a request its decider lets expire: the request TTL ends it.
    let mut deciders: Vec<(Alert, JoinHandle<Decided>)> = Vec::new();
    while done.0.load(Ordering::SeqCst) < WAVE {
        let alert = tokio::select! {
            Some(alert) = alerts.recv() => alert,
            () = done.1.notified() => continue,
        };
        let action = match rng.below(6) {
            0 => Action::Approve(Scope::Once),
            1 => Action::Approve(Scope::Value),
            2 => Action::Deny,
            3 => Action::WrongCodes,
            4 => Action::Leave,
            _ => Action::Expire,
        };
        let id = alert.request().id();
        let callers: Vec<_> = (0..calls.len())
            .filter(|&i| action == Action::Leave && same_call(&calls[i], alert.request()))
            .map(|i| tasks[i].abort_handle())
            .collect();
        let gate = gate.clone();
        let code_ = alert.code().reveal().to_owned();
        let decider = tokio::spawn(async move {
            let answer = match action {
                Action::Approve(scope) => gate
                    .approve(Approve::new(id, code_).scope(scope).by("alice"))
                    .await
                    .map(drop),
                Action::Deny => gate.deny(Deny::new(id, code_).by("bob")).await.map(drop),
                Action::WrongCodes => {
                    let mut last = Ok(());
                    for _ in 0..3 {
                        let wrong = Approve::new(id, "0000000G").by("mallory");
                        last = gate.approve(wrong).await.map(drop);
                    }
                    last
                }
                Action::Leave => {
                    callers.iter().for_each(|c| c.abort());
                    Ok(())
                }
                Action::Expire => Ok(()),
            };
            Decided {
                action,
                answer: answer.map_err(|e| e.code()),
            }
        });
        deciders.push((alert, decider));
    }

    let mut heard = Vec::new();
    for task in tasks {
        heard.push(match task.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(code(&e)),
            Err(e) if e.is_cancelled() => Err("left"),
            Err(e) => panic!("a caller panicked: {e}"),
        });
    }

    // Per request: its status agrees with what its decider heard, and so does the trail.
    for (alert, decider) in deciders {
        let d = decider.await.unwrap();
        let id = alert.request().id();
        let status = gate.status(id).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert!(!status.is_pending(), "{id} still pending after its wave");
        let trail = gate.audit(AuditFilter::new().request(id)).await.unwrap();
        let events: Vec<AuditEvent> = trail.iter().map(|e| e.event).collect();
        let context = format!(
            "{id} {:?} {d:?} {status:?} {events:?}",
            alert.request().args()
        );
        let approved = matches!(d.action, Action::Approve(_)) && d.answer.is_ok();
        if approved {
            // An approval reported: a caller received it, and the trail has it before the run.
            assert_eq!(status, Status::Executed, "{context}");
            let decided = events.iter().position(|e| *e == AuditEvent::Approved);
            let executing = events.iter().position(|e| *e == AuditEvent::Executing);
            assert!(decided.is_some() && decided < executing, "{context}");
        } else {
            assert!(
                !matches!(
                    status,
                    Status::Executed | Status::Executing | Status::Approved
                ),
                "approved without a reported approval: {context}"
            );
        }
        if d.action == Action::Deny && d.answer.is_ok() {
            assert_eq!(status, Status::Denied, "{context}");
            assert!(events.contains(&AuditEvent::Denied), "{context}");
        }
        assert!(events.contains(&AuditEvent::Requested), "{context}");
    }

    // Every caller heard an answer a caller may hear; each call that ran, ran once.
    let mut ok_by_call: HashMap<String, usize> = HashMap::new();
    for (call, answer) in calls.iter().zip(&heard) {
        match answer {
            Ok(()) => *ok_by_call.entry(call_key(call)).or_default() += 1,
            Err(error) => assert!(CALLER_ERRORS.contains(error), "{call:?} heard {error}"),
        }
        if call.capability() == "read" {
            assert_eq!(*answer, Ok(()), "allowed by policy: {call:?}");
        }
        if call.capability() == "drop" {
            assert_eq!(
                *answer,
                Err("access_request_denied"),
                "denied by policy: {call:?}"
            );
        }
    }
    assert_eq!(
        tools.take(),
        ok_by_call,
        "each run answered one caller, and only one"
    );
}

fn same_call(call: &ToolCall, request: &AccessRequest) -> bool {
    call.capability() == request.capability()
        && tollgate::Call::principal(call) == Some(request.principal())
        && *call.args() == request.args()
}

fn main() {
    let calls: u64 = std::env::var("TOLLGATE_SOAK_CALLS")
        .map(|n| n.parse().expect("TOLLGATE_SOAK_CALLS is a number"))
        .unwrap_or(100_000);
    assert!(
        calls > WARM_UP,
        "TOLLGATE_SOAK_CALLS must be more than the warm-up's {WARM_UP} calls"
    );
    let runtime = support::runtime();
    let path = support::scratch_dir().join(format!("tollgate-faults-{}.db", std::process::id()));
    runtime.block_on(async {
        let dice = Dice(Arc::new(AtomicU64::new(7)));
        let (sender, mut alerts) = mpsc::unbounded_channel();
        let store = FaultyStore {
            inner: SqliteStore::open(&path).expect("open the store"),
            dice: dice.clone(),
        };
        let notifier = FaultyNotifier {
            alerts: sender,
            dice,
        };
        let gate = Gate::builder()
            .secret(SECRET)
            .request_ttl(REQUEST_TTL)
            .notify_timeout(NOTIFY_TIMEOUT)
            .max_pending(2 * WAVE as usize)
            .max_pending_per_principal(2 * WAVE as usize)
            .unlimited_alert_rate()
            .max_attempts(3)
            .history(4 * WAVE as usize)
            .notifier(notifier)
            .store(store)
            .build()
            .unwrap();
        let tools = Tools::default();
        let svc = gate.layer(policy()).layer(tools.clone());
        let mut rng = Rng::new(42);
        let mut start = None;
        let mut first = 0;
        while first < calls {
            wave(&gate, &svc, &mut alerts, &tools, &mut rng, first).await;
            first += WAVE;
            // The warm-up fills the gate's history of decided requests: measure from there.
            if first == WARM_UP {
                start = Some(Region::new(GLOBAL));
            }
        }
        let stats = gate.stats();
        assert_eq!((stats.pending, stats.parked, stats.live), (0, 0, 0));
        let grown = start.expect("the warm-up ended").change();
        let held = grown.bytes_allocated as i64 - grown.bytes_deallocated as i64;
        println!("{calls} calls; heap since the warm-up: {held:+} bytes");
        assert!(held < 16 << 20, "the heap grew by {held} bytes");
        gate.shutdown().await.unwrap();
    });
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
