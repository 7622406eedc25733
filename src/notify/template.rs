//! Message templates for notifiers: `{field}` placeholders and `{#field}…{/field}` sections.

use std::borrow::Cow;
use std::time::SystemTime;

use super::{Alert, Resolution};
use crate::error::{Error, ErrorKind};
use crate::request::{AccessRequest, Outcome};
use crate::scope::Scope;
use crate::text::{describe, pretty_args, value_covers, visible, visible_lines};
use crate::time::{human_duration, rfc3339};

/// A message template, checked when it is made.
///
/// `{field}` is replaced by the field's value; `{#field}…{/field}` is kept only when the field has
/// a value; `{{` and `}}` are literal braces. An unknown field is an `invalid_config` error, so a
/// typo fails at start rather than in a person's inbox.
///
/// | field | value |
/// |---|---|
/// | `id` | the request id, `areq_…` |
/// | `capability` | what the call wants to do |
/// | `args` | the arguments as pretty-printed JSON |
/// | `principal`, `session` | who asks, and in which session (empty if none) |
/// | `reason` | the caller's reason (empty if none) |
/// | `reasoning` | why the policy asks |
/// | `code` | the verification code (alerts only; empty in resolutions) |
/// | `expires_at`, `expires_in` | when the request expires, as RFC 3339 and as `4m 59s` |
/// | `max_scope`, `max_rule_ttl` | the widest scope and longest rule an approval may grant |
/// | `value_covers` | what a `value` approval covers: `later calls with the same /to, whatever /body hold` (empty if the request allows only `once`) |
/// | `approval_url` | the approval page, when the gate has a base URL |
/// | `outcome` | resolutions only: `approved by alice, scope value, until …`, `denied by bob: …` |
///
/// ```
/// use tollgate::notify::Template;
///
/// let subject = Template::new("[approval] {capability} for {principal}{#reason}: {reason}{/reason}")?;
/// assert!(Template::new("{amount}").is_err()); // not a field
/// # Ok::<(), tollgate::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Template {
    pieces: Vec<Piece>,
}

#[derive(Clone, Debug)]
enum Piece {
    Text(String),
    Field(Field),
    Section(Field, Vec<Piece>),
}

/// How values are written into the template's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(all(feature = "email", feature = "webhook")), allow(dead_code))]
pub(crate) enum Escape {
    None,
    Html,
    /// Chat markup (Slack's mrkdwn): `&`, `<` and `>` only.
    Chat,
}

macro_rules! fields {
    ($($variant:ident = $name:literal,)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Field { $($variant,)* }

        impl Field {
            const ALL: &'static [(&'static str, Field)] = &[$(($name, Field::$variant),)*];
        }
    };
}

fields! {
    Id = "id",
    Capability = "capability",
    Args = "args",
    Principal = "principal",
    Session = "session",
    Reason = "reason",
    Reasoning = "reasoning",
    Code = "code",
    ExpiresAt = "expires_at",
    ExpiresIn = "expires_in",
    MaxScope = "max_scope",
    MaxRuleTtl = "max_rule_ttl",
    ValueCovers = "value_covers",
    ApprovalUrl = "approval_url",
    Outcome = "outcome",
}

impl Field {
    fn parse(name: &str) -> Option<Field> {
        Field::ALL.iter().find(|(n, _)| *n == name).map(|&(_, f)| f)
    }
}

impl Template {
    /// Parses and checks a template.
    pub fn new(text: &str) -> Result<Template, Error> {
        let mut rest = text;
        let mut stack: Vec<(Field, Vec<Piece>)> = Vec::new();
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let error = |what: String| {
            Err(Error::new(ErrorKind::InvalidConfig).with_detail(format!("template: {what}")))
        };
        while let Some(at) = rest.find(['{', '}']) {
            literal.push_str(&rest[..at]);
            let tail = &rest[at..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                literal.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                return error(format!(
                    "a lone `}}` at byte {}; write `}}}}`",
                    text.len() - tail.len()
                ));
            }
            let Some(end) = tail.find('}') else {
                return error(format!(
                    "`{{` at byte {} is never closed",
                    text.len() - tail.len()
                ));
            };
            let tag = &tail[1..end];
            rest = &tail[end + 1..];
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            let (kind, name) = match tag.as_bytes().first() {
                Some(b'#') => ('#', &tag[1..]),
                Some(b'/') => ('/', &tag[1..]),
                _ => (' ', tag),
            };
            let Some(field) = Field::parse(name.trim()) else {
                let known: Vec<&str> = Field::ALL.iter().map(|(n, _)| *n).collect();
                return error(format!(
                    "unknown field `{}`; the fields are {}",
                    name.trim(),
                    known.join(", ")
                ));
            };
            match kind {
                '#' => stack.push((field, std::mem::take(&mut pieces))),
                '/' => match stack.pop() {
                    Some((open, outer)) if open == field => {
                        let inner = std::mem::replace(&mut pieces, outer);
                        pieces.push(Piece::Section(field, inner));
                    }
                    _ => return error(format!("`{{/{}}}` closes no open section", name.trim())),
                },
                _ => pieces.push(Piece::Field(field)),
            }
        }
        literal.push_str(rest);
        if let Some((open, _)) = stack.last() {
            let name = Field::ALL
                .iter()
                .find(|(_, f)| f == open)
                .map_or("", |(n, _)| n);
            return error(format!("section `{{#{name}}}` is never closed"));
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template { pieces })
    }

    /// Parses a template given as setting `what`, naming the setting in the error.
    #[cfg(any(feature = "email", feature = "webhook"))]
    pub(crate) fn for_setting(what: &str, text: &str) -> Result<Template, Error> {
        Template::new(text).map_err(|e| {
            Error::new(ErrorKind::InvalidConfig)
                .with_detail(format!("{what}: {}", e.detail().unwrap_or_default()))
        })
    }

    /// Renders the template for an alert, code included (for a request several approvers must
    /// approve, whose approvers each have their own code, `{code}` is empty: render
    /// [`Alert::codes`] yourself, each to its approver).
    pub fn render_alert(&self, alert: &Alert) -> String {
        self.render(&Values::alert(alert, shared_code(alert)), Escape::None)
    }

    /// Renders the template for a resolution; `{code}` is empty.
    pub fn render_resolution(&self, resolution: &Resolution) -> String {
        self.render(&Values::resolution(resolution), Escape::None)
    }

    pub(crate) fn render(&self, values: &Values<'_>, escape: Escape) -> String {
        let mut out = String::new();
        render(&self.pieces, values, escape, &mut out);
        out
    }
}

fn render(pieces: &[Piece], values: &Values<'_>, escape: Escape, out: &mut String) {
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Field(field) => escape.write(&values.get(*field), out),
            Piece::Section(field, inner) => {
                if !values.get(*field).is_empty() {
                    render(inner, values, escape, out);
                }
            }
        }
    }
}

impl Escape {
    /// Writes `value` into `out`, escaped for this markup, with control characters and
    /// bidirectional overrides shown escaped whatever the markup ([`visible_lines`]).
    pub(crate) fn write(self, value: &str, out: &mut String) {
        let value = visible_lines(value);
        if self == Escape::None {
            return out.push_str(&value);
        }
        for c in value.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' if self == Escape::Html => out.push_str("&quot;"),
                '\'' if self == Escape::Html => out.push_str("&#39;"),
                c => out.push(c),
            }
        }
    }
}

/// The code everyone the alert reaches may see: none for a quorum, whose approvers each have
/// their own.
pub(crate) fn shared_code(alert: &Alert) -> &str {
    if alert.request().quorum() > 1 {
        ""
    } else {
        alert.code().reveal()
    }
}

/// What a template's fields are filled with.
pub(crate) struct Values<'a> {
    request: &'a AccessRequest,
    code: Option<&'a str>,
    outcome: Option<&'a Outcome>,
}

impl<'a> Values<'a> {
    /// An alert's values, its code field reading `code`.
    pub(crate) fn alert(alert: &'a Alert, code: &'a str) -> Self {
        Values {
            request: alert.request(),
            code: Some(code),
            outcome: None,
        }
    }

    pub(crate) fn resolution(resolution: &'a Resolution) -> Self {
        Values {
            request: resolution.request(),
            code: None,
            outcome: Some(resolution.outcome()),
        }
    }

    fn get(&self, field: Field) -> Cow<'a, str> {
        let r = self.request;
        match field {
            Field::Id => r.id().to_string().into(),
            // Caller text on one line: a line break in it cannot forge a line of the message.
            Field::Capability => visible(r.capability()),
            Field::Args => pretty_args(r).into(),
            Field::Principal => visible(r.principal()),
            Field::Session => visible(r.session().unwrap_or("")),
            Field::Reason => visible(r.reason().unwrap_or("")),
            Field::Reasoning => visible(r.reasoning()),
            Field::Code => self.code.unwrap_or("").into(),
            Field::ExpiresAt => rfc3339(r.expires_at()).into(),
            Field::ExpiresIn => {
                let left = r
                    .expires_at()
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                human_duration(left).into()
            }
            Field::MaxScope => r.max_scope().as_str().into(),
            Field::MaxRuleTtl => human_duration(r.max_rule_ttl()).into(),
            Field::ValueCovers if r.max_scope() >= Scope::Value => value_covers(r).into(),
            Field::ValueCovers => "".into(),
            Field::ApprovalUrl => visible(r.approval_url().unwrap_or("")),
            Field::Outcome => self.outcome.map(describe).unwrap_or_default().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_templates_say_what_is_wrong() {
        for (text, says) in [
            ("{amount}", "unknown field `amount`"),
            ("{capability", "never closed"),
            ("a } b", "lone `}`"),
            ("{#reason}x", "section `{#reason}` is never closed"),
            ("{/reason}", "closes no open section"),
            ("{#reason}{/session}", "closes no open section"),
        ] {
            let error = Template::new(text).unwrap_err();
            assert_eq!(error.code(), "invalid_config");
            assert!(error.to_string().contains(says), "{text}: {error}");
        }
        assert!(Template::new("{{literal}} {id} {#reason}({reason}){/reason}").is_ok());
    }
}
