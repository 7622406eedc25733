//! Benchmarks of the gate against a bare service and against the naive floor
//! (`support/floor.rs`), in the same run.
//!
//! ```sh
//! cargo bench --bench gate
//! scripts/instructions            # instructions per round of its loops, under callgrind
//! ```
//!
//! Before the timings it prints what criterion does not measure, for the gate and the floor:
//! the memory one parked call costs (over 100,000 calls), the allocations of one round trip,
//! and the p99 from call to resume with 1,000 calls at once. The decision benches compare the
//! memory store with SQLite (`synchronous = FULL`, one file in the temporary directory), one
//! call at a time and 64 at once (where SQLite commits the writes that queued up together).
#![allow(missing_docs)]

#[path = "support/floor.rs"]
mod floor;
#[path = "support/mod.rs"]
mod support;

use std::alloc::System;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::sync::mpsc;
use tollgate::gate::GateBuilder;
use tollgate::notify::{Alert, notifier_fn};
use tollgate::policy::{Ask, CapabilityTable, Decision, policy_fn};
use tollgate::store::SqliteStore;
use tollgate::{Approve, Gate, RequireApproval, Scope, ToolCall};
use tower::{Layer, Service};

use floor::{Floor, FloorAlert, FloorService};
use support::Echo;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn builder() -> GateBuilder {
    Gate::builder()
        .secret("a benchmark secret, sixteen bytes or more")
        .request_ttl(Duration::from_secs(3600))
        .max_pending(1_000_000)
        .max_pending_per_principal(1_000_000)
        .unlimited_alert_rate()
        .history(0)
}

/// A current-thread runtime for the benches that park calls.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn policy() -> CapabilityTable {
    CapabilityTable::new().allow("search.web").ask(
        "payments.refund",
        Ask::new("moves money").max_scope(Scope::Capability),
    )
}

/// One call, polled to completion on the spot.
fn call_once<S: Service<R>, R>(svc: &mut S, request: R) {
    let mut cx = Context::from_waker(Waker::noop());
    let _ = svc.poll_ready(&mut cx);
    let future = pin!(svc.call(request));
    assert!(future.poll(&mut cx).is_ready());
}

fn refund(principal: &'static str) -> ToolCall {
    ToolCall::new("payments.refund", json!({"charge": "ch_1", "amount": 100})).principal(principal)
}

fn allowed(c: &mut Criterion) {
    let gate = builder()
        .notifier(notifier_fn(|_| async { Ok(()) }))
        .build()
        .unwrap();
    let mut bare = Echo;
    let mut always = gate
        .layer(policy_fn(|_: &&ToolCall| Decision::allow("always")))
        .layer(Echo);
    let mut table = gate.layer(policy()).layer(Echo);
    // Leaked: the gate takes requests that live as long as it may hold them ('static).
    let search: &'static ToolCall = Box::leak(Box::new(
        ToolCall::new("search.web", json!({"q": "x"})).principal("agent-7"),
    ));

    let mut group = c.benchmark_group("allowed call");
    group.bench_function("bare service", |b| b.iter(|| call_once(&mut bare, search)));
    group.bench_function("through the gate, closure policy", |b| {
        b.iter(|| call_once::<_, &ToolCall>(&mut always, search))
    });
    group.bench_function("through the gate, capability table", |b| {
        b.iter(|| call_once::<_, &ToolCall>(&mut table, search))
    });
    group.finish();

    // The same calls as an agent makes them: each builds its request and hands it over.
    let search = || ToolCall::new("search.web", json!({"q": "x"})).principal("agent-7");
    let mut group = c.benchmark_group("allowed call, request built per call");
    group.bench_function("bare service", |b| {
        b.iter(|| call_once(&mut bare, search()))
    });
    group.bench_function("naive floor", |b| {
        let (floor, _inbox) = Floor::new("payments.refund");
        let mut floor = floor.layer(Echo);
        b.iter(|| call_once(&mut floor, search()))
    });
    group.bench_function("through the gate, closure policy", |b| {
        let mut always = gate
            .layer(policy_fn(|_: &ToolCall| Decision::allow("always")))
            .layer(Echo);
        b.iter(|| call_once(&mut always, search()))
    });
    group.bench_function("through the gate, capability table", |b| {
        let mut table = gate.layer(policy()).layer(Echo);
        b.iter(|| call_once(&mut table, search()))
    });
    group.finish();
}

fn standing_rule(c: &mut Criterion) {
    let rt = runtime();
    let _enter = rt.enter();
    let Subject {
        approver: gate,
        mut inbox,
        ..
    } = gate_subject(builder());
    let mut gated: RequireApproval<Echo, _> = gate.layer(policy()).layer(Echo);
    let granting = gated.clone();
    let mut grant = |principal: String| {
        rt.block_on(async {
            let call = ToolCall::new("payments.refund", json!({})).principal(principal);
            let parked = tokio::spawn(tower::ServiceExt::oneshot(granting.clone(), call));
            let alert = inbox.recv().await.unwrap();
            let approve = Approve::new(alert.request().id(), alert.code().reveal());
            gate.approve(approve.scope(Scope::Capability).by("bench"))
                .await
                .unwrap();
            parked.await.unwrap().unwrap();
        })
    };
    grant("agent-7".to_owned());
    let call: &'static ToolCall = Box::leak(Box::new(refund("agent-7")));
    let mut bare = Echo;
    let mut group = c.benchmark_group("call allowed by a standing rule");
    group.bench_function("bare service", |b| b.iter(|| call_once(&mut bare, call)));
    group.bench_function("through the gate, 1 rule", |b| {
        b.iter(|| call_once::<_, &ToolCall>(&mut gated, call))
    });
    for i in 0..99_999 {
        grant(format!("other-{i}"));
    }
    assert_eq!(gate.stats().rules, 100_000);
    group.bench_function("through the gate, 100,000 rules", |b| {
        b.iter(|| call_once::<_, &ToolCall>(&mut gated, call))
    });
    group.finish();
}

fn park_approve_resume(c: &mut Criterion) {
    let rt = runtime();
    let _enter = rt.enter();
    let dir = std::env::temp_dir().join(format!("tollgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = SqliteStore::open(dir.join("bench.db")).unwrap();
    let mut group = c.benchmark_group("park, approve and resume");
    let next = AtomicUsize::new(0);
    /// Round trips one after another, each a new request: distinct arguments every time.
    fn round_trips<S: Gated, A: Approver>(
        rt: &tokio::runtime::Runtime,
        subject: &mut Subject<S, A>,
        next: &AtomicUsize,
        iters: u64,
    ) -> Duration {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                subject
                    .round_trip(next.fetch_add(1, Ordering::Relaxed))
                    .await;
            }
            start.elapsed()
        })
    }
    let mut floor = floor_subject();
    group.bench_function("naive floor", |b| {
        b.iter_custom(|iters| round_trips(&rt, &mut floor, &next, iters))
    });
    let mut memory = gate_subject(builder());
    group.bench_function("memory store", |b| {
        b.iter_custom(|iters| round_trips(&rt, &mut memory, &next, iters))
    });
    let mut on_disk = gate_subject(builder().store(sqlite));
    group.bench_function("SQLite store, synchronous=FULL", |b| {
        b.iter_custom(|iters| round_trips(&rt, &mut on_disk, &next, iters))
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The approver's side of the gate or of the floor: what an alert is, and approving it.
trait Approver: Clone + Send + Sync + 'static {
    type Alert: Send + 'static;
    fn approve(&self, alert: Self::Alert) -> impl Future<Output = ()> + Send;
}

impl Approver for Gate {
    type Alert = Alert;
    async fn approve(&self, alert: Alert) {
        let approve = Approve::new(alert.request().id(), alert.code().reveal());
        Gate::approve(self, approve.by("bench")).await.unwrap();
    }
}

impl Approver for Floor {
    type Alert = FloorAlert;
    async fn approve(&self, alert: FloorAlert) {
        assert!(Floor::approve(self, alert.id, &alert.code));
    }
}

/// A gated service under test, with its approver and the alerts they read.
struct Subject<S, A: Approver> {
    service: S,
    approver: A,
    inbox: mpsc::UnboundedReceiver<A::Alert>,
}

/// The gate `builder` makes, its alerts on a channel.
fn gate_subject(builder: GateBuilder) -> Subject<RequireApproval<Echo, CapabilityTable>, Gate> {
    let (alerts, inbox) = mpsc::unbounded_channel();
    let gate = builder
        .notifier(notifier_fn(move |alert| {
            let _ = alerts.send(alert);
            async { Ok(()) }
        }))
        .build()
        .unwrap();
    Subject {
        service: gate.layer(policy()).layer(Echo),
        approver: gate,
        inbox,
    }
}

fn floor_subject() -> Subject<FloorService<Echo>, Floor> {
    let (floor, inbox) = Floor::new("payments.refund");
    Subject {
        service: floor.layer(Echo),
        approver: floor,
        inbox,
    }
}

/// A call that needs a person, distinct from every other one.
fn distinct(i: usize) -> ToolCall {
    ToolCall::new("payments.refund", json!({"n": i})).principal("agent-7")
}

/// A gated service the benches drive: the gate's or the floor's.
trait Gated:
    Service<ToolCall, Future: Send, Response: Send, Error: std::fmt::Debug + Send>
    + Clone
    + Send
    + 'static
{
}

impl<S> Gated for S
where
    S: Service<ToolCall> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: std::fmt::Debug + Send,
{
}

impl<S: Gated, A: Approver> Subject<S, A> {
    /// `calls` distinct calls, each in a task of its own, parked: their tasks and alerts.
    async fn park(
        &mut self,
        calls: usize,
        first: usize,
    ) -> (
        Vec<tokio::task::JoinHandle<Result<S::Response, S::Error>>>,
        Vec<A::Alert>,
    ) {
        let parked = (0..calls)
            .map(|i| {
                let call = tower::ServiceExt::oneshot(self.service.clone(), distinct(first + i));
                tokio::spawn(call)
            })
            .collect();
        let mut alerts = Vec::with_capacity(calls);
        while alerts.len() < calls {
            alerts.push(self.inbox.recv().await.unwrap());
        }
        (parked, alerts)
    }

    /// `calls` calls parked, then approved one at a time as their alerts arrive; each approval
    /// awaited, then every caller. The time from the first approval to the last caller resumed.
    /// The approver is a task of its own, as an approval API's handler is.
    async fn approve_one_by_one(&mut self, calls: usize, first: usize) -> Duration {
        let (parked, alerts) = self.park(calls, first).await;
        let approver = self.approver.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            for alert in alerts {
                approver.approve(alert).await;
            }
            for call in parked {
                call.await.unwrap().unwrap();
            }
            start.elapsed()
        })
        .await
        .unwrap()
    }

    /// `calls` calls made at once, each timed from its call to its resumption, approved one at a
    /// time in the order their alerts arrive by a task of its own: the 99th percentile.
    async fn p99_at_once(&mut self, calls: usize, first: usize) -> Duration {
        let parked: Vec<_> = (0..calls)
            .map(|i| {
                let call = tower::ServiceExt::oneshot(self.service.clone(), distinct(first + i));
                tokio::spawn(async move {
                    let start = Instant::now();
                    call.await.unwrap();
                    start.elapsed()
                })
            })
            .collect();
        let (approver, inbox) = (self.approver.clone(), &mut self.inbox);
        let mut alerts = Vec::with_capacity(calls);
        while alerts.len() < calls {
            alerts.push(inbox.recv().await.unwrap());
        }
        tokio::spawn(async move {
            for alert in alerts {
                approver.approve(alert).await;
            }
        })
        .await
        .unwrap();
        let mut latencies = Vec::with_capacity(calls);
        for call in parked {
            latencies.push(call.await.unwrap());
        }
        latencies.sort();
        latencies[calls * 99 / 100]
    }

    /// `calls` calls parked, then approved at once, each by a task of its own: the time from
    /// the first approval to the last caller resumed.
    async fn decided_at_once(&mut self, calls: usize, first: usize) -> Duration {
        let (parked, alerts) = self.park(calls, first).await;
        let start = Instant::now();
        let approvals: Vec<_> = alerts
            .into_iter()
            .map(|alert| {
                let approver = self.approver.clone();
                tokio::spawn(async move { approver.approve(alert).await })
            })
            .collect();
        for approval in approvals {
            approval.await.unwrap();
        }
        for call in parked {
            call.await.unwrap().unwrap();
        }
        start.elapsed()
    }

    /// One call parked, approved and resumed; everything is dropped by the end.
    async fn round_trip(&mut self, i: usize) {
        let parked = tower::ServiceExt::oneshot(self.service.clone(), distinct(i));
        let approver = async {
            let alert = self.inbox.recv().await.unwrap();
            self.approver.approve(alert).await;
        };
        let (result, ()) = tokio::join!(parked, approver);
        result.unwrap();
    }
}

fn one_by_one(c: &mut Criterion) {
    const PARKED: usize = 1_000;
    let rt = runtime();
    let mut group = c.benchmark_group("1,000 parked, approved one by one, per decision");
    let next = AtomicUsize::new(0);
    let _enter = rt.enter();
    let mut floor = floor_subject();
    let mut gate = gate_subject(builder());
    let how = (PARKED, Deciding::OneByOne);
    group.bench_function("naive floor", |b| {
        b.iter_custom(|iters| per_decision(&rt, &mut floor, &next, iters, how))
    });
    group.bench_function("memory store", |b| {
        b.iter_custom(|iters| per_decision(&rt, &mut gate, &next, iters, how))
    });
    group.finish();
}

/// How the parked calls of a round are decided.
#[derive(Clone, Copy)]
enum Deciding {
    OneByOne,
    AtOnce,
}

/// The time of `iters` decisions, made in whole rounds of `calls` parked calls and scaled.
fn per_decision<S: Gated, A: Approver>(
    rt: &tokio::runtime::Runtime,
    subject: &mut Subject<S, A>,
    next: &AtomicUsize,
    iters: u64,
    (calls, how): (usize, Deciding),
) -> Duration {
    let rounds = iters.div_ceil(calls as u64);
    let mut total = Duration::ZERO;
    for _ in 0..rounds {
        let first = next.fetch_add(calls, Ordering::Relaxed);
        total += rt.block_on(async {
            match how {
                Deciding::OneByOne => subject.approve_one_by_one(calls, first).await,
                Deciding::AtOnce => subject.decided_at_once(calls, first).await,
            }
        });
    }
    total.mul_f64(iters as f64 / (rounds * calls as u64) as f64)
}

/// 64 parked calls decided at once, on the floor, the memory store and SQLite: writes that queue
/// while the store is busy are committed together.
fn at_once(c: &mut Criterion) {
    const AT_ONCE: usize = 64;
    let rt = runtime();
    let _enter = rt.enter();
    let dir = std::env::temp_dir().join(format!("tollgate-bench-64-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut group = c.benchmark_group("64 parked calls decided at once, per decision");
    group.throughput(Throughput::Elements(1));
    let next = AtomicUsize::new(0);
    let how = (AT_ONCE, Deciding::AtOnce);
    let mut floor = floor_subject();
    group.bench_function("naive floor", |b| {
        b.iter_custom(|iters| per_decision(&rt, &mut floor, &next, iters, how))
    });
    let mut memory = gate_subject(builder());
    group.bench_function("memory store", |b| {
        b.iter_custom(|iters| per_decision(&rt, &mut memory, &next, iters, how))
    });
    let sqlite = SqliteStore::open(dir.join("bench.db")).unwrap();
    let mut on_disk = gate_subject(builder().store(sqlite));
    group.bench_function("SQLite store, synchronous=FULL", |b| {
        b.iter_custom(|iters| per_decision(&rt, &mut on_disk, &next, iters, how))
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// What criterion does not measure, printed for the gate and the floor side by side: the p99
/// with 1,000 calls at once, allocations per round trip, and memory per parked call.
fn report() {
    let rt = runtime();
    let _enter = rt.enter();
    let (mut floor, mut gate) = (floor_subject(), gate_subject(builder()));
    let mut next = 0;
    // p99 from call to resume: the median over 9 rounds of 1,000 calls, after one to warm up.
    let mut p99 = |run: &mut dyn FnMut(usize) -> Duration| {
        let mut rounds: Vec<Duration> = (0..10)
            .map(|_| {
                next += 1_000;
                run(next)
            })
            .skip(1)
            .collect();
        rounds.sort();
        rounds[rounds.len() / 2]
    };
    let floor_p99 = p99(&mut |first| rt.block_on(floor.p99_at_once(1_000, first)));
    let gate_p99 = p99(&mut |first| rt.block_on(gate.p99_at_once(1_000, first)));
    println!(
        "p99 call to resume, 1,000 calls at once: floor {floor_p99:.2?}, gate {gate_p99:.2?}, ratio {:.2}",
        gate_p99.as_secs_f64() / floor_p99.as_secs_f64()
    );

    // Allocations of one round trip, averaged over 1,000 after 1,000 to warm up.
    const ROUNDS: usize = 1_000;
    let allocations = |run: &mut dyn FnMut(usize)| {
        for i in 0..ROUNDS {
            run(i);
        }
        let region = Region::new(GLOBAL);
        for i in ROUNDS..2 * ROUNDS {
            run(i);
        }
        let stats = region.change();
        (stats.allocations / ROUNDS, stats.bytes_allocated / ROUNDS)
    };
    let (floor_n, floor_bytes) = allocations(&mut |i| rt.block_on(floor.round_trip(next + i)));
    let (gate_n, gate_bytes) = allocations(&mut |i| rt.block_on(gate.round_trip(next + i)));
    println!(
        "allocations per round trip: floor {floor_n} ({floor_bytes} bytes), gate {gate_n} ({gate_bytes} bytes)"
    );
    drop(_enter);
    drop(rt);
    let (floor, mut floor_inbox) = Floor::new("payments.refund");
    let floor_bytes = memory_per_parked_call(floor.layer(Echo), || {
        while floor_inbox.try_recv().is_ok() {}
        true
    });
    let notified = Arc::new(AtomicUsize::new(0));
    let gate = builder()
        .notifier(notifier_fn({
            let notified = notified.clone();
            move |_| {
                notified.fetch_add(1, Ordering::Relaxed);
                async { Ok(()) }
            }
        }))
        .build()
        .unwrap();
    let gate_bytes = memory_per_parked_call(gate.layer(policy()).layer(Echo), || {
        // Until every alert task has finished, not merely reached its notifier; two tasks
        // stay: the gate's store writer and its expiry task.
        let tasks = tokio::runtime::Handle::current().metrics();
        notified.load(Ordering::Relaxed) == PARKED && tasks.num_alive_tasks() <= 2
    });
    assert_eq!(gate.stats().parked, 0);
    println!(
        "memory per parked call, over {PARKED} parked calls: floor {floor_bytes} bytes, gate {gate_bytes} bytes \
         (the call itself, {} bytes plus its strings and args, is the caller's)",
        std::mem::size_of::<ToolCall>()
    );
}

const PARKED: usize = 100_000;

/// Bytes held per parked call, everything included: the caller's boxed future, the request,
/// the registry's slot and indexes, and the alert task's leftovers, once `settled` says the
/// alerts are out.
fn memory_per_parked_call<S>(mut gated: S, mut settled: impl FnMut() -> bool) -> isize
where
    S: Service<ToolCall>,
{
    let rt = runtime();
    let calls: Vec<ToolCall> = (0..PARKED)
        .map(|i| {
            ToolCall::new("payments.refund", json!({"n": i}))
                .principal(format!("agent-{}", i % 100))
        })
        .collect();
    rt.block_on(async {
        let region = Region::new(GLOBAL);
        let mut parked: Vec<Pin<Box<_>>> = Vec::with_capacity(PARKED);
        let mut cx = Context::from_waker(Waker::noop());
        for call in calls {
            let mut future = Box::pin(gated.call(call));
            assert!(future.as_mut().poll(&mut cx).is_pending());
            parked.push(future);
        }
        while !settled() {
            tokio::task::yield_now().await;
        }
        let stats = region.change();
        let held = stats.bytes_allocated as isize - stats.bytes_deallocated as isize
            + stats.bytes_reallocated;
        let vec = (PARKED * std::mem::size_of::<Pin<Box<()>>>()) as isize;
        drop(parked);
        (held - vec) / PARKED as isize
    })
}

criterion_group!(
    benches,
    allowed,
    standing_rule,
    park_approve_resume,
    one_by_one,
    at_once
);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, what, rounds] = &args[..]
        && flag == "--count"
    {
        return count(what, rounds.parse().expect("a number of rounds"));
    }
    report();
    benches();
    Criterion::default().configure_from_args().final_summary();
}

/// `gate --count WHAT ROUNDS`: the benches' loops alone, `ROUNDS` times, for counting
/// instructions under callgrind (`scripts/instructions`): `park` and `floor` round trips on the
/// memory store; `bare`, `table` and `closure` allowed calls, the request built per call.
fn count(what: &str, rounds: usize) {
    let search = || ToolCall::new("search.web", json!({"q": "x"})).principal("agent-7");
    let gate = || {
        builder()
            .notifier(notifier_fn(|_| async { Ok(()) }))
            .build()
            .unwrap()
    };
    match what {
        "park" | "floor" => {
            let rt = runtime();
            let _enter = rt.enter();
            rt.block_on(async {
                if what == "park" {
                    let mut subject = gate_subject(builder());
                    for i in 0..rounds {
                        subject.round_trip(i).await;
                    }
                } else {
                    let mut subject = floor_subject();
                    for i in 0..rounds {
                        subject.round_trip(i).await;
                    }
                }
            });
        }
        "bare" => (0..rounds).for_each(|_| call_once(&mut Echo, search())),
        "table" => {
            let mut table = gate().layer(policy()).layer(Echo);
            (0..rounds).for_each(|_| call_once(&mut table, search()));
        }
        "closure" => {
            let always = policy_fn(|_: &ToolCall| Decision::allow("always"));
            let mut always = gate().layer(always).layer(Echo);
            (0..rounds).for_each(|_| call_once(&mut always, search()));
        }
        _ => panic!("count park, floor, bare, table or closure"),
    }
}
