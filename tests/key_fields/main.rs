//! Key arguments: a `value` approval about some fields of the arguments (`Ask::key_fields`)
//! covers later calls whose key fields are equal, whatever the rest holds, and nothing else.

#[path = "../support/mod.rs"]
mod support;

use serde_json::{Value, json};
use tollgate::notify::{Alert, TerminalNotifier, value_covers};
use tollgate::policy::{Ask, CapabilityTable};
use tollgate::{Approve, Deny, Gate, Scope, ToolCall};
use tower::{Layer, ServiceExt};

use support::{SECRET, Tools, code};

type Fixture = support::Fixture<CapabilityTable>;

fn policy() -> CapabilityTable {
    CapabilityTable::new()
        .ask(
            "sms.send",
            Ask::new("texts a customer")
                .max_scope(Scope::Value)
                .key_fields(["/to"]),
        )
        .ask(
            "mail.send",
            Ask::new("mails a customer")
                .max_scope(Scope::Value)
                .key_fields(["/to/address", "/from"]),
        )
}

fn fixture() -> Fixture {
    Fixture::new(policy(), Tools::default(), |b| b)
}

fn sms(args: Value) -> ToolCall {
    ToolCall::new("sms.send", args).principal("agent-7")
}

impl Fixture {
    /// Parks `call`, approves it for `value`, and waits for it to run.
    async fn approve_value(&self, call: ToolCall) -> Alert {
        let (task, alert) = self.park(call).await;
        let approve = Approve::new(alert.request().id(), alert.code().reveal())
            .scope(Scope::Value)
            .by("alice");
        self.gate.approve(approve).await.expect("approved");
        task.await.unwrap().expect("ran");
        alert
    }

    /// Whether `call` runs at once, covered by a rule, without asking anyone.
    async fn covered(&self, call: ToolCall) -> bool {
        let before = self.tools.total();
        let mut future = Box::pin(self.svc.clone().oneshot(call));
        let polled = support::poll_once(&mut future);
        let pending = self.gate.stats().pending;
        drop(future);
        match polled {
            Some(Ok(_)) => {
                assert_eq!(self.tools.total(), before + 1);
                true
            }
            Some(Err(error)) => panic!("refused: {error}"),
            None => {
                assert_eq!(pending, 1, "it parked on a request");
                false
            }
        }
    }
}

#[tokio::test]
async fn a_value_approval_covers_later_calls_with_the_same_key_whatever_else_they_hold() {
    let f = fixture();
    let alert = f
        .approve_value(sms(
            json!({"to": "+15550100", "body": "Your order shipped"}),
        ))
        .await;
    assert_eq!(alert.request().key_fields(), Some(&["/to".into()][..]));

    assert!(
        f.covered(sms(json!({"to": "+15550100", "body": "It arrives today"})))
            .await
    );
    assert!(f.covered(sms(json!({"to": "+15550100"}))).await, "no body");
    assert!(
        f.covered(sms(
            json!({"body": "x", "to": "+15550100", "media": [1, 2]})
        ))
        .await
    );
    assert_eq!(f.tools.total(), 4);
    assert_eq!(f.alerts.alerts().len(), 1, "nobody was asked again");
}

#[tokio::test]
async fn another_key_another_principal_or_another_capability_asks_again() {
    let f = fixture();
    f.approve_value(sms(json!({"to": "+15550100", "body": "hi"})))
        .await;
    assert!(
        !f.covered(sms(json!({"to": "+15550199", "body": "hi"})))
            .await
    );
    let other =
        ToolCall::new("sms.send", json!({"to": "+15550100", "body": "hi"})).principal("agent-8");
    assert!(!f.covered(other).await, "another principal");
    let mail = ToolCall::new("mail.send", json!({"to": "+15550100"})).principal("agent-7");
    assert!(!f.covered(mail).await, "another capability");
}

#[tokio::test]
async fn a_key_field_of_another_type_or_absent_is_never_covered() {
    let f = fixture();
    f.approve_value(sms(json!({"to": "15550100", "body": "hi"})))
        .await;
    assert!(
        !f.covered(sms(json!({"to": 15550100, "body": "hi"}))).await,
        "a number is not the string"
    );
    assert!(!f.covered(sms(json!({"to": ["15550100"]}))).await);
    assert!(!f.covered(sms(json!({"body": "hi"}))).await, "no key field");
    assert!(!f.covered(sms(json!({"to": null, "body": "hi"}))).await);
    assert!(!f.covered(sms(json!(["15550100"]))).await, "not an object");
}

#[tokio::test]
async fn a_call_without_its_key_field_is_an_ordinary_value_request() {
    let f = fixture();
    let alert = f.approve_value(sms(json!({"body": "hi"}))).await;
    assert_eq!(alert.request().key_fields(), None, "nothing to key on");
    assert_eq!(
        value_covers(alert.request()),
        "later calls with the same arguments"
    );
    assert!(f.covered(sms(json!({"body": "hi"}))).await, "identical");
    assert!(!f.covered(sms(json!({"body": "hello"}))).await);
    assert!(
        !f.covered(sms(json!({"body": "hi", "to": "+15550100"})))
            .await,
        "adding a key field is not covered by the rule for its absence"
    );
}

#[tokio::test]
async fn nested_and_several_key_fields_compare_as_canonical_json() {
    let f = fixture();
    let mail = |args: Value| ToolCall::new("mail.send", args).principal("agent-7");
    let alert = f
        .approve_value(mail(json!({
            "to": {"address": {"user": "ann", "host": "example.com"}, "name": "Ann"},
            "from": "shop",
            "subject": "Your order",
        })))
        .await;
    assert_eq!(
        alert.request().key_fields(),
        Some(&["/from".into(), "/to/address".into()][..])
    );
    assert_eq!(
        value_covers(alert.request()),
        "later calls with the same /from, /to/address, whatever /subject hold"
    );
    // Keys in another order, another name and subject: the same key fields.
    assert!(
        f.covered(mail(json!({
            "subject": "It shipped",
            "from": "shop",
            "to": {"name": "A.", "address": {"host": "example.com", "user": "ann"}},
        })))
        .await
    );
    assert!(
        !f.covered(mail(json!({
            "from": "support",
            "to": {"address": {"user": "ann", "host": "example.com"}},
        })))
        .await,
        "one key field differs"
    );
}

#[tokio::test]
async fn a_remembered_value_denial_refuses_every_call_with_the_same_key() {
    let f = fixture();
    let (task, alert) = f
        .park(sms(json!({"to": "+15550666", "body": "win!"})))
        .await;
    f.gate
        .deny(
            Deny::new(alert.request().id(), alert.code().reveal())
                .remember(Scope::Value)
                .by("alice"),
        )
        .await
        .unwrap();
    assert_eq!(
        code(&task.await.unwrap().unwrap_err()),
        "access_request_denied"
    );
    let again = f
        .svc
        .clone()
        .oneshot(sms(json!({"to": "+15550666", "body": "really"})))
        .await
        .unwrap_err();
    assert_eq!(code(&again), "access_request_denied");
    assert!(
        !f.covered(sms(json!({"to": "+15550100", "body": "hi"})))
            .await
    );
}

#[test]
fn key_fields_must_be_pointers_to_fields() {
    for bad in ["to", "", "/", "/a~2", "/a~"] {
        let error = Ask::new("x").try_key_fields([bad]).unwrap_err();
        assert_eq!(error.code(), "invalid_config", "{bad:?}");
    }
    let none: [&str; 0] = [];
    assert_eq!(
        Ask::new("x").try_key_fields(none).unwrap_err().code(),
        "invalid_config"
    );
    let ask = Ask::new("x").key_fields(["/to", "/a~1b", "/to"]);
    assert_eq!(ask.keyed_by(), Some(&["/a~1b".into(), "/to".into()][..]));
}

#[tokio::test]
async fn the_terminal_alert_says_which_fields_an_approval_covers() {
    let out = support::Buffer::default();
    let gate = Gate::builder()
        .secret(SECRET)
        .notifier(TerminalNotifier::writer(out.clone()))
        .build()
        .unwrap();
    let svc = gate.layer(policy()).layer(Tools::default());
    let call = sms(json!({"to": "+15550100", "body": "hi\u{1b}[2J", "x\u{202e}": 1}));
    let task = tokio::spawn(svc.oneshot(call));
    support::until(|| out.text().contains("value covers")).await;
    let text = out.text();
    assert!(
        text.contains(r"later calls with the same /to, whatever /body, /x\u{202e} hold"),
        "{text}"
    );
    task.abort();
}
