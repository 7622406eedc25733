//! The HTTP adapter end to end: a real axum server on 127.0.0.1:0, a real HTTP client.

#[path = "../support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::StatusCode;
use axum::routing::{get, post};
use bytes::Bytes;
use http::HeaderName;
use http_body_util::Full;
use serde_json::json;
use tollgate::config::Config;
use tollgate::http::{Principal, Session};
use tollgate::notify::RecordingNotifier;
use tollgate::policy::{Ask, CapabilityTable};
use tollgate::{Approve, Deny, Gate, Scope, Status};

use support::client::{Chunked, request, send, start};

mod paths;

const POLICY: &str = r#"
    [gate]
    random_secret = true
    request_ttl = "1m"

    [capabilities."GET *"]
    decision = "allow"

    [capabilities."POST /v1/refunds/{id}"]
    max_scope = "value"
    description = "Refunds move money back to a card."

    [capabilities."DELETE *"]
    decision = "deny"
    deny_reason = "deleting is done by hand"
"#;

/// A small app: reads, a refund route, a payout route gated on its own, and a delete.
struct App {
    addr: SocketAddr,
    gate: Gate,
    inbox: RecordingNotifier,
    /// Handler runs, by any route.
    ran: Arc<AtomicUsize>,
}

async fn serve(
    config: &str,
    layer: impl FnOnce(
        &Gate,
        Config,
    ) -> tollgate::http::HttpApprovalLayer<tollgate::config::ConfigPolicy>,
) -> App {
    let config = Config::from_toml(config).unwrap();
    let inbox = RecordingNotifier::new();
    let gate = config
        .gate_builder()
        .unwrap()
        .notifier(inbox.clone())
        .build()
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let counted = |ran: &Arc<AtomicUsize>| {
        let ran = ran.clone();
        move || {
            ran.fetch_add(1, Ordering::SeqCst);
        }
    };
    let (on_refund, on_get, on_payout, on_delete) =
        (counted(&ran), counted(&ran), counted(&ran), counted(&ran));
    let app = Router::new()
        .route(
            "/v1/refunds/{id}",
            get(move |Path(id): Path<String>| async move {
                on_get();
                format!("refund {id}")
            })
            .post(move |Path(id): Path<String>, body: String| async move {
                on_refund();
                (StatusCode::CREATED, format!("refunded {id} with {body}"))
            })
            .delete(move || async move {
                on_delete();
                "deleted"
            }),
        )
        .route(
            "/v1/payouts",
            post(move || async move {
                on_payout();
                "paid out"
            })
            .layer(gate.require("payments.payout")),
        )
        .layer(layer(&gate, config))
        // The application's own authentication: every request here is agent-7 in conv-1.
        .layer(axum::middleware::map_request(
            |mut request: Request| async move {
                request.extensions_mut().insert(Principal("agent-7".into()));
                request.extensions_mut().insert(Session("conv-1".into()));
                request
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    App {
        addr,
        gate,
        inbox,
        ran,
    }
}

async fn app() -> App {
    serve(POLICY, |gate, config| gate.http(config.policy().unwrap())).await
}

fn json_post(path: &str, body: &str) -> http::Request<Full<Bytes>> {
    request("POST", path)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

fn empty(method: &str, path: &str) -> http::Request<Full<Bytes>> {
    request(method, path).body(Full::default()).unwrap()
}

#[tokio::test]
async fn an_allowed_get_passes_without_asking() {
    let app = app().await;
    let reply = send(app.addr, empty("GET", "/v1/refunds/r_1")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "refund r_1");
    assert_eq!(app.ran.load(Ordering::SeqCst), 1);
    assert!(app.inbox.alerts().is_empty());
}

#[tokio::test]
async fn a_post_parks_until_approved_then_returns_the_handlers_response() {
    let app = app().await;
    let parked = start(
        app.addr,
        json_post(
            "/v1/refunds/r_1?notify=yes&tag=a&tag=b",
            r#"{"amount": 5000}"#,
        ),
    )
    .await;

    let alert = app.inbox.next_alert().await;
    let request = alert.request();
    assert_eq!(request.capability(), "POST /v1/refunds/{id}");
    assert_eq!(request.principal(), "agent-7");
    assert_eq!(request.session(), Some("conv-1"));
    assert_eq!(request.reasoning(), "Refunds move money back to a card.");
    assert_eq!(
        request.args(),
        json!({
            "path": {"id": "r_1"},
            "query": {"notify": "yes", "tag": ["a", "b"]},
            "body": {"amount": 5000},
        })
    );
    assert_eq!(
        app.ran.load(Ordering::SeqCst),
        0,
        "the handler waits for the approval"
    );

    app.gate
        .approve(
            Approve::new(request.id(), alert.code().reveal())
                .scope(Scope::Value)
                .by("alice"),
        )
        .await
        .unwrap();
    let reply = parked.reply.await.unwrap();
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(
        reply.body, r#"refunded r_1 with {"amount": 5000}"#,
        "the handler gets the body as sent"
    );

    // The `value` rule covers the identical call; a different amount asks again.
    let again = send(
        app.addr,
        json_post(
            "/v1/refunds/r_1?notify=yes&tag=a&tag=b",
            r#"{"amount":5000}"#,
        ),
    )
    .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(app.inbox.alerts().len(), 1);
}

#[tokio::test]
async fn a_denied_post_gets_the_json_error() {
    let app = app().await;
    let parked = start(app.addr, json_post("/v1/refunds/r_2", r#"{"amount": 1}"#)).await;
    let alert = app.inbox.next_alert().await;
    app.gate
        .deny(
            Deny::new(alert.request().id(), alert.code().reveal())
                .reason("not this one")
                .by("alice"),
        )
        .await
        .unwrap();
    let reply = parked.reply.await.unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    let error = reply.json()["error"].clone();
    assert_eq!(error["code"], "access_request_denied");
    assert_eq!(error["retryable"], false);
    assert_eq!(error["request_id"], alert.request().id().to_string());
    assert!(
        error["detail"].as_str().unwrap().contains("not this one"),
        "{error}"
    );
    assert!(
        !reply.body.contains(alert.code().reveal()),
        "the code never reaches the caller"
    );
    assert_eq!(app.ran.load(Ordering::SeqCst), 0);

    // A capability the policy denies outright: 403 at once, nobody asked.
    let reply = send(app.addr, empty("DELETE", "/v1/refunds/r_2")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.code(), "access_request_denied");
    assert_eq!(app.inbox.alerts().len(), 1);
}

#[tokio::test]
async fn an_oversized_body_gets_413_and_nobody_is_asked() {
    let app = serve(POLICY, |gate, config| {
        gate.http(config.policy().unwrap()).body_limit(1024)
    })
    .await;
    let big = format!(r#"{{"note": "{}"}}"#, "x".repeat(2000));

    // Declared by Content-Length: refused before reading.
    let reply = send(app.addr, json_post("/v1/refunds/r_3", &big)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.code(), "body_too_large");
    assert!(
        reply.json()["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("1024 bytes")
    );

    // Chunked, with no declared length: refused once the limit is crossed.
    let chunks = big
        .as_bytes()
        .chunks(300)
        .map(Bytes::copy_from_slice)
        .collect();
    let chunked = request("POST", "/v1/refunds/r_3")
        .header("content-type", "application/json")
        .body(Chunked(chunks))
        .unwrap();
    let reply = send(app.addr, chunked).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.code(), "body_too_large");

    assert!(app.inbox.alerts().is_empty());
    assert_eq!(app.gate.stats().pending, 0);
    assert_eq!(app.ran.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_client_that_disconnects_while_parked_cancels_the_request() {
    let app = app().await;
    let parked = start(app.addr, json_post("/v1/refunds/r_4", r#"{"amount": 7}"#)).await;
    let alert = app.inbox.next_alert().await;
    let id = alert.request().id();
    assert_eq!(app.gate.stats().parked, 1);

    parked.disconnect();
    let status = app.gate.wait(id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(status, Status::Cancelled);
    assert_eq!(app.gate.stats().pending, 0);
    let late = app
        .gate
        .approve(Approve::new(id, alert.code().reveal()).by("alice"))
        .await
        .unwrap_err();
    assert_eq!(
        late.code(),
        "access_request_cancelled",
        "the approver is told what happened"
    );
    assert_eq!(app.ran.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_route_can_require_approval_by_itself() {
    let app = app().await;
    let parked = start(app.addr, empty("POST", "/v1/payouts")).await;
    let alert = app.inbox.next_alert().await;
    // The route's own layer names the capability; the outer layer (by route) asked too, and
    // the two share nothing: each is its own request.
    let first = alert.request().capability().to_owned();
    app.gate
        .approve(Approve::new(alert.request().id(), alert.code().reveal()).by("alice"))
        .await
        .unwrap();
    let second = app.inbox.next_alert().await;
    let capabilities = [first, second.request().capability().to_owned()];
    assert!(
        capabilities.contains(&"payments.payout".to_owned()),
        "{capabilities:?}"
    );
    assert!(
        capabilities.contains(&"POST /v1/payouts".to_owned()),
        "{capabilities:?}"
    );
    app.gate
        .approve(Approve::new(second.request().id(), second.code().reveal()).by("alice"))
        .await
        .unwrap();
    let reply = parked.reply.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "paid out");
}

#[tokio::test]
async fn bad_json_is_a_400_and_nobody_is_asked() {
    let app = app().await;
    for body in [r#"{"amount": 1, "amount": 2}"#, "{not json", "[1, 2"] {
        let reply = send(app.addr, json_post("/v1/refunds/r_5", body)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.code(), "invalid_arguments", "{body}");
    }
    assert!(app.inbox.alerts().is_empty());
}

#[tokio::test]
async fn a_number_no_double_holds_is_refused_not_shown_rounded() {
    let app = app().await;
    // Parsed into an f64 these would read 100000000000000000000 and 0.1 to the approver, while
    // a handler reading the text as u128 or a decimal gets other numbers; a `value` rule for
    // one would then let the other through.
    for body in [
        r#"{"amount": 100000000000000000001}"#,
        r#"{"amount": 18446744073709551616}"#,
        r#"{"rate": 0.1000000000000000000001}"#,
    ] {
        let call = start(app.addr, json_post("/v1/refunds/r_6", body)).await;
        let reply = tokio::time::timeout(Duration::from_secs(10), call.reply)
            .await
            .expect("answered at once, not parked")
            .unwrap();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.code(), "invalid_arguments", "{body}");
    }
    assert!(app.inbox.alerts().is_empty());
    assert_eq!(app.ran.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_expired_request_is_a_504() {
    let config = POLICY.replace("request_ttl = \"1m\"", "request_ttl = \"300ms\"");
    let app = serve(&config, |gate, config| gate.http(config.policy().unwrap())).await;
    let reply = send(app.addr, json_post("/v1/refunds/r_6", "{}")).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.code(), "access_request_expired");
    assert_eq!(reply.json()["error"]["retryable"], true);
}

#[tokio::test]
async fn caps_and_failed_notifications_answer_429_and_503() {
    let config = POLICY.replace(
        "request_ttl = \"1m\"",
        "request_ttl = \"1m\"\nmax_pending_per_principal = 1",
    );
    let app = serve(&config, |gate, config| gate.http(config.policy().unwrap())).await;
    let parked = start(app.addr, json_post("/v1/refunds/r_7", "{}")).await;
    app.inbox.next_alert().await;
    let reply = send(app.addr, json_post("/v1/refunds/r_8", "{}")).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.code(), "too_many_pending");
    parked.disconnect();

    app.inbox.set_failing(true);
    let reply = send(app.addr, json_post("/v1/refunds/r_9", "{}")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.code(), "notification_failed");
}

#[tokio::test]
async fn headers_are_read_only_when_named_and_never_over_the_extension() {
    let policy = r#"
        [gate]
        random_secret = true
        [capabilities."*"]
        require_reason = true
    "#;
    let app = serve(policy, |gate, config| {
        gate.http(config.policy().unwrap())
            .principal_header(HeaderName::from_static("x-agent"))
            .reason_header(HeaderName::from_static("x-reason"))
    })
    .await;
    // No reason header: refused at once.
    let reply = send(app.addr, empty("GET", "/v1/refunds/r_1")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "reason_required");

    let call = request("GET", "/v1/refunds/r_1")
        .header("x-agent", "mallory")
        .header("x-reason", "checking a ticket")
        .body(Full::<Bytes>::default())
        .unwrap();
    let parked = start(app.addr, call).await;
    let alert = app.inbox.next_alert().await;
    assert_eq!(
        alert.request().principal(),
        "agent-7",
        "the authenticated extension wins"
    );
    assert_eq!(alert.request().reason(), Some("checking a ticket"));
    app.gate
        .approve(Approve::new(alert.request().id(), alert.code().reveal()).by("alice"))
        .await
        .unwrap();
    assert_eq!(parked.reply.await.unwrap().body, "refund r_1");
}

#[tokio::test]
async fn handle_error_answers_boxed_errors() {
    use axum::error_handling::HandleErrorLayer;
    use tower::ServiceBuilder;

    let inbox = RecordingNotifier::new();
    let gate = Gate::builder()
        .random_secret()
        .notifier(inbox)
        .build()
        .unwrap();
    let slow = post(|| async {
        std::future::pending::<()>().await;
        "never"
    })
    .layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(tollgate::http::handle_error))
            .layer(gate.http(CapabilityTable::new().allow("*")))
            .timeout(Duration::from_millis(50)),
    );
    let fenced = post(|| async { "never" }).layer(
        gate.http(
            CapabilityTable::new()
                .deny("*", "fenced off")
                .ask("x", Ask::new("x")),
        ),
    );
    let app = Router::new().route("/slow", slow).route("/fenced", fenced);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let reply = send(addr, empty("POST", "/slow")).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.code(), "service_failed");
    assert!(
        !reply.body.contains("elapsed"),
        "the inner error's text is not repeated: {}",
        reply.body
    );
    let reply = send(addr, empty("POST", "/fenced")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.json()["error"]["detail"], "fenced off");
}

#[tokio::test]
async fn deciding_before_the_body_streams_what_policy_allows_and_still_shows_the_rest() {
    const ALLOWING: &str = r#"
        [gate]
        random_secret = true
        request_ttl = "1m"
        [capabilities."POST /v1/refunds/{id}"]
        decision = "allow"
    "#;
    let big = format!(r#"{{"note": "{}"}}"#, "x".repeat(4000));

    // Without it, an allowed body over the limit is refused, since it is read first.
    let reading = serve(ALLOWING, |gate, config| {
        gate.http(config.policy().unwrap()).body_limit(1024)
    })
    .await;
    let reply = send(reading.addr, json_post("/v1/refunds/r_9", &big)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);

    let app = serve(ALLOWING, |gate, config| {
        gate.http(config.policy().unwrap())
            .body_limit(1024)
            .decide_before_body()
    })
    .await;
    let reply = send(app.addr, json_post("/v1/refunds/r_9", &big)).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(
        reply.body,
        format!("refunded r_9 with {big}"),
        "the whole body, unread"
    );

    // A call the policy asks about still has its body read, for the approver to see.
    let _parked = start(app.addr, json_post("/v1/payouts", r#"{"amount": 7}"#)).await;
    let alert = app.inbox.next_alert().await;
    assert_eq!(alert.request().capability(), "POST /v1/payouts");
    assert_eq!(
        alert.request().args()["body"],
        serde_json::json!({"amount": 7})
    );
}

#[tokio::test]
async fn an_approver_edits_a_posts_body_and_the_handler_gets_the_edited_one() {
    let config = POLICY.replace(
        "description = \"Refunds move money back to a card.\"",
        "description = \"Refunds move money back to a card.\"\n    editable = true",
    );
    let app = serve(&config, |gate, config| gate.http(config.policy().unwrap())).await;
    let parked = start(
        app.addr,
        json_post("/v1/refunds/r_1?notify=yes", r#"{"amount": 5000}"#),
    )
    .await;
    let alert = app.inbox.next_alert().await;
    let request = alert.request();
    assert!(request.editable());
    let approve = |args| {
        Approve::new(request.id(), alert.code().reveal())
            .edit(args)
            .by("alice")
    };
    // The path and query are the capability's place: an edit may not touch them.
    for widened in [
        json!({"path": {"id": "r_2"}, "query": {"notify": "yes"}, "body": {"amount": 50}}),
        json!({"path": {"id": "r_1"}, "body": {"amount": 50}}),
        json!({"path": {"id": "r_1"}, "query": {"notify": "yes"}, "body": {"amount": 50}, "x": 1}),
    ] {
        let error = app
            .gate
            .approve(approve(widened.clone()))
            .await
            .unwrap_err();
        assert_eq!(error.code(), "edit_not_allowed", "{widened}");
    }
    let edited = json!({"path": {"id": "r_1"}, "query": {"notify": "yes"}, "body": {"amount": 50}});
    let approval = app.gate.approve(approve(edited)).await.unwrap();
    assert!(approval.edit().is_some());
    let reply = parked.reply.await.unwrap();
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.body, r#"refunded r_1 with {"amount":50}"#);
    assert_eq!(
        reply.headers.get("tollgate-edited").unwrap(),
        &request.id().to_string(),
        "the caller can tell its request was edited"
    );
    assert_eq!(app.ran.load(Ordering::SeqCst), 1);
}

/// The app of [`app`], but reads of a refund ask, with approvals up to `value`.
async fn asking_reads() -> App {
    let config = POLICY.replace(
        r#"[capabilities."GET *"]
    decision = "allow""#,
        r#"[capabilities."GET /v1/refunds/{id}"]
    max_scope = "value""#,
    );
    serve(&config, |gate, config| gate.http(config.policy().unwrap())).await
}

/// Approves `alert`'s request with scope `value`, as alice.
async fn approve_value(app: &App, alert: &tollgate::notify::Alert) {
    app.gate
        .approve(
            Approve::new(alert.request().id(), alert.code().reveal())
                .scope(Scope::Value)
                .by("alice"),
        )
        .await
        .unwrap();
}

/// The alert of the call in flight, which a standing rule must not let through: fails if the
/// call is answered first.
async fn asked_again(app: &App, call: &mut support::client::InFlight) -> tollgate::notify::Alert {
    tokio::select! {
        alert = app.inbox.next_alert() => alert,
        reply = &mut call.reply => panic!("a standing approval let another call through: {reply:?}"),
    }
}
/// A GET's body reaches the handler as a POST's does: the approver sees it, and a `value`
/// approval covers that body and no other.
#[tokio::test]
async fn a_gated_gets_body_is_judged_as_a_posts() {
    let app = asking_reads().await;
    let get = |body: &str| {
        request("GET", "/v1/refunds/r_1")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    };
    let parked = start(app.addr, get(r#"{"amount": 1}"#)).await;
    let alert = app.inbox.next_alert().await;
    assert_eq!(
        alert.request().args()["body"],
        json!({"amount": 1}),
        "the approver sees the body"
    );
    approve_value(&app, &alert).await;
    assert_eq!(parked.reply.await.unwrap().body, "refund r_1");

    let other = start(app.addr, get(r#"{"amount": 100000}"#)).await;
    let again = app.inbox.next_alert().await;
    assert_eq!(
        again.request().args()["body"],
        json!({"amount": 100000}),
        "another body is another call"
    );
    other.disconnect();
    assert_eq!(app.ran.load(Ordering::SeqCst), 1);
}

/// A binary body is shown by its length and digest under keys of its own, which no JSON body
/// can produce: a `value` approval of one binary body covers no JSON body that spells its
/// length and digest.
#[tokio::test]
async fn a_binary_body_and_a_json_body_never_share_arguments() {
    use sha2::{Digest as _, Sha256};

    let app = app().await;
    const BINARY: [u8; 3] = [0xff, 0xfe, 0x00];
    let post = request("POST", "/v1/refunds/r_1")
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from_static(&BINARY)))
        .unwrap();
    let parked = start(app.addr, post).await;
    let alert = app.inbox.next_alert().await;
    let sha256: String = Sha256::digest(BINARY)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        alert.request().args(),
        json!({"path": {"id": "r_1"}, "body_bytes": 3, "body_sha256": sha256})
    );
    approve_value(&app, &alert).await;
    // The handler reads text, and answers this body 400: the call ran all the same.
    parked.reply.await.unwrap();

    let lookalike = json!({"bytes": 3, "sha256": sha256}).to_string();
    let mut other = start(app.addr, json_post("/v1/refunds/r_1", &lookalike)).await;
    let again = asked_again(&app, &mut other).await;
    assert_eq!(
        again.request().args()["body"],
        json!({"bytes": 3, "sha256": sha256})
    );
    other.disconnect();
}

/// Query values are decoded strictly: a query whose bytes are not UTF-8 once decoded is shown
/// whole, as sent, under `query_raw`, so `%FF` and `%FE` are two calls, not one.
#[tokio::test]
async fn undecodable_query_bytes_keep_every_byte() {
    let app = asking_reads().await;
    let parked = start(app.addr, empty("GET", "/v1/refunds/r_1?name=%FF&x=1")).await;
    let alert = app.inbox.next_alert().await;
    assert_eq!(
        alert.request().args(),
        json!({"path": {"id": "r_1"}, "query_raw": "name=%FF&x=1"})
    );
    approve_value(&app, &alert).await;
    assert_eq!(parked.reply.await.unwrap().body, "refund r_1");

    let mut other = start(app.addr, empty("GET", "/v1/refunds/r_1?name=%FE&x=1")).await;
    let again = asked_again(&app, &mut other).await;
    assert_eq!(again.request().args()["query_raw"], "name=%FE&x=1");
    other.disconnect();

    // Text that decodes is shown decoded, as before.
    let parked = start(app.addr, empty("GET", "/v1/refunds/r_1?name=%C3%A9+a")).await;
    let alert = app.inbox.next_alert().await;
    assert_eq!(alert.request().args()["query"], json!({"name": "é a"}));
    parked.disconnect();
}

/// An approved call whose handler answers a server error is recorded `failed`, and the answer
/// still reaches the caller; the handler can read which access request approved it.
#[tokio::test]
async fn an_approved_call_answered_with_a_server_error_is_recorded_failed() {
    use tollgate::http::Approved;
    use tollgate::store::{AuditEvent, AuditFilter};

    let inbox = RecordingNotifier::new();
    let gate = Gate::builder()
        .random_secret()
        .notifier(inbox.clone())
        .build()
        .unwrap();
    let failing = post(|request: Request| async move {
        let approved = request.extensions().get::<Approved>().map(|a| a.0);
        let body = approved.map(|id| id.to_string()).unwrap_or_default();
        (StatusCode::BAD_GATEWAY, body)
    });
    let app = Router::new()
        .route("/v1/refunds/{id}", failing)
        .layer(gate.http(CapabilityTable::new().ask("POST /v1/refunds/{id}", Ask::new("refunds"))));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let parked = start(addr, json_post("/v1/refunds/r_1", r#"{"amount": 1}"#)).await;
    let alert = inbox.next_alert().await;
    let id = alert.request().id();
    gate.approve(Approve::new(id, alert.code().reveal()).by("alice"))
        .await
        .unwrap();
    let reply = parked.reply.await.unwrap();
    assert_eq!(
        reply.status,
        StatusCode::BAD_GATEWAY,
        "the handler's answer"
    );
    assert_eq!(reply.body, id.to_string(), "the handler knew its request");
    assert_eq!(gate.status(id).unwrap(), Status::Failed);
    let trail = gate.audit(AuditFilter::new().request(id)).await.unwrap();
    let events: Vec<AuditEvent> = trail.iter().map(|entry| entry.event).collect();
    assert!(events.contains(&AuditEvent::Failed), "{events:?}");
    assert!(!events.contains(&AuditEvent::Executed), "{events:?}");
}

/// A text body is shown under a key of its own: the JSON string `"{\"amount\": 5000}"` and the
/// text `{"amount": 5000}` are distinct bytes (a handler that parses the text reads an object),
/// and a `value` approval of one does not cover the other.
#[tokio::test]
async fn a_text_body_and_a_json_string_never_share_arguments() {
    let app = app().await;
    let json_string = json!(r#"{"amount": 5000}"#).to_string();
    let parked = start(app.addr, json_post("/v1/refunds/r_1", &json_string)).await;
    let alert = app.inbox.next_alert().await;
    assert_eq!(alert.request().args()["body"], r#"{"amount": 5000}"#);
    approve_value(&app, &alert).await;
    assert_eq!(parked.reply.await.unwrap().status, StatusCode::CREATED);

    let text = request("POST", "/v1/refunds/r_1")
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(br#"{"amount": 5000}"#)))
        .unwrap();
    let mut other = start(app.addr, text).await;
    let again = asked_again(&app, &mut other).await;
    assert_eq!(again.request().args()["body_text"], r#"{"amount": 5000}"#);
    assert!(again.request().args().get("body").is_none());
    other.disconnect();
}

/// A body with two content types is refused: the gate would read it as one type (and show the
/// approver, say, text) while the handler may read it as the other.
#[tokio::test]
async fn a_body_with_two_content_types_is_refused() {
    let app = app().await;
    let call = request("POST", "/v1/refunds/r_1")
        .header("content-type", "text/plain")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"amount": 1}"#)))
        .unwrap();
    let reply = send(app.addr, call).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "invalid_arguments");
    assert!(app.inbox.alerts().is_empty());
    assert_eq!(app.ran.load(Ordering::SeqCst), 0);
}
