//! Every page fits a small phone, whatever the caller's text; and the screenshots in
//! `docs/screenshots/` are taken here, with `TOLLGATE_UPDATE_SCREENSHOTS=1`.

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::{Value, json};
use tollgate::policy::{Ask, CapabilityTable};
use tollgate::{Scope, ToolCall};
use tower::{Layer, ServiceExt};

use super::outcomes::expire;
use super::support::Tools;
use super::{
    BROWSER, Server, TOKEN, browser, click, open, server, sign_in_at, type_into, wait_for,
};

/// Looks at each page: checks that nothing is wider than the screen at 320 and 390 px, and
/// takes its screenshots at 390 and 1280 px if asked to.
struct Look<'a> {
    browser: &'a Client,
    shots: Option<PathBuf>,
}

impl Look<'_> {
    async fn at(&self, page: &str) {
        for width in [320, 390] {
            self.resize(width, 844).await;
            let sizes = self
                .browser
                .execute(
                    "return [document.documentElement.scrollWidth, window.innerWidth];",
                    vec![],
                )
                .await
                .unwrap();
            let (scroll, inner) = (sizes[0].as_u64().unwrap(), sizes[1].as_u64().unwrap());
            assert_eq!(inner, u64::from(width), "the window is {width} px wide");
            assert!(
                scroll <= inner,
                "the {page} page is {scroll} px wide at {width} px"
            );
        }
        if let Some(dir) = &self.shots {
            for width in [390, 1280] {
                // Short first: a page shorter than its window is as tall as the window.
                self.resize(width, 200).await;
                // The whole page, not just the first screen of it: a window as tall as the
                // page and the window's own frame.
                let heights = self
                    .browser
                    .execute(
                        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight];",
                        vec![],
                    )
                    .await
                    .unwrap();
                let (tall, frame) = (heights[0].as_u64().unwrap(), heights[1].as_u64().unwrap());
                self.resize(width, (tall + frame) as u32).await;
                let shot = self.browser.screenshot().await.unwrap();
                assert!(shot.starts_with(b"\x89PNG"));
                std::fs::write(dir.join(format!("{page}-{width}.png")), shot).unwrap();
            }
        }
        self.resize(390, 844).await;
    }

    async fn resize(&self, width: u32, height: u32) {
        self.browser.set_window_size(width, height).await.unwrap();
    }
}

/// Three calls made through `svc`: the list, then each request's page as it is approved,
/// denied, and left to expire, and a mistyped address, each looked at.
async fn tour<S>(srv: &Server, svc: S, calls: [ToolCall; 3], look: &Look<'_>)
where
    S: tower::Service<ToolCall, Response = String, Error = tollgate::BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let browser = look.browser;
    sign_in_at(browser, &srv.base, TOKEN).await;
    let mut parked = Vec::new();
    for call in calls {
        let task = tokio::spawn(svc.clone().oneshot(call));
        parked.push((task, srv.alerts.next_alert().await));
    }
    browser.goto(&srv.base).await.unwrap();
    look.at("list").await;

    let (_, approving) = &parked[0];
    open(browser, approving).await;
    look.at("request").await;
    type_into(browser, "code", approving.code().reveal()).await;
    click(browser, "approve").await;
    wait_for(browser, "outcome").await;
    look.at("approved").await;

    let (_, denying) = &parked[1];
    open(browser, denying).await;
    type_into(browser, "code", denying.code().reveal()).await;
    type_into(browser, "reason", "the customer was refunded already").await;
    click(browser, "deny").await;
    wait_for(browser, "outcome").await;
    look.at("denied").await;

    let (_, expiring) = &parked[2];
    expire(srv, expiring).await;
    open(browser, expiring).await;
    look.at("expired").await;

    let unknown = format!("{}/areq_00000000000000000000000000000000", srv.base);
    browser.goto(&unknown).await.unwrap();
    assert!(browser.find(Locator::Css("p.error")).await.is_ok());
    look.at("not-found").await;

    let mut ends = Vec::new();
    for (task, _) in parked {
        ends.push(task.await.unwrap().is_ok());
    }
    assert_eq!(ends, [true, false, false], "approved, denied, expired");
}

#[tokio::test]
async fn no_page_is_wider_than_a_small_phone_whatever_the_caller_wrote() {
    let _one = BROWSER.lock().await;
    let srv = server(Duration::from_secs(300)).await;
    let capability = "POST /v1/customers/{customer_id}/payment_methods/{payment_method_id}/refunds_and_reversals";
    let ask = Ask::new("moves money between a customer's accounts and ours, in either direction")
        .max_scope(Scope::Global)
        .max_rule_ttl(Duration::from_secs(3600));
    let svc = srv
        .gate
        .layer(CapabilityTable::new().ask(capability, ask))
        .layer(Tools::default());
    let call = |n: usize| {
        let args: Value = json!({
            "customer_id": format!("cus_{}", "9".repeat(60)),
            "memo": "y".repeat(300 + n),
            "nested": {"deeper": {"deepest": ["z".repeat(120)]}},
        });
        ToolCall::new(capability, args)
            .principal(format!("agent-{}", "7".repeat(80)))
            .session(format!("conversation-{}", "ab".repeat(40)))
            .reason(format!("ticket#{}", "4".repeat(90)))
    };
    let browser = browser().await;
    let look = Look {
        browser: &browser,
        shots: None,
    };
    tour(&srv, svc, [call(0), call(1), call(2)], &look).await;
    browser.close().await.unwrap();
}

#[tokio::test]
async fn screenshots_show_each_page() {
    let _one = BROWSER.lock().await;
    let srv = server(Duration::from_secs(300)).await;
    let shots = std::env::var("TOLLGATE_UPDATE_SCREENSHOTS")
        .is_ok_and(|v| v == "1")
        .then(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots"));
    if let Some(dir) = &shots {
        std::fs::create_dir_all(dir).unwrap();
    }
    let calls = [
        super::refund(30),
        ToolCall::new("payments.refund", json!({"charge": "ch_9", "amount": 1200}))
            .principal("agent-7")
            .reason("customer asked twice"),
        ToolCall::new(
            "payments.charge",
            json!({"customer": "cus_31", "amount": 99}),
        )
        .principal("billing-bot")
        .reason("monthly plan renewal"),
    ];
    let browser = browser().await;
    let look = Look {
        browser: &browser,
        shots,
    };
    tour(&srv, srv.svc.clone(), calls, &look).await;
    browser.close().await.unwrap();
}
