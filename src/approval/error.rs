//! The approval API's answers when something fails: the gate's own errors, and the few only the
//! API raises ([`ApiErrorKind`]), all as `{"error": {"code", "message", "detail", "request_id",
//! "retryable"}}` with the status an approver should see.

use std::fmt;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::CONTENT_TYPE;

use crate::error::{Error, ErrorKind};

/// What only the approval API refuses, beside the gate's [`ErrorKind`]s. Each kind has a stable
/// [`code`](Self::code), answered in the same JSON form as the gate's errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiErrorKind {
    /// No approver is signed in: the API could not tell who sent the request.
    Unauthenticated,
    /// This approver sent more decisions than the API's rate allows.
    RateLimited,
    /// The request body or query is not what the route takes (malformed JSON, a wrong type).
    InvalidBody,
    /// The API has no route at this path.
    UnknownRoute,
    /// The route does not take this method.
    MethodNotAllowed,
    /// A browser sent a form from another site; the API refused it.
    CrossSiteRequest,
    /// The API did not answer in time; a decision may still have been made.
    RequestTimedOut,
}

impl ApiErrorKind {
    /// Every kind, for tables of codes and tests that must see each one.
    pub const ALL: &'static [ApiErrorKind] = &[
        Self::Unauthenticated,
        Self::RateLimited,
        Self::InvalidBody,
        Self::UnknownRoute,
        Self::MethodNotAllowed,
        Self::CrossSiteRequest,
        Self::RequestTimedOut,
    ];

    /// The stable snake_case code, e.g. `rate_limited`.
    pub const fn code(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::RateLimited => "rate_limited",
            Self::InvalidBody => "invalid_body",
            Self::UnknownRoute => "unknown_route",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::CrossSiteRequest => "cross_site_request",
            Self::RequestTimedOut => "request_timed_out",
        }
    }

    /// Whether trying again later can succeed.
    pub const fn is_retryable(self) -> bool {
        matches!(self, Self::RateLimited | Self::RequestTimedOut)
    }

    /// The HTTP status the API answers with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::InvalidBody => StatusCode::BAD_REQUEST,
            Self::UnknownRoute => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::CrossSiteRequest => StatusCode::FORBIDDEN,
            Self::RequestTimedOut => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    const fn message(self) -> &'static str {
        match self {
            Self::Unauthenticated => {
                "no approver is signed in: send `Authorization: Bearer <token>` or sign in on the approval page"
            }
            Self::RateLimited => "this approver sent too many decisions; retry in a minute",
            Self::InvalidBody => "the request body is not what this route takes",
            Self::UnknownRoute => "the approval API has no route at this path",
            Self::MethodNotAllowed => "this route does not take this method",
            Self::CrossSiteRequest => {
                "the form was sent from another site; decide from the approval page itself"
            }
            Self::RequestTimedOut => {
                "the approval API did not answer in time; a decision may still have been made, so check the request's status"
            }
        }
    }
}

impl fmt::Display for ApiErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An error as the approval API answers it: the gate's, or one of the API's own.
#[derive(Debug)]
pub(super) enum Answer {
    Gate(Error),
    Api(ApiErrorKind, Option<&'static str>),
}

impl Answer {
    /// One of the API's own errors, with a detail.
    pub(super) fn api(kind: ApiErrorKind, detail: &'static str) -> Self {
        Answer::Api(kind, Some(detail))
    }

    /// Whether this is the API's `kind`.
    pub(super) fn is(&self, kind: ApiErrorKind) -> bool {
        matches!(self, Answer::Api(own, _) if *own == kind)
    }

    /// The status an approver gets: the gated service's, except that a request that expired,
    /// was cancelled or abandoned is `410 Gone` to an approver, where its caller got `504` or
    /// `503`.
    pub(super) fn status(&self) -> StatusCode {
        match self {
            Answer::Gate(error) => approver_status(error.kind()),
            Answer::Api(kind, _) => kind.status(),
        }
    }

    /// The stable code, e.g. `access_request_expired`.
    pub(super) fn code(&self) -> &'static str {
        match self {
            Answer::Gate(error) => error.code(),
            Answer::Api(kind, _) => kind.code(),
        }
    }
}

impl From<Error> for Answer {
    fn from(error: Error) -> Self {
        Answer::Gate(error)
    }
}

impl From<ApiErrorKind> for Answer {
    fn from(kind: ApiErrorKind) -> Self {
        Answer::Api(kind, None)
    }
}

/// `code: message (detail)`, as the gate's errors read.
impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Gate(error) => error.fmt(f),
            Answer::Api(kind, detail) => {
                write!(f, "{}: {}", kind.code(), kind.message())?;
                match detail {
                    Some(detail) => write!(f, " ({detail})"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl serde::Serialize for Answer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let (kind, detail) = match self {
            Answer::Gate(error) => return error.serialize(s),
            Answer::Api(kind, detail) => (kind, detail),
        };
        let mut out = s.serialize_struct("Error", 4)?;
        out.serialize_field("code", kind.code())?;
        out.serialize_field("message", kind.message())?;
        match detail {
            Some(detail) => out.serialize_field("detail", detail)?,
            None => out.skip_field("detail")?,
        }
        out.serialize_field("retryable", &kind.is_retryable())?;
        out.end()
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self });
        (self.status(), axum::Json(body)).into_response()
    }
}

/// The status the approval API answers a gate error of this kind with.
pub fn approver_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::AccessRequestExpired
        | ErrorKind::AccessRequestCancelled
        | ErrorKind::AccessRequestAbandoned => StatusCode::GONE,
        kind => crate::http::status(kind),
    }
}

/// What an error answered outside the routes (the body limit, the timeout, the cross-site
/// check, axum's own rejections) stands for, judged by its status; `None` for a success or an
/// answer a route made, which is typed already. [`explain`](super::words::explain) gives it the
/// form every route's answers have.
pub(super) fn unexplained(response: &Response) -> Option<Answer> {
    let status = response.status();
    let typed = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if typed || !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    Some(match status {
        StatusCode::NOT_FOUND => ApiErrorKind::UnknownRoute.into(),
        StatusCode::METHOD_NOT_ALLOWED => ApiErrorKind::MethodNotAllowed.into(),
        StatusCode::PAYLOAD_TOO_LARGE => Answer::Gate(Error::new(ErrorKind::BodyTooLarge)),
        StatusCode::FORBIDDEN => ApiErrorKind::CrossSiteRequest.into(),
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => {
            ApiErrorKind::RequestTimedOut.into()
        }
        status if status.is_client_error() => ApiErrorKind::InvalidBody.into(),
        _ => Answer::Gate(Error::new(ErrorKind::ServiceFailed)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_error_kind_has_its_own_snake_case_code_and_says_what_happened() {
        let mut codes: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
        codes.extend(ApiErrorKind::ALL.iter().map(|k| k.code()));
        let distinct: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(
            distinct.len(),
            codes.len(),
            "codes are distinct across both lists"
        );
        for &kind in ApiErrorKind::ALL {
            let code = kind.code();
            assert!(
                code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{code}"
            );
            let message = Answer::from(kind).to_string();
            assert!(message.starts_with(&format!("{code}: ")), "{message}");
            assert!(
                message.len() > code.len() + 20,
                "the message explains: {message}"
            );
        }
        assert!(ApiErrorKind::RateLimited.is_retryable());
        assert!(!ApiErrorKind::InvalidBody.is_retryable());
    }
}
