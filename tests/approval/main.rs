//! The approval API through a real server on loopback and a real HTTP client: every route, every
//! error status, who may decide, and the verification code absent from every answer.

#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use http::StatusCode;
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tollgate::approval::{ApprovalApi, Approver, Tokens};
use tollgate::notify::{Alert, RecordingNotifier};
use tollgate::policy::CapabilityTable;
use tollgate::{BoxError, Gate, RequireApproval, Scope, Status, ToolCall};
use tower::{Layer, ServiceExt};

use support::client::{self, Reply};
use support::{Tools, code, policy, refund};

const ALICE: &str = "alice-token-0123456789abcdef";
const BOB: &str = "bob-token-0123456789abcdef";
const CAROL: &str = "carol-token-0123456789abcdef";

/// alice decides everything; bob only `fs.*`; carol `payments.*` up to scope `value`.
fn tokens() -> Tokens {
    Tokens::new()
        .token(ALICE, Approver::new("alice"))
        .token(BOB, Approver::new("bob").capabilities(["fs.*"]))
        .token(
            CAROL,
            Approver::new("carol")
                .capabilities(["payments.*"])
                .max_scope(Scope::Value),
        )
}

struct Server {
    addr: SocketAddr,
    gate: Gate,
    alerts: RecordingNotifier,
    tools: Tools,
    svc: RequireApproval<Tools, CapabilityTable>,
    /// Every code a notifier was sent: none may appear in any answer.
    codes: Arc<Mutex<Vec<String>>>,
}

async fn server(
    build: impl FnOnce(tollgate::gate::GateBuilder) -> tollgate::gate::GateBuilder,
    api: impl FnOnce(ApprovalApi) -> ApprovalApi,
) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let alerts = RecordingNotifier::new();
    let gate = build(support::gate(&alerts).approval_base_url(format!("http://{addr}/approvals")))
        .build()
        .unwrap();
    let app = Router::new().nest(
        "/approvals",
        api(ApprovalApi::new(gate.clone(), tokens())).router(),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let tools = Tools::default();
    let svc = gate.layer(policy(Scope::Capability)).layer(tools.clone());
    Server {
        addr,
        gate,
        alerts,
        tools,
        svc,
        codes: Arc::default(),
    }
}

async fn default_server() -> Server {
    server(|b| b, |api| api).await
}

impl Server {
    /// Starts a call in its own task and returns its alert.
    async fn park(&self, call: ToolCall) -> (JoinHandle<Result<String, BoxError>>, Alert) {
        let task = tokio::spawn(self.svc.clone().oneshot(call));
        let alert = self.alerts.next_alert().await;
        self.codes
            .lock()
            .unwrap()
            .push(alert.code().reveal().to_owned());
        (task, alert)
    }

    fn request(&self, method: &str, path: &str, token: Option<&str>) -> http::request::Builder {
        let mut request = client::request(method, &format!("/approvals{path}"));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request
    }

    /// Sends a request and checks what every answer must be: never a 5xx unless asked for,
    /// never a code, and JSON with a stable code when it is an error.
    async fn send(&self, request: http::Request<Full<bytes::Bytes>>) -> Reply {
        let reply = client::send(self.addr, request).await;
        for code in self.codes.lock().unwrap().iter() {
            assert!(
                !reply.body.contains(code.as_str()),
                "a code leaked: {}",
                reply.body
            );
        }
        if reply.status.is_client_error() || reply.status.is_server_error() {
            assert_eq!(
                reply.content_type.as_deref(),
                Some("application/json"),
                "{reply:?}"
            );
            assert!(!reply.code().is_empty(), "{reply:?}");
        }
        reply
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let request = self
            .request("GET", path, token)
            .body(Full::default())
            .unwrap();
        self.send(request).await
    }

    async fn delete(&self, path: &str, token: Option<&str>) -> Reply {
        let request = self
            .request("DELETE", path, token)
            .body(Full::default())
            .unwrap();
        self.send(request).await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.post_text(path, token, body.to_string()).await
    }

    /// A POST of JSON text as written, for bodies a `Value` cannot hold (a repeated key).
    async fn post_text(&self, path: &str, token: Option<&str>, body: String) -> Reply {
        let request = self
            .request("POST", path, token)
            .header("content-type", "application/json")
            .body(Full::from(body))
            .unwrap();
        self.send(request).await
    }

    async fn approve(&self, alert: &Alert, token: &str, body: Value) -> Reply {
        let path = format!("/api/requests/{}/approve", alert.request().id());
        self.post(&path, Some(token), body).await
    }
}

/// Asserts an error answer's status and stable code.
#[track_caller]
fn refused(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (status, code),
        "{reply:?}"
    );
}

fn code_of(alert: &Alert) -> String {
    alert.code().reveal().to_owned()
}

#[tokio::test]
async fn a_request_is_listed_read_approved_and_its_rule_revoked() {
    let srv = default_server().await;
    let (task, alert) = srv.park(refund(10)).await;
    let id = alert.request().id();
    assert_eq!(
        alert.request().approval_url(),
        Some(format!("http://{}/approvals/{id}", srv.addr).as_str())
    );

    let listed = srv.get("/api/requests", Some(ALICE)).await;
    assert_eq!(listed.status, StatusCode::OK);
    let requests = listed.json()["requests"].as_array().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["id"], id.to_string());
    assert_eq!(requests[0]["args"], json!({"charge": "ch_1", "amount": 10}));
    assert_eq!(listed.headers["cache-control"], "no-store");

    let one = srv.get(&format!("/api/requests/{id}"), Some(ALICE)).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["status"], "pending");
    assert_eq!(one.json()["request"]["principal"], "agent-7");

    // The caller's own view needs only the id.
    let status = srv.get(&format!("/api/requests/{id}/status"), None).await;
    assert_eq!(
        status.json(),
        json!({"id": id.to_string(), "status": "pending"})
    );

    let approved = srv
        .approve(
            &alert,
            ALICE,
            json!({"code": code_of(&alert), "scope": "value", "ttl_secs": 600}),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{approved:?}");
    let approved = approved.json();
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["scope"], "value");
    assert_eq!(approved["rule"]["granted_by"], "alice");
    assert_eq!(
        task.await.unwrap().unwrap(),
        r#"ran payments.refund {"amount":10,"charge":"ch_1"}"#
    );

    // The rule lets the same call through without asking.
    srv.svc.clone().oneshot(refund(10)).await.unwrap();
    assert_eq!(srv.tools.calls_of(&refund(10)), 2);

    let rules = srv.get("/api/rules", Some(ALICE)).await.json();
    let rule_id = rules["rules"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(rules["rules"][0]["capability"], "payments.refund");
    let revoked = srv
        .delete(&format!("/api/rules/{rule_id}"), Some(ALICE))
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert_eq!(revoked.json()["revoked"][0]["id"], rule_id.as_str());
    let again = srv
        .delete(&format!("/api/rules/{rule_id}"), Some(ALICE))
        .await;
    refused(&again, StatusCode::NOT_FOUND, "access_request_not_found");
    assert!(srv.gate.rules().is_empty());

    let audit = srv
        .get(&format!("/api/audit?request={id}"), Some(ALICE))
        .await;
    assert_eq!(audit.status, StatusCode::OK);
    let entries = audit.json()["entries"].as_array().unwrap().clone();
    let approved = entries.iter().find(|e| e["event"] == "approved").unwrap();
    assert_eq!(approved["approver"], "alice");
    let revoked = srv
        .get("/api/audit?event=rule_revoked&limit=5", Some(ALICE))
        .await
        .json();
    assert_eq!(revoked["entries"][0]["approver"], "alice");
    let bad = srv.get("/api/audit?event=nonsense", Some(ALICE)).await;
    refused(&bad, StatusCode::BAD_REQUEST, "invalid_body");
}

#[tokio::test]
async fn wrong_codes_and_unknown_ids_look_the_same_and_deciding_twice_conflicts() {
    let srv = default_server().await;
    let (task, alert) = srv.park(refund(11)).await;
    let wrong = srv
        .approve(&alert, ALICE, json!({"code": "00000000"}))
        .await;
    let unknown = srv
        .post(
            "/api/requests/areq_0123456789abcdef0123456789abcdef/approve",
            Some(ALICE),
            json!({"code": code_of(&alert)}),
        )
        .await;
    let garbage = srv
        .post(
            "/api/requests/not-an-id/approve",
            Some(ALICE),
            json!({"code": "x"}),
        )
        .await;
    for reply in [&wrong, &unknown, &garbage] {
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.json(), wrong.json(), "nothing tells them apart");
    }
    assert_eq!(wrong.code(), "access_request_not_found");
    assert_eq!(srv.gate.stats().wrong_codes, 1);

    let too_wide = srv
        .approve(
            &alert,
            ALICE,
            json!({"code": code_of(&alert), "scope": "global"}),
        )
        .await;
    refused(
        &too_wide,
        StatusCode::UNPROCESSABLE_ENTITY,
        "scope_not_allowed",
    );
    let too_long = srv
        .approve(
            &alert,
            ALICE,
            json!({"code": code_of(&alert), "scope": "value", "ttl_secs": 7200}),
        )
        .await;
    assert_eq!(too_long.code(), "scope_not_allowed");

    let denied = srv
        .post(
            &format!("/api/requests/{}/deny", alert.request().id()),
            Some(ALICE),
            json!({"code": code_of(&alert), "reason": "not this customer"}),
        )
        .await;
    assert_eq!(denied.status, StatusCode::OK);
    assert_eq!(denied.json()["status"], "denied");
    let error = task.await.unwrap().unwrap_err();
    assert_eq!(code(&error), "access_request_denied");
    assert!(error.to_string().contains("not this customer"));

    let twice = srv
        .approve(&alert, ALICE, json!({"code": code_of(&alert)}))
        .await;
    refused(&twice, StatusCode::CONFLICT, "already_resolved");
}

#[tokio::test]
async fn too_many_wrong_codes_deny_the_request() {
    let srv = default_server().await;
    let (task, alert) = srv.park(refund(12)).await;
    for _ in 0..4 {
        let reply = srv
            .approve(&alert, ALICE, json!({"code": "FFFFFFFF"}))
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }
    let fifth = srv
        .approve(&alert, ALICE, json!({"code": "FFFFFFFF"}))
        .await;
    refused(&fifth, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts");
    assert_eq!(code(&task.await.unwrap().unwrap_err()), "too_many_attempts");
}

#[tokio::test]
async fn expired_and_cancelled_requests_are_gone() {
    let srv = server(|b| b.request_ttl(Duration::from_millis(200)), |api| api).await;
    let (task, expiring) = srv.park(refund(13)).await;
    let id = expiring.request().id();
    // Waits on the gate's own signal, not a sleep: the long poll answers once it expires.
    let waited = srv
        .get(&format!("/api/requests/{id}/wait?timeout_secs=30"), None)
        .await;
    assert_eq!(waited.json()["status"], "expired");
    assert_eq!(
        code(&task.await.unwrap().unwrap_err()),
        "access_request_expired"
    );
    let late = srv
        .approve(&expiring, ALICE, json!({"code": code_of(&expiring)}))
        .await;
    refused(&late, StatusCode::GONE, "access_request_expired");

    let (task, cancelled) = srv.park(refund(14)).await;
    task.abort();
    let id = cancelled.request().id();
    let gate = srv.gate.clone();
    support::until(|| gate.status(id).ok() == Some(Status::Cancelled)).await;
    let late = srv
        .approve(&cancelled, ALICE, json!({"code": code_of(&cancelled)}))
        .await;
    refused(&late, StatusCode::GONE, "access_request_cancelled");
}

#[tokio::test]
async fn the_long_poll_answers_on_a_decision_or_with_pending() {
    let srv = server(|b| b, |api| api.max_wait(Duration::from_millis(100))).await;
    let (task, alert) = srv.park(refund(15)).await;
    let id = alert.request().id();
    // Asks for an hour, gets at most max_wait, and hears it is still pending.
    let pending = srv
        .get(&format!("/api/requests/{id}/wait?timeout_secs=3600"), None)
        .await;
    assert_eq!(
        (pending.status, pending.json()["status"].clone()),
        (StatusCode::OK, json!("pending"))
    );

    let waiting = client::start(
        srv.addr,
        srv.request(
            "GET",
            &format!("/api/requests/{id}/wait?timeout_secs=30"),
            None,
        )
        .body(Full::<bytes::Bytes>::default())
        .unwrap(),
    )
    .await;
    let srv_gate = srv.gate.clone();
    let decided = srv
        .approve(&alert, ALICE, json!({"code": code_of(&alert)}))
        .await;
    assert_eq!(decided.status, StatusCode::OK);
    task.await.unwrap().unwrap();
    let answered = waiting.reply.await.unwrap();
    let status = answered.json()["status"].as_str().unwrap().to_owned();
    assert!(
        ["approved", "executing", "executed"].contains(&status.as_str()),
        "{status}"
    );
    assert!(srv_gate.status(id).is_ok());

    let unknown = srv
        .get(
            "/api/requests/areq_0123456789abcdef0123456789abcdef/wait",
            None,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let bad = srv
        .get(&format!("/api/requests/{id}/wait?timeout_secs=soon"), None)
        .await;
    assert_eq!(bad.code(), "invalid_body");
}

#[tokio::test]
async fn only_signed_in_approvers_manage_approvals_and_only_within_their_rights() {
    let srv = default_server().await;
    let (task, alert) = srv.park(refund(16)).await;
    let id = alert.request().id();
    let code = code_of(&alert);

    // Nobody signed in, or a token nobody gave: refused before anything else.
    for token in [None, Some("a-guess")] {
        for path in [
            "/api/requests",
            &format!("/api/requests/{id}"),
            "/api/rules",
            "/api/audit",
        ] {
            let reply = srv.get(path, token).await;
            refused(&reply, StatusCode::UNAUTHORIZED, "unauthenticated");
        }
        let approve = srv
            .approve(&alert, token.unwrap_or(""), json!({"code": code}))
            .await;
        assert_eq!(approve.status, StatusCode::UNAUTHORIZED);
        let revoke = srv.delete("/api/rules", token).await;
        assert_eq!(revoke.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        srv.gate.stats().wrong_codes,
        0,
        "refused before the code was tried"
    );

    // bob may decide `fs.*` only: he does not see the refund, and cannot decide it.
    let bobs = srv.get("/api/requests", Some(BOB)).await.json();
    assert_eq!(bobs["requests"], json!([]));
    let hidden = srv.get(&format!("/api/requests/{id}"), Some(BOB)).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    // Even with the right code he hears what an unknown id hears.
    let bobs_approval = srv.approve(&alert, BOB, json!({"code": code})).await;
    refused(
        &bobs_approval,
        StatusCode::NOT_FOUND,
        "access_request_not_found",
    );
    for (path, method) in [("/api/audit", "GET"), ("/api/rules", "DELETE")] {
        let request = srv
            .request(method, path, Some(BOB))
            .body(Full::default())
            .unwrap();
        let reply = srv.send(request).await;
        refused(&reply, StatusCode::FORBIDDEN, "approver_not_allowed");
    }

    // carol may decide payments, but grant no more than `value`.
    let wide = srv
        .approve(&alert, CAROL, json!({"code": code, "scope": "capability"}))
        .await;
    refused(&wide, StatusCode::UNPROCESSABLE_ENTITY, "scope_not_allowed");

    // The body cannot name the approver: it is refused, and the token's approver is recorded.
    let claimed = srv
        .approve(&alert, CAROL, json!({"code": code, "approver": "mallory"}))
        .await;
    refused(&claimed, StatusCode::BAD_REQUEST, "invalid_body");
    let approved = srv
        .approve(&alert, CAROL, json!({"code": code, "scope": "value"}))
        .await;
    assert_eq!(approved.json()["rule"]["granted_by"], "carol");
    task.await.unwrap().unwrap();
    let audit = srv
        .get(
            &format!("/api/audit?request={id}&event=approved"),
            Some(ALICE),
        )
        .await
        .json();
    assert_eq!(audit["entries"][0]["approver"], "carol");

    // carol can revoke her capability's rules, not everything.
    let all = srv.delete("/api/rules", Some(CAROL)).await;
    assert_eq!(all.status, StatusCode::FORBIDDEN);
    let hers = srv
        .delete("/api/rules?capability=payments.refund", Some(CAROL))
        .await;
    assert_eq!(hers.json()["revoked"].as_array().unwrap().len(), 1);
    let everything = srv.delete("/api/rules", Some(ALICE)).await;
    assert_eq!(everything.json()["revoked"], json!([]));
}

#[tokio::test]
async fn an_approver_who_may_not_decide_spends_none_of_the_attempts() {
    let srv = server(|b| b.max_attempts(2), |api| api.unlimited_decisions()).await;
    let (task, alert) = srv.park(refund(17)).await;
    let id = alert.request().id();
    let unknown = srv
        .post(
            "/api/requests/areq_00000000000000000000000000000000/approve",
            Some(BOB),
            json!({"code": "00000000"}),
        )
        .await;
    refused(&unknown, StatusCode::NOT_FOUND, "access_request_not_found");

    // bob decides `fs.*` only; the id is in every approval URL. Wrong codes, the right one,
    // approve or deny, JSON or the page's form: all answered as an unknown id, none counted.
    for attempt in 0..10 {
        let guess = format!("{attempt:08X}");
        let path = format!("/api/requests/{id}/deny");
        for reply in [
            srv.approve(&alert, BOB, json!({"code": guess})).await,
            srv.post(&path, Some(BOB), json!({"code": guess})).await,
            srv.approve(&alert, BOB, json!({"code": code_of(&alert)}))
                .await,
        ] {
            assert_eq!((reply.status, &reply.body), (unknown.status, &unknown.body));
        }
        let form = srv
            .request("POST", &format!("/{id}"), Some(BOB))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::<bytes::Bytes>::from(format!(
                "action=deny&code={guess}"
            )))
            .unwrap();
        let page = client::send(srv.addr, form).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(srv.gate.status(id).unwrap(), Status::Pending);
    assert_eq!(srv.gate.stats().wrong_codes, 0);
    let rejected = srv
        .get(
            &format!("/api/audit?request={id}&event=code_rejected"),
            Some(ALICE),
        )
        .await
        .json();
    assert_eq!(rejected["entries"], json!([]));

    // Those who may decide still can.
    let approved = srv
        .approve(&alert, CAROL, json!({"code": code_of(&alert)}))
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{approved:?}");
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_page_shows_caller_text_with_controls_and_bidi_overrides_escaped() {
    let srv = default_server().await;
    let call = ToolCall::new(
        "payments.refund",
        json!({"to": "invoice\u{202e}fdp.exe\u{7f}", "amount": 1}),
    )
    .principal("agent\u{2066}7")
    .reason("urgent\u{1b}[8m\u{9b}hidden\u{85}");
    let (task, alert) = srv.park(call).await;
    let page = srv
        .get(&format!("/{}", alert.request().id()), Some(ALICE))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.chars().any(support::hidden), "{:?}", page.body);
    for shown in [
        r"invoice\u{202e}fdp.exe\u{7f}",
        r"agent\u{2066}7",
        r"urgent\u{1b}[8m\u{9b}hidden\u{85}",
    ] {
        assert!(page.body.contains(shown), "{shown} in {}", page.body);
    }
    task.abort();
}

#[tokio::test]
async fn bad_requests_get_json_errors_with_stable_codes() {
    let srv = server(
        |b| b,
        |api| {
            api.body_limit(1024)
                .decision_rate(3, Duration::from_secs(3600))
        },
    )
    .await;
    let (_task, alert) = srv.park(refund(17)).await;
    let approve_path = format!("/approvals/api/requests/{}/approve", alert.request().id());

    let unknown = srv.get("/api/nothing/here", Some(ALICE)).await;
    refused(&unknown, StatusCode::NOT_FOUND, "unknown_route");
    let method = srv.delete("/api/requests", Some(ALICE)).await;
    refused(
        &method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );

    let huge = client::request("POST", &approve_path)
        .header("authorization", format!("Bearer {ALICE}"))
        .header("content-type", "application/json")
        .body(Full::from(format!(r#"{{"code":"{}"}}"#, "A".repeat(4096))))
        .unwrap();
    let huge = srv.send(huge).await;
    refused(&huge, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");

    for (content_type, body) in [
        ("application/json", "{not json"),
        ("application/json", r#"{"code": 12345678}"#),
        ("application/json", r#"{"code": "x", "scope": "forever"}"#),
        ("text/plain", r#"{"code": "x"}"#),
    ] {
        let request = client::request("POST", &approve_path)
            .header("authorization", format!("Bearer {ALICE}"))
            .header("content-type", content_type)
            .body(Full::from(body))
            .unwrap();
        let reply = srv.send(request).await;
        refused(&reply, StatusCode::BAD_REQUEST, "invalid_body");
        assert!(
            !reply.body.contains("12345678"),
            "the body is not repeated back"
        );
    }

    let cross_site = client::request("POST", &approve_path)
        .header("authorization", format!("Bearer {ALICE}"))
        .header("content-type", "application/json")
        .header("origin", "https://evil.example")
        .header("sec-fetch-site", "cross-site")
        .body(Full::from(json!({"code": code_of(&alert)}).to_string()))
        .unwrap();
    let cross_site = srv.send(cross_site).await;
    refused(&cross_site, StatusCode::FORBIDDEN, "cross_site_request");

    // Three decisions an hour for each approver: the fourth is refused before the code is read.
    for _ in 0..3 {
        assert_eq!(
            srv.approve(&alert, CAROL, json!({"code": "00000000"}))
                .await
                .status,
            StatusCode::NOT_FOUND
        );
    }
    let limited = srv
        .approve(&alert, CAROL, json!({"code": code_of(&alert)}))
        .await;
    refused(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(limited.json()["error"]["retryable"].as_bool().unwrap());
    let other = srv
        .approve(&alert, ALICE, json!({"code": code_of(&alert)}))
        .await;
    assert_eq!(other.status, StatusCode::OK, "approvers are limited apart");
}

#[tokio::test]
async fn a_slow_approvers_hook_times_out_with_a_json_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gate = Gate::builder()
        .random_secret()
        .park_when_unnotified()
        .build()
        .unwrap();
    struct Never;
    impl tollgate::approval::Approvers for Never {
        fn identify<'a>(
            &'a self,
            _: &'a http::request::Parts,
        ) -> tollgate::notify::BoxFuture<'a, Result<Option<Approver>, tollgate::Error>> {
            Box::pin(std::future::pending())
        }
    }
    let app = ApprovalApi::new(gate, Never)
        .timeout(Duration::from_millis(50))
        .router();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let reply = client::send(
        addr,
        client::request("GET", "/api/requests")
            .body(Full::<bytes::Bytes>::default())
            .unwrap(),
    )
    .await;
    refused(&reply, StatusCode::SERVICE_UNAVAILABLE, "request_timed_out");
}

/// Every route the OpenAPI document lists, and no other: each answered by the server.
const ROUTES: [(&str, &str); 15] = [
    ("get", "/api/openapi.json"),
    ("get", "/api/requests"),
    ("get", "/api/requests/{id}"),
    ("post", "/api/requests/{id}/approve"),
    ("post", "/api/requests/{id}/deny"),
    ("get", "/api/requests/{id}/status"),
    ("get", "/api/requests/{id}/wait"),
    ("get", "/api/rules"),
    ("delete", "/api/rules"),
    ("delete", "/api/rules/{id}"),
    ("get", "/api/audit"),
    ("get", "/"),
    ("get", "/{id}"),
    ("post", "/{id}"),
    ("post", "/sign-in"),
];

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    let srv = default_server().await;
    let doc = srv.get("/api/openapi.json", None).await;
    assert_eq!(doc.status, StatusCode::OK);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            documented.insert((method.clone(), path.clone()));
            // Every error code an operation documents is one the crate has.
            for code in operation["x-error-codes"].as_array().into_iter().flatten() {
                let code = code.as_str().unwrap();
                assert!(
                    tollgate::ErrorKind::ALL.iter().any(|k| k.code() == code)
                        || tollgate::approval::ApiErrorKind::ALL
                            .iter()
                            .any(|k| k.code() == code),
                    "{method} {path}: unknown code {code}"
                );
            }
        }
    }
    let mut expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    expected.insert(("post".into(), "/sign-out".into()));
    assert_eq!(documented, expected);

    for (method, path) in &expected {
        let path = path.replace("{id}", "areq_0123456789abcdef0123456789abcdef");
        let request = srv
            .request(&method.to_uppercase(), &path, Some(ALICE))
            .header("content-type", "application/json")
            .body(Full::<bytes::Bytes>::from("{}"))
            .unwrap();
        let reply = client::send(srv.addr, request).await;
        assert!(
            reply.status != StatusCode::METHOD_NOT_ALLOWED
                && !(reply.status == StatusCode::NOT_FOUND && reply.body.contains("unknown_route")),
            "{method} {path} is documented but not served: {reply:?}"
        );
    }
}

mod fuzz {
    //! Whatever arrives, the approval API answers it: never a 5xx, never a panic, never a code.

    use std::sync::OnceLock;

    use axum::body::Body;
    use proptest::prelude::*;
    use tokio::runtime::Runtime;

    use super::*;

    struct Fixture {
        runtime: Runtime,
        app: Router,
        id: String,
        code: String,
        _task: JoinHandle<Result<String, BoxError>>,
    }

    /// One runtime, one gate with a parked call, one router, shared by every case.
    fn fixture() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let (app, task, alert) = runtime.block_on(async {
                let alerts = RecordingNotifier::new();
                let gate = support::gate(&alerts).max_attempts(1000).build().unwrap();
                let svc = gate
                    .layer(policy(Scope::Capability))
                    .layer(Tools::default());
                let task = tokio::spawn(svc.oneshot(refund(1)));
                let alert = alerts.next_alert().await;
                let api = ApprovalApi::new(gate, tokens())
                    .body_limit(4096)
                    .max_wait(Duration::from_millis(5))
                    .unlimited_decisions();
                (Router::new().nest("/approvals", api.router()), task, alert)
            });
            Fixture {
                runtime,
                app,
                id: alert.request().id().to_string(),
                code: alert.code().reveal().to_owned(),
                _task: task,
            }
        })
    }

    fn percent_encoded(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                b => format!("%{b:02X}"),
            })
            .collect()
    }

    const SEGMENTS: [&str; 12] = [
        "api",
        "requests",
        "rules",
        "audit",
        "approve",
        "deny",
        "status",
        "wait",
        "openapi.json",
        "sign-in",
        "sign-out",
        "{id}",
    ];
    const PARAMS: [&str; 10] = [
        "timeout_secs",
        "limit",
        "after",
        "event",
        "since_ms",
        "until_ms",
        "request",
        "capability",
        "principal",
        "other",
    ];

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => (0..SEGMENTS.len()).prop_map(|i| SEGMENTS[i].to_owned()),
            1 => any::<String>().prop_map(|s| percent_encoded(&s)),
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            2 => any::<u64>().prop_map(|n| n.to_string()),
            1 => (0u64..100).prop_map(|n| n.to_string()),
            1 => any::<i64>().prop_map(|n| n.to_string()),
            1 => Just("approved".to_owned()),
            1 => Just("{id}".to_owned()),
            1 => any::<String>().prop_map(|s| percent_encoded(&s)),
        ]
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        let json_value = prop_oneof![
            Just(json!(null)),
            any::<bool>().prop_map(|b| json!(b)),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|n| json!(n)),
            ".*".prop_map(|s| json!(s)),
            Just(json!("{code}")),
            Just(json!("global")),
            Just(json!(u64::MAX)),
        ];
        let field = prop_oneof![
            Just("code"),
            Just("scope"),
            Just("ttl_secs"),
            Just("reason"),
            Just("remember"),
            Just("approver"),
            Just("action"),
        ];
        prop_oneof![
            3 => proptest::collection::btree_map(field, json_value, 0..5)
                .prop_map(|fields| serde_json::to_vec(&fields).unwrap()),
            1 => proptest::collection::vec(any::<u8>(), 0..256),
            1 => (1usize..20_000).prop_map(|n| vec![b'{'; n]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn no_input_gets_a_5xx_a_panic_or_a_code(
            (method, route) in prop_oneof![
                3 => (0..ROUTES.len()).prop_map(|i| {
                    (ROUTES[i].0.to_uppercase(), ROUTES[i].1.trim_start_matches('/').to_owned())
                }),
                1 => (
                    prop_oneof![Just("GET"), Just("POST"), Just("DELETE"), Just("PUT")].prop_map(str::to_owned),
                    proptest::collection::vec(segment(), 0..5).prop_map(|s| s.join("/")),
                ),
            ],
            params in proptest::collection::vec(((0..PARAMS.len()), value()), 0..4),
            body in body(),
            content_type in prop_oneof![
                Just("application/json"), Just("application/x-www-form-urlencoded"),
                Just("text/plain"), Just(""),
            ],
            auth in 0..4usize,
            cross_site in any::<bool>(),
        ) {
            let fx = fixture();
            let fill = |s: &str| s.replace("{id}", &fx.id);
            let path = fill(&route);
            let query = params
                .iter()
                .map(|(k, v)| format!("{}={}", PARAMS[*k], fill(v)))
                .collect::<Vec<_>>()
                .join("&");
            let uri = format!("/approvals/{path}?{query}");
            let body = String::from_utf8_lossy(&body).replace("{code}", &fx.code).into_bytes();
            let mut request = http::Request::builder().method(method.as_str()).uri(&uri);
            if !content_type.is_empty() {
                request = request.header("content-type", content_type);
            }
            if let Some(token) = [None, Some(ALICE), Some(CAROL), Some("nobody")][auth] {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            if cross_site {
                request = request.header("sec-fetch-site", "cross-site").header("origin", "https://elsewhere.example");
            }
            let request = request.body(Body::from(body)).unwrap();
            let (status, text) = fx.runtime.block_on(async {
                let response = fx.app.clone().oneshot(request).await.unwrap();
                let status = response.status();
                let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
                (status, String::from_utf8_lossy(&bytes).into_owned())
            });
            prop_assert!(!status.is_server_error(), "{method} {uri}: {status} {text}");
            prop_assert!(!text.contains(&fx.code), "{method} {uri}: the code in {text}");
        }
    }
}

/// `ttl_secs` is a JSON integer as the OpenAPI document's schema reads it: `600.0` is the
/// integer 600 (it was refused with `invalid_body`); a fraction is still refused.
#[tokio::test]
async fn a_ttl_written_with_a_zero_fraction_is_a_whole_number() {
    let srv = default_server().await;
    let (task, alert) = srv.park(refund(10)).await;
    let half = srv
        .approve(
            &alert,
            ALICE,
            json!({"code": code_of(&alert), "scope": "value", "ttl_secs": 600.5}),
        )
        .await;
    refused(&half, StatusCode::BAD_REQUEST, "invalid_body");
    let approved = srv
        .approve(
            &alert,
            ALICE,
            json!({"code": code_of(&alert), "scope": "value", "ttl_secs": 600.0}),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{approved:?}");
    let rule = &approved.json()["rule"];
    let granted = rule["granted_at"].as_str().unwrap().to_owned();
    assert_ne!(rule["expires_at"].as_str().unwrap(), granted);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_value_approval_over_http_covers_the_key_fields_the_request_names() {
    let srv = default_server().await;
    let tools = Tools::default();
    let texts = srv.gate.layer(support::texts_policy()).layer(tools.clone());
    let sms = |to: &str, body: &str| {
        ToolCall::new("sms.send", json!({"to": to, "body": body})).principal("agent-7")
    };
    let task = tokio::spawn(texts.clone().oneshot(sms("+15550100", "shipped")));
    let alert = srv.alerts.next_alert().await;
    srv.codes
        .lock()
        .unwrap()
        .push(alert.code().reveal().to_owned());
    let id = alert.request().id();

    let one = srv.get(&format!("/api/requests/{id}"), Some(ALICE)).await;
    assert_eq!(one.json()["request"]["key_fields"], json!(["/to"]));
    let listed = srv.get("/api/requests", Some(ALICE)).await;
    assert_eq!(listed.json()["requests"][0]["key_fields"], json!(["/to"]));

    let approved = srv
        .approve(
            &alert,
            ALICE,
            json!({"code": code_of(&alert), "scope": "value"}),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{approved:?}");
    task.await.unwrap().unwrap();

    texts
        .clone()
        .oneshot(sms("+15550100", "arrives today"))
        .await
        .unwrap();
    assert_eq!(tools.total(), 2, "the same number, another text: covered");
    let other = tokio::spawn(texts.oneshot(sms("+15550199", "shipped")));
    let asked = srv.alerts.next_alert().await;
    assert_eq!(
        asked.request().args()["to"],
        "+15550199",
        "another number asks"
    );
    other.abort();
}

#[tokio::test]
async fn an_approval_over_http_can_end_at_a_given_time() {
    use std::time::{SystemTime, UNIX_EPOCH};
    let srv = default_server().await;
    let (task, alert) = srv.park(refund(10)).await;
    let code = code_of(&alert);
    let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let now = SystemTime::now();
    for until_ms in [ms(now) - 1000, 0, ms(now) + 7_200_000, u64::MAX] {
        let body = json!({"code": code, "scope": "value", "until_ms": until_ms});
        let reply = srv.approve(&alert, ALICE, body).await;
        refused(
            &reply,
            StatusCode::UNPROCESSABLE_ENTITY,
            "scope_not_allowed",
        );
    }
    for body in [
        json!({"code": code, "scope": "value", "until_ms": "tomorrow"}),
        json!({"code": code, "scope": "value", "until_ms": 1.5}),
        json!({"code": code, "scope": "value", "until_ms": ms(now) + 60_000, "ttl_secs": 60}),
    ] {
        let reply = srv.approve(&alert, ALICE, body.clone()).await;
        refused(&reply, StatusCode::BAD_REQUEST, "invalid_body");
    }
    let end = ms(now) + 1_800_000;
    // Written as a JSON number with a zero fraction, as JSON Schema allows for an integer.
    let body = format!(r#"{{"code": "{code}", "scope": "value", "until_ms": {end}.0}}"#);
    let path = format!("/api/requests/{}/approve", alert.request().id());
    let request = srv
        .request("POST", &path, Some(ALICE))
        .header("content-type", "application/json")
        .body(Full::from(body))
        .unwrap();
    let approved = srv.send(request).await;
    assert_eq!(approved.status, StatusCode::OK, "{approved:?}");
    task.await.unwrap().unwrap();
    let rule = &srv.gate.rules()[0];
    assert_eq!(ms(rule.expires_at()), end, "to the millisecond");
}

#[tokio::test]
async fn the_openapi_document_lists_every_audit_event_the_audit_route_takes() {
    let srv = default_server().await;
    let doc = srv.get("/api/openapi.json", None).await.json();
    let audit = &doc["paths"]["/api/audit"]["get"]["parameters"];
    let event = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "event")
        .unwrap();
    let documented: Vec<&str> = event["schema"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    let events: Vec<&str> = tollgate::store::AuditEvent::ALL
        .iter()
        .map(|e| e.as_str())
        .collect();
    assert_eq!(documented, events);
}

#[tokio::test]
async fn an_approval_over_http_can_edit_the_arguments_where_the_policy_allows() {
    use tollgate::policy::{Ask, arg, threshold};
    let srv = default_server().await;
    let tools = Tools::default();
    let refunds = threshold(arg("/amount"), 100.0)
        .deny_above(1_000.0, "refunds over 1,000 go through finance")
        .ask(Ask::new("refunds move money").editable());
    let svc = srv.gate.layer(refunds).layer(tools.clone());
    let task = tokio::spawn(svc.oneshot(refund(500)));
    let alert = srv.alerts.next_alert().await;
    srv.codes.lock().unwrap().push(code_of(&alert));
    let id = alert.request().id();
    let one = srv.get(&format!("/api/requests/{id}"), Some(ALICE)).await;
    assert_eq!(one.json()["request"]["editable"], true);

    let code = code_of(&alert);
    // Arguments are judged only for someone whose code is right: a wrong code with arguments
    // no double holds is an unknown request, as any wrong code is.
    let path = format!("/api/requests/{id}/approve");
    let raw = r#"{"code": "00000000", "args": {"amount": 377490293245380001792}}"#;
    let reply = srv.post_text(&path, Some(ALICE), raw.into()).await;
    refused(&reply, StatusCode::NOT_FOUND, "access_request_not_found");
    let denied = json!({"code": code, "args": {"charge": "ch_1", "amount": 5000}});
    let reply = srv.approve(&alert, ALICE, denied).await;
    refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "edit_not_allowed");
    assert!(reply.body.contains("finance"), "{reply:?}");
    // A repeated key is refused, not read as its last value.
    let raw = format!(
        r#"{{"code": "{code}", "args": {{"charge": "ch_1", "amount": 50, "amount": 5000}}}}"#
    );
    let reply = srv.post_text(&path, Some(ALICE), raw).await;
    refused(&reply, StatusCode::BAD_REQUEST, "invalid_arguments");
    assert_eq!(srv.gate.status(id).unwrap(), Status::Pending);
    assert_eq!(tools.total(), 0);

    let edited = json!({"code": code, "args": {"charge": "ch_1", "amount": 50}});
    let approved = srv.approve(&alert, ALICE, edited).await;
    assert_eq!(approved.status, StatusCode::OK, "{approved:?}");
    assert_eq!(
        approved.json()["edited_args"],
        json!({"charge": "ch_1", "amount": 50})
    );
    let ran = task.await.unwrap().unwrap();
    assert_eq!(ran, r#"ran payments.refund {"amount":50,"charge":"ch_1"}"#);

    // A request whose policy does not allow edits refuses them.
    let (task, alert) = srv.park(refund(10)).await;
    let reply = srv
        .approve(
            &alert,
            ALICE,
            json!({"code": code_of(&alert), "args": {"amount": 1}}),
        )
        .await;
    refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "edit_not_allowed");
    let one = srv
        .get(
            &format!("/api/requests/{}", alert.request().id()),
            Some(ALICE),
        )
        .await;
    assert_eq!(one.json()["request"]["editable"], false);
    task.abort();
}

#[tokio::test]
async fn a_quorum_is_approved_over_http_by_each_approver_with_their_own_code() {
    use tollgate::policy::Ask;
    let srv = default_server().await;
    let tools = Tools::default();
    let ask = Ask::new("pays out").approvers(["alice", "carol"]).quorum(2);
    let svc = srv
        .gate
        .layer(CapabilityTable::new().ask("payments.payout", ask))
        .layer(tools.clone());
    let task = tokio::spawn(
        svc.oneshot(ToolCall::new("payments.payout", json!({"amount": 5})).principal("agent-7")),
    );
    let alert = srv.alerts.next_alert().await;
    for (_, code) in alert.codes() {
        srv.codes.lock().unwrap().push(code.reveal().to_owned());
    }
    let id = alert.request().id();
    let own = |who: &str| alert.code_for(who).unwrap().reveal().to_owned();

    // carol's code is not alice's.
    let wrong = srv
        .approve(&alert, ALICE, json!({"code": own("carol")}))
        .await;
    refused(&wrong, StatusCode::NOT_FOUND, "access_request_not_found");
    let counted = srv
        .approve(&alert, ALICE, json!({"code": own("alice")}))
        .await;
    assert_eq!(counted.status, StatusCode::OK, "{counted:?}");
    assert_eq!(counted.json()["status"], "pending");
    assert_eq!(counted.json()["outstanding"], 1);
    let again = srv
        .approve(&alert, ALICE, json!({"code": own("alice")}))
        .await;
    refused(&again, StatusCode::CONFLICT, "already_approved");
    let one = srv.get(&format!("/api/requests/{id}"), Some(ALICE)).await;
    assert_eq!(one.json()["request"]["quorum"], 2);
    assert_eq!(one.json()["approved_by"], json!(["alice"]));
    assert_eq!(tools.total(), 0);

    let decided = srv
        .approve(&alert, CAROL, json!({"code": own("carol")}))
        .await;
    assert_eq!(decided.status, StatusCode::OK, "{decided:?}");
    assert_eq!(decided.json()["status"], "approved");
    assert_eq!(decided.json()["outstanding"], 0);
    task.await.unwrap().unwrap();
    assert_eq!(tools.total(), 1);
}
