//! The decision form: the code and where it comes from, the scopes this approver may grant, how
//! long a wider approval lasts (shown only for one), the arguments to edit, and Deny with why it
//! needs the code too. What the form sends is read here as well.

use std::fmt::Write as _;
use std::time::Duration;

use maud::{Markup, html};
use serde::Deserialize;

use super::approvers::Approver;
use super::clock::spoken;
use super::html::shown;
use super::sign_in::Mount;
use crate::gate::Ends;
use crate::request::AccessRequest;
use crate::scope::Scope;
use crate::text::{hidden, value_covers};

/// What the decision form sends.
#[derive(Deserialize)]
pub(super) struct DecisionForm {
    pub(super) code: String,
    pub(super) action: String,
    scope: Option<Scope>,
    ttl_secs: Option<u64>,
    pub(super) reason: Option<String>,
    /// The arguments as the approver left them, on an editable request.
    pub(super) args: Option<String>,
}

impl DecisionForm {
    /// The scope to approve for; `once` unless another was chosen.
    pub(super) fn scope(&self) -> Scope {
        self.scope.unwrap_or(Scope::Once)
    }

    /// When the approval's rule ends. A `once` approval makes no rule, so the length is
    /// ignored: the field is only hidden for it, and a hidden field is still sent.
    pub(super) fn ends(&self) -> Option<Ends> {
        match self.scope() {
            Scope::Once => None,
            _ => self
                .ttl_secs
                .map(|secs| Ends::After(Duration::from_secs(secs))),
        }
    }
}

/// The form deciding `request`, for `approver`.
pub(super) fn decision_form(mount: &Mount, approver: &Approver, request: &AccessRequest) -> Markup {
    let widest = request.max_scope().min(approver.widest_scope());
    let offered = Scope::ALL.iter().copied().filter(|&scope| {
        scope <= widest && (scope != Scope::Session || request.session().is_some())
    });
    html! {
        form.decide method="post" action={ (shown(&mount.prefix)) "/" (request.id()) } {
            label for="code" { "Verification code" }
            p.hint #code-hint {
                "Find it in the alert about this request: the terminal, email, chat or other "
                "message that brought you here."
                @if request.quorum() > 1 { " Each approver has a code of their own: type yours." }
                " Approving and denying both need it."
            }
            input #code name="code" required autocomplete="one-time-code"
                autocapitalize="characters" spellcheck="false" aria-describedby="code-hint";
            fieldset {
                legend { "Approve for" }
                @for scope in offered {
                    label.choice {
                        input type="radio" name="scope" id={ "scope-" (scope) } value=(scope)
                            checked[scope == Scope::Once];
                        " " @if scope == Scope::Value && request.key_fields().is_some() {
                            (shown(&capitalized(&value_covers(request))))
                        } @else {
                            (scope_text(scope))
                        }
                    }
                }
            }
            @if widest > Scope::Once {
                // Hidden by the style sheet while "Just this call" is chosen: no script runs here.
                div #ttl-choice .ttl {
                    label for="ttl" { "Later calls pass without asking for" }
                    select #ttl name="ttl_secs" {
                        @for (secs, label) in ttl_choices(request.max_rule_ttl()) {
                            option value=(secs) { (label) }
                        }
                    }
                }
            }
            @if request.editable() {
                label for="args" { "Arguments to approve (change them to run the call differently)" }
                textarea #args name="args" rows="6" spellcheck="false" { (editable_args(request)) }
            }
            button #approve .approve type="submit" name="action" value="approve" { "Approve" }
            h2 { "Or deny it" }
            p.hint #deny-hint {
                "Denying needs the code too: it shows the decision comes from someone who saw "
                "this alert, about this very request. The call does not run, and its caller is "
                "told, with your reason if you give one."
            }
            label for="reason" { "Reason for denying (told to the caller)" }
            textarea #reason name="reason" rows="2" aria-describedby="deny-hint" {}
            button #deny .deny type="submit" name="action" value="deny" { "Deny" }
        }
    }
}

/// `text` with its first letter upper case.
fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
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

/// The rule lengths offered, shortest first, up to what the request allows.
fn ttl_choices(max: Duration) -> Vec<(u64, String)> {
    const CHOICES: [u64; 6] = [15 * 60, 3600, 8 * 3600, 86_400, 7 * 86_400, 30 * 86_400];
    let max_secs = max.as_secs();
    let mut choices: Vec<(u64, String)> = CHOICES
        .into_iter()
        .filter(|&secs| secs < max_secs)
        .map(|secs| (secs, spoken(Duration::from_secs(secs))))
        .collect();
    let longest = if max_secs >= 100 * 365 * 86_400 {
        "no limit".to_owned()
    } else {
        spoken(max)
    };
    choices.push((max_secs, longest));
    choices
}

/// The arguments as pretty JSON an approver can edit and send back: characters that
/// [`visible`](crate::notify::visible) would escape are written as JSON escapes (`\u202e`),
/// which show what they are and parse back to the same arguments. (serde_json escapes the C0
/// controls itself; the rest can only stand inside strings.)
fn editable_args(request: &AccessRequest) -> String {
    let pretty = serde_json::to_string_pretty(&request.args())
        .unwrap_or_else(|_| request.args_json().into());
    let mut shown = String::with_capacity(pretty.len());
    for c in pretty.chars() {
        if c != '\n' && hidden(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(shown, "\\u{unit:04x}");
            }
        } else {
            shown.push(c);
        }
    }
    shown
}
