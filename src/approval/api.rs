//! The approval API's JSON routes, for dashboards and bots.

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::error::{Answer, ApiErrorKind};
use super::{Shared, Signed};
use crate::audit::{AuditEvent, AuditFilter};
use crate::error::{Error, ErrorKind};
use crate::gate::{Ends, Revoke};
use crate::id::{RequestId, RuleId};
use crate::scope::Scope;

/// The approval API's OpenAPI 3.1 document, as served at `GET {prefix}/api/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// A JSON answer that no cache keeps.
pub(super) fn reply(value: Value) -> Response {
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

pub(super) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, Answer> {
    let detail = match body {
        Ok(Json(body)) => return Ok(body),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(Error::new(ErrorKind::BodyTooLarge).into());
        }
        // Without serde's message: it can repeat what was sent, a code included.
        Err(JsonRejection::JsonSyntaxError(_)) => "the body is not valid JSON",
        Err(JsonRejection::MissingJsonContentType(_)) => "send `content-type: application/json`",
        Err(JsonRejection::JsonDataError(_)) => {
            "a field is missing, unknown, or of the wrong type; see the OpenAPI document"
        }
        Err(_) => "the body could not be read",
    };
    Err(Answer::api(ApiErrorKind::InvalidBody, detail))
}

pub(super) fn form_body<T>(body: Result<axum::Form<T>, FormRejection>) -> Result<T, Answer> {
    match body {
        Ok(axum::Form(body)) => Ok(body),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(Error::new(ErrorKind::BodyTooLarge).into())
        }
        Err(_) => Err(Answer::api(
            ApiErrorKind::InvalidBody,
            "the form is missing a field or has a wrong value",
        )),
    }
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Answer> {
    query.map(|Query(q)| q).map_err(|_| {
        Answer::api(
            ApiErrorKind::InvalidBody,
            "the query string has an unknown parameter or a wrong value",
        )
    })
}

pub(super) async fn openapi() -> Response {
    let mut response = OPENAPI.into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub(super) async fn list_pending(
    State(api): State<Shared>,
    Signed(approver): Signed,
) -> Result<Response, Answer> {
    let mut requests = api.gate.pending_anywhere().await?;
    requests.retain(|request| approver.may_see(request));
    Ok(reply(json!({ "requests": requests })))
}

pub(super) async fn get_request(
    State(api): State<Shared>,
    Signed(approver): Signed,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Answer> {
    let id = request_id(id)?;
    match api.gate.lookup(id).await {
        Ok((request, status)) if approver.may_see(&request) => {
            let approved_by = api.gate.approved_by(id);
            Ok(reply(
                json!({ "request": request, "status": status, "approved_by": approved_by }),
            ))
        }
        Err(error) if error.kind() == ErrorKind::StoreFailed => Err(error.into()),
        _ => Err(Error::new(ErrorKind::AccessRequestNotFound).into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApproveBody {
    code: String,
    scope: Option<Scope>,
    #[serde(default, deserialize_with = "whole_number")]
    ttl_secs: Option<u64>,
    #[serde(default, deserialize_with = "whole_number")]
    until_ms: Option<u64>,
    /// New arguments, read strictly (a repeated key is refused) since they are what runs.
    #[serde(default)]
    args: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DenyBody {
    pub(super) code: String,
    pub(super) reason: Option<String>,
    pub(super) remember: Option<Scope>,
    #[serde(default, deserialize_with = "whole_number")]
    pub(super) ttl_secs: Option<u64>,
    #[serde(default, deserialize_with = "whole_number")]
    pub(super) until_ms: Option<u64>,
}

/// When a decision's rule ends: after `ttl_secs`, or at `until_ms` (milliseconds since the
/// Unix epoch, as the audit query's times), not both.
pub(super) fn ends(ttl_secs: Option<u64>, until_ms: Option<u64>) -> Result<Option<Ends>, Answer> {
    match (ttl_secs, until_ms) {
        (Some(_), Some(_)) => Err(Answer::api(
            ApiErrorKind::InvalidBody,
            "give `ttl_secs` or `until_ms`, not both",
        )),
        (Some(secs), None) => Ok(Some(Ends::After(Duration::from_secs(secs)))),
        // A time beyond what the request allows is refused with `scope_not_allowed`, as one
        // beyond what this platform's clock can hold.
        (None, Some(ms)) => match SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms)) {
            Some(end) => Ok(Some(Ends::At(end))),
            None => Err(Error::new(ErrorKind::ScopeNotAllowed)
                .with_detail("`until_ms` is later than this request allows")
                .into()),
        },
        (None, None) => Ok(None),
    }
}

/// A count (of seconds, of milliseconds): a JSON integer, written `300` or `300.0` alike (both
/// are integers to JSON Schema, so to the OpenAPI document); a fraction or a negative number is
/// refused.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..u64::MAX as f64).contains(f))
            .map(|f| f as u64)
    });
    whole
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("expected a whole number"))
}

pub(super) async fn approve(
    State(api): State<Shared>,
    Signed(approver): Signed,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<ApproveBody>, JsonRejection>,
) -> Result<Response, Answer> {
    let id = request_id(id)?;
    let body = json_body(body)?;
    let scope = body.scope.unwrap_or(Scope::Once);
    let ends = ends(body.ttl_secs, body.until_ms)?;
    // Parsed strictly by the gate, once the code is verified.
    let edit = body.args.map(|args| Box::from(args.get()));
    let approval = api
        .approve(&approver, id, body.code, scope, ends, edit)
        .await?;
    let status = if approval.outstanding() > 0 {
        "pending"
    } else {
        "approved"
    };
    Ok(reply(json!({
        "request": approval.request(),
        "status": status,
        "outstanding": approval.outstanding(),
        "scope": approval.scope(),
        "rule": approval.rule(),
        "edited_args": approval.edit().map(|edit| edit.args()),
    })))
}

pub(super) async fn deny(
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
pub(super) async fn status(
    State(api): State<Shared>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Answer> {
    let id = request_id(id)?;
    let status = match api.gate.status(id) {
        Ok(status) => status,
        Err(_) => api.gate.lookup(id).await?.1,
    };
    Ok(reply(json!({ "id": id, "status": status })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WaitQuery {
    timeout_secs: Option<u64>,
}

/// The long poll: answers once the request is decided, or with `pending` after the timeout.
pub(super) async fn wait(
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
        Err(error) if error.kind() == ErrorKind::WaitTimedOut => match api.gate.status(id) {
            Ok(status) => status,
            Err(_) => api.gate.lookup(id).await?.1,
        },
        Err(error) => return Err(error.into()),
    };
    Ok(reply(json!({ "id": id, "status": status })))
}

pub(super) async fn list_rules(State(api): State<Shared>, Signed(approver): Signed) -> Response {
    let mut rules = api.gate.rules();
    rules.retain(|rule| approver.may_decide(rule.capability()));
    reply(json!({ "rules": rules }))
}

pub(super) async fn revoke_rule(
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
pub(super) struct RevokeQuery {
    capability: Option<String>,
}

/// Revokes every rule, or every rule of `?capability=`.
pub(super) async fn revoke_all(
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
pub(super) struct AuditQuery {
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
pub(super) async fn audit(
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
    let invalid = |detail: &'static str| Answer::api(ApiErrorKind::InvalidBody, detail);
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
