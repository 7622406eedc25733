//! How a request ended, as the page shows it: a heading and a colour by what happened, and words
//! a person understands for a decision that came too late.

use std::time::Duration;

use fantoccini::{Client, Locator};
use tollgate::notify::Alert;
use tollgate::{Deny, Status};

use super::{
    BROWSER, Server, browser, click, open, open_and_sign_in, server, style_at, text_at, text_of,
    type_into, wait_for,
};

/// Lets request `alert` expire now: the gate's clock jumps to its deadline (no sleep), then runs
/// on as before.
pub(super) async fn expire(srv: &Server, alert: &Alert) {
    tokio::time::pause();
    let status = srv
        .gate
        .wait(alert.request().id(), Duration::from_secs(3600))
        .await;
    tokio::time::resume();
    assert_eq!(status.unwrap(), Status::Expired);
}

/// The outcome box's classes and its background as `[r, g, b]`.
async fn outcome_box(browser: &Client) -> (String, [u8; 3]) {
    let classes = browser
        .find(Locator::Id("outcome"))
        .await
        .unwrap()
        .attr("class")
        .await
        .unwrap()
        .unwrap_or_default();
    let colour = style_at(browser, "#outcome", "background-color").await;
    let channels: Vec<u8> = colour
        .trim_start_matches("rgba(")
        .trim_start_matches("rgb(")
        .trim_end_matches(')')
        .split(',')
        .take(3)
        .map(|c| c.trim().parse().unwrap())
        .collect();
    (classes, [channels[0], channels[1], channels[2]])
}

#[tokio::test]
async fn each_outcome_has_its_own_heading_and_colour() {
    let _one = BROWSER.lock().await;
    let srv = server(Duration::from_secs(300)).await;
    let (approved, approved_alert) = srv.park(50).await;
    let (denied, denied_alert) = srv.park(51).await;
    let (expired, expired_alert) = srv.park(52).await;
    let browser = browser().await;
    open_and_sign_in(&browser, &approved_alert).await;
    assert_eq!(
        text_at(&browser, "h1").await,
        "May agent-7 use payments.refund?"
    );

    type_into(&browser, "code", approved_alert.code().reveal()).await;
    click(&browser, "approve").await;
    wait_for(&browser, "outcome").await;
    let green = |[r, g, b]: [u8; 3]| g > r && g > b;
    for _ in 0..2 {
        let heading = text_at(&browser, "h1").await;
        assert_eq!(heading, "Approved: payments.refund from agent-7");
        let (classes, colour) = outcome_box(&browser).await;
        assert!(classes.split(' ').any(|c| c == "approved"), "{classes}");
        assert!(green(colour), "{colour:?}");
        // The same once opened again.
        open(&browser, &approved_alert).await;
    }
    approved.await.unwrap().unwrap();

    open(&browser, &denied_alert).await;
    type_into(&browser, "code", denied_alert.code().reveal()).await;
    type_into(&browser, "reason", "refunded already").await;
    click(&browser, "deny").await;
    wait_for(&browser, "outcome").await;
    let red = |[r, g, b]: [u8; 3]| r > g && r > b;
    for _ in 0..2 {
        let heading = text_at(&browser, "h1").await;
        assert_eq!(heading, "Denied: payments.refund from agent-7");
        let (classes, colour) = outcome_box(&browser).await;
        assert!(classes.split(' ').any(|c| c == "denied"), "{classes}");
        assert!(red(colour), "{colour:?}");
        open(&browser, &denied_alert).await;
    }
    denied.await.unwrap().unwrap_err();

    expire(&srv, &expired_alert).await;
    expired.await.unwrap().unwrap_err();
    open(&browser, &expired_alert).await;
    assert_eq!(
        text_at(&browser, "h1").await,
        "Expired: payments.refund from agent-7"
    );
    let (classes, [r, g, b]) = outcome_box(&browser).await;
    assert!(classes.split(' ').any(|c| c == "ended"), "{classes}");
    let grey = r.abs_diff(g) < 16 && g.abs_diff(b) < 16 && r.abs_diff(b) < 16;
    assert!(grey, "{:?}", [r, g, b]);
    browser.close().await.unwrap();
}

/// The problem shown, and the stable code beside it.
async fn problem(browser: &Client) -> (String, String) {
    let words = browser
        .wait()
        .for_element(Locator::Css("p.error"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let code = text_at(browser, "p.error .error-code").await;
    (words, code)
}

#[tokio::test]
async fn a_decision_that_comes_too_late_is_told_in_words() {
    let _one = BROWSER.lock().await;
    let srv = server(Duration::from_secs(300)).await;
    let (task, alert) = srv.park(53).await;
    let browser = browser().await;
    open_and_sign_in(&browser, &alert).await;
    expire(&srv, &alert).await;
    task.await.unwrap().unwrap_err();

    type_into(&browser, "code", alert.code().reveal()).await;
    click(&browser, "approve").await;
    let (words, code) = problem(&browser).await;
    assert!(words.starts_with("Too late"), "{words}");
    assert!(
        words.contains("can no longer be approved or denied"),
        "{words}"
    );
    assert!(
        !words.contains("access request"),
        "no developer text: {words}"
    );
    assert_eq!(code, "access_request_expired");
    assert!(text_of(&browser, "outcome").await.contains("expired"));

    // Decided elsewhere while the page was open: said so, by what happened.
    let (task, alert) = srv.park(54).await;
    open(&browser, &alert).await;
    let id = alert.request().id();
    let deny = Deny::new(id, alert.code().reveal()).by("bob");
    srv.gate.deny(deny).await.unwrap();
    task.await.unwrap().unwrap_err();
    type_into(&browser, "code", alert.code().reveal()).await;
    click(&browser, "approve").await;
    let (words, code) = problem(&browser).await;
    assert!(words.contains("already decided"), "{words}");
    assert!(!words.contains("status:"), "{words}");
    assert_eq!(code, "already_resolved");
    assert_eq!(
        text_at(&browser, "h1").await,
        "Denied: payments.refund from agent-7"
    );
    browser.close().await.unwrap();
}
