//! What the page says when something went wrong: a sentence for the person deciding, and the
//! stable code, small, for whoever they ask for help. Never a verification code.

use std::borrow::Cow;

use axum::response::{IntoResponse, Response};
use http::header::ACCEPT;
use http::{HeaderMap, StatusCode};
use maud::{Markup, html};

use super::error::{Answer, ApiErrorKind, unexplained};
use super::html::{layout, shown};
use crate::error::ErrorKind;

/// What the person was doing when it went wrong: opening a page, or sending a decision.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Asked {
    Page,
    Decision,
}

/// A problem as the page shows it.
#[derive(Debug)]
pub(super) struct Problem {
    status: StatusCode,
    words: Cow<'static, str>,
    code: &'static str,
    missing: bool,
}

impl Problem {
    /// `answer` in words, for what the person `asked`.
    pub(super) fn of(answer: &Answer, asked: Asked) -> Problem {
        let (words, detail, missing) = match answer {
            Answer::Gate(error) => {
                let kind = error.kind();
                let missing = kind == ErrorKind::AccessRequestNotFound;
                (
                    gate_words(kind, asked),
                    shows_detail(kind).then(|| error.detail()).flatten(),
                    missing,
                )
            }
            Answer::Api(kind, _) => (api_words(*kind), None, false),
        };
        let words = match detail {
            Some(detail) => Cow::Owned(format!("{words} Details: {detail}.")),
            None => Cow::Borrowed(words),
        };
        Problem {
            status: answer.status(),
            words,
            code: answer.code(),
            missing,
        }
    }

    /// A problem the page finds itself, before asking the gate.
    pub(super) fn new(status: StatusCode, words: &'static str, code: &'static str) -> Problem {
        Problem {
            status,
            words: Cow::Borrowed(words),
            code,
            missing: false,
        }
    }

    pub(super) fn status(&self) -> StatusCode {
        self.status
    }

    /// The heading of a page that shows only this problem.
    fn title(&self, asked: Asked) -> &'static str {
        match (self.missing, asked) {
            (true, Asked::Page) => "Request not found",
            (true, Asked::Decision) => "Not accepted",
            (false, _) => "Something went wrong",
        }
    }

    /// A page that shows only this problem, then `footer`.
    pub(super) fn page(&self, asked: Asked, footer: Markup) -> Response {
        let title = self.title(asked);
        let body = html! {
            h1 { (title) }
            (self.markup())
            (footer)
        };
        layout(self.status, title, body)
    }

    /// The sentence, then its code, small.
    pub(super) fn markup(&self) -> Markup {
        html! {
            p.error role="alert" {
                (shown(&self.words)) " "
                small.error-code title="The error's code, for support" { (self.code) }
            }
        }
    }
}

/// Gives answers made outside the routes the form every route's answers have: for a browser,
/// which asks for HTML, a page in words (a form sent from another site, a body too large, a
/// timeout); for everyone else the JSON error. The status is kept.
pub(super) async fn explain(headers: HeaderMap, response: Response) -> Response {
    let Some(answer) = unexplained(&response) else {
        return response;
    };
    let browser = headers
        .get(ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    let mut explained = if browser {
        Problem::of(&answer, Asked::Page).page(Asked::Page, html! {})
    } else {
        answer.into_response()
    };
    *explained.status_mut() = response.status();
    explained
}

/// Kinds whose detail tells the person something they can act on: which scope or length, why
/// the policy refused edited arguments, where the JSON they typed is wrong.
fn shows_detail(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ScopeNotAllowed
            | ErrorKind::EditNotAllowed
            | ErrorKind::EditUnsupported
            | ErrorKind::InvalidArguments
    )
}

fn gate_words(kind: ErrorKind, asked: Asked) -> &'static str {
    match kind {
        // A wrong code and an unknown id read alike: the code is a bearer secret, and a decision
        // must not tell which of the two was wrong.
        ErrorKind::AccessRequestNotFound if asked == Asked::Decision => {
            "That code does not match this request, or the request is not known here. Check the code in the alert about this request and type it again; too many wrong codes deny the request."
        }
        // Opening a page shows no code, so saying there is no such request gives nothing away;
        // a request this approver may not decide reads the same.
        ErrorKind::AccessRequestNotFound => {
            "No request at this address is waiting for you. Check the address against the link in the alert: it may be mistyped or cut short. Requests you may not decide are not shown here, and one that ended long ago may no longer be kept."
        }
        ErrorKind::AccessRequestDenied => "This request was denied; the call did not run.",
        ErrorKind::AccessRequestExpired => {
            "Too late: nobody decided before this request expired, so the call did not run, and it can no longer be approved or denied. If the call is still needed, its caller can ask again."
        }
        ErrorKind::AccessRequestCancelled => {
            "Too late: the caller stopped waiting before a decision reached it, so the call did not run, and the request can no longer be approved or denied."
        }
        ErrorKind::AccessRequestAbandoned => {
            "Too late: the service holding this request stopped before it was decided, so the call did not run, and the request can no longer be approved or denied."
        }
        ErrorKind::AlreadyResolved => {
            "This request was already decided, by you or by another approver; your decision changed nothing. Its outcome is shown below."
        }
        ErrorKind::AlreadyApproved => {
            "You have already approved this request. It is waiting for its other approvers."
        }
        ErrorKind::TooManyAttempts => {
            "Too many wrong codes were typed for this request, so it was denied and the call did not run."
        }
        ErrorKind::ScopeNotAllowed => {
            "This request does not allow an approval that wide or that long. Choose a narrower scope or a shorter time; the request is still waiting."
        }
        ErrorKind::EditNotAllowed => {
            "The arguments as you changed them cannot be approved. The request is still waiting: approve it as asked, change the arguments again, or deny it."
        }
        ErrorKind::EditUnsupported => {
            "This call cannot run with changed arguments. The request is still waiting: approve it as asked, or deny it."
        }
        ErrorKind::InvalidArguments => {
            "The arguments you typed are not valid JSON, or hold a number too large to keep exactly. Correct them and try again; the request is still waiting."
        }
        ErrorKind::ApproverNotAllowed => {
            "Your approver rights do not cover this; nothing was changed."
        }
        ErrorKind::MissingApprover => {
            "The page could not tell who you are, so nothing was decided. Sign in again and retry."
        }
        ErrorKind::BodyTooLarge => {
            "What you sent was too large for the page to read. Shorten the arguments or the reason and try again."
        }
        ErrorKind::StoreFailed => {
            "The gate could not read or write its records just now, so nothing was decided. Try again in a moment."
        }
        ErrorKind::StoreUnreadable => {
            "The gate's records are in a form this version cannot read, so nothing was decided. Tell whoever runs this service."
        }
        ErrorKind::ShutDown => {
            "The gate is shutting down, so nothing was decided. Try again once it is back."
        }
        ErrorKind::WaitTimedOut => "No decision yet: the request is still waiting.",
        // The caller's and the operator's errors: a page seldom meets them, and then only as
        // a service that is not working.
        ErrorKind::ServiceFailed
        | ErrorKind::ReasonRequired
        | ErrorKind::TooManyPending
        | ErrorKind::TooManyAlerts
        | ErrorKind::NotificationFailed
        | ErrorKind::InvalidConfig
        | ErrorKind::ConfigUnreadable
        | ErrorKind::MissingSecret
        | ErrorKind::NoRuntime => {
            "The service behind this page is not working as it should, so nothing was decided. Tell whoever runs it, with the code below."
        }
    }
}

fn api_words(kind: ApiErrorKind) -> &'static str {
    match kind {
        ApiErrorKind::Unauthenticated => {
            "You are not signed in, or your sign-in has ended. Sign in and try again."
        }
        ApiErrorKind::RateLimited => {
            "You sent many decisions in a short time, so this one was not taken. Wait a minute and try again; the request is still waiting."
        }
        ApiErrorKind::InvalidBody => {
            "The form arrived incomplete, or with a choice the page does not offer. Reload the page and try again."
        }
        ApiErrorKind::UnknownRoute => {
            "There is no page at this address. Check it against the link in the alert."
        }
        ApiErrorKind::MethodNotAllowed => {
            "This address cannot be used that way. Open it from the link in the alert."
        }
        ApiErrorKind::CrossSiteRequest => {
            "The form was sent from another site, so it was refused and nothing was decided. Open the request from the link in the alert and decide there."
        }
        ApiErrorKind::RequestTimedOut => {
            "The gate took too long to answer. Your decision may still have been recorded: reload the page to see where the request stands."
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn answers() -> Vec<Answer> {
        let mut answers: Vec<Answer> = ErrorKind::ALL
            .iter()
            .map(|&kind| Error::new(kind).into())
            .collect();
        answers.extend(ApiErrorKind::ALL.iter().map(|&kind| Answer::from(kind)));
        answers
    }

    #[test]
    fn every_error_reads_as_a_sentence_for_a_person_with_its_code_apart() {
        for answer in answers() {
            for asked in [Asked::Page, Asked::Decision] {
                let problem = Problem::of(&answer, asked);
                let words = &problem.words;
                let code = answer.code();
                assert!(
                    !words.contains(code),
                    "{code}: the code stands apart: {words}"
                );
                assert!(!words.contains('`'), "{code}: no developer text: {words}");
                assert!(!words.contains("access request"), "{code}: {words}");
                assert!(words.starts_with(char::is_uppercase), "{code}: {words}");
                assert!(words.ends_with('.'), "{code}: {words}");
                let shown = problem.markup().into_string();
                assert!(shown.contains(&format!(">{code}</small>")), "{shown}");
            }
        }
    }

    #[test]
    fn a_decision_does_not_tell_a_wrong_code_from_an_unknown_request_and_a_page_says_not_found() {
        let missing = Answer::from(Error::new(ErrorKind::AccessRequestNotFound));
        let decision = Problem::of(&missing, Asked::Decision);
        assert!(decision.words.contains("code does not match"));
        assert!(decision.words.contains("or the request is not known"));
        assert_eq!(decision.status(), StatusCode::NOT_FOUND);
        let page = Problem::of(&missing, Asked::Page);
        assert_eq!(page.title(Asked::Page), "Request not found");
        assert!(!page.words.contains("code"), "{}", page.words);
        // A detail (set for another process's request) is never shown for it.
        let held = Error::new(ErrorKind::AccessRequestNotFound)
            .with_detail("another process holds this request");
        let held = Problem::of(&held.into(), Asked::Decision);
        assert_eq!(held.words, decision.words);
    }

    #[test]
    fn a_refused_edit_says_why() {
        let refused = Error::new(ErrorKind::EditNotAllowed).with_detail(
            "the policy denies the edited call: refunds over 1,000 go through finance",
        );
        let problem = Problem::of(&refused.into(), Asked::Decision);
        assert!(problem.words.ends_with(
            "Details: the policy denies the edited call: refunds over 1,000 go through finance."
        ));
    }
}
