//! An agent's tool service and its approval page, served together on one port.
//!
//! ```sh
//! cargo run --example approval_server --features axum
//! # in another terminal, play the agent:
//! curl -s -X POST localhost:3000/tools/refund -H 'content-type: application/json' \
//!      -d '{"charge": "ch_1", "amount": 4200}'                          # waits for you
//! ```
//!
//! The refund's alert is printed here with its approval URL and code. Open the URL, sign in with
//! the token printed at start (or `TOLLGATE_TOKEN`), type the code, choose a scope and press
//! Approve: the waiting `curl` gets its answer. `http://127.0.0.1:3000/approvals` lists what is
//! pending; the JSON API is under `/approvals/api/` (see `/approvals/api/openapi.json`).
//! `TOLLGATE_EXAMPLE_ADDR` changes the address (`127.0.0.1:3000`).

#[path = "support/listen.rs"]
mod listen;

use std::time::Duration;

use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tollgate::approval::{Approver, Tokens};
use tollgate::notify::TerminalNotifier;
use tollgate::policy::{Ask, CapabilityTable};
use tollgate::{BoxError, Gate, Scope};

/// The agent's tools: searching is harmless, refunds move money.
fn tools() -> Router {
    Router::new()
        .route(
            "/tools/search",
            get(|| async { Json(json!(["result 1", "result 2"])) }),
        )
        .route(
            "/tools/refund",
            post(|Json(body): Json<Value>| async move {
                Json(json!({"refunded": body["charge"], "amount": body["amount"]}))
            }),
        )
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let [listener] = listen::listen().await;
    let base = format!("http://{}", listener.local_addr()?);

    let gate = Gate::builder()
        .random_secret()
        .request_ttl(Duration::from_secs(600))
        .approval_base_url(format!("{base}/approvals"))
        .notifier(TerminalNotifier::stderr())
        .build()?;

    let token = std::env::var("TOLLGATE_TOKEN").unwrap_or_else(|_| random_token());
    let approvers = Tokens::new().token(&token, Approver::new("you"));

    let policy = CapabilityTable::new().allow("GET *").ask(
        "POST /tools/refund",
        Ask::new("refunds move money")
            .max_scope(Scope::Capability)
            .max_rule_ttl(Duration::from_secs(8 * 3600)),
    );
    let app = tools().layer(gate.http(policy)).nest(
        "/approvals",
        tollgate::approval::router(gate.clone(), approvers),
    );

    println!("tools:     {base}/tools/search (passes), POST {base}/tools/refund (asks you)");
    println!("approvals: {base}/approvals  (sign in with token {token})");
    axum::serve(listener, app)
        .with_graceful_shutdown(on_ctrl_c(gate))
        .await?;
    Ok(())
}

/// On Ctrl-C the gate shuts down first: parked requests are answered `503 gate_shut_down` and
/// abandoned in the store, so the server's graceful shutdown has no call left waiting.
async fn on_ctrl_c(gate: Gate) {
    tokio::signal::ctrl_c().await.ok();
    eprintln!("shutting down: calls waiting for a person are let go");
    if let Err(error) = gate.shutdown().await {
        eprintln!("the gate did not shut down cleanly: {error}");
    }
}

/// 32 hex characters from the operating system's randomness.
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
