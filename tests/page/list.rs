//! The list of pending requests: enough to tell two calls of one capability apart.

use std::time::Duration;

use fantoccini::Locator;
use serde_json::json;
use tollgate::ToolCall;
use tower::ServiceExt;

use super::{BROWSER, TOKEN, browser, server, sign_in_at};

#[tokio::test]
async fn the_list_tells_two_refunds_apart() {
    let _one = BROWSER.lock().await;
    let srv = server(Duration::from_secs(300)).await;
    let (first, _) = srv.park(30).await;
    let second = ToolCall::new(
        "payments.refund",
        json!({"charge": "ch_2", "amount": 45, "note": "<b>bold</b>"}),
    )
    .principal("agent-7")
    .reason("duplicate charge on order 991");
    let second = tokio::spawn(srv.svc.clone().oneshot(second));
    srv.alerts.next_alert().await;
    let long =
        ToolCall::new("payments.refund", json!({"memo": "x".repeat(500)})).principal("agent-7");
    let long = tokio::spawn(srv.svc.clone().oneshot(long));
    srv.alerts.next_alert().await;

    let browser = browser().await;
    sign_in_at(&browser, &srv.base, TOKEN).await;
    let items = browser.find_all(Locator::Css("li.request")).await.unwrap();
    assert_eq!(items.len(), 3);
    let mut texts = Vec::new();
    for item in &items {
        texts.push(item.text().await.unwrap());
        // Caller text is text, never markup.
        assert!(item.find(Locator::Css("b")).await.is_err());
    }
    let of = |needle: &str| {
        texts
            .iter()
            .find(|t| t.contains(needle))
            .unwrap_or_else(|| panic!("{needle} in {texts:?}"))
    };
    let thirty = of(r#""amount":30"#);
    assert!(thirty.contains("customer ticket #4421"), "{thirty}");
    let forty_five = of(r#""amount":45"#);
    assert!(
        forty_five.contains("duplicate charge on order 991"),
        "{forty_five}"
    );
    assert!(forty_five.contains("<b>bold</b>"), "{forty_five}");
    for text in &texts {
        assert!(text.contains("agent-7"), "{text}");
        assert!(text.contains(" ago") || text.contains("just now"), "{text}");
        assert!(text.contains("expires in "), "{text}");
    }
    let long_one = of("xxxx");
    assert!(long_one.contains('…'), "{long_one}");
    assert!(long_one.len() < 400, "the summary is cut short: {long_one}");
    for task in [first, second, long] {
        task.abort();
    }
    browser.close().await.unwrap();
}
