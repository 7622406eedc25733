//! The configuration file: modes, pattern precedence, defaults, validation errors, secrets, and
//! gates built from files.

#[path = "../support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::json;
use tollgate::config::Config;
use tollgate::notify::RecordingNotifier;
use tollgate::policy::{Decision, Policy};
use tollgate::{Approve, Deny, Gate, Scope, ToolCall};
use tower::{Layer, ServiceExt, service_fn};

use support::{capture_logs, code};

fn config(text: &str) -> Config {
    Config::from_toml(text).unwrap_or_else(|e| panic!("{e}"))
}

fn decide(config: &Config, capability: &str) -> Decision {
    config
        .policy()
        .unwrap()
        .check(&ToolCall::new(capability, json!({})))
}

fn kind(decision: &Decision) -> &'static str {
    match decision {
        Decision::Allow(_) => "allow",
        Decision::Ask(_) => "ask",
        Decision::Deny(_) => "deny",
        Decision::Observe(would) => match **would {
            Decision::Ask(_) => "observe ask",
            Decision::Deny(_) => "observe deny",
            _ => "observe other",
        },
    }
}

const ENTRIES: &str = r#"
    [capabilities."search.web"]
    decision = "allow"

    [capabilities."fs.delete"]
    decision = "deny"
    deny_reason = "never"

    [capabilities."payments.refund"]
    max_scope = "value"
"#;

#[test]
fn selective_follows_each_entry_and_asks_about_the_rest() {
    let config = config(&format!("mode = \"selective\"\n{ENTRIES}"));
    assert_eq!(kind(&decide(&config, "search.web")), "allow");
    assert_eq!(kind(&decide(&config, "fs.delete")), "deny");
    assert_eq!(decide(&config, "fs.delete").reasoning(), "never");
    assert_eq!(kind(&decide(&config, "payments.refund")), "ask");
    let unlisted = decide(&config, "shell.exec");
    assert_eq!(kind(&unlisted), "ask");
    assert_eq!(
        unlisted.reasoning(),
        "this capability is not listed in the configuration"
    );
}

#[test]
fn all_capabilities_asks_even_where_an_entry_allows_but_still_denies() {
    let config = config(&format!("mode = \"all_capabilities\"\n{ENTRIES}"));
    let search = decide(&config, "search.web");
    assert_eq!(kind(&search), "ask");
    assert!(search.reasoning().contains("all_capabilities"));
    assert_eq!(kind(&decide(&config, "fs.delete")), "deny");
    assert_eq!(kind(&decide(&config, "shell.exec")), "ask");
}

#[test]
fn disabled_lets_every_call_through_and_says_so_loudly() {
    let (logs, _guard) = capture_logs();
    let config = config(&format!("mode = \"disabled\"\n{ENTRIES}"));
    for capability in ["search.web", "fs.delete", "payments.refund", "shell.exec"] {
        assert_eq!(kind(&decide(&config, capability)), "allow", "{capability}");
    }
    let logs = logs.text();
    assert!(logs.contains("WARN"), "{logs}");
    assert!(logs.contains("APPROVALS ARE DISABLED"), "{logs}");
}

#[test]
fn a_missing_mode_or_section_means_ask_never_allow() {
    let empty = config("");
    assert_eq!(kind(&decide(&empty, "anything.at_all")), "ask");
    let Decision::Ask(ask) = decide(&empty, "x") else {
        unreachable!()
    };
    assert_eq!(ask.allowed_approvers(), None);
    // Without [gate], no secret was given: building the gate says so.
    let error = empty
        .gate_builder()
        .unwrap()
        .notifier(RecordingNotifier::new())
        .build()
        .unwrap_err();
    assert_eq!(error.code(), "missing_secret");
}

#[test]
fn exact_names_beat_globs_and_the_most_specific_glob_wins() {
    let config = config(
        r#"
        [capabilities."*"]
        decision = "allow"
        [capabilities."payments.*"]
        description = "payments glob"
        [capabilities."payments.admin.*"]
        decision = "deny"
        [capabilities."payments.refund"]
        description = "exact refund"
        [capabilities."*.refund"]
        decision = "deny"
        "#,
    );
    let reasoning = |c| decide(&config, c).reasoning().to_owned();
    assert_eq!(reasoning("payments.refund"), "exact refund");
    assert_eq!(reasoning("payments.charge"), "payments glob");
    assert_eq!(kind(&decide(&config, "payments.admin.wipe")), "deny");
    // `payments.*` (9 literal characters) beats `*.refund` (7).
    assert_eq!(reasoning("payments.partial.refund"), "payments glob");
    assert_eq!(kind(&decide(&config, "orders.refund")), "deny");
    assert_eq!(kind(&decide(&config, "search.web")), "allow");
}

#[test]
fn entries_inherit_from_defaults_only() {
    let config = config(
        r#"
        [defaults]
        max_scope = "session"
        max_rule_ttl = "2h"
        approvers = ["alice"]
        [capabilities."payments.*"]
        max_scope = "global"
        require_reason = true
        [capabilities."payments.refund"]
        description = "refunds"
        "#,
    );
    let ask = |c| match decide(&config, c) {
        Decision::Ask(ask) => ask,
        other => panic!("{other:?}"),
    };
    let refund = ask("payments.refund");
    // From [defaults], not from the `payments.*` glob it also matches.
    assert_eq!(
        refund,
        tollgate::policy::Ask::new("refunds")
            .max_scope(Scope::Session)
            .max_rule_ttl(std::time::Duration::from_secs(7200))
            .approvers(["alice"])
    );
    let charge = ask("payments.charge");
    assert_eq!(
        charge,
        tollgate::policy::Ask::new(
            "the configuration asks a person about capabilities.\"payments.*\""
        )
        .max_scope(Scope::Global)
        .max_rule_ttl(std::time::Duration::from_secs(7200))
        .approvers(["alice"])
        .require_reason()
    );
}

/// Each bad file, the field its error must name, and what it must say is accepted.
const BAD: &[(&str, &str, &str)] = &[
    (
        "mode = \"off\"",
        "mode",
        "expected one of `disabled`, `selective`, `all_capabilities`",
    ),
    (
        "moed = \"selective\"",
        "",
        "unknown field `moed`, expected one of `mode`",
    ),
    (
        "[gate]\nrequest_ttl = \"five minutes\"",
        "gate.request_ttl",
        "expected a duration like `90s`, `5m` or `1h 30m`",
    ),
    ("[gate]\nsecrett = 1", "gate", "unknown field `secrett`"),
    ("[gate]\nmax_attempts = -1", "gate.max_attempts", "u32"),
    (
        "[gate]\nsecret = { environment = \"X\" }",
        "gate.secret",
        "expected `env` or `file`",
    ),
    (
        "[gate]\nsecret = { env = \"A\", file = \"B\" }",
        "gate.secret",
        "not both",
    ),
    (
        "[gate]\nsecret = { env = \"A\" }\nrandom_secret = true",
        "gate",
        "not both",
    ),
    (
        "[gate]\nunlimited_alert_rate = true\nalert_rate = { alerts = 1, window = \"1s\" }",
        "gate",
        "not both",
    ),
    (
        "[gate]\nalert_rate = { alerts = 1 }",
        "gate.alert_rate",
        "missing field `window`",
    ),
    (
        "[capabilities.\"payments.*\"]\nmax_scope = \"forever\"",
        "capabilities.\"payments.*\".max_scope",
        "expected one of `once`, `value`, `session`, `capability`, `global`",
    ),
    (
        "[capabilities.\"a\"]\ndecision = \"maybe\"",
        "capabilities.a.decision",
        "expected one of `ask`, `allow`, `deny`",
    ),
    (
        "[capabilities.\"a\"]\ndecsion = \"ask\"",
        "capabilities.a",
        "unknown field `decsion`, expected one of `decision`",
    ),
    (
        "[capabilities.\"a\"]\nmax_rule_ttl = \"0s\"",
        "capabilities.a.max_rule_ttl",
        "more than zero",
    ),
    (
        "[capabilities.\"a\"]\napprovers = []",
        "capabilities.a.approvers",
        "nobody",
    ),
    (
        "[capabilities.\"a\"]\nkey_fields = [\"to\"]",
        "capabilities.a.key_fields",
        "JSON pointers",
    ),
    (
        "[defaults]\nkey_fields = []",
        "defaults.key_fields",
        "JSON pointers",
    ),
    (
        "[capabilities.\"a\"]\ndecision = \"deny\"\nkey_fields = [\"/to\"]",
        "capabilities.a.key_fields",
        "this one denies",
    ),
    (
        "[capabilities.\"a\"]\napprovers = [\"@ops\"]",
        "capabilities.a.approvers",
        "names group `ops`",
    ),
    (
        "[groups]\nops = [\"alice\"]\n[capabilities.\"a\"]\napprovers = [\"@ops\", \"alice\"]\nquorum = 2",
        "capabilities.a.quorum",
        "at least that many approvers",
    ),
    (
        "[capabilities.\"a\"]\nquorum = 2",
        "capabilities.a.quorum",
        "at least that many approvers",
    ),
    ("[groups]\nops = []", "groups.ops", "one or more approvers"),
    (
        "[gate]\npark_when_unnotified = true",
        "gate.park_when_unnotified",
        "add a [[notifiers]] entry",
    ),
    (
        "[capabilities.\"a\"]\ndecision = \"deny\"\nquorum = 2",
        "capabilities.a.quorum",
        "this one denies",
    ),
    (
        "[capabilities.\"a\"]\ndecision = \"deny\"\neditable = true",
        "capabilities.a.editable",
        "this one denies",
    ),
    (
        "[capabilities.\"a\"]\neditable = \"yes\"",
        "capabilities.a.editable",
        "bool",
    ),
    (
        "[capabilities.\"a\"]\ndecision = \"allow\"\ndeny_reason = \"x\"",
        "capabilities.a.deny_reason",
        "decision = \"deny\"",
    ),
    (
        "[capabilities.\"a\"]\ndecision = \"deny\"\nmax_scope = \"value\"",
        "capabilities.a.max_scope",
        "this one denies",
    ),
    (
        "[capabilities.\" \"]\ndecision = \"allow\"",
        "capabilities.\" \"",
        "must not be empty",
    ),
    (
        "[defaults]\ndeny_reason = \"x\"",
        "defaults.deny_reason",
        "decision = \"deny\"",
    ),
    (
        "[[notifiers]]\nkind = \"pager\"",
        "notifiers[0]",
        "unknown variant `pager`, expected one of `terminal`, `email`, `webhook`, `slack`",
    ),
    (
        "[[notifiers]]\nkind = \"terminal\"\nstream = \"printer\"",
        "notifiers[0]",
        "expected `stderr` or `stdout`",
    ),
    (
        "[[notifiers]]\nkind = \"terminal\"\ncolour = true",
        "notifiers[0]",
        "unknown field `colour`",
    ),
    (
        "[[notifiers]]\nkind = \"webhook\"\nurl = \"https://x\"",
        "notifiers[0]",
        "missing field `secret`",
    ),
    (
        "[gate]\nrequest_ttl = 300",
        "gate.request_ttl",
        "write \"300s\" for 300 seconds",
    ),
    (
        "[capabilities.\"a\"]\nmax_rule_ttl = 1.5",
        "capabilities.a.max_rule_ttl",
        "not a number",
    ),
    (
        "[store]\nkind = \"sqlite\"",
        "store",
        "missing field `path`",
    ),
    (
        "[store]\nkind = \"redis\"",
        "store",
        "unknown variant `redis`, expected one of `memory`, `sqlite`, `postgres`",
    ),
    (
        "[store]\nkind = \"sqlite\"\npath = \"x.db\"\nurl = \"y\"",
        "store",
        "unknown field `url`",
    ),
    (
        "[capabilities.\"a\"]\nobserve = \"yes\"",
        "capabilities.a.observe",
        "bool",
    ),
    ("mode = ", NOT_TOML, "line 1, column"),
    ("[gate\nsecret = 1", NOT_TOML, "line 1"),
];

/// What a file that is not TOML at all is called, in place of a field.
const NOT_TOML: &str = "not TOML";

#[test]
fn each_invalid_file_fails_naming_the_file_the_field_and_what_is_accepted() {
    let dir = scratch("bad");
    for (i, (text, field, accepted)) in BAD.iter().enumerate() {
        let path = dir.join(format!("bad-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let error = Config::load(&path).expect_err(text);
        let code = if *field == NOT_TOML {
            "config_unreadable"
        } else {
            "invalid_config"
        };
        assert_eq!(error.code(), code, "{text}");
        let detail = error.detail().unwrap();
        let prefix = format!("{}: {field}", path.display());
        assert!(
            detail.starts_with(&prefix),
            "{text}\n  gave: {detail}\n  wanted a start of: {prefix}"
        );
        assert!(
            detail.contains(accepted),
            "{text}\n  gave: {detail}\n  wanted: {accepted}"
        );
    }
}

#[test]
fn a_missing_file_is_named() {
    let error = Config::load("/nonexistent/tollgate.toml").unwrap_err();
    assert_eq!(error.code(), "config_unreadable");
    assert!(
        !error.to_string().contains("invalid"),
        "a missing file is not an invalid configuration: {error}"
    );
    assert!(
        error
            .detail()
            .unwrap()
            .starts_with("/nonexistent/tollgate.toml: cannot read the file")
    );
    assert!(
        std::error::Error::source(&error).is_some(),
        "the I/O error is kept as the cause"
    );
}

#[test]
fn every_shipped_config_loads_and_builds_its_policy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    collect_toml(&root.join("examples"), &mut files);
    assert!(files.len() >= 2, "{files:?}");
    for file in files {
        let config = Config::load(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        config
            .policy()
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}

fn collect_toml(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_toml(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

const INLINE: &str = "hunter2-hunter2-hunter2-hunter2";

#[test]
fn secrets_come_from_the_environment_or_a_file_and_never_inline_by_default() {
    // From the environment: cargo sets CARGO_MANIFEST_DIR for the tests it runs.
    let from_env = config("[gate]\nsecret = { env = \"CARGO_MANIFEST_DIR\" }");
    assert!(from_env.gate_builder().is_ok());

    let unset = config("[gate]\nsecret = { env = \"TOLLGATE_TEST_SURELY_UNSET\" }");
    let error = unset.gate_builder().unwrap_err();
    assert_eq!(
        error.detail(),
        Some(
            "configuration: gate.secret: the environment variable TOLLGATE_TEST_SURELY_UNSET is not set (or not UTF-8): set it before starting, or read the value from a file with { file = \"PATH\" }"
        )
    );

    // From a file, one trailing newline removed: the codes it derives match a gate built with
    // the same secret in code.
    let dir = scratch("secret");
    let file = dir.join("secret");
    std::fs::write(&file, format!("{INLINE}\n")).unwrap();
    let from_file = config(&format!(
        "[gate]\nsecret = {{ file = {:?} }}",
        file.display().to_string()
    ));
    assert!(from_file.gate_builder().is_ok());

    let missing = config("[gate]\nsecret = { file = \"/nonexistent/secret\" }");
    let error = missing.gate_builder().unwrap_err();
    assert!(
        error
            .detail()
            .unwrap()
            .starts_with("configuration: gate.secret: cannot read /nonexistent/secret")
    );

    // Inline: refused unless the file opts in, and never repeated in the error or Debug.
    let inline = config(&format!("[gate]\nsecret = \"{INLINE}\""));
    let error = inline.gate_builder().unwrap_err();
    assert!(
        error
            .detail()
            .unwrap()
            .contains("inline secrets are refused")
    );
    assert!(!format!("{error} {error:?} {inline:?}").contains("hunter2"));
    let allowed = config(&format!(
        "[gate]\nallow_inline_secrets = true\nsecret = \"{INLINE}\""
    ));
    assert!(allowed.gate_builder().is_ok());

    // A syntax error on a secret's line does not quote the line.
    let error = Config::from_toml(&format!("[gate]\nsecret = \"{INLINE}")).unwrap_err();
    assert!(!error.to_string().contains("hunter2"), "{error}");
    assert!(error.detail().unwrap().contains("line 2"), "{error}");
}

#[test]
fn the_approval_address_defaults_to_loopback_and_a_bad_one_is_named() {
    let default = config("");
    assert_eq!(
        default.approval_address().unwrap().to_string(),
        "127.0.0.1:8790"
    );
    let set = config("[approval]\nlisten = \"127.0.0.1:0\"");
    assert_eq!(set.approval_address().unwrap().port(), 0);
    let bad = config("[approval]\nlisten = \"localhost\"");
    let error = bad.approval_address().unwrap_err();
    assert_eq!(error.code(), "invalid_config");
    assert!(
        error
            .detail()
            .unwrap()
            .starts_with("configuration: approval.listen: expected an address and port"),
        "{error}"
    );
    let unknown = Config::from_toml("[approval]\nlisen = \"127.0.0.1:1\"").unwrap_err();
    assert!(unknown.detail().unwrap().contains("lisen"), "{unknown}");
}

#[cfg(feature = "axum")]
#[test]
fn approvers_come_with_their_own_tokens_never_inline_by_default() {
    let dir = scratch("approvers");
    let token = |name: &str, value: &str| {
        let file = dir.join(name);
        std::fs::write(&file, format!("{value}\n")).unwrap();
        format!("{{ file = {:?} }}", file.display().to_string())
    };
    let (alice, bob, short) = (
        token("alice", "alice-token-of-sixteen-bytes"),
        token("bob", "bob-token-of-sixteen-bytes"),
        token("short", "tollgate"),
    );
    let entry = |name: &str, token: &str| {
        format!("[[approval.approvers]]\nname = \"{name}\"\ntoken = {token}\n")
    };

    let two = config(&format!(
        "{}capabilities = [\"payments.*\"]\nmax_scope = \"value\"\n{}",
        entry("alice", &alice),
        entry("bob", &bob)
    ));
    assert_eq!(two.approvers().unwrap().len(), 2);
    assert!(config("").approvers().unwrap().is_empty());

    let too_short = config(&format!(
        "{}{}",
        entry("alice", &alice),
        entry("bob", &short)
    ));
    let error = too_short.approvers().unwrap_err();
    assert_eq!(
        error.detail(),
        Some("configuration: approval.approvers[1].token: a token must be at least 16 bytes")
    );

    let shared = config(&format!(
        "{}{}",
        entry("alice", &alice),
        entry("bob", &alice)
    ));
    let error = shared.approvers().unwrap_err();
    assert!(
        error
            .detail()
            .unwrap()
            .contains("two approvers share this token"),
        "{error}"
    );

    let inline = config(&entry("alice", "\"hunter2hunter2hunter2\""));
    let error = inline.approvers().unwrap_err();
    assert!(
        error
            .detail()
            .unwrap()
            .contains("inline secrets are refused"),
        "{error}"
    );
    assert!(!format!("{error} {error:?} {inline:?}").contains("hunter2"));

    let nameless = config(&entry(" ", &alice));
    let error = nameless.approvers().unwrap_err();
    assert!(
        error
            .detail()
            .unwrap()
            .contains("approval.approvers[0].name"),
        "{error}"
    );
}

#[cfg(not(feature = "webhook"))]
#[test]
fn a_notifier_whose_feature_is_missing_says_which_feature() {
    let config = config(
        "[gate]\nrandom_secret = true\n[[notifiers]]\nkind = \"slack\"\nurl = { env = \"CARGO_MANIFEST_DIR\" }\n",
    );
    let error = config
        .gate_builder()
        .expect_err("slack needs the webhook feature");
    assert_eq!(
        error.detail(),
        Some(
            "configuration: notifiers[0].kind: kind = \"slack\" needs tollgate's `webhook` feature, which this build lacks"
        )
    );
}

#[cfg(all(feature = "email", feature = "webhook"))]
#[test]
fn every_notifier_kind_builds_from_the_file() {
    let dir = scratch("notifiers");
    let webhook_secret = dir.join("webhook");
    std::fs::write(&webhook_secret, INLINE).unwrap();
    let config = config(&format!(
        r#"
        [gate]
        random_secret = true
        [[notifiers]]
        kind = "terminal"
        [[notifiers]]
        kind = "email"
        url = "smtps://tollgate@smtp.example.com:465"
        password = {{ env = "CARGO_MANIFEST_DIR" }}
        from = "tollgate@example.com"
        to = ["ops@example.com"]
        [[notifiers]]
        kind = "webhook"
        url = "https://hooks.example.com/x"
        secret = {{ file = {:?} }}
        include_code = "never"
        [[notifiers]]
        kind = "slack"
        url = {{ env = "CARGO_MANIFEST_DIR" }}
        "#,
        webhook_secret.display().to_string()
    ));
    let error = config.gate_builder().err().map(|e| e.to_string());
    // The Slack URL read from CARGO_MANIFEST_DIR is a path, not a URL: the error names the
    // entry without repeating the value.
    let error = error.expect("a path is not a webhook URL");
    assert!(error.contains("notifiers[3]"), "{error}");
    assert!(!error.contains(env!("CARGO_MANIFEST_DIR")), "{error}");
}

#[tokio::test]
async fn a_gate_and_policy_from_a_file_enforce_approvers_and_reasons() {
    let config = config(
        r#"
        [gate]
        random_secret = true
        request_ttl = "1m"
        [capabilities."payments.*"]
        max_scope = "value"
        approvers = ["alice"]
        require_reason = true
        description = "Moves money."
        "#,
    );
    let inbox = RecordingNotifier::new();
    let terminal = support::Buffer::default();
    let gate: Gate = config
        .gate_builder()
        .unwrap()
        .notifier(inbox.clone())
        .notifier(tollgate::notify::TerminalNotifier::writer(terminal.clone()))
        .build()
        .unwrap();
    let service =
        gate.layer(config.policy().unwrap())
            .layer(service_fn(|call: ToolCall| async move {
                Ok::<_, tollgate::BoxError>(call.capability().to_owned())
            }));

    // No reason: refused at once, nobody alerted.
    let bare = ToolCall::new("payments.refund", json!({"amount": 5})).principal("agent-7");
    let error = service.clone().oneshot(bare.clone()).await.unwrap_err();
    assert_eq!(code(&error), "reason_required");
    assert!(inbox.alerts().is_empty());

    let call = bare.reason("ticket #1");
    let parked = tokio::spawn(service.clone().oneshot(call));
    let alert = inbox.next_alert().await;
    assert_eq!(alert.request().reasoning(), "Moves money.");
    assert_eq!(alert.request().approvers(), Some(&["alice".into()][..]));
    support::until(|| terminal.text().contains("approvers   alice")).await;
    let id = alert.request().id();
    let code_text = alert.code().reveal().to_owned();

    // Bob has the right code but is not among the approvers: he hears what an unknown id hears,
    // and the request stays pending.
    let refused = gate
        .approve(Approve::new(id, code_text.clone()).by("bob"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "access_request_not_found");
    let refused = gate
        .deny(Deny::new(id, code_text.clone()).by("bob"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "access_request_not_found");
    assert!(gate.status(id).unwrap().is_pending());
    assert_eq!(
        gate.stats().wrong_codes,
        0,
        "a refused approver is not a wrong code"
    );

    let approval = gate
        .approve(Approve::new(id, code_text).scope(Scope::Value).by("alice"))
        .await
        .unwrap();
    assert_eq!(approval.scope(), Scope::Value);
    assert_eq!(parked.await.unwrap().unwrap(), "payments.refund");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// No input makes loading panic: arbitrary text, and the reference file with bytes
    /// replaced, inserted or cut.
    #[test]
    fn loading_never_panics(text in "\\PC{0,200}") {
        let _ = Config::from_toml(&text).map(|c| c.policy());
    }

    #[test]
    fn loading_a_mangled_reference_never_panics(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<char>(), 0u8..3), 1..6)
    ) {
        let mut text: Vec<char> = REFERENCE.chars().collect();
        for (at, c, op) in edits {
            let i = at.index(text.len());
            match op {
                0 => text[i] = c,
                1 => text.insert(i, c),
                _ => { text.remove(i); }
            }
        }
        let text: String = text.into_iter().collect();
        if let Ok(config) = Config::from_toml(&text) {
            let _ = config.policy();
            let _ = config.gate_builder();
        }
    }
}

const REFERENCE: &str = include_str!("../../examples/config/reference.toml");

/// A fresh directory under the target directory for this test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("config-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn gate_settings_from_the_file_take_effect() {
    let config = config(
        r#"
        [gate]
        random_secret = true
        code_length = 12
        max_attempts = 2
        approval_base_url = "https://approvals.example.com/r/"
        "#,
    );
    let inbox = RecordingNotifier::new();
    let gate = config
        .gate_builder()
        .unwrap()
        .notifier(inbox.clone())
        .build()
        .unwrap();
    let service = gate
        .layer(config.policy().unwrap())
        .layer(service_fn(|_: ToolCall| async {
            Ok::<_, tollgate::BoxError>("ran")
        }));
    let _parked = tokio::spawn(service.oneshot(ToolCall::new("x", json!({}))));
    let alert = inbox.next_alert().await;
    let id = alert.request().id();
    assert_eq!(alert.code().reveal().len(), 12);
    assert_eq!(
        alert.request().approval_url(),
        Some(format!("https://approvals.example.com/r/{id}").as_str())
    );
    let wrong = |code: &str| gate.approve(Approve::new(id, code).by("alice"));
    assert_eq!(
        wrong("000000000000").await.unwrap_err().code(),
        "access_request_not_found"
    );
    assert_eq!(
        wrong("000000000001").await.unwrap_err().code(),
        "too_many_attempts"
    );
}

#[test]
fn key_fields_are_read_for_value_approvals() {
    let config = config(
        r#"
        [capabilities."sms.send"]
        max_scope = "value"
        key_fields = ["/to", "/from"]
        "#,
    );
    match decide(&config, "sms.send") {
        Decision::Ask(ask) => {
            assert_eq!(ask.keyed_by(), Some(&["/from".into(), "/to".into()][..]));
        }
        other => panic!("{other:?}"),
    }
    match decide(&config, "other") {
        Decision::Ask(ask) => assert_eq!(ask.keyed_by(), None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn editable_is_read_and_inherited_from_the_defaults() {
    let config = config(
        r#"
        [defaults]
        editable = true

        [capabilities."payments.refund"]
        max_scope = "value"

        [capabilities."payments.payout"]
        editable = false
        "#,
    );
    for (capability, editable) in [
        ("payments.refund", true),
        ("payments.payout", false),
        ("other", true),
    ] {
        match decide(&config, capability) {
            Decision::Ask(ask) => assert_eq!(ask.is_editable(), editable, "{capability}"),
            other => panic!("{other:?}"),
        }
    }
    let reference = Config::from_toml(REFERENCE).unwrap();
    match decide(&reference, "payments.refund") {
        Decision::Ask(ask) => assert!(ask.is_editable()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_quorum_draws_on_named_groups_of_approvers() {
    let config = config(
        r#"
        [groups]
        finance = ["alice", "bob"]

        [capabilities."payments.payout"]
        approvers = ["@finance", "carol", "bob"]
        quorum = 2
        "#,
    );
    match decide(&config, "payments.payout") {
        Decision::Ask(ask) => {
            assert_eq!(ask.required_approvals(), 2);
            let names: Vec<&str> = ask
                .allowed_approvers()
                .unwrap()
                .iter()
                .map(|a| &**a)
                .collect();
            assert_eq!(names, ["alice", "bob", "carol"]);
        }
        other => panic!("{other:?}"),
    }
    match decide(&config, "other") {
        Decision::Ask(ask) => assert_eq!(ask.required_approvals(), 1),
        other => panic!("{other:?}"),
    }
}

/// A configuration file that can be rewritten, in its own directory.
struct File(PathBuf);

impl File {
    fn new(text: &str) -> File {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-reload-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = File(dir.join("tollgate.toml"));
        file.write(text);
        file
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

const RELOADED: &str = r#"
    mode = "selective"
    [gate]
    random_secret = true
    [[notifiers]]
    kind = "terminal"
    stream = "stderr"
    [capabilities."sms.send"]
    decision = "DECISION"
"#;

#[tokio::test]
async fn a_reload_replaces_the_policy_and_keeps_parked_calls_and_a_bad_file_changes_nothing() {
    let file = File::new(&RELOADED.replace("DECISION", "ask"));
    let config = Config::load(&file.0).unwrap();
    let live = tollgate::policy::LivePolicy::new(config.policy().unwrap());
    let gate = config.gate().unwrap();
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = ran.clone();
    let svc = gate
        .layer(live.clone())
        .layer(service_fn(move |_: ToolCall| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<_, tollgate::BoxError>("sent") }
        }));
    let sms = || ToolCall::new("sms.send", json!({"to": "+1"})).principal("agent-7");

    // Parked under the first policy.
    let parked = tokio::spawn(svc.clone().oneshot(sms()));
    support::until(|| gate.stats().pending == 1).await;
    let id = gate.pending()[0].id();

    file.write(&RELOADED.replace("DECISION", "allow"));
    Config::reload(&file.0, &live, &gate).unwrap();
    svc.clone().oneshot(sms()).await.unwrap();
    assert_eq!(
        ran.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "allowed now"
    );
    assert_eq!(gate.stats().pending, 1, "the parked call is still there");

    // A bad file: the error names it and the field, and the running policy stays.
    file.write(&RELOADED.replace("DECISION", "maybe"));
    let error = Config::reload(&file.0, &live, &gate).unwrap_err();
    assert_eq!(error.code(), "invalid_config");
    let message = error.to_string();
    assert!(message.contains("tollgate.toml"), "{message}");
    assert!(message.contains("decision"), "{message}");
    file.write(
        &RELOADED
            .replace("DECISION", "deny")
            .replace("[[notifiers]]", "[[notifierz]]"),
    );
    assert_eq!(
        Config::reload(&file.0, &live, &gate).unwrap_err().code(),
        "invalid_config"
    );
    svc.clone().oneshot(sms()).await.unwrap();
    assert_eq!(
        ran.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "still allowed"
    );

    // The parked call is decided as it was asked.
    let verification = gate.verification_code(id).unwrap();
    gate.approve(Approve::new(id, verification.reveal()).by("alice"))
        .await
        .unwrap();
    assert_eq!(parked.await.unwrap().unwrap(), "sent");

    file.write(&RELOADED.replace("DECISION", "deny"));
    Config::reload(&file.0, &live, &gate).unwrap();
    let denied = svc.oneshot(sms()).await.unwrap_err();
    assert_eq!(code(&denied), "access_request_denied");
}

#[test]
fn an_escalation_is_read_and_checked() {
    let with = |escalation: &str| {
        Config::from_toml(&format!(
            "[gate]\nrandom_secret = true\n[[notifiers]]\nkind = \"terminal\"\n{escalation}"
        ))
    };
    let config =
        with("[escalation]\nafter = \"2m\"\n[[escalation.notifiers]]\nkind = \"terminal\"")
            .unwrap();
    assert_eq!(
        config.escalation.as_ref().unwrap().after,
        std::time::Duration::from_secs(120)
    );
    config.gate().unwrap();
    let none = with("[escalation]\nafter = \"2m\"\nnotifiers = []").unwrap_err();
    assert!(none.to_string().contains("escalation.notifiers"), "{none}");
    let late = with("[escalation]\nafter = \"1h\"\n[[escalation.notifiers]]\nkind = \"terminal\"")
        .unwrap()
        .gate()
        .unwrap_err();
    assert!(late.to_string().contains("escalation"), "{late}");
    let unsaid = with("[escalation]\n[[escalation.notifiers]]\nkind = \"terminal\"").unwrap_err();
    assert!(unsaid.to_string().contains("after"), "{unsaid}");
    let extended = with(
        "[escalation]\nafter = \"2m\"\nextend = \"10m\"\n[[escalation.notifiers]]\nkind = \"terminal\"",
    )
    .unwrap();
    assert_eq!(
        extended.escalation.as_ref().unwrap().extend,
        Some(std::time::Duration::from_secs(600))
    );
    extended.gate().unwrap();
}

#[test]
fn a_file_without_a_secret_says_which_key_to_add_and_how() {
    let error = config("[[notifiers]]\nkind = \"terminal\"")
        .gate()
        .unwrap_err();
    assert_eq!(error.code(), "missing_secret");
    let detail = error.detail().unwrap();
    assert!(
        detail.starts_with(
            "configuration: gate.secret: add `secret = { env = \"TOLLGATE_SECRET\" }`"
        ),
        "{detail}"
    );
    assert!(detail.contains("random_secret = true"), "{detail}");
}

#[test]
fn a_file_without_notifiers_names_the_key_not_a_method() {
    let error = config("[gate]\nrandom_secret = true").gate().unwrap_err();
    assert_eq!(error.code(), "invalid_config");
    let text = error.to_string();
    assert!(text.contains("notifiers: no [[notifiers]] entry"), "{text}");
    assert!(text.contains("kind = \"terminal\""), "{text}");
    assert!(!text.contains("park_when_unnotified"), "{text}");
    // In code, notifiers can still be added to the file's builder.
    let gate = config("[gate]\nrandom_secret = true")
        .gate_builder()
        .unwrap()
        .notifier(RecordingNotifier::new())
        .build();
    assert!(gate.is_ok());
}

#[test]
fn observe_runs_every_entry_unenforced_and_an_entry_can_opt_out() {
    let (logs, _guard) = capture_logs();
    let observed = config(&format!("mode = \"observe\"\n{ENTRIES}"));
    observed.policy().unwrap();
    let said = logs.text();
    assert!(
        said.contains("WARN") && said.contains("OBSERVE MODE"),
        "{said}"
    );
    assert_eq!(kind(&decide(&observed, "search.web")), "allow");
    assert_eq!(kind(&decide(&observed, "fs.delete")), "observe deny");
    assert_eq!(kind(&decide(&observed, "payments.refund")), "observe ask");
    assert_eq!(kind(&decide(&observed, "shell.exec")), "observe ask");
    // One capability enforced while the rest are watched.
    let enforced = config(&format!(
        "mode = \"observe\"\n{ENTRIES}\n[capabilities.\"shell.*\"]\nobserve = false"
    ));
    assert_eq!(kind(&decide(&enforced, "shell.exec")), "ask");
    // And one watched under an enforcing mode, inheriting from [defaults] too.
    let one = config(&format!(
        "{ENTRIES}\n[capabilities.\"shell.*\"]\nobserve = true"
    ));
    assert_eq!(kind(&decide(&one, "shell.exec")), "observe ask");
    assert_eq!(kind(&decide(&one, "fs.delete")), "deny");
    let defaults = config(&format!("[defaults]\nobserve = true\n{ENTRIES}"));
    assert_eq!(kind(&decide(&defaults, "fs.delete")), "observe deny");
}

#[tokio::test]
async fn a_sqlite_store_from_the_file_keeps_a_rule_across_a_restart() {
    let dir = scratch("store");
    let secret = dir.join("secret");
    std::fs::write(&secret, INLINE).unwrap();
    let text = format!(
        "[gate]\nsecret = {{ file = {:?} }}\n[[notifiers]]\nkind = \"terminal\"\n\
         [store]\nkind = \"sqlite\"\npath = {:?}\n\
         [capabilities.\"payments.refund\"]\nmax_scope = \"value\"",
        secret.display().to_string(),
        dir.join("tollgate.db").display().to_string()
    );
    let call = || ToolCall::new("payments.refund", json!({"amount": 5})).principal("agent");
    {
        let config = config(&text);
        let notifier = RecordingNotifier::new();
        let gate = config
            .gate_builder()
            .unwrap()
            .notifier(notifier.clone())
            .build()
            .unwrap();
        let svc = gate
            .layer(config.policy().unwrap())
            .layer(service_fn(|_: ToolCall| async {
                Ok::<_, tollgate::BoxError>("ran")
            }));
        let parked = tokio::spawn(svc.oneshot(call()));
        let alert = notifier.next_alert().await;
        let code_text = alert.code().reveal().to_owned();
        gate.approve(
            Approve::new(alert.request().id(), code_text)
                .scope(Scope::Value)
                .by("alice"),
        )
        .await
        .unwrap();
        assert_eq!(parked.await.unwrap().unwrap(), "ran");
        gate.shutdown().await.unwrap();
    }
    let config = config(&text);
    let gate = config.open_gate().await.unwrap();
    let svc = gate
        .layer(config.policy().unwrap())
        .layer(service_fn(|_: ToolCall| async {
            Ok::<_, tollgate::BoxError>("ran")
        }));
    // The rule came back with the store: the same call runs without asking.
    assert_eq!(svc.oneshot(call()).await.unwrap(), "ran");
}

#[tokio::test]
async fn a_postgres_store_is_refused_by_the_synchronous_builder_naming_the_async_one() {
    let config = config(
        "[gate]\nrandom_secret = true\n[[notifiers]]\nkind = \"terminal\"\n\
         [store]\nkind = \"postgres\"\nurl = { env = \"TOLLGATE_TEST_SURELY_UNSET\" }",
    );
    let error = config.gate().unwrap_err();
    assert!(error.to_string().contains("store.kind"), "{error}");
    assert!(error.to_string().contains("open_gate"), "{error}");
}

#[test]
fn a_secret_written_as_anything_but_text_is_not_repeated_in_the_error() {
    for (field, value) in [
        ("[gate]\nsecret", "987654321987"),
        ("[gate]\nsecret", "9876543.21987"),
        ("[gate]\nsecret", "[98765, 43219]"),
        (
            "[[approval.approvers]]\nname = \"alice\"\ntoken",
            "123456789012345678",
        ),
    ] {
        let error = Config::from_toml(&format!("{field} = {value}\n"))
            .unwrap_err()
            .to_string();
        let digits: String = value.chars().filter(char::is_ascii_digit).take(5).collect();
        assert!(
            !error.contains(&digits),
            "the value is in the error: {error}"
        );
        assert!(error.contains("{ env = \"NAME\" }"), "{error}");
    }
}
