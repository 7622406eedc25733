//! The approval page in a real headless Chromium, driven through chromedriver: a person opens
//! the URL from the alert, signs in, types the code and decides, and the parked call returns.
//!
//! `scripts/test` installs Chromium and chromedriver and exports `TOLLGATE_TEST_WEBDRIVER`;
//! without it these tests fail. With `TOLLGATE_UPDATE_SCREENSHOTS=1`, `fit.rs` also writes the
//! screenshots in `docs/screenshots/`.

#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use axum::Router;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tollgate::approval::{Approver, Tokens};
use tollgate::notify::{Alert, RecordingNotifier};
use tollgate::policy::CapabilityTable;
use tollgate::{BoxError, Gate, RequireApproval, Scope, Status, ToolCall};
use tower::{Layer, ServiceExt};

use support::{Tools, code, policy, refund};

mod fit;
mod form;
mod list;
mod not_found;
mod outcomes;
mod refused;

const TOKEN: &str = "alice-browser-token-0123456789";
/// bob decides `fs.*` only: refunds are hidden from him.
const BOB: &str = "bob-browser-token-0123456789";

/// One browser at a time: two cores run one Chromium well, three badly.
static BROWSER: Mutex<()> = Mutex::const_new(());

struct Server {
    gate: Gate,
    alerts: RecordingNotifier,
    svc: RequireApproval<Tools, CapabilityTable>,
    /// Where the approval pages are: `http://127.0.0.1:…/approvals`.
    base: String,
}

async fn server(ttl: Duration) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let alerts = RecordingNotifier::new();
    let base = format!("http://{addr}/approvals");
    let gate = support::gate(&alerts)
        .request_ttl(ttl)
        .approval_base_url(&base)
        .build()
        .unwrap();
    let approvers = Tokens::new()
        .token(TOKEN, Approver::new("alice"))
        .token(BOB, Approver::new("bob").capabilities(["fs.*"]));
    let app = Router::new().nest(
        "/approvals",
        tollgate::approval::router(gate.clone(), approvers),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let svc = gate
        .layer(policy(Scope::Capability))
        .layer(Tools::default());
    Server {
        gate,
        alerts,
        svc,
        base,
    }
}

impl Server {
    async fn park(&self, amount: u64) -> (JoinHandle<Result<String, BoxError>>, Alert) {
        let task = tokio::spawn(self.svc.clone().oneshot(refund(amount)));
        (task, self.alerts.next_alert().await)
    }
}

/// A fresh headless Chromium, with its own profile, at a phone's size.
async fn browser() -> Client {
    let webdriver = support::server_env("TOLLGATE_TEST_WEBDRIVER");
    let profile = std::env::temp_dir().join(format!(
        "tollgate-chromium-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let mut options = json!({
        "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync",
            format!("--user-data-dir={}", profile.display()),
            "--window-size=390,844",
        ],
    });
    if let Ok(binary) = std::env::var("TOLLGATE_TEST_CHROMIUM") {
        options["binary"] = json!(binary);
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), json!("chrome"));
    capabilities.insert("goog:chromeOptions".into(), options);
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&webdriver)
        .await
        .unwrap_or_else(|e| panic!("no browser session at {webdriver}: {e}"))
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Opens the alert's approval URL and signs in on the form it shows first.
async fn open_and_sign_in(browser: &Client, alert: &Alert) {
    let url = alert
        .request()
        .approval_url()
        .expect("the gate has a base URL");
    sign_in_at(browser, url, TOKEN).await;
}

/// Opens `url` and signs in there with `token`.
async fn sign_in_at(browser: &Client, url: &str, token: &str) {
    browser.goto(url).await.unwrap();
    type_into(browser, "token", token).await;
    click(browser, "sign-in").await;
    // Signed in, the sign-in sends the browser back to the page it asked for.
    wait_for(browser, "approver").await;
    assert_eq!(browser.current_url().await.unwrap().as_str(), url);
}

/// Opens the approval page of `alert`'s request, already signed in.
async fn open(browser: &Client, alert: &Alert) {
    browser
        .goto(alert.request().approval_url().unwrap())
        .await
        .unwrap();
}

async fn type_into(browser: &Client, id: &str, text: &str) {
    let field = browser.find(Locator::Id(id)).await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn click(browser: &Client, id: &str) {
    browser
        .find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Waits for the next page to show element `id`.
async fn wait_for(browser: &Client, id: &str) {
    browser.wait().for_element(Locator::Id(id)).await.unwrap();
}

/// The text of the first element `css` selects.
async fn text_at(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The computed value of `property` on the first element `css` selects.
async fn style_at(browser: &Client, css: &str, property: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .css_value(property)
        .await
        .unwrap()
}

/// The problem the next page shows, once it shows one: its words, and the code beside them.
async fn problem(browser: &Client) -> (String, String) {
    browser
        .wait()
        .for_element(Locator::Css("p.error"))
        .await
        .unwrap();
    let code = text_at(browser, "p.error .error-code").await;
    (text_at(browser, "p.error").await, code)
}

async fn text_of(browser: &Client, id: &str) -> String {
    browser
        .find(Locator::Id(id))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_person_approves_from_the_page_and_the_parked_call_returns() {
    let _one = BROWSER.lock().await;
    let srv = server(Duration::from_secs(300)).await;
    let (task, alert) = srv.park(30).await;
    let browser = browser().await;
    open_and_sign_in(&browser, &alert).await;

    let source = browser.source().await.unwrap();
    for shown in [
        "payments.refund",
        "agent-7",
        "conv-42",
        "customer ticket #4421",
        "refunds move money",
        "\"amount\": 30",
        "Expires",
    ] {
        assert!(source.contains(shown), "the page shows {shown}");
    }
    assert!(
        !source.contains(alert.code().reveal()),
        "the page never shows the code"
    );
    assert!(!source.contains("<script"), "the page needs no JavaScript");
    // Readable on a phone: nothing wider than the screen.
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(overflow, json!(false));

    // A wrong code: the form again, saying so, and nothing decided.
    type_into(&browser, "code", "00000000").await;
    click(&browser, "approve").await;
    let (error, _) = problem(&browser).await;
    assert!(error.contains("does not match"), "{error}");
    assert_eq!(
        srv.gate.status(alert.request().id()).unwrap(),
        Status::Pending
    );

    type_into(&browser, "code", alert.code().reveal()).await;
    click(&browser, "scope-value").await;
    browser
        .find(Locator::Id("ttl"))
        .await
        .unwrap()
        .select_by_value("900")
        .await
        .unwrap();
    click(&browser, "approve").await;
    wait_for(&browser, "outcome").await;
    assert!(text_of(&browser, "outcome").await.contains("is running"));
    assert_eq!(
        task.await.unwrap().unwrap(),
        r#"ran payments.refund {"amount":30,"charge":"ch_1"}"#
    );
    let rule = &srv.gate.rules()[0];
    assert_eq!((rule.scope(), rule.granted_by()), (Scope::Value, "alice"));

    // Opened again, the decided request shows its state instead of the form.
    browser
        .goto(alert.request().approval_url().unwrap())
        .await
        .unwrap();
    assert!(text_of(&browser, "outcome").await.contains("approved"));
    assert!(browser.find(Locator::Id("code")).await.is_err());
    browser.close().await.unwrap();
}

#[tokio::test]
async fn a_person_denies_with_a_reason() {
    let _one = BROWSER.lock().await;
    let srv = server(Duration::from_secs(300)).await;
    let (task, alert) = srv.park(31).await;
    let browser = browser().await;
    open_and_sign_in(&browser, &alert).await;
    type_into(&browser, "code", alert.code().reveal()).await;
    type_into(&browser, "reason", "this customer was refunded already").await;
    click(&browser, "deny").await;
    wait_for(&browser, "outcome").await;
    assert!(text_of(&browser, "outcome").await.contains("was denied"));
    let error = task.await.unwrap().unwrap_err();
    assert_eq!(code(&error), "access_request_denied");
    assert!(error.to_string().contains("refunded already"), "{error}");
    browser.close().await.unwrap();
}

#[tokio::test]
async fn an_expired_request_shows_that_it_expired_instead_of_the_form() {
    let _one = BROWSER.lock().await;
    let srv = server(Duration::from_millis(300)).await;
    let (task, alert) = srv.park(32).await;
    let id = alert.request().id();
    // The gate's own signal, not a sleep: returns once the request has expired.
    assert_eq!(
        srv.gate.wait(id, Duration::from_secs(30)).await.unwrap(),
        Status::Expired
    );
    assert_eq!(
        code(&task.await.unwrap().unwrap_err()),
        "access_request_expired"
    );

    let browser = browser().await;
    open_and_sign_in(&browser, &alert).await;
    assert!(text_of(&browser, "outcome").await.contains("expired"));
    assert!(
        browser.find(Locator::Id("code")).await.is_err(),
        "no form for an expired request"
    );
    browser.close().await.unwrap();
}

#[tokio::test]
async fn the_page_says_which_fields_a_value_approval_covers_and_approves_for_them() {
    let _one = BROWSER.lock().await;
    let srv = server(Duration::from_secs(300)).await;
    let tools = Tools::default();
    let texts = srv.gate.layer(support::texts_policy()).layer(tools.clone());
    let sms = |body: &str| {
        ToolCall::new("sms.send", json!({"to": "+15550100", "body": body})).principal("agent-7")
    };
    let task = tokio::spawn(texts.clone().oneshot(sms("Your order shipped")));
    let alert = srv.alerts.next_alert().await;
    let browser = browser().await;
    open_and_sign_in(&browser, &alert).await;

    let label = browser
        .find(Locator::XPath("//input[@id='scope-value']/.."))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        label.trim(),
        "Later calls with the same /to, whatever /body hold"
    );
    type_into(&browser, "code", alert.code().reveal()).await;
    click(&browser, "scope-value").await;
    click(&browser, "approve").await;
    wait_for(&browser, "outcome").await;
    task.await.unwrap().unwrap();
    browser.close().await.unwrap();

    // Another message to the same number runs without asking anyone.
    texts.oneshot(sms("It arrives today")).await.unwrap();
    assert_eq!(tools.total(), 2);
    assert_eq!(srv.alerts.alerts().len(), 1);
}

#[tokio::test]
async fn a_person_edits_the_arguments_on_the_page_and_the_edited_call_runs() {
    use tollgate::policy::{Ask, arg, threshold};
    let _one = BROWSER.lock().await;
    let srv = server(Duration::from_secs(300)).await;
    let tools = Tools::default();
    let refunds = threshold(arg("/amount"), 100.0)
        .deny_above(1_000.0, "refunds over 1,000 go through finance")
        .ask(Ask::new("refunds move money").editable());
    let svc = srv.gate.layer(refunds).layer(tools.clone());
    // A string with a bidirectional override: the box shows it escaped, and it round-trips.
    let call = ToolCall::new(
        "payments.refund",
        json!({"charge": "ch_1", "amount": 500, "memo": "txt\u{202e}fdp"}),
    )
    .principal("agent-7");
    let task = tokio::spawn(svc.oneshot(call));
    let alert = srv.alerts.next_alert().await;
    let browser = browser().await;
    open_and_sign_in(&browser, &alert).await;

    let field = browser.find(Locator::Id("args")).await.unwrap();
    let shown = field.prop("value").await.unwrap().unwrap();
    assert!(shown.contains(r"txt\u202efdp"), "{shown}");
    assert!(!shown.contains('\u{202e}'));
    let edit = |amount: u64| shown.replace("500", &amount.to_string());

    // An edit the policy would deny: the form again, saying why, and nothing ran.
    field.clear().await.unwrap();
    field.send_keys(&edit(5000)).await.unwrap();
    type_into(&browser, "code", alert.code().reveal()).await;
    click(&browser, "approve").await;
    let (problem, _) = problem(&browser).await;
    assert!(problem.contains("finance"), "{problem}");
    assert_eq!(tools.total(), 0);

    let field = browser.find(Locator::Id("args")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(&edit(50)).await.unwrap();
    type_into(&browser, "code", alert.code().reveal()).await;
    click(&browser, "approve").await;
    wait_for(&browser, "outcome").await;
    let outcome = text_of(&browser, "outcome").await;
    assert!(
        outcome.contains("with the arguments you edited"),
        "{outcome}"
    );
    let ran = task.await.unwrap().unwrap();
    assert_eq!(
        ran,
        "ran payments.refund {\"amount\":50,\"charge\":\"ch_1\",\"memo\":\"txt\u{202e}fdp\"}"
    );
    browser.close().await.unwrap();
}

#[tokio::test]
async fn a_quorum_shows_who_has_approved_and_counts_an_approval_from_the_page() {
    use tollgate::policy::Ask;
    let _one = BROWSER.lock().await;
    let srv = server(Duration::from_secs(300)).await;
    let tools = Tools::default();
    let ask = Ask::new("pays out").approvers(["alice", "bob"]).quorum(2);
    let svc = srv
        .gate
        .layer(CapabilityTable::new().ask("payments.payout", ask))
        .layer(tools.clone());
    let call = ToolCall::new("payments.payout", json!({"amount": 5})).principal("agent-7");
    let task = tokio::spawn(svc.oneshot(call));
    let alert = srv.alerts.next_alert().await;
    let browser = browser().await;
    open_and_sign_in(&browser, &alert).await;
    let page = browser.source().await.unwrap();
    assert!(page.contains("2 of alice, bob"), "{page}");
    assert!(page.contains("nobody yet"), "{page}");

    type_into(&browser, "code", alert.code_for("alice").unwrap().reveal()).await;
    click(&browser, "approve").await;
    wait_for(&browser, "outcome").await;
    let outcome = text_of(&browser, "outcome").await;
    assert!(outcome.contains("is counted"), "{outcome}");
    assert!(outcome.contains("1 more"), "{outcome}");
    assert_eq!(tools.total(), 0);

    browser
        .goto(alert.request().approval_url().unwrap())
        .await
        .unwrap();
    wait_for(&browser, "code").await;
    let page = browser.source().await.unwrap();
    assert!(page.contains("Approved so far"), "{page}");
    assert!(page.contains("<dd>alice</dd>"), "{page}");
    browser.close().await.unwrap();

    let code = alert.code_for("bob").unwrap().reveal();
    let bob = tollgate::Approve::new(alert.request().id(), code).by("bob");
    srv.gate.approve(bob).await.unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(tools.total(), 1);
}
