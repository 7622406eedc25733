//! The decision form as a first-time approver reads it: where the code comes from, why denying
//! needs it too, the rule length only where it applies, and times a person can read.

use std::time::Duration;

use fantoccini::Locator;
use tollgate::Status;

use super::{
    BROWSER, browser, click, open_and_sign_in, problem, server, style_at, text_at, text_of,
    type_into, wait_for,
};

#[tokio::test]
async fn the_form_says_where_the_code_comes_from_and_why_deny_needs_it() {
    let _one = BROWSER.lock().await;
    let srv = server(Duration::from_secs(300)).await;
    let (task, alert) = srv.park(40).await;
    let browser = browser().await;
    open_and_sign_in(&browser, &alert).await;

    let code = browser.find(Locator::Id("code")).await.unwrap();
    let described = code.attr("aria-describedby").await.unwrap().unwrap();
    let hint = browser.find(Locator::Id(&described)).await.unwrap();
    assert!(hint.is_displayed().await.unwrap());
    let hint = hint.text().await.unwrap();
    assert!(hint.contains("alert"), "{hint}");
    for channel in ["terminal", "email", "chat"] {
        assert!(hint.contains(channel), "{hint}");
    }
    let deny = text_at(&browser, "#deny-hint").await;
    assert!(deny.contains("code"), "{deny}");
    assert!(deny.contains("saw this alert"), "{deny}");

    // Without the browser's own check, an empty code is answered in words, and nothing is
    // decided or counted.
    browser
        .execute(
            "document.getElementById('code').removeAttribute('required')",
            vec![],
        )
        .await
        .unwrap();
    click(&browser, "deny").await;
    let (problem, _) = problem(&browser).await;
    assert!(
        problem.contains("Type the verification code from the alert"),
        "{problem}"
    );
    let id = alert.request().id();
    assert_eq!(srv.gate.status(id).unwrap(), Status::Pending);
    assert_eq!(srv.gate.stats().wrong_codes, 0);
    task.abort();
    browser.close().await.unwrap();
}

#[tokio::test]
async fn the_rule_length_shows_only_for_an_approval_wider_than_this_call() {
    let _one = BROWSER.lock().await;
    let srv = server(Duration::from_secs(300)).await;
    let (task, alert) = srv.park(41).await;
    let browser = browser().await;
    open_and_sign_in(&browser, &alert).await;

    let ttl = browser.find(Locator::Id("ttl")).await.unwrap();
    assert!(!ttl.is_displayed().await.unwrap());
    click(&browser, "scope-value").await;
    assert!(ttl.is_displayed().await.unwrap());
    click(&browser, "scope-once").await;
    assert!(!ttl.is_displayed().await.unwrap());
    assert_eq!(style_at(&browser, "#ttl-choice", "display").await, "none");

    // The hidden field is still sent; for `once` the server ignores it, even a length this
    // request would refuse for a rule (at most an hour).
    browser
        .execute(
            "const o = document.querySelector('#ttl option'); o.value = '99999999'; o.selected = true;",
            vec![],
        )
        .await
        .unwrap();
    type_into(&browser, "code", alert.code().reveal()).await;
    click(&browser, "approve").await;
    wait_for(&browser, "outcome").await;
    let outcome = text_of(&browser, "outcome").await;
    assert!(outcome.contains("Only this call was approved"), "{outcome}");
    task.await.unwrap().unwrap();
    assert!(srv.gate.rules().is_empty());
    browser.close().await.unwrap();
}

#[tokio::test]
async fn times_say_how_long_ago_and_how_long_left_beside_utc() {
    let _one = BROWSER.lock().await;
    let srv = server(Duration::from_secs(300)).await;
    let (task, alert) = srv.park(42).await;
    let browser = browser().await;
    open_and_sign_in(&browser, &alert).await;

    let times = browser.find_all(Locator::Css("dd time")).await.unwrap();
    assert_eq!(times.len(), 2, "when it was asked and when it expires");
    let mut shown = Vec::new();
    for time in times {
        let at = time.attr("datetime").await.unwrap().unwrap();
        assert!(at.ends_with('Z') && at.len() == 20, "{at}");
        shown.push(time.text().await.unwrap());
    }
    let [asked, expires] = &shown[..] else {
        unreachable!()
    };
    assert!(
        asked.contains(" ago, at ") || asked.starts_with("just now, at "),
        "{asked}"
    );
    assert!(asked.ends_with(" UTC"), "{asked}");
    assert!(
        expires.starts_with("in 4 min") || expires.starts_with("in 5 min"),
        "{expires}"
    );
    assert!(
        expires.contains(", at ") && expires.ends_with(" UTC"),
        "{expires}"
    );
    assert!(
        !browser.source().await.unwrap().contains("left (until"),
        "no bare ISO time"
    );
    task.abort();
    browser.close().await.unwrap();
}
