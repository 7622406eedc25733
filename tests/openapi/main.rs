//! The approval API against its own OpenAPI document, by schemathesis: generated requests to
//! every operation, signed in and not, against a router with requests pending behind it. No
//! answer may be a 5xx, break the document, or carry a verification code.
//!
//! `TOLLGATE_TEST_SCHEMATHESIS` names the `schemathesis` executable (`scripts/test` installs it
//! into a virtual environment); the test fails without it. `TOLLGATE_OPENAPI_EXAMPLES` sets the
//! examples per operation (50 unless set).

#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::json;
use tollgate::approval::{ApprovalApi, Approver, Tokens};
use tollgate::notify::RecordingNotifier;
use tollgate::{Scope, ToolCall};
use tower::{Layer, ServiceExt};

use support::{Tools, policy};

const TOKEN: &str = "schemathesis-token-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_api_keeps_to_its_openapi_document() {
    let schemathesis = std::env::var("TOLLGATE_TEST_SCHEMATHESIS").expect(
        "TOLLGATE_TEST_SCHEMATHESIS must name the schemathesis executable: run scripts/test",
    );
    let examples = std::env::var("TOLLGATE_OPENAPI_EXAMPLES").unwrap_or_else(|_| "50".into());
    let alerts = RecordingNotifier::new();
    let gate = support::gate(&alerts)
        .max_attempts(1_000)
        .max_pending_per_principal(64)
        .unlimited_alert_rate()
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Global)).layer(Tools::default());
    // Requests to decide, more than the run can use up.
    let mut codes = Vec::new();
    let mut callers = Vec::new();
    for amount in 0..40 {
        let call = ToolCall::new("payments.refund", json!({"amount": amount})).principal("agent");
        callers.push(tokio::spawn(svc.clone().oneshot(call)));
        codes.push(alerts.next_alert().await.code().reveal().to_owned());
    }
    let tokens = Tokens::new().token(TOKEN, Approver::new("alice"));
    let api = ApprovalApi::new(gate.clone(), tokens)
        .max_wait(Duration::from_secs(1))
        .decision_rate(1_000_000, Duration::from_secs(60));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, api.router::<()>()).await.unwrap() });

    let hooks = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi");
    let run = tokio::process::Command::new(&schemathesis)
        .arg("run")
        .arg(format!("http://{addr}/api/openapi.json"))
        .args([
            "--checks",
            "all",
            "--max-examples",
            &examples,
            "--workers",
            "1",
        ])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--request-timeout", "10", "--no-color", "--max-time", "60"])
        .current_dir(std::env::temp_dir())
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", &hooks)
        .env("TOLLGATE_CODES", codes.join(","))
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{schemathesis} did not start: {e}"));
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    drop(callers);
}
