//! The verification code, as the engine hands it to notifiers.

use std::fmt;

/// The code a person types to decide an access request. A bearer secret: its `Debug` output is
/// redacted and it has no `Display`; call [`reveal`](Self::reveal) in the one place it is shown.
#[derive(Clone, PartialEq, Eq)]
pub struct VerificationCode(pub(crate) String);

impl VerificationCode {
    /// The code's text, for the notifier's own channel only.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for VerificationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VerificationCode(<redacted>)")
    }
}
