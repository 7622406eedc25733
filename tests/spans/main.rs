//! A request's whole story under its id: what a notifier logs while it works on a request comes
//! out inside the request's span. One test in its own binary, as in `tests/logs`: log capture is
//! per thread, and callsites cache whether anyone listens.

#[path = "../support/mod.rs"]
mod support;

use std::sync::Arc;

use serde_json::json;
use tokio::sync::Notify;
use tollgate::notify::notifier_fn;
use tollgate::{Gate, ToolCall};
use tower::{Layer, ServiceExt};

use support::{Tools, policy};

#[tokio::test]
async fn what_a_slow_notifier_logs_names_the_request() {
    let (logs, _guard) = support::capture_logs();
    let go = Arc::new(Notify::new());
    let (alerts, mut inbox) = tokio::sync::mpsc::unbounded_channel();
    let slow = {
        let go = go.clone();
        notifier_fn(move |alert| {
            let (go, alerts) = (go.clone(), alerts.clone());
            async move {
                go.notified().await; // a slow channel: answers later
                tracing::warn!("the slow channel answered");
                let _ = alerts.send(alert);
                Ok(())
            }
        })
    };
    let gate = Gate::builder()
        .secret("a test secret of sixteen bytes or more")
        .notifier(slow)
        .build()
        .unwrap();
    let tools = gate
        .layer(policy(tollgate::Scope::Once))
        .layer(Tools::default());
    let call = ToolCall::new("payments.refund", json!({"amount": 1})).principal("agent-7");
    let parked = tokio::spawn(tools.oneshot(call));
    tokio::task::yield_now().await;
    let id = gate.pending()[0].id();
    go.notify_one();
    let alert = inbox.recv().await.unwrap();
    assert_eq!(alert.request().id(), id);
    let line = logs
        .text()
        .lines()
        .find(|line| line.contains("the slow channel answered"))
        .map(str::to_owned)
        .expect("the notifier's line was logged");
    assert!(
        line.contains(&format!("access_request{{request_id={id}}}")),
        "{line}"
    );
    parked.abort();
}
