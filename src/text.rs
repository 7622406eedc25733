//! Text shared by notifiers and the approval page: arguments, outcomes, and caller text made
//! safe to show a person.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::request::{AccessRequest, Outcome};
use crate::time::rfc3339;

/// The arguments as indented JSON, with what JSON escaping leaves raw (DEL, C1 controls,
/// bidirectional overrides) shown escaped. Its line breaks are the printer's own: JSON escapes
/// every line break inside a string.
pub(crate) fn pretty_args(request: &AccessRequest) -> String {
    let pretty = serde_json::to_string_pretty(&request.args())
        .unwrap_or_else(|_| request.args_json().into());
    match visible_lines(&pretty) {
        Cow::Borrowed(_) => pretty,
        Cow::Owned(shown) => shown,
    }
}

/// Caller text as one line a person can safely read: every control character and line or
/// paragraph separator (line breaks included), DEL, C1 controls, the bidirectional overrides,
/// isolates and marks, and the characters that show as nothing (zero-width spaces and joiners,
/// the byte order mark, tags, variation selectors) are shown escaped (`\n`, `\u{1b}`,
/// `\u{202e}`, `\u{200b}`), so the text cannot move the cursor, recolour or hide what follows,
/// write to the clipboard, reorder what a person reads, pass for other text, or forge a line of
/// the alert around it. Everything else, other scripts and most emoji included, is left as it
/// is (an emoji's joiners and variation selectors are shown escaped).
///
/// Notifiers written outside this crate use it for every field a caller chose before showing it
/// to a person; the shipped ones already do.
///
/// ```
/// use tollgate::notify::visible;
///
/// assert_eq!(visible("refund\n│ code  00000000"), "refund\\n│ code  00000000");
/// assert_eq!(visible("\u{1b}]52;c;cm0gLXJm\u{7}"), "\\u{1b}]52;c;cm0gLXJm\\u{7}");
/// assert_eq!(visible("txt.exe\u{202e}fdp"), "txt.exe\\u{202e}fdp");
/// assert_eq!(visible("Zoë 👍"), "Zoë 👍");
/// assert_eq!(visible("acct_good\u{200b}"), "acct_good\\u{200b}");
/// ```
pub fn visible(text: &str) -> Cow<'_, str> {
    neutralise(text, false)
}

/// [`visible`], keeping line breaks: for text whose line breaks are the writer's own (pretty
/// JSON), and as the last step of every markup escape.
pub(crate) fn visible_lines(text: &str) -> Cow<'_, str> {
    neutralise(text, true)
}

/// Whether `c` is a control character, a line or paragraph separator, a bidirectional
/// override, isolate or mark, or a character that shows as nothing (Unicode's format
/// characters: zero-width spaces and joiners, the soft hyphen, word joiners, the byte order
/// mark, tags that spell hidden text; variation selectors and blank fillers): what a person
/// must not be shown as it is, since `acct_good` followed by invisible characters is another
/// argument than `acct_good`.
pub(crate) fn hidden(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{ad}' | '\u{34f}'
        | '\u{600}'..='\u{605}' | '\u{61c}' | '\u{6dd}' | '\u{70f}' | '\u{890}'..='\u{891}'
        | '\u{8e2}' | '\u{115f}'..='\u{1160}' | '\u{17b4}'..='\u{17b5}' | '\u{180b}'..='\u{180f}'
        | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}'
        | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}' | '\u{ffa0}' | '\u{fff9}'..='\u{fffb}'
        | '\u{110bd}' | '\u{110cd}' | '\u{13430}'..='\u{1343f}' | '\u{1bca0}'..='\u{1bca3}'
        | '\u{1d173}'..='\u{1d17a}' | '\u{e0000}'..='\u{e0fff}')
}

fn neutralise(text: &str, keep_newlines: bool) -> Cow<'_, str> {
    let hidden = |c: char| hidden(c) && !(keep_newlines && c == '\n');
    if !text.contains(hidden) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' if !keep_newlines => shown.push_str("\\n"),
            '\r' => shown.push_str("\\r"),
            '\t' => shown.push_str("\\t"),
            c if hidden(c) => {
                let _ = write!(shown, "\\u{{{:x}}}", u32::from(c));
            }
            c => shown.push(c),
        }
    }
    Cow::Owned(shown)
}

/// One line on how a request ended: `approved by alice, scope value, until …`; the approver's
/// name and reason shown [`visible`].
pub(crate) fn describe(outcome: &Outcome) -> String {
    let mut line = String::new();
    match outcome {
        Outcome::Approved {
            approver,
            scope,
            until,
        } => {
            let _ = write!(line, "approved by {}, scope {scope}", visible(approver));
            if let Some(until) = until {
                let _ = write!(line, ", until {}", rfc3339(*until));
            }
        }
        Outcome::Denied { approver, reason } => {
            let _ = write!(line, "denied by {}", visible(approver));
            if let Some(reason) = reason {
                let _ = write!(line, ": {}", visible(reason));
            }
        }
        Outcome::TooManyAttempts => line.push_str("denied: too many wrong codes"),
        Outcome::Expired => line.push_str("expired: nobody decided in time"),
        Outcome::Cancelled => line.push_str("cancelled: the caller went away"),
        Outcome::NotificationFailed => line.push_str("failed: no approver could be notified"),
        Outcome::Abandoned => line.push_str("abandoned: the gate stopped before a decision"),
        Outcome::StoreFailed => line.push_str("failed: the decision could not be stored"),
    }
    line
}

/// What a [`Scope::Value`](crate::Scope::Value) approval of `request` covers, in words for a
/// person: `later calls with the same arguments`, or with
/// [key fields](crate::policy::Ask::key_fields), which fields must be equal and which
/// top-level arguments may differ (`later calls with the same /to, whatever /body hold`).
/// Caller text in it is escaped as [`visible`] does.
pub fn value_covers(request: &AccessRequest) -> String {
    let Some(fields) = request.key_fields() else {
        return "later calls with the same arguments".to_owned();
    };
    let args = request.args();
    let free: Vec<String> = args
        .as_object()
        .into_iter()
        .flat_map(|object| object.keys())
        .map(|name| format!("/{}", name.replace('~', "~0").replace('/', "~1")))
        .filter(|top| {
            !fields.iter().any(|f| {
                f.strip_prefix(top.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
        })
        .collect();
    let mut text = format!("later calls with the same {}", fields.join(", "));
    if !free.is_empty() {
        let _ = write!(text, ", whatever {} hold", free.join(", "));
    }
    visible(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{visible, visible_lines};

    #[test]
    fn hidden_characters_are_shown_escaped() {
        assert_eq!(
            visible("a\r\nb\tc\u{0}\u{7f}\u{85}\u{9b}31m"),
            "a\\r\\nb\\tc\\u{0}\\u{7f}\\u{85}\\u{9b}31m"
        );
        for c in [
            '\u{2028}',
            '\u{202a}',
            '\u{202e}',
            '\u{2066}',
            '\u{2069}',
            '\u{200f}',
            '\u{61c}',
            // Shown as nothing: zero-width space, word joiner, byte order mark, a tag letter,
            // the soft hyphen, a variation selector, a Hangul filler.
            '\u{200b}',
            '\u{2060}',
            '\u{feff}',
            '\u{e0061}',
            '\u{ad}',
            '\u{fe0f}',
            '\u{3164}',
        ] {
            assert_eq!(
                visible(&c.to_string()),
                format!("\\u{{{:x}}}", u32::from(c))
            );
        }
        assert_eq!(
            visible_lines("{\n  \"a\": \"\u{1b}[8m\"\n}"),
            "{\n  \"a\": \"\\u{1b}[8m\"\n}"
        );
        assert!(matches!(
            visible("plain, ünïcode, 漢字"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
