//! `tollgate proxy` against the upstream called directly, in the same run: allowed GETs, many at
//! once over kept-alive connections, as requests a second.
//!
//! ```sh
//! cargo bench --bench proxy --features cli
//! ```
//!
//! The upstream (an axum app answering a small body) and the load run in this process; the
//! proxy is the `tollgate` binary, a process of its own. A third arm is the floor for any proxy
//! on this stack: the same axum server and hyper client forwarding everything, with no gate, in a
//! process of its own too (this bench's binary started again in that role).
#![allow(missing_docs)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group};
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
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command.args(["proxy", "--config"]).arg(&config);
    started(command, "tollgate: proxying http://").await
}

/// The environment variable that starts this binary as the bare proxy to the upstream it names.
const BARE_PROXY: &str = "TOLLGATE_BENCH_BARE_PROXY";

/// The bare proxy: every request forwarded as it came, the answer streamed back.
fn bare_proxy(upstream: String) {
    type Forwarder = Client<HttpConnector, axum::body::Body>;
    async fn forward(
        axum::extract::State((client, upstream)): axum::extract::State<(Forwarder, String)>,
        mut request: axum::extract::Request,
    ) -> axum::response::Response {
        let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        *request.uri_mut() = format!("http://{upstream}{path}").parse().unwrap();
        match client.request(request).await {
            Ok(response) => response.map(axum::body::Body::new),
            Err(_) => axum::http::StatusCode::BAD_GATEWAY.into_response(),
        }
    }
    use axum::response::IntoResponse;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let app = Router::new()
            .fallback(forward)
            .with_state((client, upstream));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        eprintln!("bare proxy: {}", listener.local_addr().unwrap());
        axum::serve(listener, app).await.unwrap();
    });
}

/// A child process that prints `prefix` and its address on stderr; that address, once printed.
async fn started(mut command: Command, prefix: &str) -> (SocketAddr, Child) {
    let mut child = command
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(rest) = line.strip_prefix(prefix) {
            let addr = rest.split('/').next().unwrap().parse().unwrap();
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return (addr, child);
        }
    }
    panic!("{prefix:?} did not start");
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
    let (direct, (proxied, _child), (bare, _bare_child)) = rt.block_on(async {
        let upstream = upstream().await;
        let mut bare = Command::new(std::env::current_exe().unwrap());
        bare.env(BARE_PROXY, upstream.to_string());
        (
            upstream,
            proxy(upstream, &dir).await,
            started(bare, "bare proxy: ").await,
        )
    });
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build_http();

    let mut group = c.benchmark_group("allowed GET, 16 at once");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("upstream directly", |b| {
        b.iter(|| rt.block_on(batch(&client, direct)))
    });
    group.bench_function("through a bare proxy, no gate", |b| {
        b.iter(|| rt.block_on(batch(&client, bare)))
    });
    group.bench_function("through tollgate proxy", |b| {
        b.iter(|| rt.block_on(batch(&client, proxied)))
    });
    group.finish();
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, allowed_gets);

fn main() {
    if let Ok(upstream) = std::env::var(BARE_PROXY) {
        return bare_proxy(upstream);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
