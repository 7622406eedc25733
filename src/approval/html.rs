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

/// The one style sheet, inline (the page loads nothing else). Long words wrap anywhere, so caller
/// text no break can split (ids, paths, arguments) never makes a page wider than a phone.
const STYLE: &str = include_str!("page.css");

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
