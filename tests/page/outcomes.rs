//! How a request ended, as the page shows it: a heading and a colour by what happened, and words
//! a person understands for a decision that came too late.

use std::time::Duration;

use fantoccini::{Client, Locator};
use tollgate::notify::Alert;
use tollgate::{Deny, Status};

use super::{
    BROWSER, Server, browser, click, open, open_and_sign_in, problem, server, text_at, text_of,
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

/// Checks that the page shown is titled `{word}: payments.refund from agent-7` over an outcome
/// box of class `class` whose background `looks` right; then the same once the request's page
/// is opened again.
async fn shows_ending(
    browser: &Client,
    alert: &Alert,
    (word, class): (&str, &str),
    looks: fn([u8; 3]) -> bool,
) {
    for _ in 0..2 {
        let heading = text_at(browser, "h1").await;
        assert_eq!(heading, format!("{word}: payments.refund from agent-7"));
        let outcome = browser.find(Locator::Id("outcome")).await.unwrap();
        let classes = outcome.attr("class").await.unwrap().unwrap_or_default();
        assert!(classes.split(' ').any(|c| c == class), "{classes}");
        let colour = outcome.css_value("background-color").await.unwrap();
        let rgb: Vec<u8> = colour
            .trim_start_matches("rgba(")
            .trim_start_matches("rgb(")
            .trim_end_matches(')')
            .split(',')
            .take(3)
            .map(|c| c.trim().parse().unwrap())
            .collect();
        assert!(looks([rgb[0], rgb[1], rgb[2]]), "{word}: {colour}");
        open(browser, alert).await;
    }
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
    shows_ending(&browser, &approved_alert, ("Approved", "approved"), green).await;
    approved.await.unwrap().unwrap();

    open(&browser, &denied_alert).await;
    type_into(&browser, "code", denied_alert.code().reveal()).await;
    type_into(&browser, "reason", "refunded already").await;
    click(&browser, "deny").await;
    wait_for(&browser, "outcome").await;
    let red = |[r, g, b]: [u8; 3]| r > g && r > b;
    shows_ending(&browser, &denied_alert, ("Denied", "denied"), red).await;
    denied.await.unwrap().unwrap_err();

    expire(&srv, &expired_alert).await;
    expired.await.unwrap().unwrap_err();
    open(&browser, &expired_alert).await;
    let grey = |[r, g, b]: [u8; 3]| r.abs_diff(g) < 16 && g.abs_diff(b) < 16 && r.abs_diff(b) < 16;
    shows_ending(&browser, &expired_alert, ("Expired", "ended"), grey).await;
    browser.close().await.unwrap();
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
