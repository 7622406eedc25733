//! How a request stands once it is no longer waiting, as the page shows it: a heading that
//! starts with what happened, and a box coloured by it (approved green, denied red, ended
//! without a decision grey, failed amber), after a decision and whenever the page is opened again.

use std::time::SystemTime;

use axum::response::Response;
use http::StatusCode;
use maud::{Markup, html};

use super::clock::until;
use super::html::{layout, shown};
use super::sign_in::Mount;
use crate::gate::{Approval, Denial};
use crate::request::{AccessRequest, Status};
use crate::scope::Scope;

/// What happened, as the outcome box's class and colour say it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Tone {
    /// Approved: the call runs or ran.
    Approved,
    /// Denied: the call did not run.
    Denied,
    /// Nobody decided (expired, cancelled, abandoned): the call did not run.
    Ended,
    /// Approved, or meant to be asked, but the call did not complete.
    Failed,
    /// One approval of several counted; the request still waits.
    Counted,
}

impl Tone {
    fn class(self) -> &'static str {
        match self {
            Tone::Approved => "approved",
            Tone::Denied => "denied",
            Tone::Ended => "ended",
            Tone::Failed => "failed",
            Tone::Counted => "counted",
        }
    }
}

/// How a request that is no longer pending stands.
#[derive(Debug)]
pub(super) struct Ending {
    /// The word its heading starts with: `Approved`, `Denied`, `Expired`, …
    pub(super) word: &'static str,
    tone: Tone,
    /// What that means for the call, in a sentence.
    meaning: &'static str,
}

impl Ending {
    /// How a request with `status` stands; `None` while it is pending.
    pub(super) fn of(status: Status) -> Option<Ending> {
        let (word, tone, meaning) = match status {
            Status::Pending => return None,
            Status::Approved => (
                "Approved",
                Tone::Approved,
                "This request was approved; the call runs as soon as its caller takes the approval.",
            ),
            Status::Executing => (
                "Approved",
                Tone::Approved,
                "This request was approved, and the call is running.",
            ),
            Status::Executed => (
                "Approved",
                Tone::Approved,
                "This request was approved, and the call ran.",
            ),
            Status::Failed => (
                "Failed",
                Tone::Failed,
                "This request did not complete: the service behind the gate failed, no approver could be notified, or the caller went away while the call ran.",
            ),
            Status::Denied => (
                "Denied",
                Tone::Denied,
                "This request was denied, and the call did not run.",
            ),
            Status::Expired => (
                "Expired",
                Tone::Ended,
                "This request expired: nobody decided in time, so the call did not run.",
            ),
            Status::Cancelled => (
                "Cancelled",
                Tone::Ended,
                "This request was cancelled: its caller stopped waiting before a decision reached it, so the call did not run.",
            ),
            Status::Abandoned => (
                "Abandoned",
                Tone::Ended,
                "This request was abandoned: the service holding it stopped before a decision, so the call did not run.",
            ),
        };
        Some(Ending {
            word,
            tone,
            meaning,
        })
    }

    /// The box saying what the request's status means.
    pub(super) fn markup(&self) -> Markup {
        outcome_box(self.tone, html! { (self.meaning) })
    }
}

/// `{word}: payments.refund from agent-7`, the heading of a request that is no longer asking.
pub(super) fn heading(word: &str, request: &AccessRequest) -> Markup {
    html! {
        h1 {
            (word) ": " code { (shown(request.capability())) } " from "
            span.who { (shown(request.principal())) }
        }
    }
}

/// The outcome box, coloured by `tone`.
fn outcome_box(tone: Tone, content: Markup) -> Markup {
    html! { p #outcome class={ "outcome " (tone.class()) } { (content) } }
}

/// The page after an approval from the form.
pub(super) fn approved(mount: &Mount, approval: &Approval) -> Response {
    let request = approval.request();
    if approval.outstanding() > 0 {
        let outcome = html! {
            "Your approval of " code { (shown(request.capability())) } " from "
            (shown(request.principal())) " is counted. The call runs once "
            (approval.outstanding()) " more of its approvers approve."
        };
        return decided_page(mount, request, ("Approval counted", Tone::Counted), outcome);
    }
    let principal = shown(request.principal());
    let covered = match approval.scope() {
        Scope::Once => html! {}, // no rule
        Scope::Value => html! { "The same call with the same arguments passes" },
        Scope::Session => html! { "Its calls in this session pass" },
        Scope::Capability => html! { "Its calls from " (principal) " pass" },
        Scope::Global => html! { "Its calls from everyone pass" },
    };
    let outcome = html! {
        "The call " code { (shown(request.capability())) } " from " (principal) " is running"
        @if approval.edit().is_some() { " with the arguments you edited" }
        "."
        @match approval.rule() {
            Some(rule) => {
                " " (covered) " without asking until " (until(rule.expires_at(), SystemTime::now())) "."
            }
            None => { " Only this call was approved." }
        }
    };
    decided_page(mount, request, ("Approved", Tone::Approved), outcome)
}

/// The page after a denial from the form.
pub(super) fn denied(mount: &Mount, denial: &Denial) -> Response {
    let request = denial.request();
    let outcome = html! {
        "The call " code { (shown(request.capability())) } " from " (shown(request.principal()))
        " was denied and did not run."
    };
    decided_page(mount, request, ("Denied", Tone::Denied), outcome)
}

/// The page after a decision: what happened, and the way back.
fn decided_page(
    mount: &Mount,
    request: &AccessRequest,
    (word, tone): (&str, Tone),
    outcome: Markup,
) -> Response {
    let body = html! {
        (heading(word, request))
        (outcome_box(tone, outcome))
        p { a href=(shown(mount.home())) { "Back to the list" } }
    };
    let title = format!("{word}: {}", request.capability());
    layout(StatusCode::OK, &title, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_but_pending_has_a_heading_word_and_a_colour_by_what_happened() {
        for &status in Status::ALL {
            let Some(ending) = Ending::of(status) else {
                assert_eq!(status, Status::Pending);
                continue;
            };
            let expected = match status {
                Status::Approved | Status::Executing | Status::Executed => Tone::Approved,
                Status::Denied => Tone::Denied,
                Status::Failed => Tone::Failed,
                _ => Tone::Ended,
            };
            assert_eq!(ending.tone, expected, "{status}");
            assert!(ending.meaning.starts_with("This request "), "{status}");
            let class = format!("outcome {}", expected.class());
            assert!(ending.markup().into_string().contains(&class), "{status}");
        }
    }
}
