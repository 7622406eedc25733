//! An existing axum app put behind tollgate with a configuration file.
//!
//! The shop below knows nothing of approvals. A few lines in `main` load
//! `examples/axum_service.toml`, build the gate on a SQLite store, and layer it over the router:
//! reads pass, refunds wait for a person, deletes are refused. Approvals with `value` scope
//! outlive a restart of the example: the store and the secret that seals its rules are kept in
//! the temporary directory (`tollgate-shop.db`, `tollgate-shop.secret`; delete both to start
//! fresh). What the gate logs (a stored rule it cannot honour, a notifier that failed) is printed
//! on stderr.
//!
//! ```sh
//! cargo run --example axum_service --features axum,toml
//! # in another terminal:
//! curl -s localhost:3000/orders/o_1                                   # passes
//! curl -s -X POST localhost:3000/orders/o_1/refund -H 'x-agent: agent-7' \
//!      -H 'content-type: application/json' -d '{"amount": 4200}'      # waits for you
//! curl -s -X DELETE localhost:3000/orders/o_1                         # 403, with a JSON error
//! ```
//!
//! The refund's alert is printed here; type `approve <id> <code> value` (or `deny <id> <code>
//! why`) and the waiting `curl` gets the shop's answer; after a restart the same refund passes
//! without asking. `TOLLGATE_EXAMPLE_ADDR` changes the address (`127.0.0.1:3000`).

#[path = "support/listen.rs"]
mod listen;
#[path = "support/secret.rs"]
mod secret;

use axum::extract::Path;
use axum::http::{HeaderName, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tollgate::config::Config;
use tollgate::store::SqliteStore;
use tollgate::{Approve, BoxError, Deny, Gate, Scope};

/// The existing application: a few routes, one of them dangerous.
fn shop() -> Router {
    Router::new()
        .route("/orders", get(|| async { Json(json!(["o_1", "o_2"])) }).post(|| async { StatusCode::CREATED }))
        .route(
            "/orders/{order}",
            get(|Path(order): Path<String>| async move { Json(json!({"order": order, "total": 4200})) })
                .delete(|| async { StatusCode::NO_CONTENT }),
        )
        .route(
            "/orders/{order}/refund",
            post(|Path(order): Path<String>, Json(body): Json<Value>| async move {
                Json(json!({"refunded": order, "amount": body["amount"]}))
            }),
        )
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The gate logs through `tracing`; without a subscriber its warnings would go nowhere.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let [listener] = listen::listen().await;
    let config = Config::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/axum_service.toml"
    ))?;
    // Standing approvals and the audit trail live in one SQLite file, and survive restarts: so
    // does the secret their seals are made with, kept beside it.
    let path = std::env::temp_dir().join("tollgate-shop.db");
    let secret = secret::kept_secret(&path.with_extension("secret"))?;
    let gate = (config.gate_builder()?)
        .secret(secret)
        .store(SqliteStore::open(&path)?)
        .build()?;
    // A trusted proxy would set this header; here `curl -H 'x-agent: …'` plays the agent.
    let layer = gate
        .http(config.policy()?)
        .principal_header(HeaderName::from_static("x-agent"));
    let app = shop().layer(layer);

    tokio::spawn(approve_from_stdin(gate.clone()));
    println!(
        "the shop listens on http://{}; standing rules from earlier runs: {}",
        listener.local_addr()?,
        gate.rules().len()
    );
    println!("approve here with `approve <id> <code> [once|value]`");
    axum::serve(listener, app)
        .with_graceful_shutdown(on_ctrl_c(gate))
        .await?;
    Ok(())
}

/// On Ctrl-C the gate shuts down first: parked requests are answered `503 gate_shut_down` and
/// abandoned in the store, so the server's graceful shutdown has no call left waiting.
async fn on_ctrl_c(gate: Gate) {
    tokio::signal::ctrl_c().await.ok();
    println!("shutting down: calls waiting for a person are let go");
    if let Err(error) = gate.shutdown().await {
        println!("the gate did not shut down cleanly: {error}");
    }
}

/// The approver's console: `approve <id> <code> [scope]` or `deny <id> <code> [reason…]`.
async fn approve_from_stdin(gate: Gate) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let outcome = match words.as_slice() {
            ["approve", id, code, rest @ ..] => match (
                id.parse(),
                rest.first().map_or(Ok(Scope::Once), |s| s.parse()),
            ) {
                (Ok(id), Ok(scope)) => gate
                    .approve(Approve::new(id, *code).scope(scope).by("console"))
                    .await
                    .map(|a| format!("approved {} with scope {}", a.request().id(), a.scope())),
                (Err(e), _) | (_, Err(e)) => Err(e),
            },
            ["deny", id, code, reason @ ..] => match id.parse() {
                Ok(id) => gate
                    .deny(Deny::new(id, *code).reason(reason.join(" ")).by("console"))
                    .await
                    .map(|d| format!("denied {}", d.request().id())),
                Err(e) => Err(e),
            },
            _ => {
                println!("type `approve <id> <code> [once|value]` or `deny <id> <code> [reason]`");
                continue;
            }
        };
        match outcome {
            Ok(done) => println!("{done}"),
            Err(error) => println!("not done: {error}"),
        }
    }
}
