//! The email notifier against real SMTP servers on loopback (aiosmtpd, started by scripts/test):
//! a plain one whose mails are read back from its Maildir, and one that requires STARTTLS and
//! login. Real time throughout: paused time would fire timeouts while real sockets wait.

#[path = "../support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, Tokio1Executor};
use mailparse::{MailHeaderMap, ParsedMail};
use tollgate::notify::{EmailNotifier, NotifierExt, RecordingNotifier};
use tollgate::{Approve, Deny, RequestId, Scope};
use tower::{Layer, ServiceExt};

use support::{Reported, Tools, policy, refund, server_env};

fn smtp_url() -> String {
    format!("smtp://{}", server_env("TOLLGATE_TEST_SMTP"))
}

/// Every mail in a Maildir that mentions `id` in its headers, oldest first.
fn mails_about(maildir: &str, id: RequestId) -> Vec<Vec<u8>> {
    let mut found: Vec<(std::time::SystemTime, Vec<u8>)> = Vec::new();
    let id = id.to_string();
    for entry in std::fs::read_dir(Path::new(maildir).join("new")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let (headers, _) = mailparse::parse_headers(&bytes).unwrap();
        if headers.iter().any(|h| h.get_value().contains(&id)) {
            let modified = path.metadata().unwrap().modified().unwrap();
            found.push((modified, bytes));
        }
    }
    found.sort_by_key(|(t, _)| *t);
    found.into_iter().map(|(_, m)| m).collect()
}

fn header(mail: &ParsedMail<'_>, name: &str) -> String {
    mail.headers
        .get_first_value(name)
        .unwrap_or_else(|| panic!("no {name} header"))
}

fn part(mail: &ParsedMail<'_>, mime: &str) -> String {
    let part = mail
        .subparts
        .iter()
        .find(|p| p.ctype.mimetype == mime)
        .unwrap_or_else(|| panic!("no {mime} part"));
    part.get_body().unwrap()
}

/// The code, as a person reads it from the mail.
fn code_in(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.starts_with("Verification code: "))
        .expect("the mail shows the code");
    line["Verification code: ".len()..].trim().to_owned()
}

#[tokio::test]
async fn an_alert_mail_carries_the_request_and_its_code_and_the_follow_up_is_threaded() {
    let maildir = server_env("TOLLGATE_TEST_MAILDIR");
    let email = EmailNotifier::smtp(&smtp_url())
        .unwrap()
        .from("Tollgate <tollgate@example.com>")
        .to("oncall@example.com")
        .to("Second Approver <second@example.com>")
        .cc("audit@example.com")
        .build()
        .unwrap();
    let (email, mut sent) = Reported::new(email);
    let gate = tollgate::Gate::builder()
        .secret(support::SECRET)
        .approval_base_url("https://approve.example.com/requests")
        .notifier(email)
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let call = tokio::spawn(svc.oneshot(refund(12_345)));

    let (id, hook, ok) = sent.recv().await.unwrap();
    assert_eq!((hook, ok), ("notify", true));
    let mails = mails_about(&maildir, id);
    assert_eq!(mails.len(), 1);
    let mail = mailparse::parse_mail(&mails[0]).unwrap();
    assert_eq!(header(&mail, "From"), "Tollgate <tollgate@example.com>");
    let to = header(&mail, "To");
    assert!(
        to.contains("oncall@example.com") && to.contains("second@example.com"),
        "{to}"
    );
    assert_eq!(header(&mail, "Cc"), "audit@example.com");
    assert_eq!(
        header(&mail, "Subject"),
        "Approval needed: payments.refund for agent-7"
    );
    let message_id = header(&mail, "Message-ID");
    assert_eq!(message_id, format!("<{id}.alert@example.com>"));

    let text = part(&mail, "text/plain");
    for expected in [
        "agent-7 asks to run payments.refund.",
        "Reason given: customer ticket #4421",
        "Policy: refunds move money",
        "\"amount\": 12345",
        &format!("Request {id}, session conv-42"),
        &format!("Approve or deny at https://approve.example.com/requests/{id}"),
        "up to scope value",
        "A value approval covers later calls with the same arguments.",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    let code = code_in(&text);
    let html = part(&mail, "text/html");
    assert!(html.contains(&code), "{html}");
    assert!(
        html.contains("&quot;amount&quot;: 12345"),
        "values are escaped: {html}"
    );
    assert!(html.contains(&format!(
        "href=\"https://approve.example.com/requests/{id}\""
    )));

    // The person approves with the code from the mail.
    gate.approve(Approve::new(id, &code).scope(Scope::Value).by("alice"))
        .await
        .unwrap();
    assert!(call.await.unwrap().is_ok());

    let (_, hook, ok) = sent.recv().await.unwrap();
    assert_eq!((hook, ok), ("on_resolved", true));
    let mails = mails_about(&maildir, id);
    assert_eq!(mails.len(), 2, "the alert and its follow-up");
    let follow_up = mailparse::parse_mail(&mails[1]).unwrap();
    assert_eq!(header(&follow_up, "In-Reply-To"), message_id);
    assert_eq!(header(&follow_up, "References"), message_id);
    assert_eq!(
        header(&follow_up, "Subject"),
        "Re: Approval needed: payments.refund for agent-7"
    );
    let body = follow_up.get_body().unwrap();
    assert!(
        body.contains("approved by alice, scope value, until "),
        "{body}"
    );
    assert!(!body.contains(&code), "follow-ups never repeat the code");
}

#[tokio::test]
async fn a_denial_follow_up_gives_the_reason_and_templates_can_be_replaced() {
    let maildir = server_env("TOLLGATE_TEST_MAILDIR");
    let email = EmailNotifier::smtp(&smtp_url())
        .unwrap()
        .from("tollgate@example.org")
        .to("oncall@example.org")
        .subject("[{capability}] {principal}{#reason} ({reason}){/reason}")
        .text_body("Code {code} for {id}\n")
        .follow_up("{id}: {outcome}\n")
        .build()
        .unwrap();
    let (email, mut sent) = Reported::new(email);
    let gate = tollgate::Gate::builder()
        .secret(support::SECRET)
        .notifier(email)
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let call = tokio::spawn(svc.oneshot(refund(7)));
    let (id, _, ok) = sent.recv().await.unwrap();
    assert!(ok);
    let mails = mails_about(&maildir, id);
    let mail = mailparse::parse_mail(&mails[0]).unwrap();
    assert_eq!(
        header(&mail, "Subject"),
        "[payments.refund] agent-7 (customer ticket #4421)"
    );
    let text = part(&mail, "text/plain");
    let code = text
        .strip_prefix("Code ")
        .and_then(|t| t.split(' ').next())
        .unwrap()
        .to_owned();
    gate.deny(Deny::new(id, code).reason("duplicate refund").by("bob"))
        .await
        .unwrap();
    assert_eq!(
        support::code(&call.await.unwrap().unwrap_err()),
        "access_request_denied"
    );
    sent.recv().await.unwrap();
    let mails = mails_about(&maildir, id);
    let follow_up = mailparse::parse_mail(&mails[1]).unwrap();
    assert_eq!(
        follow_up.get_body().unwrap().trim_end(),
        format!("{id}: denied by bob: duplicate refund")
    );
}

#[tokio::test]
async fn starttls_with_login_delivers_and_a_wrong_password_is_refused() {
    let maildir = server_env("TOLLGATE_TEST_SMTP_TLS_MAILDIR");
    let address = server_env("TOLLGATE_TEST_SMTP_TLS");
    let (host, port) = address.rsplit_once(':').unwrap();
    let pem = std::fs::read(server_env("TOLLGATE_TEST_SMTP_TLS_CERT")).unwrap();
    let login = server_env("TOLLGATE_TEST_SMTP_TLS_LOGIN");
    let (user, password) = login.split_once(':').unwrap();
    let transport = |password: &str| {
        let tls = TlsParameters::builder("localhost".into())
            .add_root_certificate(Certificate::from_pem(&pem).unwrap())
            .build_rustls()
            .unwrap();
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port.parse().unwrap())
            .tls(Tls::Required(tls))
            .credentials(Credentials::new(user.into(), password.into()))
            .timeout(Some(Duration::from_secs(5)))
            .build()
    };
    let email = |password: &str| {
        EmailNotifier::builder(transport(password))
            .from("tollgate@example.com")
            .to("oncall@example.com")
            .build()
            .unwrap()
    };

    let (good, mut sent) = Reported::new(email(password));
    let gate = tollgate::Gate::builder()
        .secret(support::SECRET)
        .notifier(good)
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let _call = tokio::spawn(svc.oneshot(refund(1)));
    let (id, _, ok) = sent.recv().await.unwrap();
    assert!(ok, "delivered over STARTTLS after login");
    let mails = mails_about(&maildir, id);
    let mail = mailparse::parse_mail(&mails[0]).unwrap();
    assert!(part(&mail, "text/plain").contains("payments.refund"));

    let (bad, mut sent) = Reported::new(email("not-the-password"));
    let gate = tollgate::Gate::builder()
        .secret(support::SECRET)
        .notifier(bad)
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let result = svc.oneshot(refund(2)).await;
    assert_eq!(support::code(&result.unwrap_err()), "notification_failed");
    let (id, _, ok) = sent.recv().await.unwrap();
    assert!(!ok);
    assert!(mails_about(&maildir, id).is_empty());
}

#[tokio::test]
async fn with_smtp_down_the_fallback_notifier_carries_the_alert_and_its_resolution() {
    let down = EmailNotifier::smtp(&format!("smtp://127.0.0.1:{}", support::closed_port()))
        .unwrap()
        .from("tollgate@example.com")
        .to("oncall@example.com")
        .build()
        .unwrap();
    let terminal = RecordingNotifier::new();
    let gate = tollgate::Gate::builder()
        .secret(support::SECRET)
        .notifier(down.or_else(terminal.clone()))
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let call = tokio::spawn(svc.oneshot(refund(3)));
    let alert = terminal.next_alert().await;
    gate.approve(Approve::new(alert.request().id(), alert.code().reveal()).by("alice"))
        .await
        .unwrap();
    assert!(call.await.unwrap().is_ok());
    let resolution = terminal.next_resolution().await;
    assert_eq!(resolution.request().id(), alert.request().id());
}

#[tokio::test]
async fn with_every_channel_down_the_call_fails_closed_within_the_notify_timeout() {
    // One server refuses connections; the other accepts and never says a word.
    let refused = EmailNotifier::smtp(&format!("smtp://127.0.0.1:{}", support::closed_port()))
        .unwrap()
        .from("tollgate@example.com")
        .to("oncall@example.com")
        .build()
        .unwrap();
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let held = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    tokio::spawn({
        let held = held.clone();
        async move {
            while let Ok((socket, _)) = silent.accept().await {
                held.lock().await.push(socket);
            }
        }
    });
    let hung = EmailNotifier::smtp(&format!("smtp://127.0.0.1:{silent_port}"))
        .unwrap()
        .from("tollgate@example.com")
        .to("oncall@example.com")
        .build()
        .unwrap();
    let timeout = Duration::from_millis(500);
    let gate = tollgate::Gate::builder()
        .secret(support::SECRET)
        .notify_timeout(timeout)
        .notifier(refused)
        .notifier(hung)
        .build()
        .unwrap();
    let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
    let started = Instant::now();
    let result = svc.oneshot(refund(4)).await;
    let took = started.elapsed();
    assert_eq!(support::code(&result.unwrap_err()), "notification_failed");
    assert!(
        took >= timeout,
        "the hung server had its full time: {took:?}"
    );
    assert!(took < timeout * 6, "and no more: {took:?}");
    assert_eq!(gate.stats().pending, 0, "nothing waits unseen");
}

#[test]
fn bad_addresses_templates_and_urls_fail_at_build_naming_the_setting() {
    let base = || {
        EmailNotifier::smtp("smtp://127.0.0.1:25")
            .unwrap()
            .from("tollgate@example.com")
            .to("oncall@example.com")
    };
    let detail = |result: Result<EmailNotifier, tollgate::Error>| {
        let error = result.unwrap_err();
        assert_eq!(error.code(), "invalid_config");
        error.to_string()
    };
    assert!(detail(base().to("not an address").build()).contains("email to: `not an address`"));
    assert!(
        detail(base().subject("{amount}").build())
            .contains("email subject: template: unknown field `amount`")
    );
    let no_recipient = EmailNotifier::smtp("smtp://127.0.0.1:25")
        .unwrap()
        .from("tollgate@example.com")
        .build();
    assert!(detail(no_recipient).contains("at least one recipient"));
    let cleartext = EmailNotifier::smtp("smtp://user:hunter2@smtp.example.com:587").unwrap_err();
    assert!(
        cleartext.to_string().contains("would travel unencrypted"),
        "{cleartext}"
    );
    assert!(!cleartext.to_string().contains("hunter2"));
    let lookalike = EmailNotifier::smtp("smtp://user:hunter2@localhost.example.com:25");
    assert_eq!(lookalike.unwrap_err().code(), "invalid_config");
    assert!(EmailNotifier::smtp("smtp://user:hunter2@[::1]:25").is_ok());
    assert!(EmailNotifier::smtp("smtp://user:hunter2@smtp.example.com:587?tls=required").is_ok());
    assert!(EmailNotifier::smtp("smtps://user:hunter2@smtp.example.com").is_ok());
    let error = EmailNotifier::smtp("smtp://user:hunter2@[bad").unwrap_err();
    assert_eq!(error.code(), "invalid_config");
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

/// A quorum's approvers each get a mail with their own code; the shared recipients get the
/// alert with none, and an approver without an address gets nothing by mail.
#[tokio::test]
async fn each_approver_of_a_quorum_is_mailed_their_own_code() {
    use tollgate::policy::{Ask, CapabilityTable};
    let maildir = server_env("TOLLGATE_TEST_MAILDIR");
    let email = EmailNotifier::smtp(&smtp_url())
        .unwrap()
        .from("Tollgate <tollgate@example.com>")
        .to("oncall@example.com")
        .approver("alice", "Alice <alice@example.com>")
        .approver("bob", "bob@example.com")
        .build()
        .unwrap();
    let (email, mut sent) = Reported::new(email);
    let recorder = RecordingNotifier::new();
    let gate = tollgate::Gate::builder()
        .secret(support::SECRET)
        .notifier(email)
        .notifier(recorder.clone())
        .build()
        .unwrap();
    let ask = Ask::new("pays out")
        .approvers(["alice", "bob", "carol"])
        .quorum(2);
    let svc = gate
        .layer(CapabilityTable::new().ask("payments.payout", ask))
        .layer(Tools::default());
    let call = tollgate::ToolCall::new("payments.payout", serde_json::json!({"amount": 9}));
    let task = tokio::spawn(svc.oneshot(call));
    let alert = recorder.next_alert().await;
    let (id, hook, ok) = sent.recv().await.unwrap();
    assert_eq!((hook, ok), ("notify", true));

    let mails = mails_about(&maildir, id);
    assert_eq!(mails.len(), 3, "the shared alert, alice's and bob's");
    let mut codes = Vec::new();
    for mail in &mails {
        let mail = mailparse::parse_mail(mail).unwrap();
        let to = header(&mail, "To");
        let text = part(&mail, "text/plain");
        let code = code_in(&text);
        match to.as_str() {
            "oncall@example.com" => assert_eq!(code, "each approver was sent their own code"),
            "Alice <alice@example.com>" => {
                assert_eq!(code, alert.code_for("alice").unwrap().reveal());
                codes.push(("alice", code));
            }
            "bob@example.com" => {
                assert_eq!(code, alert.code_for("bob").unwrap().reveal());
                codes.push(("bob", code));
            }
            other => panic!("mail to {other}"),
        }
        let carols = alert.code_for("carol").unwrap().reveal();
        assert!(!text.contains(carols), "carol has no address");
    }
    assert_eq!(codes.len(), 2);
    for (approver, code) in codes {
        gate.approve(Approve::new(id, &code).by(approver))
            .await
            .unwrap();
    }
    assert!(task.await.unwrap().is_ok());
}
