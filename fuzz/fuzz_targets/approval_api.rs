//! The approval API's router: any request, signed in or not, gets an answer below 500 that
//! carries no verification code.
//!
//! The input is an HTTP request in its text form: `METHOD PATH`, header lines, a blank line,
//! the body. `{id}` in the path becomes the id of a request pending behind the API, and
//! `{token}` anywhere the token of an approver who may decide it.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use tollgate::approval::{Approver, Tokens};
use tollgate::notify::RecordingNotifier;
use tollgate::policy::{Ask, CapabilityTable};
use tollgate::{Gate, ToolCall};
use tower::{Layer, ServiceExt, service_fn};

const TOKEN: &str = "fuzz-approver-token-0123456789";

struct World {
    runtime: tokio::runtime::Runtime,
    router: Router,
    id: String,
    code: String,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (router, id, code) = runtime.block_on(async {
            let alerts = RecordingNotifier::new();
            let gate = Gate::builder()
                .secret("a fuzzing secret of at least sixteen bytes")
                .request_ttl(Duration::from_secs(365 * 24 * 3600))
                .max_attempts(1_000)
                .notifier(alerts.clone())
                .build()
                .unwrap();
            let policy = CapabilityTable::new().ask("payments.refund", Ask::new("money moves"));
            let tools = service_fn(|_: ToolCall| async { Ok::<_, tollgate::BoxError>("ran") });
            let svc = gate.layer(policy).layer(tools);
            let call = ToolCall::new("payments.refund", json!({"amount": 5})).principal("agent");
            tokio::spawn(svc.oneshot(call));
            let alert = alerts.next_alert().await;
            let tokens = Tokens::new().token(TOKEN, Approver::new("alice"));
            (
                tollgate::approval::router(gate, tokens),
                alert.request().id().to_string(),
                alert.code().reveal().to_owned(),
            )
        });
        World {
            runtime,
            router,
            id,
            code,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let world = world();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let text = text.replace("{id}", &world.id).replace("{token}", TOKEN);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let Some((method, path)) = lines.next().and_then(|l| l.split_once(' ')) else {
        return;
    };
    if path.contains("wait") {
        return; // the long poll holds an answer back for up to a minute, by design
    }
    let mut request = Request::builder().method(method).uri(path);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            request = request.header(name.trim(), value.trim());
        }
    }
    let Ok(request) = request.body(Body::from(body.to_owned())) else {
        return;
    };
    let (status, answer) = world.runtime.block_on(async {
        let response = world.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        (
            status,
            to_bytes(response.into_body(), usize::MAX).await.unwrap(),
        )
    });
    assert!(
        !status.is_server_error(),
        "{status} for {text:?}: {answer:?}"
    );
    let answer = String::from_utf8_lossy(&answer);
    // An answer may echo what the request said; a request that did not say the code must
    // not hear it.
    if !text.contains(&world.code) {
        assert!(
            !answer.contains(&world.code),
            "the code in the answer to {text:?}: {answer}"
        );
    }
});
