//! Allowed calls cost the caller no allocation: neither a call the policy allows nor one a
//! standing rule lets through. Counted with an instrumented global allocator.

use std::alloc::System;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tollgate::notify::RecordingNotifier;
use tollgate::policy::{Ask, CapabilityTable};
use tollgate::{Approve, Call, Gate, Scope};
use tower::{Layer, Service, ServiceExt};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The counters are process-wide: the tests of this file take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A gate that alerts `alerts`.
fn gate(alerts: &RecordingNotifier) -> Gate {
    Gate::builder()
        .secret("a test secret of at least sixteen bytes")
        .notifier(alerts.clone())
        .build()
        .unwrap()
}

/// A request and a service that themselves allocate nothing.
#[derive(Clone, Copy)]
struct Op(&'static str);

/// The arguments of `price` calls: decimals, which a `value` rule digests on every call.
static PRICE: std::sync::LazyLock<serde_json::Value> =
    std::sync::LazyLock::new(|| serde_json::json!({"rate": 0.25, "amount": 1234.5, "n": 3}));

impl Call for Op {
    fn capability(&self) -> &str {
        self.0
    }
    fn args(&self) -> std::borrow::Cow<'_, serde_json::Value> {
        match self.0 {
            "price" => std::borrow::Cow::Borrowed(&PRICE),
            _ => std::borrow::Cow::Owned(serde_json::Value::Null),
        }
    }
    fn principal(&self) -> Option<&str> {
        Some("agent")
    }
}

#[derive(Clone, Copy)]
struct Echo;

impl Service<Op> for Echo {
    type Response = &'static str;
    type Error = Infallible;
    type Future = Ready<Result<&'static str, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, op: Op) -> Self::Future {
        ready(Ok(op.0))
    }
}

/// Allocations made while `n` calls of `op` are polled to completion: the fewest of five rounds.
///
/// The allocator's counters are process-wide, and the test harness's own thread may allocate
/// during a round on a loaded machine. A path that allocates does so in every round, at least
/// `n` times; a round with none shows the path itself allocates nothing.
fn allocations<S: Service<Op, Response = &'static str>>(svc: &mut S, op: Op, n: usize) -> usize {
    (0..5).map(|_| round(svc, op, n)).min().unwrap()
}

fn round<S: Service<Op, Response = &'static str>>(svc: &mut S, op: Op, n: usize) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    let region = Region::new(GLOBAL);
    for _ in 0..n {
        assert!(svc.poll_ready(&mut cx).is_ready());
        let future = pin!(svc.call(op));
        assert!(matches!(
            future.poll(&mut cx),
            Poll::Ready(Ok("read" | "write" | "price"))
        ));
    }
    region.change().allocations
}

#[tokio::test(flavor = "current_thread")]
async fn allowed_calls_allocate_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts);
    let policy = CapabilityTable::new()
        .allow("read")
        .ask(
            "write",
            Ask::new("writes need a person").max_scope(Scope::Capability),
        )
        .ask(
            "price",
            Ask::new("prices need a person").max_scope(Scope::Value),
        );
    let mut svc = gate.layer(policy).layer(Echo);

    // Warm up lazily initialised runtime state.
    allocations(&mut svc, Op("read"), 10);
    assert_eq!(
        allocations(&mut svc, Op("read"), 1000),
        0,
        "allowed by policy"
    );

    // After a capability-wide approval, the same path holds for calls a standing rule covers.
    let parked = tokio::spawn(svc.clone().oneshot(Op("write")));
    let alert = alerts.next_alert().await;
    gate.approve(
        Approve::new(alert.request().id(), alert.code().reveal())
            .scope(Scope::Capability)
            .by("alice"),
    )
    .await
    .unwrap();
    parked.await.unwrap().unwrap();
    allocations(&mut svc, Op("write"), 10);
    assert_eq!(
        allocations(&mut svc, Op("write"), 1000),
        0,
        "allowed by a standing rule"
    );

    // A `value` rule digests the arguments on every call, decimals included, allocating nothing.
    let parked = tokio::spawn(svc.clone().oneshot(Op("price")));
    let alert = alerts.next_alert().await;
    gate.approve(
        Approve::new(alert.request().id(), alert.code().reveal())
            .scope(Scope::Value)
            .by("alice"),
    )
    .await
    .unwrap();
    parked.await.unwrap().unwrap();
    allocations(&mut svc, Op("price"), 10);
    assert_eq!(
        allocations(&mut svc, Op("price"), 1000),
        0,
        "allowed by a standing value rule"
    );
}

/// Bytes still held after `n` calls of `op` each joined a pending request and went away. One
/// round: memory a leak keeps stays kept, so no later round would show it again. Allocations on
/// other threads can only add to the count.
fn held_after_joins<S: Service<Op>>(svc: &mut S, op: Op, n: usize) -> isize {
    let mut cx = Context::from_waker(Waker::noop());
    let region = Region::new(GLOBAL);
    for _ in 0..n {
        assert!(svc.poll_ready(&mut cx).is_ready());
        drop(svc.call(op));
    }
    let change = region.change();
    change.bytes_allocated as isize + change.bytes_reallocated - change.bytes_deallocated as isize
}

#[tokio::test(flavor = "current_thread")]
async fn callers_that_join_and_leave_hold_no_memory() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts);
    let policy = CapabilityTable::new().ask("write", Ask::new("writes need a person"));
    let mut svc = gate.layer(policy).layer(Echo);
    let first = tokio::spawn(svc.clone().oneshot(Op("write")));
    alerts.next_alert().await;

    // An agent joins the pending request and drops the call, over and over: what the request
    // holds grows with the callers waiting now (one), not with those who ever joined.
    held_after_joins(&mut svc, Op("write"), 100);
    let held = held_after_joins(&mut svc, Op("write"), 20_000);
    assert!(held < 4096, "{held} bytes held after 20,000 joins");
    assert_eq!(gate.stats().parked, 1);
    first.abort();
}
