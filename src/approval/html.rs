//! The frame every approval page shares: the layout with its protective headers, and
//! [`shown`], the one way caller or approver text enters a page.

use std::borrow::Cow;

use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, REFERRER_POLICY, X_FRAME_OPTIONS};
use http::{HeaderName, HeaderValue, StatusCode};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::text::visible_lines;

/// Text someone else chose, as a person should see it: hidden characters (controls, line
/// separators, bidirectional overrides) shown escaped. The template escapes it for HTML.
pub(super) fn shown(text: &str) -> Cow<'_, str> {
    visible_lines(text)
}

const STYLE: &str = "\
body{font:16px/1.5 system-ui,sans-serif;margin:0 auto;max-width:40rem;padding:1rem;color:#1b1b1b;background:#fff}\
h1{font-size:1.4rem;line-height:1.3}code,pre{font-family:ui-monospace,monospace}\
pre{background:#f4f4f4;padding:.75rem;overflow-x:auto;border-radius:4px}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}dt{color:#555}dd{margin:0;overflow-wrap:anywhere}\
label{display:block;margin-top:.75rem}input,select,textarea{font:inherit;width:100%;box-sizing:border-box;padding:.5rem}\
input[type=radio]{width:auto}fieldset{margin-top:.75rem;border:1px solid #ccc}.choice{margin:.25rem 0}\
button{font:inherit;padding:.6rem 1.2rem;margin-top:.75rem;border:0;border-radius:4px;cursor:pointer}\
.approve{background:#1a7f37;color:#fff}.deny{background:#b42318;color:#fff}button.link{background:none;padding:0;margin:0;color:#0645ad;text-decoration:underline}\
.error{background:#fdecea;padding:.5rem;border-radius:4px}.error-code{display:block;color:#6b6b6b;font:.75rem ui-monospace,monospace}.outcome{padding:.5rem .75rem;border-radius:4px;border-left:4px solid}\
.approved{background:#e7f4ea;border-color:#1a7f37}.denied{background:#fdecea;border-color:#b42318}\
.ended{background:#efefef;border-color:#767676}.failed{background:#fff4e5;border-color:#b54708}\
.counted{background:#eaf0fb;border-color:#2f5bb7}\
.meta{color:#555}.requests{padding:0;list-style:none}.request{margin:0 0 1rem;padding:.5rem 0;border-bottom:1px solid #ddd}\
.request p{margin:.2rem 0}.args code{font-size:.9rem}.hint{margin:.25rem 0;color:#555;font-size:.9rem}\
form:has(#scope-once:checked) .ttl{display:none}footer{margin-top:2rem;color:#555;font-size:.9rem}";

/// A whole page, with the headers that keep it out of caches, frames and other sites' hands.
pub(super) fn layout(status: StatusCode, title: &str, body: Markup) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { (shown(title)) " · tollgate" }
                style { (PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    };
    let mut response = (status, page.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    response
}
