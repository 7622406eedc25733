//! Signing in to the approval page: the token checked by the [`Approvers`](super::Approvers)
//! hook, then kept in a `SameSite=Strict`, `HttpOnly` cookie; and signing out.

use std::convert::Infallible;

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequestParts, NestedPath, State};
use axum::response::{IntoResponse, Response};
use http::header::{AUTHORIZATION, CACHE_CONTROL, COOKIE, LOCATION, SET_COOKIE};
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use maud::html;
use serde::Deserialize;

use super::Shared;
use super::api::form_body;
use super::approvers::TOKEN_COOKIE;
use super::error::ApiErrorKind;
use super::html::{layout, shown};
use super::words::{Asked, Problem};

/// Where the routes are mounted, and which page was asked for.
pub(super) struct Mount {
    /// Where the router is nested (`/approvals`), or empty at the root.
    pub(super) prefix: String,
    /// This page's own path, for the sign-in to come back to.
    path: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Mount {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Infallible> {
        let prefix = NestedPath::from_request_parts(parts, state)
            .await
            .map(|nested| nested.as_str().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let path = match parts.uri.path() {
            "/" if !prefix.is_empty() => prefix.clone(),
            path => format!("{prefix}{path}"),
        };
        Ok(Mount { prefix, path })
    }
}

impl Mount {
    pub(super) fn sign_in_form(&self, problem: Option<&str>) -> Response {
        let body = html! {
            h1 { "Sign in to decide" }
            @if let Some(problem) = problem {
                p.error role="alert" { (problem) }
            }
            form method="post" action={ (shown(&self.prefix)) "/sign-in" } {
                input type="hidden" name="next" value=(shown(&self.path));
                label for="token" { "Approver token" }
                input #token name="token" type="password" autocomplete="current-password" required;
                button #sign-in type="submit" { "Sign in" }
            }
        };
        layout(StatusCode::UNAUTHORIZED, "Sign in", body)
    }

    /// The list page: the prefix itself when nested (axum matches `/approvals`, not `/approvals/`).
    pub(super) fn home(&self) -> &str {
        if self.prefix.is_empty() {
            "/"
        } else {
            &self.prefix
        }
    }
}

#[derive(Deserialize)]
pub(super) struct SignInForm {
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /sign-in`: checks the token with the approvers hook, then keeps it in a cookie.
pub(super) async fn sign_in(
    State(api): State<Shared>,
    mount: Mount,
    mut parts: Parts,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    let Ok(form) = form_body(form) else {
        return mount.sign_in_form(Some("Type your approver token."));
    };
    let token = form.token.trim();
    let cookie_safe = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\'));
    let Ok(bearer) = HeaderValue::from_str(&format!("Bearer {token}")) else {
        return mount.sign_in_form(Some("That token is not known."));
    };
    parts.headers.remove(COOKIE);
    parts.headers.insert(AUTHORIZATION, bearer);
    match api.identify(&parts).await {
        Ok(_) if cookie_safe => {
            let next = if form.next.starts_with(&format!("{}/", mount.prefix))
                && !form.next.starts_with("//")
                && !form.next.contains(['\\', '\r', '\n'])
            {
                form.next
            } else {
                mount.home().to_owned()
            };
            // `Secure` when approvals are served over HTTPS, as the base URL says.
            let secure = api
                .gate
                .approval_base_url()
                .is_some_and(|base| base.starts_with("https://"));
            let cookie = format!(
                "{TOKEN_COOKIE}={token}; Path={}; HttpOnly; SameSite=Strict; Max-Age=43200{}",
                mount.home(),
                if secure { "; Secure" } else { "" }
            );
            redirect(&next, &cookie)
        }
        Ok(_) => mount.sign_in_form(Some("This token cannot be kept in a browser cookie.")),
        Err(answer) if answer.is(ApiErrorKind::Unauthenticated) => {
            mount.sign_in_form(Some("That token is not known."))
        }
        Err(answer) => Problem::of(&answer, Asked::Page).page(Asked::Page, html! {}),
    }
}

/// `POST /sign-out`: forgets the cookie.
pub(super) async fn sign_out(mount: Mount) -> Response {
    let cookie = format!(
        "{TOKEN_COOKIE}=; Path={}; HttpOnly; SameSite=Strict; Max-Age=0",
        mount.home()
    );
    redirect(mount.home(), &cookie)
}

fn redirect(to: &str, cookie: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(to) = HeaderValue::from_str(to) {
        headers.insert(LOCATION, to);
    }
    if let Ok(cookie) = HeaderValue::from_str(cookie) {
        headers.insert(SET_COOKIE, cookie);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
