//! The approval web app: the page people decide on, and the JSON API dashboards and bots use.
//!
//! [`router`] serves them; nest it where the gate's
//! [`approval_base_url`](crate::gate::GateBuilder::approval_base_url) points, and every alert carries
//! `{base}/{id}`, the request's page. [`Approvers`] names who sends each request; [`Tokens`] is a
//! ready one.
//!
//! ```
//! use axum::Router;
//! use tollgate::approval::{Approver, Tokens};
//! use tollgate::{Gate, Scope};
//!
//! # fn app(tools: Router, token: &str) -> Result<Router, tollgate::Error> {
//! let gate = Gate::builder()
//!     .random_secret()
//!     .approval_base_url("https://ops.example.com/approvals")
//!     .park_when_unnotified()
//!     .build()?;
//! let approvers = Tokens::new().token(token, Approver::new("alice").max_scope(Scope::Value));
//! Ok(tools.nest("/approvals", tollgate::approval::router(gate, approvers)))
//! # }
//! ```
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /` | approver | the page listing pending requests |
//! | `GET /{id}`, `POST /{id}` | approver | a request's page; its form decides |
//! | `POST /sign-in`, `POST /sign-out` | anyone | the page's sign-in, a `SameSite=Strict` cookie |
//! | `GET /api/requests`, `GET /api/requests/{id}` | approver | pending requests, one request |
//! | `POST /api/requests/{id}/approve`, `…/deny` | approver | decide: `{"code", "scope", "ttl_secs"}`, `{"code", "reason", "remember", "ttl_secs"}` |
//! | `GET /api/requests/{id}/status`, `…/wait?timeout_secs=` | the id's holder | the status; the long poll |
//! | `GET /api/rules`, `DELETE /api/rules[?capability=]`, `DELETE /api/rules/{id}` | approver | list and revoke rules |
//! | `GET /api/audit?since_ms=&until_ms=&principal=&capability=&event=&request=&after=&limit=` | approver of everything | the audit trail |
//! | `GET /api/openapi.json` | anyone | [`OPENAPI`] |
//!
//! Approvers see and decide only requests of capabilities they may decide; a wrong code and an
//! unknown id both answer `404 access_request_not_found`; a request that expired, was cancelled
//! or abandoned answers `410` ([`approver_status`]). Codes appear in no answer: only notifiers
//! carry them.
//!
//! # Pitfalls
//!
//! - **The list page is at the nest path itself**, `/approvals`: axum does not match
//!   `/approvals/` for a nested `/`.
//! - **Cross-site checks trust `Origin` and `Host`.** Behind a proxy, forward both unchanged, or
//!   browsers' forms may be refused or the check weakened (see `tower_http::csrf`).
//! - **Status and wait need only the id**, whose 80 random bits only the caller was given: they are
//!   for the caller that submitted the request, and say nothing but the status.
//!
//! # Errors
//!
//! The gate's errors, with [`approver_status`], and the API's own [`ApiErrorKind`]s, all as
//! `{"error": {"code", "message", "detail", "request_id", "retryable"}}`.

mod api;
mod approvers;
mod clock;
mod error;
mod form;
mod html;
mod outcome;
mod page;
mod sign_in;
mod words;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::response::Response;
use axum::routing::{get, post};
use http::StatusCode;
use http::request::Parts;
use serde_json::json;
use tokio::time::Instant;
use tower_http::csrf::CsrfLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

pub use self::api::OPENAPI;
use self::api::{DenyBody, reply};
pub use self::approvers::{Approver, Approvers, TOKEN_COOKIE, Tokens};
use self::error::Answer;
pub use self::error::{ApiErrorKind, approver_status};
use self::words::explain;
use crate::gate::rate::{AlertRate, RateLimiter};
use crate::gate::{Approval, Approve, Denial, Deny, Ends, Gate, Revoke};
use crate::id::RequestId;
use crate::scope::Scope;

/// The approval routes for `gate`, with `approvers` telling who is deciding; the defaults of
/// [`ApprovalApi`]. Nest it where the gate's
/// [`approval_base_url`](crate::gate::GateBuilder::approval_base_url) points.
///
/// ```
/// use axum::Router;
/// use tollgate::approval::{Approver, Tokens};
/// # fn app(gate: tollgate::Gate) -> Router {
/// let approvers = Tokens::new().token("a long random token", Approver::new("alice"));
/// Router::new().nest("/approvals", tollgate::approval::router(gate, approvers))
/// # }
/// ```
pub fn router<S>(gate: Gate, approvers: impl Approvers) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    ApprovalApi::new(gate, approvers).router()
}

/// The approval API's settings; [`router`](Self::router) makes the routes.
///
/// | setting | default |
/// |---|---|
/// | [`body_limit`](Self::body_limit) | 16 KiB |
/// | [`timeout`](Self::timeout) (every route but `wait`) | 30 s |
/// | [`max_wait`](Self::max_wait) (the long poll) | 60 s |
/// | [`decision_rate`](Self::decision_rate) per approver (approve, deny, revoke) | 30 a minute |
#[must_use]
pub struct ApprovalApi {
    gate: Gate,
    approvers: Arc<dyn Approvers>,
    body_limit: usize,
    timeout: Duration,
    max_wait: Duration,
    decision_rate: Option<AlertRate>,
}

impl std::fmt::Debug for ApprovalApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalApi")
            .field("body_limit", &self.body_limit)
            .field("timeout", &self.timeout)
            .field("max_wait", &self.max_wait)
            .field("decision_rate", &self.decision_rate)
            .finish_non_exhaustive()
    }
}

impl ApprovalApi {
    /// The approval API of `gate`; `approvers` says who sends each request.
    pub fn new(gate: Gate, approvers: impl Approvers) -> Self {
        ApprovalApi {
            gate,
            approvers: Arc::new(approvers),
            body_limit: 16 * 1024,
            timeout: Duration::from_secs(30),
            max_wait: Duration::from_secs(60),
            decision_rate: Some(AlertRate {
                alerts: 30,
                window: Duration::from_secs(60),
            }),
        }
    }

    /// The largest request body read; larger ones are answered `413 body_too_large`.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// How long any route but `wait` may take before it is answered `503 request_timed_out`.
    /// A decision cut off this way may still be recorded: check the request's status.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest a long poll on `wait` lasts, whatever the caller asks for; at most an hour.
    pub fn max_wait(mut self, max: Duration) -> Self {
        self.max_wait = max.min(Duration::from_secs(3600));
        self
    }

    /// At most `decisions` approvals, denials and revocations per `window` for each approver,
    /// after a burst of as many; more are answered `429 rate_limited`. Zero counts as one.
    pub fn decision_rate(mut self, decisions: u32, window: Duration) -> Self {
        self.decision_rate = Some(AlertRate {
            alerts: decisions.max(1),
            window,
        });
        self
    }

    /// No rate limit on decisions.
    pub fn unlimited_decisions(mut self) -> Self {
        self.decision_rate = None;
        self
    }

    /// The routes, ready to nest or merge into any router.
    pub fn router<S>(self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let api = Arc::new(Api {
            gate: self.gate,
            approvers: self.approvers,
            max_wait: self.max_wait,
            decisions: self
                .decision_rate
                .map(|rate| Mutex::new(RateLimiter::new(rate))),
        });
        let timed = Router::new()
            .route("/api/openapi.json", get(api::openapi))
            .route("/api/requests", get(api::list_pending))
            .route("/api/requests/{id}", get(api::get_request))
            .route("/api/requests/{id}/approve", post(api::approve))
            .route("/api/requests/{id}/deny", post(api::deny))
            .route("/api/requests/{id}/status", get(api::status))
            .route("/api/rules", get(api::list_rules).delete(api::revoke_all))
            .route("/api/rules/{id}", axum::routing::delete(api::revoke_rule))
            .route("/api/audit", get(api::audit))
            .route("/", get(page::list))
            .route("/sign-in", post(sign_in::sign_in))
            .route("/sign-out", post(sign_in::sign_out))
            .route("/{id}", get(page::show).post(page::decide))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                self.timeout,
            ));
        Router::new()
            .route("/api/requests/{id}/wait", get(api::wait))
            .merge(timed)
            // Explained as `unknown_route` by `explain`: JSON, or a page for a browser.
            .fallback(|| async { StatusCode::NOT_FOUND })
            .layer(RequestBodyLimitLayer::new(self.body_limit))
            .layer(CsrfLayer::new())
            .layer(axum::middleware::map_response(explain))
            .with_state(api)
    }
}

/// The state every route shares.
struct Api {
    gate: Gate,
    approvers: Arc<dyn Approvers>,
    max_wait: Duration,
    decisions: Option<Mutex<RateLimiter>>,
}

type Shared = Arc<Api>;

impl Api {
    /// Who sent the request; `unauthenticated` if nobody is signed in.
    async fn identify(&self, parts: &Parts) -> Result<Approver, Answer> {
        self.approvers
            .identify(parts)
            .await?
            .ok_or(Answer::from(ApiErrorKind::Unauthenticated))
    }

    /// Takes one decision from `approver`'s allowance.
    fn take_decision(&self, approver: &Approver) -> Result<(), Answer> {
        let Some(limiter) = &self.decisions else {
            return Ok(());
        };
        let mut limiter = limiter.lock().unwrap_or_else(PoisonError::into_inner);
        if limiter.take(&approver.name_arc(), Instant::now()) {
            Ok(())
        } else {
            Err(ApiErrorKind::RateLimited.into())
        }
    }

    /// Approves as `approver`, within their rights.
    async fn approve(
        &self,
        approver: &Approver,
        id: RequestId,
        code: String,
        scope: Scope,
        ends: Option<Ends>,
        edit: Option<Box<str>>,
    ) -> Result<Approval, Answer> {
        let approve = Approve::new(id, code)
            .scope(scope)
            .ends(ends)
            .edits(edit)
            .by(approver.name_arc())
            .authority(approver.clone());
        self.take_decision(approver)?;
        Ok(self.gate.approve(approve).await?)
    }

    /// Denies as `approver`, within their rights.
    async fn deny(
        &self,
        approver: &Approver,
        id: RequestId,
        decision: DenyBody,
    ) -> Result<Denial, Answer> {
        let ends = api::ends(decision.ttl_secs, decision.until_ms)?;
        self.take_decision(approver)?;
        let mut deny = Deny::new(id, decision.code)
            .ends(ends)
            .by(approver.name_arc())
            .authority(approver.clone());
        if let Some(reason) = decision.reason.filter(|r| !r.trim().is_empty()) {
            deny = deny.reason(reason);
        }
        if let Some(scope) = decision.remember {
            deny = deny.remember(scope);
        }
        Ok(self.gate.deny(deny).await?)
    }

    /// Revokes as `approver`, who may revoke these rules, and answers with the revoked rules.
    async fn revoke(&self, approver: &Approver, revoke: Revoke) -> Result<Response, Answer> {
        self.take_decision(approver)?;
        let revoked = self.gate.revoke(revoke.by(approver.name_arc())).await?;
        Ok(reply(json!({ "revoked": revoked })))
    }
}

/// The approver who sent the request, for routes that need one.
struct Signed(Approver);

impl FromRequestParts<Shared> for Signed {
    type Rejection = Answer;

    async fn from_request_parts(parts: &mut Parts, api: &Shared) -> Result<Self, Answer> {
        Ok(Signed(api.identify(parts).await?))
    }
}
