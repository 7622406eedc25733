//! Webhook signature checking: any header, body and secret give an answer, never a panic; a
//! signature made for a body verifies for it and for no other body.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use tollgate::notify::signature::{DEFAULT_TOLERANCE, sign, verify_signature_at};

fuzz_target!(|data: &[u8]| {
    // header NUL body NUL secret
    let mut parts = data.splitn(3, |&b| b == 0);
    let (Some(header), Some(body), Some(secret)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    if let Ok(header) = std::str::from_utf8(header) {
        let _ = verify_signature_at(header, body, secret, DEFAULT_TOLERANCE, now);
    }
    let signed = sign(body, &[secret], now);
    assert_eq!(
        verify_signature_at(&signed, body, secret, DEFAULT_TOLERANCE, now),
        Ok(())
    );
    let mut other = body.to_vec();
    other.push(b'x');
    assert!(verify_signature_at(&signed, &other, secret, DEFAULT_TOLERANCE, now).is_err());
});
