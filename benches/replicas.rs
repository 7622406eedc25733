//! Benchmarks of replicas on PostgreSQL, each against a floor measured in the same run.
//!
//! ```sh
//! TOLLGATE_BENCH_POSTGRES="host=127.0.0.1 port=5432 user=postgres" \
//!     cargo bench --bench replicas --features postgres
//! ```
//!
//! The server must run with `synchronous_commit = on` (the default; checked). Each group makes
//! its own database. Groups:
//!
//! - **decisions on PostgreSQL**: a parked call approved and resumed on one replica (the
//!   decision's conditional update and the caller's `executing` step, each committed), one at a
//!   time and 64 at once, against the floor of one committed conditional `UPDATE` on the same
//!   server, one at a time and 64 at once;
//! - **approve on B, resume on A**: the time from `approve` on one replica to the caller resuming
//!   on another, with `LISTEN/NOTIFY` and with it off (re-scan every second); p50 and p99 are
//!   printed from the samples;
//! - **call allowed by a standing rule**: through a gate on PostgreSQL against a bare service: no
//!   database round trip.
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Context;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_postgres::NoTls;
use tollgate::notify::{Alert, notifier_fn};
use tollgate::policy::{Ask, CapabilityTable};
use tollgate::store::{PostgresOptions, PostgresStore};
use tollgate::{Approve, Gate, RequireApproval, Scope, ToolCall};
use tower::{Layer, Service, ServiceExt};

use support::Echo;

fn server() -> String {
    std::env::var("TOLLGATE_BENCH_POSTGRES")
        .or_else(|_| std::env::var("TOLLGATE_TEST_POSTGRES"))
        .expect("set TOLLGATE_BENCH_POSTGRES to a PostgreSQL server (host=… port=… user=…)")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A fresh database on the server; its connection string.
async fn database(name: &str) -> String {
    let db = format!("tollgate_bench_{name}_{}", std::process::id());
    let (client, connection) = tokio_postgres::connect(&server(), NoTls).await.unwrap();
    tokio::spawn(connection);
    let on: String = client
        .query_one("SHOW synchronous_commit", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(on, "on", "the benches measure committed decisions");
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
        .await
        .unwrap();
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    format!("{} dbname={db}", server())
}

async fn replica(url: &str, name: &str, listen: bool) -> (Gate, mpsc::UnboundedReceiver<Alert>) {
    let store = PostgresStore::connect_with(
        url,
        PostgresOptions::new()
            .instance(name)
            .listen(listen)
            .pool_size(64),
    )
    .await
    .unwrap();
    let (alerts, inbox) = mpsc::unbounded_channel();
    let gate = Gate::builder()
        .secret("a benchmark secret, sixteen bytes or more")
        .request_ttl(Duration::from_secs(3600))
        .max_pending(1_000_000)
        .max_pending_per_principal(1_000_000)
        .unlimited_alert_rate()
        .notifier(notifier_fn(move |alert| {
            let _ = alerts.send(alert);
            async { Ok(()) }
        }))
        .store(store)
        .build()
        .unwrap();
    (gate, inbox)
}

fn policy() -> CapabilityTable {
    CapabilityTable::new().ask(
        "payments.refund",
        Ask::new("moves money").max_scope(Scope::Capability),
    )
}

static N: AtomicU64 = AtomicU64::new(0);

fn refund(principal: &str) -> ToolCall {
    let n = N.fetch_add(1, Ordering::Relaxed);
    ToolCall::new("payments.refund", json!({"n": n})).principal(principal.to_owned())
}

type Gated = RequireApproval<Echo, CapabilityTable>;

/// Parks `count` calls on `gated` and returns them with their alerts.
async fn park(
    gated: &Gated,
    inbox: &mut mpsc::UnboundedReceiver<Alert>,
    count: usize,
) -> Vec<(tokio::task::JoinHandle<()>, Alert)> {
    let mut parked = Vec::with_capacity(count);
    for _ in 0..count {
        let call = tokio::spawn({
            let gated = gated.clone();
            async move { gated.oneshot(refund("agent-7")).await.unwrap() }
        });
        parked.push(call);
    }
    let mut alerts = Vec::with_capacity(count);
    for _ in 0..count {
        alerts.push(inbox.recv().await.unwrap());
    }
    // Alerts arrive in any order; pairing them with calls does not matter.
    parked.into_iter().zip(alerts).collect()
}

async fn approve_all(gate: &Gate, parked: Vec<(tokio::task::JoinHandle<()>, Alert)>) {
    let mut approvals = Vec::with_capacity(parked.len());
    let mut calls = Vec::with_capacity(parked.len());
    for (call, alert) in parked {
        let gate = gate.clone();
        calls.push(call);
        approvals.push(tokio::spawn(async move {
            let approve = Approve::new(alert.request().id(), alert.code().reveal()).by("bench");
            gate.approve(approve).await.unwrap();
        }));
    }
    for approval in approvals {
        approval.await.unwrap();
    }
    for call in calls {
        call.await.unwrap();
    }
}

/// The floor: `count` committed conditional updates of pending rows, at once.
async fn floor(pool: &[tokio_postgres::Client], ids: Vec<i64>) {
    let mut updates = Vec::with_capacity(ids.len());
    for (i, id) in ids.into_iter().enumerate() {
        let client = &pool[i % pool.len()];
        updates.push(async move {
            let n = client
                .execute(
                    "UPDATE bench_decisions SET status = 'approved' WHERE id = $1 AND status = 'pending'",
                    &[&id],
                )
                .await
                .unwrap();
            assert_eq!(n, 1);
        });
    }
    futures_join_all(updates).await;
}

async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: Vec<F>) {
    let mut set = Vec::with_capacity(futures.len());
    for future in futures {
        set.push(Box::pin(future));
    }
    for future in set {
        future.await;
    }
}

fn decisions(c: &mut Criterion) {
    let rt = runtime();
    let url = rt.block_on(database("decisions"));
    let (gate, inbox) = rt.block_on(replica(&url, "a", true));
    let inbox = Arc::new(tokio::sync::Mutex::new(inbox));
    let gated = {
        let _enter = rt.enter();
        gate.layer(policy()).layer(Echo)
    };
    let pool: Vec<tokio_postgres::Client> = rt.block_on(async {
        let mut pool = Vec::new();
        for _ in 0..64 {
            let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
            tokio::spawn(connection);
            pool.push(client);
        }
        pool[0]
            .batch_execute(
                "CREATE TABLE bench_decisions (id BIGSERIAL PRIMARY KEY, status TEXT NOT NULL)",
            )
            .await
            .unwrap();
        pool
    });
    let pending = |count: usize| {
        rt.block_on(async {
            let rows = pool[0]
                .query(
                    "INSERT INTO bench_decisions (status) SELECT 'pending' FROM generate_series(1, $1::int) RETURNING id",
                    &[&(count as i32)],
                )
                .await
                .unwrap();
            rows.iter().map(|r| r.get(0)).collect::<Vec<i64>>()
        })
    };
    let mut group = c.benchmark_group("decisions on PostgreSQL");
    group.sample_size(20);
    for at_once in [1usize, 64] {
        group.bench_function(
            format!("floor: committed conditional UPDATE, {at_once} at once"),
            |b| {
                b.iter_batched(
                    || pending(at_once),
                    |ids| rt.block_on(floor(&pool, ids)),
                    BatchSize::PerIteration,
                )
            },
        );
        group.bench_function(format!("approve and resume, {at_once} at once"), |b| {
            b.iter_batched(
                || rt.block_on(async { park(&gated, &mut *inbox.lock().await, at_once).await }),
                |parked| rt.block_on(approve_all(&gate, parked)),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn across(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("approve on B, resume on A");
    group.sample_size(20);
    for listen in [true, false] {
        let url = rt.block_on(database(if listen { "listen" } else { "rescan" }));
        let (a, inbox) = rt.block_on(replica(&url, "a", listen));
        let (b, _) = rt.block_on(replica(&url, "b", listen));
        let inbox = Arc::new(tokio::sync::Mutex::new(inbox));
        let gated = {
            let _enter = rt.enter();
            a.layer(policy()).layer(Echo)
        };
        let mut samples = Vec::new();
        let name = if listen {
            "with LISTEN/NOTIFY"
        } else {
            "notifications lost, re-scan every 1 s"
        };
        group.bench_function(name, |bench| {
            bench.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let (call, alert) = park(&gated, &mut *inbox.lock().await, 1)
                            .await
                            .pop()
                            .unwrap();
                        let started = Instant::now();
                        let approve = Approve::new(alert.request().id(), alert.code().reveal());
                        let approving = tokio::spawn({
                            let b = b.clone();
                            async move { b.approve(approve.by("bench")).await.unwrap() }
                        });
                        call.await.unwrap();
                        let took = started.elapsed();
                        approving.await.unwrap();
                        samples.push(took);
                        total += took;
                    }
                    total
                })
            })
        });
        if samples.is_empty() {
            continue; // filtered out
        }
        samples.sort();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
        println!(
            "approve on B, resume on A, {name}: p50 {:?}, p99 {:?} over {} samples",
            at(0.5),
            at(0.99),
            samples.len()
        );
        let _ = a;
    }
    group.finish();
}

fn allowed_by_rule(c: &mut Criterion) {
    let rt = runtime();
    let url = rt.block_on(database("rule"));
    let (gate, mut inbox) = rt.block_on(replica(&url, "a", true));
    let _enter = rt.enter();
    let mut gated = gate.layer(policy()).layer(Echo);
    rt.block_on(async {
        let parked = park(&gated, &mut inbox, 1).await;
        let (call, alert) = parked.into_iter().next().unwrap();
        let approve = Approve::new(alert.request().id(), alert.code().reveal());
        gate.approve(approve.scope(Scope::Capability).by("bench"))
            .await
            .unwrap();
        call.await.unwrap();
    });
    // Leaked: the gate takes requests that live as long as it may hold them ('static).
    let call: &'static ToolCall = Box::leak(Box::new(refund("agent-7")));
    let mut bare = Echo;
    let once = |svc: &mut dyn FnMut() -> bool| assert!(svc());
    let mut group = c.benchmark_group("call allowed by a standing rule, PostgreSQL store");
    group.bench_function("bare service", |b| {
        b.iter(|| {
            once(&mut || {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let _ = Service::<&ToolCall>::poll_ready(&mut bare, &mut cx);
                let mut future = std::pin::pin!(Service::<&ToolCall>::call(&mut bare, call));
                future.as_mut().poll(&mut cx).is_ready()
            })
        })
    });
    group.bench_function("through the gate, 1 rule", |b| {
        b.iter(|| {
            once(&mut || {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let _ = Service::<&ToolCall>::poll_ready(&mut gated, &mut cx);
                let mut future = std::pin::pin!(Service::<&ToolCall>::call(&mut gated, call));
                future.as_mut().poll(&mut cx).is_ready()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, decisions, across, allowed_by_rule);
criterion_main!(benches);
