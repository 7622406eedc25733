//! Memory under sustained load: a million park, approve and resume cycles on a gate with the
//! default settings and store leave the heap where it was after the warm-up, within 4 MiB.
//!
//! ```sh
//! cargo bench --bench sustained
//! ```
//!
//! It asserts the bound, so `scripts/test` runs it. The warm-up fills everything the gate and
//! its memory store keep up to a bound: the audit trail (65,536 entries), the finished requests
//! (4,096), the gate's history of decided requests (4,096).
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::alloc::System;
use std::time::{Duration, Instant};

use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tollgate::notify::notifier_fn;
use tollgate::policy::{Ask, CapabilityTable};
use tollgate::{Approve, Gate, ToolCall};
use tower::{Layer, ServiceExt};

use support::Echo;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const WARM_UP: usize = 50_000;
const CYCLES: usize = 1_000_000;
const BOUND: isize = 4 << 20;

/// Bytes on the heap now. (The counting allocator adds what a `realloc` grows or shrinks to the
/// bytes allocated or deallocated already.)
fn heap() -> isize {
    let stats = GLOBAL.stats();
    stats.bytes_allocated as isize - stats.bytes_deallocated as isize
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let (alerts, mut inbox) = tokio::sync::mpsc::unbounded_channel();
    // Default settings but the alert rate: one principal opens every request.
    let gate = Gate::builder()
        .secret("a benchmark secret, sixteen bytes or more")
        .unlimited_alert_rate()
        .notifier(notifier_fn(move |alert| {
            let _ = alerts.send(alert);
            async { Ok(()) }
        }))
        .build()
        .unwrap();
    let gated = gate
        .layer(CapabilityTable::new().ask("payments.refund", Ask::new("moves money")))
        .layer(Echo);
    let mut run = |from: usize, n: usize| {
        rt.block_on(async {
            for i in from..from + n {
                let call = ToolCall::new("payments.refund", json!({"n": i}));
                let parked = gated.clone().oneshot(call);
                let approver = async {
                    let alert = inbox.recv().await.unwrap();
                    let approve = Approve::new(alert.request().id(), alert.code().reveal());
                    gate.approve(approve.by("bench")).await.unwrap();
                };
                let (result, ()) = tokio::join!(parked, approver);
                result.unwrap();
            }
        })
    };
    run(0, WARM_UP);
    let start = heap();
    let began = Instant::now();
    println!(
        "after {WARM_UP} cycles to warm up: {:.1} MiB on the heap",
        mib(start)
    );
    for quarter in 1..=4 {
        run(WARM_UP + (quarter - 1) * CYCLES / 4, CYCLES / 4);
        println!(
            "after {} more cycles: {:+.2} MiB",
            quarter * CYCLES / 4,
            mib(heap() - start)
        );
    }
    let took = began.elapsed();
    let grown = heap() - start;
    println!(
        "{CYCLES} cycles in {:.1} s ({:.2} µs each); the heap grew by {:.2} MiB (bound {} MiB)",
        took.as_secs_f64(),
        per(took, CYCLES),
        mib(grown),
        BOUND >> 20
    );
    assert_eq!(gate.stats().live, 0);
    assert!(
        grown <= BOUND,
        "the heap grew by {grown} bytes over {CYCLES} cycles"
    );
}

fn mib(bytes: isize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn per(took: Duration, n: usize) -> f64 {
    took.as_secs_f64() * 1e6 / n as f64
}
