//! Capability patterns: exact names and `*` globs, and which one wins.

use std::cmp::Ordering;

use crate::error::{Error, ErrorKind};

/// A capability name or a glob over names, where `*` matches any run of characters (dots and
/// slashes included): `payments.*`, `*.delete`, `POST /v1/*`.
///
/// When several patterns match a name, an exact name wins; among globs, the one with more
/// literal characters; then the one whose first `*` comes later; then the first in text order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pattern {
    text: Box<str>,
    /// Characters other than `*`.
    literal: usize,
    /// Characters before the first `*`; the whole length for an exact name.
    prefix: usize,
}

impl Pattern {
    pub(crate) fn new(text: &str) -> Result<Self, Error> {
        if text.trim().is_empty() {
            return Err(Error::new(ErrorKind::InvalidConfig)
                .with_detail("a capability pattern must not be empty"));
        }
        let literal = text.chars().filter(|&c| c != '*').count();
        let prefix = text.find('*').unwrap_or(text.len());
        Ok(Pattern {
            text: text.into(),
            literal,
            prefix,
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    pub(crate) fn is_glob(&self) -> bool {
        self.prefix < self.text.len()
    }

    /// Whether `name` matches: the literal pieces appear in order, the first at the start and
    /// the last at the end. Greedy with one backtrack point, so linear in practice.
    pub(crate) fn matches(&self, name: &str) -> bool {
        // Most patterns fail on their first characters: check those before splitting.
        if !name
            .as_bytes()
            .starts_with(&self.text.as_bytes()[..self.prefix])
        {
            return false;
        }
        let mut pieces = self.text.split('*');
        let first = pieces.next().unwrap_or("");
        let Some(mut rest) = name.strip_prefix(first) else {
            return false;
        };
        let mut pieces = pieces.peekable();
        if pieces.peek().is_none() {
            return rest.is_empty();
        }
        while let Some(piece) = pieces.next() {
            if pieces.peek().is_none() {
                return rest.ends_with(piece);
            }
            match rest.find(piece) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
        }
        true
    }

    /// Precedence: `Less` means `self` wins over `other`.
    pub(crate) fn precedence(&self, other: &Pattern) -> Ordering {
        other
            .literal
            .cmp(&self.literal)
            .then(other.prefix.cmp(&self.prefix))
            .then(self.text.cmp(&other.text))
    }
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    fn p(text: &str) -> Pattern {
        Pattern::new(text).unwrap()
    }

    #[test]
    fn globs_match_runs_of_any_characters() {
        let cases = [
            ("payments.*", "payments.refund", true),
            ("payments.*", "payments.", true),
            ("payments.*", "payments.refund.partial", true),
            ("payments.*", "payment.refund", false),
            ("*.delete", "fs.delete", true),
            ("*.delete", "fs.delete.all", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "acb", false),
            ("*", "", true),
            ("**", "anything", true),
            ("POST /v1/*", "POST /v1/refunds/{id}", true),
            ("POST /v1/*", "GET /v1/refunds", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("ab*ba", "aba", false),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(p(pattern).matches(name), expected, "{pattern} ~ {name}");
        }
    }

    #[test]
    fn more_literal_characters_win_then_a_longer_prefix_then_text_order() {
        let mut patterns = [
            p("*"),
            p("*.refund"),
            p("payments.*"),
            p("pay*.refund"),
            p("b*"),
            p("a*"),
        ];
        patterns.sort_by(Pattern::precedence);
        let order: Vec<_> = patterns.iter().map(Pattern::as_str).collect();
        assert_eq!(
            order,
            ["pay*.refund", "payments.*", "*.refund", "a*", "b*", "*"]
        );
    }

    #[test]
    fn empty_patterns_are_refused() {
        assert_eq!(Pattern::new(" ").unwrap_err().code(), "invalid_config");
    }
}
