//! The canary, for the real channels: with email, webhook and chat notifiers delivering for real,
//! the verification code appears in the mail (its channel) and nowhere else: not in logs at any
//! level, not in webhook or chat payloads when the option is off, not in `Debug` output.
//!
//! One test in this binary on purpose, as in `tests/canary`: tracing caches callsite interest
//! process-wide. Real time, since real sockets are involved.

#[path = "../support/mod.rs"]
mod support;

use tollgate::notify::{EmailNotifier, RecordingNotifier, SlackNotifier, WebhookNotifier};
use tollgate::{Approve, Deny, Gate, Scope};
use tower::{Layer, ServiceExt};

use support::receiver::{SECRET, receiver};
use support::{Reported, Tools, policy, refund, server_env};

#[tokio::test]
async fn the_code_reaches_the_mail_and_nothing_else() {
    let (logs, _guard) = support::capture_logs();

    let maildir = server_env("TOLLGATE_TEST_MAILDIR");
    let email = EmailNotifier::smtp(&format!("smtp://{}", server_env("TOLLGATE_TEST_SMTP")))
        .unwrap()
        .from("tollgate@canary.example")
        .to("oncall@canary.example")
        .build()
        .unwrap();
    let (email, mut mailed) = Reported::new(email);
    let (hook_url, mut hooks) = receiver(&[]).await;
    let webhook = WebhookNotifier::builder(&hook_url)
        .secret(SECRET)
        .build()
        .unwrap();
    let (chat_url, mut chats) = receiver(&[]).await;
    let chat = SlackNotifier::builder(&chat_url).build().unwrap();
    let mut printed = vec![format!("{email:?} {webhook:?} {chat:?}")];

    let alerts = RecordingNotifier::new();
    let gate = Gate::builder()
        .secret(support::SECRET)
        .notifier(email)
        .notifier(webhook)
        .notifier(chat)
        .notifier(alerts.clone())
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    printed.push(format!("{gate:?}"));

    let approved = tokio::spawn(svc.clone().oneshot(refund(1)));
    let denied = tokio::spawn(svc.clone().oneshot(refund(2)));
    let mut batch = [alerts.next_alert().await, alerts.next_alert().await];
    batch.sort_by_key(|a| a.request().args()["amount"].as_u64());
    let [one, two] = &batch[..] else {
        unreachable!()
    };

    let wrong = gate
        .approve(Approve::new(one.request().id(), "WRONG123").by("mallory"))
        .await
        .unwrap_err();
    printed.push(format!("{wrong} {wrong:?}"));
    gate.approve(Approve::new(one.request().id(), one.code().reveal()).by("alice"))
        .await
        .unwrap();
    gate.deny(Deny::new(two.request().id(), two.code().reveal()).by("bob"))
        .await
        .unwrap();
    printed.push(format!("{:?}", approved.await.unwrap()));
    printed.push(format!("{:?}", denied.await.unwrap()));

    // Two alerts and two follow-ups by each channel.
    let mut mails = 0;
    while mails < 4 {
        assert!(
            mailed.recv().await.unwrap().2,
            "every mail went out: {}",
            logs.text()
        );
        mails += 1;
    }
    let mut payloads = Vec::new();
    for log in [&mut hooks, &mut chats] {
        for _ in 0..4 {
            payloads.push(String::from_utf8(log.recv().await.unwrap().body).unwrap());
        }
    }
    let mail_text: String = std::fs::read_dir(std::path::Path::new(&maildir).join("new"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .filter(|m| m.contains("canary.example"))
        .collect();

    let logs = logs.text();
    assert!(logs.contains("access request created"), "{logs}");
    for alert in [one, two] {
        let code = alert.code().reveal();
        assert!(mail_text.contains(code), "the mail carries code {code}");
        assert!(!logs.contains(code), "code {code} leaked into the logs");
        for payload in &payloads {
            assert!(
                !payload.contains(code),
                "code {code} leaked into: {payload}"
            );
        }
        for text in &printed {
            assert!(!text.contains(code), "code {code} leaked into: {text}");
        }
    }
}
