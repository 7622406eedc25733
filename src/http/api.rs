//! The approval API: JSON routes for dashboards and bots, the approval page for people.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::Router;
use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tower_http::csrf::CsrfLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use super::approvers::{Approver, Approvers};
use super::page;
use crate::audit::{AuditEvent, AuditFilter};
use crate::error::{Error, ErrorKind};
use crate::gate::rate::{AlertRate, RateLimiter};
use crate::gate::{Approve, Deny, Gate, Revoke};
use crate::id::{RequestId, RuleId};
use crate::scope::Scope;

/// The approval API's OpenAPI 3.1 document, as served at `GET {prefix}/api/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The approval routes for `gate`, with `approvers` telling who is deciding; the defaults of
/// [`ApprovalApi`]. Nest it where the gate's
/// [`approval_base_url`](crate::GateBuilder::approval_base_url) points.
///
/// ```
/// use axum::Router;
/// use tollgate::http::{Approver, Tokens};
/// # fn app(gate: tollgate::Gate) -> Router {
/// let approvers = Tokens::new().token("a long random token", Approver::new("alice"));
/// Router::new().nest("/approvals", tollgate::http::router(gate, approvers))
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
            .route("/api/openapi.json", get(openapi))
            .route("/api/requests", get(list_pending))
            .route("/api/requests/{id}", get(get_request))
            .route("/api/requests/{id}/approve", post(approve))
            .route("/api/requests/{id}/deny", post(deny))
            .route("/api/requests/{id}/status", get(status))
            .route("/api/rules", get(list_rules).delete(revoke_all))
            .route("/api/rules/{id}", axum::routing::delete(revoke_rule))
            .route("/api/audit", get(audit))
            .route("/", get(page::list))
            .route("/sign-in", post(page::sign_in))
            .route("/sign-out", post(page::sign_out))
            .route("/{id}", get(page::show).post(page::decide))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                self.timeout,
            ));
        Router::new()
            .route("/api/requests/{id}/wait", get(wait))
            .merge(timed)
            .fallback(|| async { Answer(Error::new(ErrorKind::UnknownRoute)) })
            .layer(RequestBodyLimitLayer::new(self.body_limit))
            .layer(CsrfLayer::new())
            .layer(axum::middleware::map_response(explain))
            .with_state(api)
    }
}

/// The state every route shares.
pub(super) struct Api {
    pub(super) gate: Gate,
    approvers: Arc<dyn Approvers>,
    max_wait: Duration,
    decisions: Option<Mutex<RateLimiter>>,
}

pub(super) type Shared = Arc<Api>;

impl Api {
    /// Who sent the request; `unauthenticated` if nobody is signed in.
    pub(super) async fn identify(&self, parts: &Parts) -> Result<Approver, Error> {
        self.approvers
            .identify(parts)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::Unauthenticated))
    }

    /// Takes one decision from `approver`'s allowance.
    pub(super) fn take_decision(&self, approver: &Approver) -> Result<(), Error> {
        let Some(limiter) = &self.decisions else {
            return Ok(());
        };
        let mut limiter = limiter.lock().unwrap_or_else(PoisonError::into_inner);
        if limiter.take(&approver.name_arc(), Instant::now()) {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::RateLimited))
        }
    }

    /// Approves as `approver`, within their rights.
    pub(super) async fn approve(
        &self,
        approver: &Approver,
        id: RequestId,
        code: String,
        scope: Scope,
        ttl: Option<Duration>,
    ) -> Result<crate::gate::Approval, Error> {
        self.take_decision(approver)?;
        let mut approve = Approve::new(id, code)
            .scope(scope)
            .by(approver.name_arc())
            .authority(approver.clone());
        if let Some(ttl) = ttl {
            approve = approve.ttl(ttl);
        }
        self.gate.approve(approve).await
    }

    /// Denies as `approver`, within their rights.
    pub(super) async fn deny(
        &self,
        approver: &Approver,
        id: RequestId,
        decision: DenyBody,
    ) -> Result<crate::gate::Denial, Error> {
        self.take_decision(approver)?;
        let mut deny = Deny::new(id, decision.code)
            .by(approver.name_arc())
            .authority(approver.clone());
        if let Some(reason) = decision.reason.filter(|r| !r.trim().is_empty()) {
            deny = deny.reason(reason);
        }
        if let Some(scope) = decision.remember {
            deny = deny.remember(scope);
        }
        if let Some(ttl) = decision.ttl_secs {
            deny = deny.ttl(Duration::from_secs(ttl));
        }
        self.gate.deny(deny).await
    }

    /// Revokes as `approver`, who may revoke these rules, and answers with the revoked rules.
    async fn revoke(&self, approver: &Approver, revoke: Revoke) -> Result<Response, Answer> {
        self.take_decision(approver)?;
        let revoked = self.gate.revoke(revoke.by(approver.name_arc())).await?;
        Ok(reply(json!({ "revoked": revoked })))
    }
}

/// The approver who sent the request, for routes that need one.
pub(super) struct Signed(pub(super) Approver);

impl FromRequestParts<Shared> for Signed {
    type Rejection = Answer;

    async fn from_request_parts(parts: &mut Parts, api: &Shared) -> Result<Self, Answer> {
        Ok(Signed(api.identify(parts).await?))
    }
}

/// An error as the approval API answers it: JSON with the stable code. The status differs from
/// the gated service's in one way: a request that expired, was cancelled or abandoned is `410
/// Gone` to an approver, where its caller got `504` or `503`.
#[derive(Debug)]
pub(super) struct Answer(pub(super) Error);

impl From<Error> for Answer {
    fn from(error: Error) -> Self {
        Answer(error)
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = super::error_response::<axum::body::Body>(&self.0);
        *response.status_mut() = approver_status(self.0.kind());
        response
    }
}

/// The status the approval API answers an error of this kind with.
pub fn approver_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::AccessRequestExpired
        | ErrorKind::AccessRequestCancelled
        | ErrorKind::AccessRequestAbandoned => StatusCode::GONE,
        kind => super::status(kind),
    }
}

/// Gives answers made outside the routes (the body limit, the timeout, the cross-site check,
/// axum's own rejections) the JSON error form every route uses.
async fn explain(response: Response) -> Response {
    let status = response.status();
    let typed = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if typed || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let kind = match status {
        StatusCode::NOT_FOUND => ErrorKind::UnknownRoute,
        StatusCode::METHOD_NOT_ALLOWED => ErrorKind::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorKind::BodyTooLarge,
        StatusCode::FORBIDDEN => ErrorKind::CrossSiteRequest,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => ErrorKind::RequestTimedOut,
        status if status.is_client_error() => ErrorKind::InvalidBody,
        _ => ErrorKind::ServiceFailed,
    };
    let mut answer = Answer(Error::new(kind)).into_response();
    *answer.status_mut() = status;
    answer
}

/// A JSON answer that no cache keeps.
fn reply(value: Value) -> Response {
    let mut response = Json(value).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A request id from the path; anything else is an unknown id.
pub(super) fn request_id(path: Result<Path<String>, PathRejection>) -> Result<RequestId, Error> {
    let not_found = || Error::new(ErrorKind::AccessRequestNotFound);
    path.map_err(|_| not_found())?
        .0
        .parse()
        .map_err(|_| not_found())
}

pub(super) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, Error> {
    let detail = match body {
        Ok(Json(body)) => return Ok(body),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(Error::new(ErrorKind::BodyTooLarge));
        }
        // Without serde's message: it can repeat what was sent, a code included.
        Err(JsonRejection::JsonSyntaxError(_)) => "the body is not valid JSON",
        Err(JsonRejection::MissingJsonContentType(_)) => "send `content-type: application/json`",
        Err(JsonRejection::JsonDataError(_)) => {
            "a field is missing, unknown, or of the wrong type; see the OpenAPI document"
        }
        Err(_) => "the body could not be read",
    };
    Err(Error::new(ErrorKind::InvalidBody).with_detail(detail))
}

pub(super) fn form_body<T>(body: Result<axum::Form<T>, FormRejection>) -> Result<T, Error> {
    match body {
        Ok(axum::Form(body)) => Ok(body),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(Error::new(ErrorKind::BodyTooLarge))
        }
        Err(_) => Err(Error::new(ErrorKind::InvalidBody)
            .with_detail("the form is missing a field or has a wrong value")),
    }
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Error> {
    query.map(|Query(q)| q).map_err(|_| {
        Error::new(ErrorKind::InvalidBody)
            .with_detail("the query string has an unknown parameter or a wrong value")
    })
}

async fn openapi() -> Response {
    let mut response = OPENAPI.into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn list_pending(State(api): State<Shared>, Signed(approver): Signed) -> Response {
    let mut requests = api.gate.pending();
    requests.retain(|request| approver.may_see(request));
    reply(json!({ "requests": requests }))
}

async fn get_request(
    State(api): State<Shared>,
    Signed(approver): Signed,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Answer> {
    let id = request_id(id)?;
    match api.gate.request(id) {
        Some((request, status)) if approver.may_see(&request) => {
            Ok(reply(json!({ "request": request, "status": status })))
        }
        _ => Err(Error::new(ErrorKind::AccessRequestNotFound).into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    code: String,
    scope: Option<Scope>,
    ttl_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DenyBody {
    pub(super) code: String,
    pub(super) reason: Option<String>,
    pub(super) remember: Option<Scope>,
    pub(super) ttl_secs: Option<u64>,
}

async fn approve(
    State(api): State<Shared>,
    Signed(approver): Signed,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<ApproveBody>, JsonRejection>,
) -> Result<Response, Answer> {
    let id = request_id(id)?;
    let body = json_body(body)?;
    let scope = body.scope.unwrap_or(Scope::Once);
    let ttl = body.ttl_secs.map(Duration::from_secs);
    let approval = api.approve(&approver, id, body.code, scope, ttl).await?;
    Ok(reply(json!({
        "request": approval.request(),
        "status": "approved",
        "scope": approval.scope(),
        "rule": approval.rule(),
    })))
}

async fn deny(
    State(api): State<Shared>,
    Signed(approver): Signed,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<DenyBody>, JsonRejection>,
) -> Result<Response, Answer> {
    let id = request_id(id)?;
    let body = json_body(body)?;
    let denial = api.deny(&approver, id, body).await?;
    Ok(reply(json!({
        "request": denial.request(),
        "status": "denied",
        "rule": denial.rule(),
    })))
}

/// For the caller that submitted the request: the id is all it needs, and all it learns is
/// the status.
async fn status(
    State(api): State<Shared>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Answer> {
    let id = request_id(id)?;
    let status = api.gate.status(id)?;
    Ok(reply(json!({ "id": id, "status": status })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitQuery {
    timeout_secs: Option<u64>,
}

/// The long poll: answers once the request is decided, or with `pending` after the timeout.
async fn wait(
    State(api): State<Shared>,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Response, Answer> {
    let id = request_id(id)?;
    let params = query(params)?;
    let timeout = params
        .timeout_secs
        .map_or(api.max_wait, Duration::from_secs)
        .min(api.max_wait);
    let status = match api.gate.wait(id, timeout).await {
        Ok(status) => status,
        Err(error) if error.kind() == ErrorKind::WaitTimedOut => api.gate.status(id)?,
        Err(error) => return Err(error.into()),
    };
    Ok(reply(json!({ "id": id, "status": status })))
}

async fn list_rules(State(api): State<Shared>, Signed(approver): Signed) -> Response {
    let mut rules = api.gate.rules();
    rules.retain(|rule| approver.may_decide(rule.capability()));
    reply(json!({ "rules": rules }))
}

async fn revoke_rule(
    State(api): State<Shared>,
    Signed(approver): Signed,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Answer> {
    let not_found = || Error::new(ErrorKind::AccessRequestNotFound).with_detail("no such rule");
    let id: RuleId = id
        .map_err(|_| not_found())?
        .0
        .parse()
        .map_err(|_| not_found())?;
    let visible = api
        .gate
        .rules()
        .iter()
        .any(|rule| rule.id() == id && approver.may_decide(rule.capability()));
    if !visible {
        return Err(not_found().into());
    }
    api.revoke(&approver, Revoke::rule(id)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeQuery {
    capability: Option<String>,
}

/// Revokes every rule, or every rule of `?capability=`.
async fn revoke_all(
    State(api): State<Shared>,
    Signed(approver): Signed,
    params: Result<Query<RevokeQuery>, QueryRejection>,
) -> Result<Response, Answer> {
    let params = query(params)?;
    let revoke = match params.capability {
        Some(capability) if approver.may_decide(&capability) => Revoke::capability(capability),
        None if approver.is_unrestricted() => Revoke::all(),
        _ => return Err(Error::new(ErrorKind::ApproverNotAllowed).into()),
    };
    api.revoke(&approver, revoke).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    principal: Option<String>,
    capability: Option<String>,
    event: Option<String>,
    request: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
}

/// The audit trail, for approvers who may decide everything.
async fn audit(
    State(api): State<Shared>,
    Signed(approver): Signed,
    params: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, Answer> {
    if !approver.is_unrestricted() {
        return Err(Error::new(ErrorKind::ApproverNotAllowed)
            .with_detail("the audit trail is for approvers of every capability")
            .into());
    }
    let params = query(params)?;
    let invalid = |detail: &'static str| Error::new(ErrorKind::InvalidBody).with_detail(detail);
    let at = |ms: u64| {
        SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_millis(ms))
            .ok_or_else(|| invalid("a time beyond the calendar"))
    };
    let mut filter = AuditFilter::new();
    if let Some(ms) = params.since_ms {
        filter = filter.since(at(ms)?);
    }
    if let Some(ms) = params.until_ms {
        filter = filter.until(at(ms)?);
    }
    if let Some(principal) = params.principal {
        filter = filter.principal(principal);
    }
    if let Some(capability) = params.capability {
        filter = filter.capability(capability);
    }
    if let Some(event) = params.event {
        let event = AuditEvent::from_name(&event).ok_or_else(|| invalid("unknown audit event"))?;
        filter = filter.event(event);
    }
    if let Some(request) = params.request {
        let id = request.parse().map_err(|_| invalid("not a request id"))?;
        filter = filter.request(id);
    }
    if let Some(seq) = params.after {
        filter = filter.after(seq);
    }
    if let Some(limit) = params.limit {
        filter = filter.limit(limit);
    }
    let entries = api.gate.audit(filter).await?;
    Ok(reply(json!({ "entries": entries })))
}
