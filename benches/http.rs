//! The HTTP adapter against the same axum router without it, in the same run.
//!
//! ```sh
//! cargo bench --bench http --features axum
//! ```
#![allow(missing_docs)]

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use tollgate::Gate;
use tollgate::http::Principal;
use tollgate::notify::notifier_fn;
use tollgate::policy::{Ask, CapabilityTable};
use tower::ServiceExt;

fn app() -> Router {
    Router::new().route(
        "/v1/orders/{order}",
        get(|| async { "an order" }).post(|body: String| async move { body }),
    )
}

/// A table of 100 globs and exact names, the one that matches listed last by precedence.
fn policy() -> CapabilityTable {
    (0..98).fold(
        CapabilityTable::new()
            .allow("GET *")
            .allow("POST /v1/orders/*"),
        |table, i| table.ask(&format!("POST /v1/area{i}/*"), Ask::new("asks")),
    )
}

fn request(method: &str, body: &'static str) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri("/v1/orders/o_1?expand=lines")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    request.extensions_mut().insert(Principal("agent-7".into()));
    request
}

fn allowed(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let gate = Gate::builder()
        .secret("a benchmark secret, sixteen bytes or more")
        .request_ttl(Duration::from_secs(3600))
        .notifier(notifier_fn(|_| async { Ok(()) }))
        .build()
        .unwrap();
    let bare = app();
    let gated = app().layer(gate.http(policy()));
    let body = r#"{"lines": [{"sku": "A-1", "qty": 2}], "note": "gift wrap"}"#;

    for (group, method, body) in [
        ("allowed GET through axum", "GET", ""),
        ("allowed POST with a JSON body through axum", "POST", body),
    ] {
        let mut group = c.benchmark_group(group);
        group.bench_function("bare router", |b| {
            b.to_async(&rt)
                .iter(|| bare.clone().oneshot(request(method, body)))
        });
        group.bench_function("router behind the gate", |b| {
            b.to_async(&rt)
                .iter(|| gated.clone().oneshot(request(method, body)))
        });
        group.finish();
    }
}

criterion_group!(benches, allowed);
criterion_main!(benches);
