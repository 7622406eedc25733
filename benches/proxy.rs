//! `tollgate proxy` against the upstream called directly, in the same run: allowed GETs, many at
//! once over kept-alive connections, as requests a second.
//!
//! ```sh
//! cargo bench --bench proxy --features cli
//! ```
//!
//! The upstream (an axum app answering a small body) and the load run in this process; the
//! proxy is the `tollgate` binary, a process of its own.
#![allow(missing_docs)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Requests in flight at once, and requests per measured batch.
const CONCURRENCY: usize = 16;
const BATCH: usize = 256;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

async fn upstream() -> SocketAddr {
    let app = Router::new().route(
        "/v1/orders/{id}",
        get(|| async { "an order, in a few bytes" }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The binary in front of `upstream`; its address once it has printed it.
async fn proxy(upstream: SocketAddr, dir: &std::path::Path) -> (SocketAddr, Child) {
    let config = dir.join("tollgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [gate]
            random_secret = true
            allow_inline_secrets = true
            [proxy]
            listen = "127.0.0.1:0"
            upstream = "http://{upstream}"
            routes = ["/v1/orders/{{id}}"]
            [capabilities."GET *"]
            decision = "allow"
            [[notifiers]]
            kind = "terminal"
            [approval]
            listen = "127.0.0.1:0"
            [[approval.approvers]]
            name = "bench"
            token = "a-bench-token-of-sixteen-bytes"
            "#
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["proxy", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(rest) = line.strip_prefix("tollgate: proxying http://") {
            let addr = rest.split('/').next().unwrap().parse().unwrap();
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return (addr, child);
        }
    }
    panic!("the proxy did not start");
}

/// `BATCH` GETs to `addr`, `CONCURRENCY` at a time.
async fn batch(client: &HttpClient, addr: SocketAddr) {
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..CONCURRENCY {
        let client = client.clone();
        tasks.spawn(async move {
            for i in (worker..BATCH).step_by(CONCURRENCY) {
                let uri = format!("http://{addr}/v1/orders/o_{i}").parse().unwrap();
                let response = client.get(uri).await.expect("an answer");
                assert!(response.status().is_success());
                response.into_body().collect().await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

fn allowed_gets(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tollgate-bench-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (direct, (proxied, _child)) = rt.block_on(async {
        let upstream = upstream().await;
        (upstream, proxy(upstream, &dir).await)
    });
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build_http();

    let mut group = c.benchmark_group("allowed GET, 16 at once");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("upstream directly", |b| {
        b.iter(|| rt.block_on(batch(&client, direct)))
    });
    group.bench_function("through tollgate proxy", |b| {
        b.iter(|| rt.block_on(batch(&client, proxied)))
    });
    group.finish();
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, allowed_gets);
criterion_main!(benches);
