//! The configuration loader: any text is a configuration or a typed error, never a panic, and
//! what it accepts builds its policy and gate or says why not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match tollgate::config::Config::from_toml(text) {
        Ok(config) => {
            let _ = config.validate();
            let _ = config.policy();
            let _ = config.approvers();
            let _ = config.approval_address();
        }
        Err(error) => assert!(!error.code().is_empty()),
    }
});
