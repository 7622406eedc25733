//! Benchmarks of the gate against a bare service, in the same run.
//!
//! ```sh
//! cargo bench --bench gate
//! ```
//!
//! Before the timings it prints the memory one parked call costs, measured over 100,000 calls.
//! The decision benches compare the memory store with SQLite (`synchronous = FULL`, one file in
//! the temporary directory) in the same run.
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::alloc::System;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::sync::mpsc;
use tollgate::gate::GateBuilder;
use tollgate::notify::{Alert, notifier_fn};
use tollgate::policy::{Ask, CapabilityTable, Decision, policy_fn};
use tollgate::store::SqliteStore;
use tollgate::{Approve, Gate, RequireApproval, Scope, ToolCall};
use tower::{Layer, Service};

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

/// A gate whose alerts arrive on a channel, as an approver would read them.
fn gate_with_inbox() -> (Gate, mpsc::UnboundedReceiver<Alert>) {
    let (alerts, inbox) = mpsc::unbounded_channel();
    let gate = builder()
        .notifier(notifier_fn(move |alert| {
            let _ = alerts.send(alert);
            async { Ok(()) }
        }))
        .build()
        .unwrap();
    (gate, inbox)
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
    let search = ToolCall::new("search.web", json!({"q": "x"})).principal("agent-7");

    let mut group = c.benchmark_group("allowed call");
    group.bench_function("bare service", |b| b.iter(|| call_once(&mut bare, &search)));
    group.bench_function("through the gate, closure policy", |b| {
        b.iter(|| call_once::<_, &ToolCall>(&mut always, &search))
    });
    group.bench_function("through the gate, capability table", |b| {
        b.iter(|| call_once::<_, &ToolCall>(&mut table, &search))
    });
    group.finish();

    // The same calls as an agent makes them: each builds its request and hands it over.
    let search = || ToolCall::new("search.web", json!({"q": "x"})).principal("agent-7");
    let mut group = c.benchmark_group("allowed call, request built per call");
    group.bench_function("bare service", |b| {
        b.iter(|| call_once(&mut bare, search()))
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
    let (gate, mut inbox) = gate_with_inbox();
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
    let call = refund("agent-7");
    let mut bare = Echo;
    let mut group = c.benchmark_group("call allowed by a standing rule");
    group.bench_function("bare service", |b| b.iter(|| call_once(&mut bare, &call)));
    group.bench_function("through the gate, 1 rule", |b| {
        b.iter(|| call_once::<_, &ToolCall>(&mut gated, &call))
    });
    for i in 0..99_999 {
        grant(format!("other-{i}"));
    }
    assert_eq!(gate.stats().rules, 100_000);
    group.bench_function("through the gate, 100,000 rules", |b| {
        b.iter(|| call_once::<_, &ToolCall>(&mut gated, &call))
    });
    group.finish();
}

fn park_approve_resume(c: &mut Criterion) {
    let rt = runtime();
    let dir = std::env::temp_dir().join(format!("tollgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = SqliteStore::open(dir.join("bench.db")).unwrap();
    let mut group = c.benchmark_group("park, approve and resume");
    for (name, store) in [
        ("memory store", None),
        ("SQLite store, synchronous=FULL", Some(sqlite)),
    ] {
        let _enter = rt.enter();
        let (alerts, inbox) = mpsc::unbounded_channel();
        let mut builder = builder().notifier(notifier_fn(move |alert| {
            let _ = alerts.send(alert);
            async { Ok(()) }
        }));
        if let Some(store) = store {
            builder = builder.store(store);
        }
        let gate = builder.build().unwrap();
        let inbox = Arc::new(tokio::sync::Mutex::new(inbox));
        let gated = gate.layer(policy()).layer(Echo);
        let n = AtomicUsize::new(0);
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                // Distinct arguments each time, so every call makes a new request.
                let i = n.fetch_add(1, Ordering::Relaxed);
                let call = ToolCall::new("payments.refund", json!({"n": i})).principal("agent-7");
                let parked = tower::ServiceExt::oneshot(gated.clone(), call);
                let (gate, inbox) = (gate.clone(), inbox.clone());
                async move {
                    let approver = async {
                        let alert = inbox.lock().await.recv().await.unwrap();
                        let approve = Approve::new(alert.request().id(), alert.code().reveal());
                        gate.approve(approve.by("bench")).await.unwrap();
                    };
                    let (result, ()) = tokio::join!(parked, approver);
                    result.unwrap();
                }
            })
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bytes held per parked call, everything included: the caller's boxed future, the request,
/// the registry's slot and indexes, and the alert task's leftovers.
fn memory_per_parked_call() {
    const CALLS: usize = 100_000;
    let rt = runtime();
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
    let mut gated = gate.layer(policy()).layer(Echo);
    let calls: Vec<ToolCall> = (0..CALLS)
        .map(|i| {
            ToolCall::new("payments.refund", json!({"n": i}))
                .principal(format!("agent-{}", i % 100))
        })
        .collect();
    let size_of_call = std::mem::size_of::<ToolCall>();
    rt.block_on(async {
        let region = Region::new(GLOBAL);
        let mut parked: Vec<Pin<Box<_>>> = Vec::with_capacity(CALLS);
        let mut cx = Context::from_waker(Waker::noop());
        for call in calls {
            let mut future = Box::pin(gated.call(call));
            assert!(future.as_mut().poll(&mut cx).is_pending());
            parked.push(future);
        }
        // Until every alert task has finished, not merely reached its notifier.
        let tasks = tokio::runtime::Handle::current().metrics();
        // One task stays: the gate's store queue.
        while notified.load(Ordering::Relaxed) < CALLS || tasks.num_alive_tasks() > 1 {
            tokio::task::yield_now().await;
        }
        let stats = region.change();
        let held = stats.bytes_allocated as isize - stats.bytes_deallocated as isize
            + stats.bytes_reallocated;
        let vec = (CALLS * std::mem::size_of::<Pin<Box<()>>>()) as isize;
        assert_eq!(gate.stats().parked, CALLS);
        println!(
            "memory per parked call, over {CALLS} parked calls: {} bytes \
             (the call itself, {size_of_call} bytes plus its strings and args, is the caller's)",
            (held - vec) / CALLS as isize
        );
        drop(parked);
        assert_eq!(gate.stats().parked, 0);
    });
}

criterion_group!(benches, allowed, standing_rule, park_approve_resume);

fn main() {
    memory_per_parked_call();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
