//! A mistyped address: the page says the request was not found, and a request the approver may
//! not decide looks the same as one that does not exist.

use std::time::Duration;

use super::{BOB, BROWSER, browser, server, sign_in_at, text_at};

#[tokio::test]
async fn a_mistyped_address_says_the_request_was_not_found() {
    let _one = BROWSER.lock().await;
    let srv = server(Duration::from_secs(300)).await;
    // A refund: bob decides `fs.*` only.
    let (task, alert) = srv.park(60).await;
    let hidden = alert.request().approval_url().unwrap();
    let browser = browser().await;
    sign_in_at(&browser, hidden, BOB).await;

    let heading = text_at(&browser, "h1").await;
    assert_eq!(heading, "Request not found");
    let words = text_at(&browser, "p.error").await;
    assert!(words.contains("No request at this address"), "{words}");
    assert!(!words.contains("code"), "nothing about codes: {words}");
    let seen_hidden = browser.source().await.unwrap();

    let unknown = format!("{}/areq_00000000000000000000000000000000", srv.base);
    let malformed = format!("{}/areq_0000000000000000000000000000000", srv.base);
    for url in [unknown, malformed, format!("{}/refund-42", srv.base)] {
        browser.goto(&url).await.unwrap();
        assert_eq!(
            browser.source().await.unwrap(),
            seen_hidden,
            "{url} reads as the hidden request's page"
        );
    }
    task.abort();
    browser.close().await.unwrap();
}
