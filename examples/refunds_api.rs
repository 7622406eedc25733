//! A small HTTP API to put `tollgate proxy` in front of: `POST /v1/refunds/{id}` refunds, `GET
//! /v1/refunds` lists. It knows nothing of tollgate; `examples/config/sidecar.toml` gates it.
//!
//! ```sh
//! cargo run --example refunds_api --features axum    # on TOLLGATE_EXAMPLE_ADDR, 127.0.0.1:3000
//! ```

#[path = "support/listen.rs"]
mod listen;

use axum::Json;
use axum::extract::Path;
use axum::routing::{get, post};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let [listener] = listen::listen().await;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/v1/refunds", get(|| async { Json(json!([])) }))
        .route(
            "/v1/refunds/{id}",
            post(
                |Path(id): Path<String>, Json(body): Json<Value>| async move {
                    Json(json!({"refunded": id, "amount": body["amount"]}))
                },
            ),
        );
    eprintln!("refunds API on http://{addr}");
    axum::serve(listener, app).await?;
    Ok(())
}
