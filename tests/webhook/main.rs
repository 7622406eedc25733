//! The webhook and chat notifiers against a real HTTP receiver (axum on 127.0.0.1:0) that checks
//! each signature with the public helper and answers from a script: statuses, `Retry-After`, or
//! silence. Real time throughout, with short timeouts and backoffs.

#[path = "../support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tollgate::notify::signature::{
    DEFAULT_TOLERANCE, SignatureError, verify_signature, verify_signature_at,
};
use tollgate::notify::{
    DeliveryFailed, IncludeCode, RecordingNotifier, SlackNotifier, WebhookBuilder, WebhookNotifier,
};
use tollgate::{Approve, Gate, Scope};
use tower::{Layer, ServiceExt};

use support::receiver::{Answer, SECRET, Seen, receiver};
use support::{Reported, Tools, policy, refund};

fn webhook(url: &str) -> WebhookBuilder {
    WebhookNotifier::builder(url)
        .secret(SECRET)
        .attempt_timeout(Duration::from_millis(500))
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
}

fn gate_with(notifier: impl tollgate::notify::Notifier) -> Gate {
    Gate::builder()
        .secret(support::SECRET)
        .approval_base_url("https://approve.example.com")
        .notify_timeout(Duration::from_secs(5))
        .notifier(notifier)
        .build()
        .unwrap()
}

#[tokio::test]
async fn events_are_signed_and_describe_the_request_then_its_outcome() {
    let (url, mut seen) = receiver(&[]).await;
    let (hook, mut sent) = Reported::new(webhook(&url).build().unwrap());
    let recorder = RecordingNotifier::new();
    let gate = Gate::builder()
        .secret(support::SECRET)
        .notifier(hook)
        .notifier(recorder.clone())
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let call = tokio::spawn(svc.oneshot(refund(500)));

    let created = seen.recv().await.unwrap();
    assert_eq!(created.verified, Ok(()), "signed: {}", created.signature);
    let event = created.json();
    assert_eq!(event["type"], "access_request.created");
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    let request = &event["data"]["request"];
    assert_eq!(request["capability"], "payments.refund");
    assert_eq!(request["args"]["amount"], 500);
    assert_eq!(request["principal"], "agent-7");
    assert_eq!(request["session"], "conv-42");
    assert_eq!(request["reason"], "customer ticket #4421");
    assert_eq!(request["max_scope"], "value");
    assert!(
        event["data"].get("code").is_none(),
        "no code over plain http by default"
    );
    let alert = recorder.next_alert().await;
    assert_eq!(request["id"], alert.request().id().to_string());
    assert!(!String::from_utf8_lossy(&created.body).contains(alert.code().reveal()));
    assert!(sent.recv().await.unwrap().2, "delivered");

    gate.approve(
        Approve::new(alert.request().id(), alert.code().reveal())
            .scope(Scope::Value)
            .by("alice"),
    )
    .await
    .unwrap();
    call.await.unwrap().unwrap();
    let resolved = seen.recv().await.unwrap();
    assert_eq!(resolved.verified, Ok(()));
    let event = resolved.json();
    assert_eq!(event["type"], "access_request.resolved");
    assert_ne!(event["id"], created.json()["id"]);
    let outcome = &event["data"]["outcome"];
    assert_eq!(outcome["status"], "approved");
    assert_eq!(outcome["approver"], "alice");
    assert_eq!(outcome["scope"], "value");
    assert!(outcome["until"].is_string());
}

#[tokio::test]
async fn the_code_is_in_the_payload_only_when_asked_for() {
    let (url, mut seen) = receiver(&[]).await;
    let recorder = RecordingNotifier::new();
    let gate = Gate::builder()
        .secret(support::SECRET)
        .notifier(
            webhook(&url)
                .include_code(IncludeCode::Always)
                .build()
                .unwrap(),
        )
        .notifier(recorder.clone())
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let _call = tokio::spawn(svc.oneshot(refund(1)));
    let event = seen.recv().await.unwrap().json();
    let alert = recorder.next_alert().await;
    assert_eq!(event["data"]["code"], alert.code().reveal());

    let (url, mut seen) = receiver(&[]).await;
    let https_like = webhook(&url)
        .include_code(IncludeCode::Never)
        .build()
        .unwrap();
    let gate = gate_with(https_like);
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let _call = tokio::spawn(svc.oneshot(refund(2)));
    assert!(
        seen.recv().await.unwrap().json()["data"]
            .get("code")
            .is_none()
    );
}

#[tokio::test]
async fn server_errors_are_retried_and_the_event_is_delivered_once() {
    let (url, mut seen) = receiver(&[Answer::Status(500), Answer::Status(503)]).await;
    let (hook, mut sent) = Reported::new(webhook(&url).build().unwrap());
    let gate = gate_with(hook);
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let _call = tokio::spawn(svc.oneshot(refund(1)));
    assert!(sent.recv().await.unwrap().2, "delivered");
    let attempts: Vec<Seen> = std::iter::from_fn(|| seen.try_recv().ok()).collect();
    let answers: Vec<_> = attempts.iter().map(|s| format!("{:?}", s.answer)).collect();
    assert_eq!(answers, ["Status(500)", "Status(503)", "Status(200)"]);
    let ids: Vec<_> = attempts.iter().map(|s| s.json()["id"].clone()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one event id: {ids:?}");
    assert!(
        attempts.iter().all(|s| s.verified.is_ok()),
        "each attempt is signed"
    );
}

#[tokio::test]
async fn too_many_requests_is_retried_after_the_time_it_asks() {
    let (url, mut seen) = receiver(&[Answer::TooManyRequests { retry_after: 1 }]).await;
    let hook = webhook(&url)
        .backoff(Duration::from_millis(10), Duration::from_secs(2))
        .build()
        .unwrap();
    let (hook, mut sent) = Reported::new(hook);
    let gate = gate_with(hook);
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let started = std::time::Instant::now();
    let _call = tokio::spawn(svc.oneshot(refund(1)));
    assert!(sent.recv().await.unwrap().2, "delivered");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited as asked"
    );
    assert_eq!(std::iter::from_fn(|| seen.try_recv().ok()).count(), 2);
}

#[tokio::test]
async fn a_client_error_is_final_and_fails_the_call_closed() {
    let (url, mut seen) = receiver(&[Answer::Status(400)]).await;
    let gate = gate_with(webhook(&url).build().unwrap());
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let result = svc.oneshot(refund(1)).await;
    assert_eq!(support::code(&result.unwrap_err()), "notification_failed");
    assert_eq!(
        std::iter::from_fn(|| seen.try_recv().ok()).count(),
        1,
        "not retried"
    );
}

#[tokio::test]
async fn a_hung_attempt_times_out_and_is_retried() {
    let (url, mut seen) = receiver(&[Answer::Hang]).await;
    let hook = webhook(&url)
        .attempt_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let (hook, mut sent) = Reported::new(hook);
    let gate = gate_with(hook);
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let _call = tokio::spawn(svc.oneshot(refund(1)));
    assert!(sent.recv().await.unwrap().2, "delivered");
    let answers: Vec<_> = std::iter::from_fn(|| seen.try_recv().ok())
        .map(|s| format!("{:?}", s.answer))
        .collect();
    assert_eq!(answers, ["Hang", "Status(200)"]);
}

#[tokio::test]
async fn a_delivery_that_runs_out_of_attempts_says_how_it_failed() {
    let (url, _seen) = receiver(&[Answer::Status(502); 3]).await;
    let hook = webhook(&url).max_attempts(3).build().unwrap();
    let failing = Arc::new(Mutex::new(None));
    let gate = gate_with(tollgate::notify::notifier_fn({
        let failing = failing.clone();
        let hook = Arc::new(hook);
        move |alert| {
            let hook = hook.clone();
            let failing = failing.clone();
            async move {
                use tollgate::notify::Notifier;
                let result = hook.notify(&alert).await;
                if let Err(error) = &result {
                    let failed = std::error::Error::source(error)
                        .and_then(|e| e.downcast_ref::<DeliveryFailed>())
                        .map(|f| (f.attempts(), f.status(), f.to_string()));
                    *failing.lock().unwrap() = failed;
                }
                result
            }
        }
    }));
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let result = svc.oneshot(refund(1)).await;
    assert_eq!(support::code(&result.unwrap_err()), "notification_failed");
    let (attempts, status, text) = failing.lock().unwrap().clone().unwrap();
    assert_eq!((attempts, status), (3, Some(502)));
    assert_eq!(text, "answered 502 Bad Gateway after 3 attempts");
    assert!(!text.contains("T0KEN"), "the URL stays out of errors");
}

#[tokio::test]
async fn a_replayed_event_outside_the_tolerance_is_refused_by_the_helper() {
    let (url, mut seen) = receiver(&[]).await;
    let gate = gate_with(webhook(&url).build().unwrap());
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let _call = tokio::spawn(svc.oneshot(refund(1)));
    let event = seen.recv().await.unwrap();
    let key = SECRET.as_bytes();
    let now = SystemTime::now();
    let replay = |after| {
        verify_signature_at(
            &event.signature,
            &event.body,
            key,
            DEFAULT_TOLERANCE,
            now + after,
        )
    };
    assert_eq!(replay(Duration::from_secs(200)), Ok(()));
    assert_eq!(
        replay(Duration::from_secs(302)),
        Err(SignatureError::Expired)
    );
    let mut tampered = event.body.clone();
    tampered.extend_from_slice(b" ");
    assert_eq!(
        verify_signature(&event.signature, &tampered, key, DEFAULT_TOLERANCE),
        Err(SignatureError::Mismatch)
    );
}

#[tokio::test]
async fn chat_messages_have_a_text_and_fields_and_a_closing_line() {
    let (url, mut seen) = receiver(&[]).await;
    let recorder = RecordingNotifier::new();
    let chat = SlackNotifier::builder(&url)
        .include_code(IncludeCode::Always)
        .build()
        .unwrap();
    assert!(
        !format!("{chat:?}").contains("T0KEN"),
        "the URL is the secret"
    );
    let gate = Gate::builder()
        .secret(support::SECRET)
        .approval_base_url("https://approve.example.com")
        .notifier(chat)
        .notifier(recorder.clone())
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let call = tokio::spawn(svc.oneshot(refund(9).reason("a <script> & co")));
    let message = seen.recv().await.unwrap();
    assert!(message.signature.is_empty(), "chat webhooks are not signed");
    let message = message.json();
    assert_eq!(
        message["text"],
        ":raised_hand: *Approval needed*: `payments.refund` for *agent-7*: a &lt;script&gt; &amp; co"
    );
    let fields = message["attachments"][0]["fields"].as_array().unwrap();
    let field = |title: &str| {
        fields
            .iter()
            .find(|f| f["title"] == title)
            .unwrap_or_else(|| panic!("no {title} field"))["value"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let alert = recorder.next_alert().await;
    let id = alert.request().id();
    assert_eq!(field("Capability"), "payments.refund");
    assert_eq!(field("Code"), format!("`{}`", alert.code().reveal()));
    assert_eq!(field("Request"), id.to_string());
    assert!(field("Arguments").contains("\"amount\": 9"));
    assert_eq!(
        field("Approve or deny"),
        format!("<https://approve.example.com/{id}>")
    );

    gate.approve(Approve::new(id, alert.code().reveal()).by("alice"))
        .await
        .unwrap();
    call.await.unwrap().unwrap();
    let closing = seen.recv().await.unwrap().json();
    assert_eq!(
        closing["text"],
        format!("`payments.refund` for *agent-7* ({id}): approved by alice, scope once")
    );
}

#[tokio::test]
async fn caller_text_never_becomes_a_chat_mention_or_link() {
    let (url, mut seen) = receiver(&[]).await;
    let chat = SlackNotifier::builder(&url).build().unwrap();
    let gate = gate_with(chat);
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let _call = tokio::spawn(svc.oneshot(refund(9).reason("<!channel>")));
    let message = seen.recv().await.unwrap().json();
    let field = |title: &str| {
        message["attachments"][0]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["title"] == title)
            .unwrap()["value"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(field("Reason"), "&lt;!channel&gt;");
    assert!(
        message["text"]
            .as_str()
            .unwrap()
            .ends_with(": &lt;!channel&gt;")
    );
    assert!(field("Approve or deny").starts_with("<https://approve.example.com/areq_"));
}

#[test]
fn bad_settings_fail_at_build_without_repeating_the_url() {
    let error = WebhookNotifier::builder("ftp://hooks.example.com/x")
        .secret(SECRET)
        .build()
        .unwrap_err();
    assert_eq!(error.code(), "invalid_config");
    let error = WebhookNotifier::builder("https://hooks.example.com/T0KEN")
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("signing secret"), "{error}");
    let error = WebhookNotifier::builder("https://hooks.example.com/T0KEN")
        .secret("short")
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("at least 16 bytes"), "{error}");
    let error = SlackNotifier::builder("not a url/T0KEN")
        .build()
        .unwrap_err();
    assert!(!error.to_string().contains("T0KEN"), "{error}");
    let error = SlackNotifier::builder("https://hooks.slack.com/T0KEN")
        .text("{nope}")
        .build()
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("slack text: template: unknown field `nope`"),
        "{error}"
    );
}

/// A quorum's approvers each have their own code: the payload maps each approver to theirs,
/// for the receiver to route, and carries no shared code; a chat channel, which everyone reads,
/// gets none.
#[tokio::test]
async fn a_quorums_codes_go_out_by_approver_and_never_to_a_chat_channel() {
    use tollgate::policy::{Ask, CapabilityTable};
    let (url, mut seen) = receiver(&[]).await;
    let (chat_url, mut chat_seen) = receiver(&[]).await;
    let recorder = RecordingNotifier::new();
    let chat = SlackNotifier::builder(chat_url)
        .include_code(IncludeCode::Always)
        .build()
        .unwrap();
    let gate = Gate::builder()
        .secret(support::SECRET)
        .notifier(
            webhook(&url)
                .include_code(IncludeCode::Always)
                .build()
                .unwrap(),
        )
        .notifier(chat)
        .notifier(recorder.clone())
        .build()
        .unwrap();
    let ask = Ask::new("pays out").approvers(["alice", "bob"]).quorum(2);
    let svc = gate
        .layer(CapabilityTable::new().ask("payments.payout", ask))
        .layer(Tools::default());
    let payout = tollgate::ToolCall::new("payments.payout", serde_json::json!({"amount": 3}));
    let _call = tokio::spawn(svc.oneshot(payout));
    let alert = recorder.next_alert().await;
    let event = seen.recv().await.unwrap().json();
    assert_eq!(event["data"]["request"]["quorum"], 2);
    assert!(event["data"].get("code").is_none(), "no shared code");
    for (approver, code) in alert.codes() {
        assert_eq!(event["data"]["codes"][approver], code.reveal());
    }
    let message = chat_seen.recv().await.unwrap();
    let text = String::from_utf8_lossy(&message.body);
    for (_, code) in alert.codes() {
        assert!(!text.contains(code.reveal()), "{text}");
    }
    assert!(!text.contains(alert.code().reveal()));
    assert!(text.contains("each with their own code"), "{text}");
}
