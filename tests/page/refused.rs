//! What the router refuses before any page runs (a form from another site, a body too large, an
//! address it does not serve) reads, in a browser, as a page in words with the code small beside
//! it; API clients still get the JSON error.

use std::time::Duration;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use tokio::net::TcpListener;
use tollgate::Status;

use super::{BROWSER, browser, click, open_and_sign_in, problem, server, type_into};

#[tokio::test]
async fn a_refusal_before_any_page_reads_as_a_page_in_words() {
    let _one = BROWSER.lock().await;
    let srv = server(Duration::from_secs(300)).await;
    let (task, alert) = srv.park(70).await;
    let id = alert.request().id();
    let browser = browser().await;
    open_and_sign_in(&browser, &alert).await;

    // A reason longer than the body limit (16 KiB): refused before the page reads it.
    type_into(&browser, "code", alert.code().reveal()).await;
    browser
        .execute(
            "document.getElementById('reason').value = 'x'.repeat(20000);",
            vec![],
        )
        .await
        .unwrap();
    click(&browser, "deny").await;
    let (words, code) = problem(&browser).await;
    assert!(words.starts_with("What you sent was too large"), "{words}");
    assert_eq!(code, "body_too_large");

    // A form on another site that posts to the page.
    let url = alert.request().approval_url().unwrap().to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere = format!("http://{}/", listener.local_addr().unwrap());
    let form = format!(
        r#"<form method="post" action="{url}"><input name="code" value="00000000"><input name="action" value="deny"><button id="go">Go</button></form>"#
    );
    let site = Router::new().route("/", get(move || async move { Html(form) }));
    tokio::spawn(async move { axum::serve(listener, site).await.unwrap() });
    browser.goto(&elsewhere).await.unwrap();
    click(&browser, "go").await;
    let (words, code) = problem(&browser).await;
    assert!(words.contains("sent from another site"), "{words}");
    assert_eq!(code, "cross_site_request");
    assert_eq!(srv.gate.status(id).unwrap(), Status::Pending);

    // An address the page does not serve.
    browser.goto(&format!("{url}/approve")).await.unwrap();
    let (words, code) = problem(&browser).await;
    assert!(
        words.starts_with("There is no page at this address"),
        "{words}"
    );
    assert_eq!(code, "unknown_route");
    assert_eq!(srv.gate.stats().wrong_codes, 0);
    task.abort();
    browser.close().await.unwrap();
}
