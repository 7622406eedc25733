//! The approval API under load from another process: 10,000 calls parked behind a gate, and 64
//! deciders in a second process approving them all at once over HTTP. Every decision must be
//! answered `200 approved` and every parked call must resume; the deciders' latencies are
//! reported as p50, p99 and the largest.
//!
//! ```sh
//! cargo bench --bench deciders --features axum
//! ```
//!
//! The deciders are this bench's binary started again in that role: they read the requests'
//! ids and codes from a file the gate's process writes, and share one connection pool.
#![allow(missing_docs)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tollgate::approval::{ApprovalApi, Approver, Tokens};
use tollgate::notify::RecordingNotifier;
use tollgate::policy::{Ask, CapabilityTable};
use tollgate::{BoxError, Gate, ToolCall};
use tower::{Layer, ServiceExt, service_fn};

const TOKEN: &str = "a-benchmark-approver-token";
const PARKED: usize = 10_000;
const DECIDERS: usize = 64;
/// The environment variable that starts this binary as the deciders: `ADDR FILE`.
const ROLE: &str = "TOLLGATE_BENCH_DECIDERS";

fn main() {
    if let Ok(args) = std::env::var(ROLE) {
        let (addr, file) = args.split_once(' ').expect("ADDR FILE");
        return deciders(addr.parse().expect("an address"), file);
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` runs benches once, as a check.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(gate_side());
}

/// Parks the calls, serves the API, starts the deciders and checks that every call resumed.
async fn gate_side() {
    let alerts = RecordingNotifier::new();
    let gate = Gate::builder()
        .secret("a benchmark secret of sixteen bytes or more")
        .request_ttl(Duration::from_secs(3600))
        .max_pending(PARKED)
        .max_pending_per_principal(PARKED)
        .unlimited_alert_rate()
        .history(PARKED)
        .notifier(alerts.clone())
        .build()
        .unwrap();
    let tools = service_fn(|_: ToolCall| async { Ok::<_, BoxError>("ran") });
    let svc = gate
        .layer(CapabilityTable::new().ask("payments.refund", Ask::new("money moves")))
        .layer(tools);
    let callers: Vec<_> = (0..PARKED)
        .map(|n| {
            let call = ToolCall::new("payments.refund", json!({ "n": n })).principal("agent");
            tokio::spawn(svc.clone().oneshot(call))
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("tollgate-deciders-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("requests");
    let mut list = std::fs::File::create(&file).unwrap();
    for _ in 0..PARKED {
        let alert = alerts.next_alert().await;
        writeln!(list, "{} {}", alert.request().id(), alert.code().reveal()).unwrap();
    }
    drop(list);

    let tokens = Tokens::new().token(TOKEN, Approver::new("alice"));
    let api =
        ApprovalApi::new(gate.clone(), tokens).decision_rate(u32::MAX, Duration::from_secs(1));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, api.router::<()>()).await.unwrap() });

    let report = tokio::process::Command::new(std::env::current_exe().unwrap())
        .env(ROLE, format!("{addr} {}", file.display()))
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(
        report.status.success(),
        "the deciders failed: {}",
        String::from_utf8_lossy(&report.stderr)
    );
    for caller in callers {
        assert_eq!(
            caller.await.unwrap().unwrap(),
            "ran",
            "every parked call resumes"
        );
    }
    assert_eq!(gate.stats().pending, 0, "no request left pending");
    print!("{}", String::from_utf8_lossy(&report.stdout));
    let _ = std::fs::remove_dir_all(dir);
}

/// 64 deciders approving every request in `file`, each answer checked, latencies reported.
fn deciders(addr: SocketAddr, file: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let requests: Arc<Vec<(String, String)>> = Arc::new(
        std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .map(|l| {
                let (id, code) = l.split_once(' ').unwrap();
                (id.to_owned(), code.to_owned())
            })
            .collect(),
    );
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut latencies: Vec<Duration> = runtime.block_on(async {
        let workers: Vec<_> = (0..DECIDERS)
            .map(|_| {
                let (client, requests, next) = (client.clone(), requests.clone(), next.clone());
                tokio::spawn(async move {
                    let mut took = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((id, code)) = requests.get(i) else {
                            return took;
                        };
                        let body = json!({ "code": code, "scope": "once" }).to_string();
                        let request = hyper::Request::post(format!(
                            "http://{addr}/api/requests/{id}/approve"
                        ))
                        .header("authorization", format!("Bearer {TOKEN}"))
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body)))
                        .unwrap();
                        let sent = Instant::now();
                        let response = client.request(request).await.expect("an answer");
                        let status = response.status();
                        let body = response.into_body().collect().await.unwrap().to_bytes();
                        took.push(sent.elapsed());
                        assert_eq!(status, 200, "{id}: {}", String::from_utf8_lossy(&body));
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for worker in workers {
            all.extend(worker.await.expect("a decider failed"));
        }
        all
    });
    let wall = started.elapsed();
    assert_eq!(latencies.len(), requests.len(), "every decision answered");
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "{} approvals by {DECIDERS} deciders in {:.2?} ({:.0} a second): p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        latencies.len(),
        wall,
        latencies.len() as f64 / wall.as_secs_f64(),
        at(0.5),
        at(0.99),
        latencies.last().unwrap(),
    );
}
