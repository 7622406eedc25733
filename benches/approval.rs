//! Approvals and denials through the approval API on loopback, against a plain axum handler of
//! the same shape (bearer token, path id, JSON body in, JSON out), in the same run.
//!
//! ```sh
//! cargo bench --bench approval --features axum
//! ```
//!
//! One keep-alive HTTP/1.1 connection sends the decisions one after another. Only the HTTP
//! round trips are timed: the calls they decide are parked beforehand, in batches.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::http::HeaderMap;
use axum::routing::post;
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tollgate::approval::{ApprovalApi, Approver, Tokens};
use tollgate::notify::{Alert, RecordingNotifier};
use tollgate::policy::{Ask, CapabilityTable};
use tollgate::{Gate, RequireApproval, ToolCall};
use tower::{Layer, ServiceExt};

const TOKEN: &str = "a-benchmark-approver-token";
const BATCH: u64 = 200;

/// The same shape without the gate: checks the token, reads the id and body, answers JSON.
async fn plain(
    Path(id): Path<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<HashMap<String, Value>>,
) -> Result<axum::Json<Value>, axum::http::StatusCode> {
    let signed_in = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    if !signed_in || !body.contains_key("code") {
        return Err(axum::http::StatusCode::UNAUTHORIZED);
    }
    Ok(axum::Json(json!({
        "request": {"id": id, "capability": "payments.refund", "args": {"n": 1}},
        "status": "denied",
        "rule": null,
    })))
}

struct Bench {
    addr: SocketAddr,
    alerts: RecordingNotifier,
    svc: RequireApproval<Tool, CapabilityTable>,
    next: Arc<Mutex<u64>>,
}

/// A tool that does nothing.
#[derive(Clone)]
struct Tool;

impl tower::Service<ToolCall> for Tool {
    type Response = ();
    type Error = tollgate::BoxError;
    type Future = std::future::Ready<Result<(), tollgate::BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: ToolCall) -> Self::Future {
        std::future::ready(Ok(()))
    }
}

async fn start() -> Bench {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let alerts = RecordingNotifier::new();
    let gate = Gate::builder()
        .secret("a benchmark secret, sixteen bytes or more")
        .request_ttl(Duration::from_secs(3600))
        .max_pending(100_000)
        .max_pending_per_principal(100_000)
        .unlimited_alert_rate()
        .history(0)
        .notifier(alerts.clone())
        .build()
        .unwrap();
    let approvers = Tokens::new().token(TOKEN, Approver::new("alice"));
    let api = ApprovalApi::new(gate.clone(), approvers).unlimited_decisions();
    let app = Router::new()
        .route("/plain/api/requests/{id}/deny", post(plain))
        .nest("/approvals", api.router());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let policy = CapabilityTable::new().ask("payments.refund", Ask::new("refunds move money"));
    let svc = gate.layer(policy).layer(Tool);
    Bench {
        addr,
        alerts,
        svc,
        next: Arc::default(),
    }
}

impl Bench {
    /// Parks `n` distinct calls and returns their alerts, with the tasks that wait on them.
    async fn park(&self, n: u64) -> (Vec<Alert>, Vec<tokio::task::JoinHandle<()>>) {
        let mut tasks = Vec::new();
        let mut alerts = Vec::new();
        for _ in 0..n {
            let k = {
                let mut next = self.next.lock().unwrap();
                *next += 1;
                *next
            };
            let call = ToolCall::new("payments.refund", json!({"n": k})).principal("agent-7");
            let svc = self.svc.clone();
            tasks.push(tokio::spawn(async move {
                let _ = svc.oneshot(call).await;
            }));
            alerts.push(self.alerts.next_alert().await);
        }
        (alerts, tasks)
    }

    async fn connect(&self) -> SendRequest<Full<Bytes>> {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        sender
    }
}

async fn decide(sender: &mut SendRequest<Full<Bytes>>, path: String, body: String) {
    let request = http::Request::post(path)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::from(body))
        .unwrap();
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
}

fn decisions(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let bench = rt.block_on(start());
    let mut group = c.benchmark_group("decisions over HTTP on loopback");
    group.throughput(Throughput::Elements(1));

    group.bench_function("plain axum handler", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let bench = &bench;
            async move {
                let mut sender = bench.connect().await;
                let start = Instant::now();
                for i in 0..iters {
                    let path = format!("/plain/api/requests/areq_{i:032x}/deny");
                    decide(&mut sender, path, json!({"code": "0123ABCD"}).to_string()).await;
                }
                start.elapsed()
            }
        })
    });

    for action in ["approve", "deny"] {
        group.bench_function(format!("{action} through the approval API"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let bench = &bench;
                async move {
                    let mut sender = bench.connect().await;
                    let mut timed = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let n = left.min(BATCH);
                        left -= n;
                        let (alerts, tasks) = bench.park(n).await;
                        let start = Instant::now();
                        for alert in &alerts {
                            let path = format!(
                                "/approvals/api/requests/{}/{action}",
                                alert.request().id()
                            );
                            let body = json!({"code": alert.code().reveal()}).to_string();
                            decide(&mut sender, path, body).await;
                        }
                        timed += start.elapsed();
                        for task in tasks {
                            task.await.unwrap();
                        }
                    }
                    timed
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
