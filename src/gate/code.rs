//! Verification codes: derived from the secret and the request, never stored.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::code::VerificationCode;
use crate::error::{Error, ErrorKind};
use crate::request::AccessRequest;

/// Domain separation: a code can never be confused with another HMAC made from the same secret.
const DOMAIN: &[u8] = b"tollgate/verification-code/v1";
/// Bound after the key fields when approvers may edit the request (a key field starts with `/`).
const EDITABLE: &[u8] = b"editable";
/// Bound last, with the number, when several approvers must approve; each approver's code then
/// binds their name after it.
const QUORUM: &[u8] = b"quorum";
const APPROVER: &[u8] = b"approver";

/// The shortest secret accepted, in bytes.
pub(crate) const MIN_SECRET_LEN: usize = 16;

/// A secret made for this process, for `random_secret`.
pub(crate) fn random_secret() -> Result<Box<[u8]>, Error> {
    let mut secret = vec![0u8; 32].into_boxed_slice();
    getrandom::fill(&mut secret).map_err(|e| {
        Error::new(ErrorKind::InvalidConfig)
            .with_detail("the operating system's random source failed")
            .with_source(e.to_string())
    })?;
    Ok(secret)
}

/// The HMAC key codes are derived from, keyed once: each code clones the keyed state.
pub(crate) struct CodeKey {
    mac: Hmac<Sha256>,
    length: usize,
}

impl fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeKey")
            .field("secret", &"<redacted>")
            .field("length", &self.length)
            .finish()
    }
}

/// Binds a quorum of `n` and, for one approver's code, their name: out of line, so that the
/// code of a request one approver decides is computed as it always was.
#[inline(never)]
fn bind_quorum(mac: &mut Hmac<Sha256>, n: u8, approver: Option<&str>) {
    // Without an approver, two fields fewer: no name makes the same input.
    let n = [n];
    let named = approver.map(|name| [APPROVER, name.as_bytes()]);
    let fields = [QUORUM, &n[..]]
        .into_iter()
        .chain(named.into_iter().flatten());
    for field in fields {
        mac.update(&(field.len() as u64).to_be_bytes());
        mac.update(field);
    }
}

impl CodeKey {
    pub(crate) fn new(secret: &[u8], length: usize) -> Result<Self, Error> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(Error::new(ErrorKind::InvalidConfig).with_detail(format!(
                "the secret must be at least {MIN_SECRET_LEN} bytes"
            )));
        }
        if !(6..=64).contains(&length) {
            return Err(Error::new(ErrorKind::InvalidConfig)
                .with_detail("code_length must be between 6 and 64 hex characters"));
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        Ok(CodeKey { mac, length })
    }

    /// `HMAC-SHA256(secret, domain ‖ id ‖ principal ‖ session ‖ capability ‖ args digest ‖
    /// max scope ‖ max rule TTL ‖ expiry [‖ key fields] [‖ "editable"] [‖ "quorum" ‖ n [‖
    /// "approver" ‖ name]])`, every field length-prefixed, cut to `length` uppercase hex characters. The
    /// key fields (each pointer in turn, every one starting with `/`), the word `editable` and
    /// the quorum come last, each only when the request has it, so codes of requests without
    /// them are what they were. A request that several approvers must approve has no code of its
    /// own (this one is accepted from nobody): each approver has theirs, [`code_for`].
    ///
    /// [`code_for`]: Self::code_for
    pub(crate) fn code(&self, request: &AccessRequest) -> VerificationCode {
        self.code_of(request, None)
    }

    /// The code of `approver` for a request several approvers must approve: bound to their name.
    pub(crate) fn code_for(&self, request: &AccessRequest, approver: &str) -> VerificationCode {
        self.code_of(request, Some(approver))
    }

    #[inline(always)]
    fn code_of(&self, request: &AccessRequest, approver: Option<&str>) -> VerificationCode {
        let digits = self.digits(request, approver);
        let text = std::str::from_utf8(&digits[..self.length]).expect("hex digits are ASCII");
        VerificationCode(text.to_owned())
    }

    /// The HMAC in uppercase hex digits: a code is the first `length` of them.
    fn digits(&self, request: &AccessRequest, approver: Option<&str>) -> [u8; 64] {
        let mut digits = [0u8; 64];
        crate::hex::upper_into(&self.mac_of(request, approver), &mut digits);
        digits
    }

    /// The HMAC a code is cut from.
    fn mac_of(&self, request: &AccessRequest, approver: Option<&str>) -> [u8; 32] {
        let mut mac = self.mac.clone();
        // The expiry the request was made with, whatever an escalation did to it since.
        let expires_ms = request.expires_at.get() - u64::from(request.extended_secs) * 1000;
        let fields: [&[u8]; 9] = [
            DOMAIN,
            request.id.as_bytes(),
            request.principal.as_bytes(),
            request.session.as_deref().unwrap_or("").as_bytes(),
            request.capability.as_bytes(),
            request.args_digest.as_bytes(),
            request.max_scope.as_str().as_bytes(),
            &request.max_rule_ttl_ms.to_be_bytes(),
            &expires_ms.to_be_bytes(),
        ];
        for field in fields {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        if let Some(keys) = &request.key_fields {
            for field in keys.as_slice() {
                mac.update(&(field.len() as u64).to_be_bytes());
                mac.update(field.as_bytes());
            }
        }
        if request.editable {
            mac.update(&(EDITABLE.len() as u64).to_be_bytes());
            mac.update(EDITABLE);
        }
        if request.quorum > 1 {
            bind_quorum(&mut mac, request.quorum, approver);
        }
        mac.finalize().into_bytes().into()
    }

    /// Constant-time check of what `approver` typed; case and surrounding space do not matter.
    /// For a request several approvers must approve, only their own code verifies.
    pub(crate) fn verify(&self, request: &AccessRequest, attempt: &str, approver: &str) -> bool {
        let attempt = attempt.trim().as_bytes();
        // The length is the configuration's, not a secret.
        if attempt.len() != self.length {
            return false;
        }
        let approver = (request.quorum > 1).then_some(approver);
        let (expected, mut typed) = (self.digits(request, approver), [0u8; 64]);
        for (typed, c) in typed.iter_mut().zip(attempt) {
            *typed = c.to_ascii_uppercase();
        }
        bool::from(expected[..self.length].ct_eq(&typed[..self.length]))
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::{Duration, SystemTime};

    use super::CodeKey;
    use crate::args::ArgsDigest;
    use crate::id::RequestId;
    use crate::request::AccessRequest;
    use crate::scope::Scope;
    use crate::time::Millis;

    fn request() -> AccessRequest {
        let now = Millis::of(SystemTime::now());
        AccessRequest {
            id: RequestId::random(),
            capability: "payments.refund".into(),
            args: "{}".into(),
            args_digest: ArgsDigest::of_canonical("{}"),
            principal: "agent-7".into(),
            session: None,
            reason: None,
            reasoning: Cow::Borrowed("refunds move money"),
            max_scope: Scope::Once,
            max_rule_ttl_ms: 60_000,
            approvers: None,
            key_fields: None,
            editable: false,
            quorum: 1,
            extended_secs: 0,
            created_at: now,
            expires_at: now + Duration::from_secs(60),
            approval_url: None,
        }
    }

    const SECRET: &[u8] = b"a test secret of sixteen bytes";

    /// The documented HMAC under [`SECRET`] of `request`'s nine fixed fields (as [`request`]
    /// fills them) and then `more`, in uppercase hex.
    fn documented(request: &AccessRequest, more: &[&[u8]]) -> String {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
        let fixed: [&[u8]; 9] = [
            b"tollgate/verification-code/v1",
            request.id.as_bytes(),
            b"agent-7",
            b"",
            b"payments.refund",
            request.args_digest.as_bytes(),
            b"once",
            &60_000u64.to_be_bytes(),
            &request.expires_at.get().to_be_bytes(),
        ];
        for field in fixed.iter().chain(more) {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        let digits = mac.finalize().into_bytes();
        digits.iter().map(|b| format!("{b:02X}")).collect()
    }

    #[test]
    fn only_the_whole_code_verifies_in_any_case_with_surrounding_space() {
        let request = request();
        for length in [6, 8, 63, 64] {
            let key = CodeKey::new(b"a test secret of sixteen bytes", length).unwrap();
            let code = key.code(&request);
            let code = code.reveal();
            assert_eq!(code.len(), length);
            assert!(key.verify(&request, code, "alice"));
            assert!(key.verify(&request, &format!(" {} ", code.to_lowercase()), "alice"));
            assert!(
                !key.verify(&request, &code[..length - 1], "alice"),
                "a prefix"
            );
            assert!(
                !key.verify(&request, &format!("{code}0"), "alice"),
                "one more"
            );
            assert!(!key.verify(&request, "", "alice"));
            let last = if code.ends_with('0') { "1" } else { "0" };
            let wrong = format!("{}{last}", &code[..length - 1]);
            assert!(!key.verify(&request, &wrong, "alice"), "one character off");
            let other = CodeKey::new(b"another secret of sixteen bytes", length).unwrap();
            assert!(!other.verify(&request, code, "alice"), "another secret");
        }
    }

    /// The code is the documented HMAC of the request's fields, each length-prefixed, whatever
    /// form the request keeps them in: replicas of two versions must agree on every code.
    #[test]
    fn the_code_is_the_documented_hmac_of_the_request() {
        use hmac::{Hmac, KeyInit, Mac};
        let mut request = request();
        request.id = RequestId([7; 16]);
        request.session = Some("s-1".into());
        request.max_scope = Scope::Capability;
        request.expires_at =
            Millis::of(SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_265_100_123));
        let secret = b"a test secret of sixteen bytes";
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        for field in [
            &b"tollgate/verification-code/v1"[..],
            &[7; 16],
            b"agent-7",
            b"s-1",
            b"payments.refund",
            ArgsDigest::of_canonical("{}").as_bytes(),
            b"capability",
            &60_000u64.to_be_bytes(),
            &1_795_265_100_123u64.to_be_bytes(),
        ] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        let expected: String = mac.finalize().into_bytes()[..4]
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        let key = CodeKey::new(secret, 8).unwrap();
        assert_eq!(key.code(&request).reveal(), expected);
    }

    /// Key fields come after the documented fields, each pointer in turn: the same request
    /// keyed on other fields, or on none, has another code.
    #[test]
    fn the_code_binds_the_key_fields() {
        let key = CodeKey::new(SECRET, 64).unwrap();
        let mut request = request();
        request.args = r#"{"body":"hi","to":"+1"}"#.into();
        let plain = key.code(&request).reveal().to_owned();
        let mut codes = vec![plain.clone()];
        for fields in [&["/to"][..], &["/body"], &["/body", "/to"]] {
            let fields = crate::args::KeyFields::new(fields.iter().copied()).unwrap();
            request.key_fields = Some(fields.clone());
            let code = key.code(&request).reveal().to_owned();
            assert!(!codes.contains(&code), "{fields:?}");
            codes.push(code.clone());
            let keyed: Vec<&[u8]> = fields.as_slice().iter().map(|f| f.as_bytes()).collect();
            assert_eq!(code, documented(&request, &keyed));
        }
        request.key_fields = None;
        assert_eq!(
            key.code(&request).reveal(),
            plain,
            "no key fields: the code as before"
        );
    }

    /// An editable request's code binds the word `editable` after the documented fields: the
    /// same request without it has another code, and that code is what it always was.
    #[test]
    fn the_code_binds_whether_the_request_is_editable() {
        let key = CodeKey::new(SECRET, 64).unwrap();
        let mut request = request();
        let plain = key.code(&request).reveal().to_owned();
        request.editable = true;
        let editable = key.code(&request).reveal().to_owned();
        assert_ne!(plain, editable);
        assert_eq!(editable, documented(&request, &[b"editable"]));
        request.editable = false;
        assert_eq!(key.code(&request).reveal(), plain);
    }

    /// An escalation that moves the expiry leaves the code as it was: the code binds the expiry
    /// the request was made with.
    #[test]
    fn an_extended_request_keeps_its_code() {
        let key = CodeKey::new(b"a test secret of sixteen bytes", 8).unwrap();
        let mut request = request();
        let code = key.code(&request).reveal().to_owned();
        request.expires_at = request.expires_at + Duration::from_secs(600);
        request.extended_secs = 600;
        assert_eq!(key.code(&request).reveal(), code);
        request.extended_secs = 0;
        assert_ne!(
            key.code(&request).reveal(),
            code,
            "a later expiry is another code"
        );
    }

    /// A quorum's codes bind the word `quorum`, the number, and each approver's name: one
    /// approver's code is not another's, nor the request's own, which binds no name.
    #[test]
    fn a_quorums_codes_bind_each_approvers_name() {
        let key = CodeKey::new(SECRET, 64).unwrap();
        let mut request = request();
        let single = key.code(&request).reveal().to_owned();
        request.quorum = 2;
        let alice = key.code_for(&request, "alice").reveal().to_owned();
        let bob = key.code_for(&request, "bob").reveal().to_owned();
        let shared = key.code(&request).reveal().to_owned();
        assert!(alice != bob && alice != shared && shared != single);
        assert!(key.verify(&request, &alice, "alice"));
        assert!(!key.verify(&request, &alice, "bob"));
        assert!(
            !key.verify(&request, &shared, ""),
            "the request's own code is nobody's"
        );
        let named: [&[u8]; 4] = [b"quorum", &[2], b"approver", b"alice"];
        assert_eq!(alice, documented(&request, &named));
    }
}
