//! Three replicas of one service on one PostgreSQL database: park a call on one, approve it on
//! another, watch the rule apply on the third.
//!
//! ```sh
//! # a database to share (any PostgreSQL 12 or newer; tables are named tollgate_*):
//! export TOLLGATE_POSTGRES="host=127.0.0.1 port=5432 user=postgres dbname=postgres"
//! cargo run --example replicas --features postgres,axum
//! ```
//!
//! Each replica is its own gate with its own `PostgresStore` (instances `a`, `b`, `c`), serving a
//! gated refund route and the approval API, as three processes behind a load balancer would; here
//! they share one process only to be one command. The walkthrough it prints:
//!
//! ```sh
//! curl -s -X POST localhost:3000/tools/refund -d '{"amount": 42}' \
//!      -H 'content-type: application/json'                                  # waits on replica a
//! # the alert (id and code) is printed here; approve it through replica b:
//! curl -s -X POST localhost:3001/approvals/api/requests/ID/approve \
//!      -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
//!      -d '{"code": "CODE", "scope": "capability"}'                          # the curl above returns
//! curl -s -X POST localhost:3002/tools/refund -d '{"amount": 43}' \
//!      -H 'content-type: application/json'                                  # passes on c: the rule
//! ```
//!
//! The replicas listen on three consecutive ports from `TOLLGATE_EXAMPLE_ADDR`
//! (`127.0.0.1:3000`). `TOLLGATE_SECRET` must be the same on every replica (here it is, by
//! construction).

#[path = "support/listen.rs"]
mod listen;

use std::time::Duration;

use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use tollgate::approval::{Approver, Tokens};
use tollgate::notify::TerminalNotifier;
use tollgate::policy::{Ask, CapabilityTable};
use tollgate::store::{PostgresOptions, PostgresStore};
use tollgate::{BoxError, Gate, Scope};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("TOLLGATE_POSTGRES").map_err(|_| {
        "set TOLLGATE_POSTGRES to a PostgreSQL connection string, such as \
         \"host=127.0.0.1 user=postgres dbname=postgres\""
    })?;
    // Every replica needs the same secret: codes and seals are derived from it.
    let secret = std::env::var("TOLLGATE_SECRET")
        .unwrap_or_else(|_| "the secret every replica of this example shares".into());
    let token = std::env::var("TOLLGATE_TOKEN").unwrap_or_else(|_| "replicas-example-token".into());
    let listeners: [_; 3] = listen::listen().await;
    let mut servers = Vec::new();
    for (name, listener) in ["a", "b", "c"].into_iter().zip(listeners) {
        let store =
            PostgresStore::connect_with(&url, PostgresOptions::new().instance(name)).await?;
        let base = format!("http://{}", listener.local_addr()?);
        let gate = Gate::builder()
            .secret(&secret)
            .request_ttl(Duration::from_secs(600))
            .approval_base_url(format!("{base}/approvals"))
            .notifier(TerminalNotifier::stderr())
            .store(store)
            .build()?;
        let policy = CapabilityTable::new().ask(
            "POST /tools/refund",
            Ask::new("refunds move money")
                .max_scope(Scope::Capability)
                .max_rule_ttl(Duration::from_secs(3600)),
        );
        let tools = Router::new().route(
            "/tools/refund",
            post(|Json(body): Json<Value>| async move { Json(json!({"refunded": body})) }),
        );
        let approvers = Tokens::new().token(&token, Approver::new("you"));
        let app = tools.layer(gate.http(policy)).nest(
            "/approvals",
            tollgate::approval::router(gate.clone(), approvers),
        );
        println!("replica {name}: {base}/tools/refund, approvals at {base}/approvals");
        servers.push(tokio::spawn(
            async move { axum::serve(listener, app).await },
        ));
    }
    println!("approval API token: {token}");
    println!("park a call on a, approve it through b, then call c");
    for server in servers {
        server.await??;
    }
    Ok(())
}
