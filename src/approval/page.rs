//! The approval page's routes: the list of pending requests, a request's page, and the decision
//! its form sends. Plain server-rendered HTML, one inline style sheet, no JavaScript.
//!
//! Only a `POST` decides, so mail scanners that open links decide nothing. Forms from other sites
//! are refused by the router's cross-site check, the sign-in cookie is `SameSite=Strict`, and the
//! page may not be framed.
//!
//! Pages are [`maud`] templates: text is escaped as it goes in, and whatever a caller or an
//! approver chose goes through `shown` (in `html.rs`) first, so hidden characters are visible
//! too. The form is in `form.rs`, how a request ended in `outcome.rs`, times in `clock.rs`, and
//! what went wrong in `words.rs`.

use std::convert::Infallible;
use std::time::SystemTime;

use axum::Form;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{FromRequestParts, Path, State};
use axum::response::Response;
use http::StatusCode;
use http::request::Parts;
use maud::{Markup, html};

use super::Shared;
use super::api::{DenyBody, form_body, request_id};
use super::approvers::Approver;
use super::clock::{how_long, when};
use super::error::{Answer, ApiErrorKind};
use super::form::{DecisionForm, decision_form};
use super::html::{layout, shown};
use super::outcome::{Ending, approved, denied, heading};
use super::sign_in::Mount;
use super::words::{Asked, Problem};
use crate::error::{Error, ErrorKind};
use crate::gate::already;
use crate::request::{AccessRequest, RequestId, Status};
use crate::text::pretty_args;

/// Who is looking, on which page.
pub(super) struct Visit {
    mount: Mount,
    approver: Result<Approver, Answer>,
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
            Err(answer) if answer.is(ApiErrorKind::Unauthenticated) => {
                Err(Box::new(self.mount.sign_in_form(None)))
            }
            Err(answer) => {
                let problem = Problem::of(answer, Asked::Page);
                Err(Box::new(problem.page(Asked::Page, html! {})))
            }
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
    let pending = match api.gate.pending_anywhere().await {
        Ok(pending) => pending,
        Err(error) => {
            let problem = Problem::of(&error.into(), Asked::Page);
            return problem.page(Asked::Page, footer(&visit.mount, approver));
        }
    };
    let pending: Vec<AccessRequest> = pending
        .into_iter()
        .filter(|request| approver.may_see(request))
        .collect();
    let prefix = shown(&visit.mount.prefix);
    // Enough of each to tell two calls of one capability apart: arguments, reason and age.
    let body = html! {
        h1 { "Waiting for you" }
        @if pending.is_empty() {
            p { "Nothing is waiting for a decision." }
        } @else {
            ul.requests {
                @for request in &pending {
                    li.request {
                        a href={ (prefix) "/" (request.id()) } { code { (shown(request.capability())) } }
                        p.meta {
                            "from " span.who { (shown(request.principal())) }
                            " · asked " (how_long(request.created_at(), now))
                            " · expires " (how_long(request.expires_at(), now))
                        }
                        p.args { code { (shown(&summary(request))) } }
                        @if let Some(reason) = request.reason() {
                            p.reason { "Reason: " (shown(reason)) }
                        }
                    }
                }
            }
        }
        (footer(&visit.mount, approver))
    };
    layout(StatusCode::OK, "Pending requests", body)
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
    match visible(&api, approver, id).await {
        Ok((request, status)) => request_page(&api, &visit.mount, approver, &request, status, None),
        Err(answer) => {
            let problem = Problem::of(&answer, Asked::Page);
            problem.page(Asked::Page, footer(&visit.mount, approver))
        }
    }
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
    let mount = &visit.mount;
    let (request, status) = match visible(&api, approver, id).await {
        Ok(found) => found,
        Err(answer) => {
            let problem = Problem::of(&answer, Asked::Decision);
            return problem.page(Asked::Decision, footer(mount, approver));
        }
    };
    let id = request.id();
    // Ended: said so whatever was typed. This approver sees the status on the page anyway, so
    // nothing about the code is told, and the gate is not asked.
    if let Some(ended) = ended(status, id) {
        let problem = Problem::of(&ended, Asked::Decision);
        return request_page(&api, mount, approver, &request, status, Some(&problem));
    }
    let form = match form_body(form) {
        Ok(form) if form.code.trim().is_empty() => {
            let problem = Problem::new(
                StatusCode::BAD_REQUEST,
                "Type the verification code from the alert first: approving and denying both need it.",
                ApiErrorKind::InvalidBody.code(),
            );
            return request_page(&api, mount, approver, &request, status, Some(&problem));
        }
        Ok(form) => form,
        Err(answer) => {
            let problem = Problem::of(&answer, Asked::Decision);
            return request_page(&api, mount, approver, &request, status, Some(&problem));
        }
    };
    let decided = match form.action.as_str() {
        "approve" => {
            let (scope, ends) = (form.scope(), form.ends());
            // Parsed strictly by the gate, once the code is verified.
            let edit = form.args.map(String::into_boxed_str);
            api.approve(approver, id, form.code, scope, ends, edit)
                .await
                .map(|approval| approved(&visit.mount, &approval))
        }
        "deny" => {
            let decision = DenyBody {
                code: form.code,
                reason: form.reason,
                remember: None,
                ttl_secs: None,
                until_ms: None,
            };
            api.deny(approver, id, decision)
                .await
                .map(|denial| denied(&visit.mount, &denial))
        }
        _ => Err(Answer::api(
            ApiErrorKind::InvalidBody,
            "choose Approve or Deny",
        )),
    };
    match decided {
        Ok(page) => page,
        Err(answer) => {
            // Still pending (a wrong code, a scope too wide): the form again, with what went
            // wrong.
            let status = match api.gate.status(id) {
                Ok(status) => status,
                Err(_) => api
                    .gate
                    .lookup(id)
                    .await
                    .map_or(Status::Pending, |(_, s)| s),
            };
            // Ended meanwhile: what ended it, rather than a code that no longer matters.
            let answer = match (ended(status, id), answer) {
                (Some(ended), Answer::Gate(error))
                    if error.kind() == ErrorKind::AccessRequestNotFound =>
                {
                    ended
                }
                (_, answer) => answer,
            };
            let problem = Problem::of(&answer, Asked::Decision);
            request_page(&api, mount, approver, &request, status, Some(&problem))
        }
    }
}

/// What a decision on a request that has ended with `status` hears, as the gate answers one
/// made with the right code; `None` while it is pending.
fn ended(status: Status, id: RequestId) -> Option<Answer> {
    (!status.is_pending()).then(|| already(status, id).into())
}

/// Request `id`, if this approver may see it.
async fn visible(
    api: &Shared,
    approver: &Approver,
    id: Result<Path<String>, PathRejection>,
) -> Result<(AccessRequest, Status), Answer> {
    let id = request_id(id)?;
    match api.gate.lookup(id).await {
        Ok((request, status)) if approver.may_see(&request) => Ok((request, status)),
        Err(error) if error.kind() == ErrorKind::StoreFailed => Err(error.into()),
        _ => Err(Error::new(ErrorKind::AccessRequestNotFound).into()),
    }
}

fn request_page(
    api: &Shared,
    mount: &Mount,
    approver: &Approver,
    request: &AccessRequest,
    status: Status,
    problem: Option<&Problem>,
) -> Response {
    let approved_by = api.gate.approved_by(request.id());
    let now = SystemTime::now();
    let status_code = problem.map_or(StatusCode::OK, Problem::status);
    let text = |text: &str| html! { (shown(text)) };
    let mut rows = vec![
        ("Principal", text(request.principal())),
        ("Session", text(request.session().unwrap_or("none"))),
        ("Reason given", text(request.reason().unwrap_or("none"))),
        ("Why you are asked", text(request.reasoning())),
        ("Asked", when(request.created_at(), now)),
    ];
    if status.is_pending() {
        rows.push(("Expires", when(request.expires_at(), now)));
    }
    rows.push(("Request", html! { code.id { (request.id()) } }));
    if request.quorum() > 1 {
        let named = request.approvers().unwrap_or_default().join(", ");
        rows.push((
            "Approvers needed",
            text(&format!("{} of {named}", request.quorum())),
        ));
        if status.is_pending() {
            let so_far = match &approved_by[..] {
                [] => "nobody yet".to_owned(),
                names => names.join(", "),
            };
            rows.push(("Approved so far", text(&so_far)));
        }
    }
    let ending = Ending::of(status);
    let body = html! {
        @if let Some(ending) = &ending {
            (heading(ending.word, request))
        } @else {
            h1 {
                "May " span.who { (shown(request.principal())) } " use "
                code { (shown(request.capability())) } "?"
            }
        }
        @if let Some(problem) = problem {
            (problem.markup())
        }
        @if let Some(ending) = &ending {
            (ending.markup())
        }
        dl {
            @for (name, value) in &rows {
                dt { (name) }
                dd { (value) }
            }
        }
        h2 { "Arguments" }
        pre { (shown(&pretty_args(request))) }
        @if ending.is_none() {
            (decision_form(mount, approver, request))
        }
        (footer(mount, approver))
    };
    let title = match &ending {
        Some(ending) => format!("{}: {}", ending.word, request.capability()),
        None => request.capability().to_owned(),
    };
    layout(status_code, &title, body)
}

fn footer(mount: &Mount, approver: &Approver) -> Markup {
    html! {
        footer {
            form method="post" action={ (shown(&mount.prefix)) "/sign-out" } {
                "Signed in as " strong #approver { (shown(approver.name())) } ". "
                a href=(shown(mount.home())) { "All pending" } " "
                button.link type="submit" { "Sign out" }
            }
        }
    }
}

/// The arguments on one line, cut short: a list shows many requests.
fn summary(request: &AccessRequest) -> String {
    const LONGEST: usize = 120;
    let args = request.args_json();
    match args.char_indices().nth(LONGEST) {
        Some((cut, _)) => format!("{}…", &args[..cut]),
        None => args.to_owned(),
    }
}
