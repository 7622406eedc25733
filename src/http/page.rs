//! The approval page: plain server-rendered HTML, a little inline CSS, no JavaScript.
//!
//! Only a `POST` decides, so mail scanners that open links decide nothing. Forms from other sites
//! are refused by the router's cross-site check, the sign-in cookie is `SameSite=Strict`, and the
//! page may not be framed.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use axum::Form;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{FromRequestParts, NestedPath, Path, State};
use axum::response::{IntoResponse, Response};
use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, REFERRER_POLICY, SET_COOKIE,
    X_FRAME_OPTIONS,
};
use http::request::Parts;
use http::{HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;

use super::api::{DenyBody, Shared, approver_status, form_body, request_id};
use super::approvers::{Approver, TOKEN_COOKIE};
use crate::error::{Error, ErrorKind};
use crate::gate::{Approval, Denial};
use crate::id::RequestId;
use crate::notify::template::Escape;
use crate::request::{AccessRequest, Status};
use crate::scope::Scope;
use crate::text::pretty_args;
use crate::time::{human_duration, rfc3339};

/// Where the routes are mounted, and which page was asked for.
pub(super) struct Mount {
    /// Where the router is nested (`/approvals`), or empty at the root.
    prefix: String,
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
    fn sign_in_form(&self, problem: Option<&str>) -> Response {
        let mut body = String::from("<h1>Sign in to decide</h1>");
        if let Some(problem) = problem {
            let _ = write!(
                body,
                "<p class=\"error\" role=\"alert\">{}</p>",
                esc(problem)
            );
        }
        let _ = write!(
            body,
            "<form method=\"post\" action=\"{prefix}/sign-in\">\
             <input type=\"hidden\" name=\"next\" value=\"{next}\">\
             <label for=\"token\">Approver token</label>\
             <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required>\
             <button id=\"sign-in\" type=\"submit\">Sign in</button></form>",
            prefix = esc(&self.prefix),
            next = esc(&self.path),
        );
        html(StatusCode::UNAUTHORIZED, "Sign in", &body)
    }

    /// The list page: the prefix itself when nested (axum matches `/approvals`, not `/approvals/`).
    fn home(&self) -> &str {
        if self.prefix.is_empty() {
            "/"
        } else {
            &self.prefix
        }
    }
}

/// Who is looking, on which page.
pub(super) struct Visit {
    mount: Mount,
    approver: Result<Approver, Error>,
}

impl FromRequestParts<Shared> for Visit {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, api: &Shared) -> Result<Self, Infallible> {
        let Ok(mount) = Mount::from_request_parts(parts, api).await;
        Ok(Visit {
            mount,
            approver: api.identify(parts).await,
        })
    }
}

impl Visit {
    /// The signed-in approver, or the page to show instead.
    fn approver(&self) -> Result<&Approver, Box<Response>> {
        match &self.approver {
            Ok(approver) => Ok(approver),
            Err(error) if error.kind() == ErrorKind::Unauthenticated => {
                Err(Box::new(self.mount.sign_in_form(None)))
            }
            Err(error) => Err(Box::new(error_page(error))),
        }
    }
}

/// `GET /`: the pending requests this approver may decide.
pub(super) async fn list(State(api): State<Shared>, visit: Visit) -> Response {
    let approver = match visit.approver() {
        Ok(approver) => approver,
        Err(page) => return *page,
    };
    let now = SystemTime::now();
    let mut body = String::from("<h1>Waiting for you</h1>");
    let pending: Vec<AccessRequest> = api
        .gate
        .pending()
        .into_iter()
        .filter(|request| approver.may_see(request))
        .collect();
    if pending.is_empty() {
        body.push_str("<p>Nothing is waiting for a decision.</p>");
    } else {
        body.push_str("<ul class=\"requests\">");
        for request in &pending {
            let _ = write!(
                body,
                "<li><a href=\"{prefix}/{id}\"><code>{capability}</code></a> \
                 <span class=\"meta\">by {principal}, {left}</span></li>",
                prefix = esc(&visit.mount.prefix),
                id = request.id(),
                capability = esc(request.capability()),
                principal = esc(request.principal()),
                left = time_left(request, now),
            );
        }
        body.push_str("</ul>");
    }
    footer(&mut body, &visit.mount, approver);
    html(StatusCode::OK, "Pending requests", &body)
}

/// `GET /{id}`: the request and, while it is pending, the form to decide it.
pub(super) async fn show(
    State(api): State<Shared>,
    visit: Visit,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let approver = match visit.approver() {
        Ok(approver) => approver,
        Err(page) => return *page,
    };
    match visible(&api, approver, id) {
        Ok((request, status)) => request_page(&visit.mount, approver, &request, status, None),
        Err(error) => error_page(&error),
    }
}

/// What the decision form sends.
#[derive(Deserialize)]
pub(super) struct DecisionForm {
    code: String,
    action: String,
    scope: Option<Scope>,
    ttl_secs: Option<u64>,
    reason: Option<String>,
}

/// `POST /{id}`: approve or deny, then show the outcome.
pub(super) async fn decide(
    State(api): State<Shared>,
    visit: Visit,
    id: Result<Path<String>, PathRejection>,
    form: Result<Form<DecisionForm>, FormRejection>,
) -> Response {
    let approver = match visit.approver() {
        Ok(approver) => approver,
        Err(page) => return *page,
    };
    let (request, _) = match visible(&api, approver, id) {
        Ok(found) => found,
        Err(error) => return error_page(&error),
    };
    let id = request.id();
    let form = match form_body(form) {
        Ok(form) => form,
        Err(error) => {
            return request_page(
                &visit.mount,
                approver,
                &request,
                Status::Pending,
                Some(&error),
            );
        }
    };
    let decided = match form.action.as_str() {
        "approve" => {
            let scope = form.scope.unwrap_or(Scope::Once);
            let ttl = form.ttl_secs.map(Duration::from_secs);
            api.approve(approver, id, form.code, scope, ttl)
                .await
                .map(|approval| approved(&visit.mount, &approval))
        }
        "deny" => {
            let decision = DenyBody {
                code: form.code,
                reason: form.reason,
                remember: None,
                ttl_secs: None,
            };
            api.deny(approver, id, decision)
                .await
                .map(|denial| denied(&visit.mount, &denial))
        }
        _ => Err(Error::new(ErrorKind::InvalidBody).with_detail("choose Approve or Deny")),
    };
    decided.unwrap_or_else(|error| {
        // Still pending (a wrong code, a scope too wide): the form again, with what went wrong.
        let status = api.gate.status(id).unwrap_or(Status::Pending);
        request_page(&visit.mount, approver, &request, status, Some(&error))
    })
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
        Err(error) if error.kind() == ErrorKind::Unauthenticated => {
            mount.sign_in_form(Some("That token is not known."))
        }
        Err(error) => error_page(&error),
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

/// Request `id`, if this approver may see it.
fn visible(
    api: &Shared,
    approver: &Approver,
    id: Result<Path<String>, PathRejection>,
) -> Result<(AccessRequest, Status), Error> {
    let id: RequestId = request_id(id)?;
    match api.gate.request(id) {
        Some((request, status)) if approver.may_see(&request) => Ok((request, status)),
        _ => Err(Error::new(ErrorKind::AccessRequestNotFound)),
    }
}

fn request_page(
    mount: &Mount,
    approver: &Approver,
    request: &AccessRequest,
    status: Status,
    problem: Option<&Error>,
) -> Response {
    let now = SystemTime::now();
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>May <span class=\"who\">{principal}</span> use <code>{capability}</code>?</h1>",
        principal = esc(request.principal()),
        capability = esc(request.capability()),
    );
    let status_code = problem.map_or(StatusCode::OK, |e| approver_status(e.kind()));
    if let Some(error) = problem {
        let _ = write!(
            body,
            "<p class=\"error\" role=\"alert\">{}</p>",
            esc(&in_words(error))
        );
    }
    body.push_str("<dl>");
    let mut row = |name: &str, value: &str| {
        let _ = write!(body, "<dt>{name}</dt><dd>{}</dd>", esc(value));
    };
    row("Principal", request.principal());
    row("Session", request.session().unwrap_or("none"));
    row("Reason given", request.reason().unwrap_or("none"));
    row("Why you are asked", request.reasoning());
    row("Request", &request.id().to_string());
    if status.is_pending() {
        row("Time left", &time_left(request, now));
    }
    body.push_str("</dl><h2>Arguments</h2>");
    let _ = write!(body, "<pre>{}</pre>", esc(&pretty_args(request)));
    if status.is_pending() {
        decision_form(&mut body, mount, approver, request);
    } else {
        let _ = write!(
            body,
            "<p class=\"outcome\" id=\"outcome\">This request is <strong>{status}</strong>: {}</p>",
            esc(settled(status))
        );
    }
    footer(&mut body, mount, approver);
    html(status_code, request.capability(), &body)
}

fn decision_form(body: &mut String, mount: &Mount, approver: &Approver, request: &AccessRequest) {
    let widest = request.max_scope().min(approver.widest_scope());
    let _ = write!(
        body,
        "<form method=\"post\" action=\"{prefix}/{id}\">\
         <label for=\"code\">Verification code</label>\
         <input id=\"code\" name=\"code\" required autocomplete=\"one-time-code\" autocapitalize=\"characters\" spellcheck=\"false\">\
         <fieldset><legend>Approve for</legend>",
        prefix = esc(&mount.prefix),
        id = request.id(),
    );
    for scope in Scope::ALL {
        if scope > widest || (scope == Scope::Session && request.session().is_none()) {
            continue;
        }
        let _ = write!(
            body,
            "<label class=\"choice\"><input type=\"radio\" name=\"scope\" id=\"scope-{scope}\" value=\"{scope}\"{checked}> {what}</label>",
            checked = if scope == Scope::Once { " checked" } else { "" },
            what = scope_text(scope),
        );
    }
    body.push_str("</fieldset>");
    if widest > Scope::Once {
        body.push_str(
            "<label for=\"ttl\">A wider approval lasts</label><select id=\"ttl\" name=\"ttl_secs\">",
        );
        for (secs, label) in ttl_choices(request.max_rule_ttl()) {
            let _ = write!(body, "<option value=\"{secs}\">{label}</option>");
        }
        body.push_str("</select>");
    }
    body.push_str(
        "<button id=\"approve\" class=\"approve\" type=\"submit\" name=\"action\" value=\"approve\">Approve</button>\
         <label for=\"reason\">Reason for denying (told to the caller)</label>\
         <textarea id=\"reason\" name=\"reason\" rows=\"2\"></textarea>\
         <button id=\"deny\" class=\"deny\" type=\"submit\" name=\"action\" value=\"deny\">Deny</button>\
         </form>",
    );
}

fn approved(mount: &Mount, approval: &Approval) -> Response {
    let request = approval.request();
    let mut outcome = format!(
        "The call <code>{}</code> from {} is running.",
        esc(request.capability()),
        esc(request.principal()),
    );
    let covered = match approval.scope() {
        Scope::Once => String::new(), // no rule
        Scope::Value => "The same call with the same arguments passes".into(),
        Scope::Session => "Its calls in this session pass".into(),
        Scope::Capability => format!("Its calls from {} pass", esc(request.principal())),
        Scope::Global => "Its calls from everyone pass".into(),
    };
    match approval.rule() {
        Some(rule) => {
            let until = rfc3339(rule.expires_at());
            let _ = write!(outcome, " {covered} without asking until {until}.");
        }
        None => outcome.push_str(" Only this call was approved."),
    }
    decided_page(mount, "Approved", &outcome)
}

fn denied(mount: &Mount, denial: &Denial) -> Response {
    let request = denial.request();
    let outcome = format!(
        "The call <code>{}</code> from {} was denied and did not run.",
        esc(request.capability()),
        esc(request.principal()),
    );
    decided_page(mount, "Denied", &outcome)
}

/// The page after a decision: what happened, in HTML already escaped, and the way back.
fn decided_page(mount: &Mount, title: &str, outcome: &str) -> Response {
    let body = format!(
        "<h1>{title}</h1><p class=\"outcome\" id=\"outcome\">{outcome}</p>\
         <p><a href=\"{}\">Back to the list</a></p>",
        esc(mount.home())
    );
    html(StatusCode::OK, title, &body)
}

fn error_page(error: &Error) -> Response {
    let body = format!(
        "<h1>{}</h1><p class=\"error\" role=\"alert\">{}</p>",
        match error.kind() {
            ErrorKind::AccessRequestNotFound => "No such request",
            _ => "Something went wrong",
        },
        esc(&in_words(error)),
    );
    html(approver_status(error.kind()), "tollgate", &body)
}

/// The error in words, with its code: never a verification code.
fn in_words(error: &Error) -> String {
    match error.kind() {
        ErrorKind::AccessRequestNotFound => {
            "That code does not match this request, or the request is unknown. (access_request_not_found)"
                .into()
        }
        _ => error.to_string(),
    }
}

fn footer(body: &mut String, mount: &Mount, approver: &Approver) {
    let _ = write!(
        body,
        "<footer><form method=\"post\" action=\"{prefix}/sign-out\">Signed in as <strong id=\"approver\">{name}</strong>. \
         <a href=\"{home}\">All pending</a> <button class=\"link\" type=\"submit\">Sign out</button></form></footer>",
        prefix = esc(&mount.prefix),
        name = esc(approver.name()),
        home = esc(mount.home()),
    );
}

fn scope_text(scope: Scope) -> &'static str {
    match scope {
        Scope::Once => "Just this call",
        Scope::Value => "The same call with the same arguments",
        Scope::Session => "Any arguments, in this session",
        Scope::Capability => "Any arguments, from this principal",
        Scope::Global => "Any arguments, from everyone",
    }
}

fn settled(status: Status) -> &'static str {
    match status {
        Status::Approved | Status::Executing => "it was approved and runs",
        Status::Executed => "it was approved and ran",
        Status::Failed => "it did not complete",
        Status::Denied => "it was denied and did not run",
        Status::Expired => "nobody decided in time; the call did not run",
        Status::Cancelled => "the caller went away; the call did not run",
        Status::Abandoned => "the gate stopped before a decision; the call did not run",
        _ => "it can no longer be decided",
    }
}

/// The rule lengths offered, shortest first, up to what the request allows.
fn ttl_choices(max: Duration) -> Vec<(u64, String)> {
    const CHOICES: [u64; 6] = [15 * 60, 3600, 8 * 3600, 86_400, 7 * 86_400, 30 * 86_400];
    let max_secs = max.as_secs();
    let mut choices: Vec<(u64, String)> = CHOICES
        .into_iter()
        .filter(|&secs| secs < max_secs)
        .map(|secs| (secs, human_duration(Duration::from_secs(secs))))
        .collect();
    let longest = if max_secs >= 100 * 365 * 86_400 {
        "no limit".to_owned()
    } else {
        human_duration(max)
    };
    choices.push((max_secs, longest));
    choices
}

fn time_left(request: &AccessRequest, now: SystemTime) -> String {
    match request.expires_at().duration_since(now) {
        Ok(left) => format!(
            "{} left (until {})",
            human_duration(left),
            rfc3339(request.expires_at())
        ),
        Err(_) => "expiring now".into(),
    }
}

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    Escape::Html.write(text, &mut out);
    out
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
.error{background:#fdecea;padding:.5rem;border-radius:4px}.outcome{background:#eef6ee;padding:.5rem;border-radius:4px}\
.meta{color:#555}footer{margin-top:2rem;color:#555;font-size:.9rem}";

/// A whole page, with the headers that keep it out of caches, frames and other sites' hands.
fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} · tollgate</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    );
    let mut response = (status, page).into_response();
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
