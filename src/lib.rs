//! Human approval for tower services.
//!
//! tollgate puts a person in the loop of any [`tower::Service`]. A call the policy does not yet
//! allow is *parked*: the caller's future simply waits while a [notifier](notify) alerts an
//! approver with a verification code. Approving with that code resumes the call exactly where it
//! stopped; denying fails it with `access_request_denied`. The approval's [`Scope`] and TTL decide
//! which later calls pass without asking.
//!
//! ```
//! use std::time::Duration;
//! use serde_json::json;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tollgate::notify::RecordingNotifier;
//! use tollgate::policy::{Ask, CapabilityTable};
//! use tollgate::{Approve, BoxError, Gate, Scope, ToolCall};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let alerts = RecordingNotifier::new(); // in production: TerminalNotifier, email, webhook
//! let gate = Gate::builder()
//!     .secret("keep this out of the agent's reach")
//!     .request_ttl(Duration::from_secs(300))
//!     .notifier(alerts.clone())
//!     .build()?;
//! let policy = CapabilityTable::new()
//!     .allow("search.web")
//!     .ask("payments.refund", Ask::new("refunds move money").max_scope(Scope::Value));
//! let tools = ServiceBuilder::new()
//!     .layer(gate.layer(policy))
//!     .service(service_fn(|call: ToolCall| async move {
//!         Ok::<_, BoxError>(format!("ran {}", call.capability()))
//!     }));
//!
//! // The agent's side: this call waits until a person decides.
//! let refund = ToolCall::new("payments.refund", json!({"charge": "ch_1", "amount": 10000}))
//!     .principal("agent-7")
//!     .reason("customer ticket #4421");
//! let agent = tokio::spawn(tools.clone().oneshot(refund));
//!
//! // The approver's side, with the code the alert carried.
//! let alert = alerts.next_alert().await;
//! gate.approve(
//!     Approve::new(alert.request().id(), alert.code().reveal())
//!         .scope(Scope::Value)
//!         .by("alice"),
//! )
//! .await?;
//! assert_eq!(agent.await??, "ran payments.refund");
//! # Ok(()) }
//! ```
//!
//! # The path of a call
//!
//! 1. [`RequireApproval`] asks the [`Policy`](policy::Policy): `Allow` goes straight to the
//!    inner service with no allocation and no lock; `Deny` fails at once.
//! 2. On `Ask`, a standing [`Rule`] covering the call lets it through (or a remembered denial
//!    refuses it).
//! 3. Otherwise the call joins an identical pending request, or a new [`AccessRequest`] is made,
//!    the notifiers are alerted, and the caller parks. The parked call holds none of the inner
//!    service's readiness.
//! 4. [`Gate::approve`] with the right code, [`Gate::deny`], the request's expiry, or the last
//!    caller going away decides the request, once. An approval resumes every waiting caller, each
//!    driving its own clone of the inner service.
//! 5. Each step is written to the [`store`] in order, before anyone acts on it: the request before
//!    the alert, the decision before the caller resumes. The audit trail records every one.
//!
//! [`RequireApproval::submit`] is the non-blocking form: [`Submitted::Done`] with the response,
//! or [`Submitted::Pending`] with a [`PendingCall`] handle to poll or wait on.
//! [`Gate::shutdown`] lets every parked caller go with `gate_shut_down` and flushes the store,
//! for a process about to exit.
//!
//! # Words
//!
//! One name per idea, in the docs and the code alike:
//!
//! | word | what it names |
//! |---|---|
//! | call | what a caller sends through the middleware ([`Call`], [`ToolCall`]) |
//! | capability | the name of what a call does, `payments.refund` or `POST /v1/refunds/{id}` |
//! | decision | the [policy]'s first answer about a call: allow, deny, or ask, or one of the last two observed ([`policy::Decision`]) |
//! | ask | what a person is asked, and the most an approval may grant ([`policy::Ask`]) |
//! | access request | a call's question to a person, and every identical call waiting on it ([`AccessRequest`]) |
//! | status | where a request stands: pending, approved, denied, … ([`Status`]) |
//! | outcome | how a request ended, and who ended it ([`Outcome`]) |
//! | verification code | the code an alert carries; the proof a person saw the request |
//! | approve, deny | a person's decision on a request ([`Approve`], [`Deny`]); what they get back is an [`Approval`] or a [`Denial`] |
//! | observe | running a call the policy would ask about or refuse, and recording that instead ([`policy::observe`]) |
//! | scope, TTL | how far and how long an approval reaches ([`Scope`]) |
//! | key fields | the arguments a `value` approval is about ([`policy::Ask::key_fields`]) |
//! | edit | an approver's new arguments for a call, checked by its policy again ([`Edit`]) |
//! | quorum, endorsement | the approvers a call needs ([`policy::Ask::quorum`]), and one of their approvals before the last |
//! | escalation | alerting more people about a request nobody decided in time, and perhaps giving it more time |
//! | rule | a standing approval or remembered denial that outlives its request ([`Rule`], its [`effect`](rule::RuleEffect)) |
//! | alert, resolution | what notifiers hear: a new request with its code, and how it ended |
//! | audit entry | one line of the trail, written with the change it records |
//! | store | where requests, rules and the audit trail are kept ([`store::Store`]) |
//! | replica | one of several processes of a service sharing one store; each holds its own callers |
//! | verdict | an approval made on one replica for callers on another, sealed with the secret |
//! | instance, lease | a replica's name in a shared store, and the time it stays alive there unless renewed |
//! | change feed | what a shared store tells each replica of what the others stored, in commit order |
//!
//! Inside the gate, for contributors: *admission* is how the gate answers a call (run it, refuse
//! it, or park it); a *ruling* is a verified approval or denial on its way to the callers; the
//! registry's *events* say what happened, and its *effects* are the work that follows once its
//! lock is released.
//!
//! # Against hostile callers and approvers
//!
//! - **Only who may decide spends attempts.** The approver's rights (the policy's `approvers`,
//!   the approval API's capability limits) are checked before the code is looked at; anyone else
//!   hears what an unknown id hears, and spends none of the request's five attempts.
//! - **Numbers are exact.** Arguments are digested by their exact value; JSON text with a number
//!   a 64-bit integer or a double would not hold exactly is refused (`invalid_arguments`), so
//!   the number an approver reads is the number that runs.
//! - **Caller text cannot steer a screen.** Control characters, line separators, bidirectional
//!   overrides and characters that show as nothing (zero-width, tags) in anything a caller chose
//!   are shown escaped by every shipped notifier and the approval page ([`notify::visible`] for
//!   your own).
//! - **Joins are bounded.** At most 256 callers (configurable) wait on one request; one that
//!   leaves frees its place.
//! - **Stored rules are sealed** with a key derived from the secret: a rule written into the store
//!   by anyone else, or changed there, is not honoured (see [`store`]). Across replicas, an
//!   approval travels as a sealed verdict: editing a request's row approves nothing.
//!
//! # Pitfalls
//!
//! - **Only notifiers see codes.** Do not log an [`Alert`](notify::Alert)'s code or pass it to the
//!   agent: whoever holds it can approve. Its `Debug` output is redacted for that reason.
//! - **Identical calls share a request.** Calls with the same principal, session, capability and
//!   arguments made while one is pending join it: one alert, and on approval every one of them
//!   runs its own call. A person approving "the refund" approves all of its identical copies.
//! - **`random_secret` codes and rules die with the process.** Codes stop verifying and stored
//!   rules are no longer honoured (their seals were made with the old secret). Use a configured
//!   secret for anything that must outlive the process or be shared by replicas.
//! - **A gate lives in one runtime.** Its store queue runs as a task on the runtime it was first
//!   used in (or built in); build the gate where it will be used, not in a runtime that ends
//!   before it does.
//! - **A Tokio runtime is required** once a call parks (timers and notifier tasks); outside one the
//!   call fails with `no_runtime`. [`RequireApproval::submit`] also needs `Send + 'static` types,
//!   because it drives the pending call on a spawned task.
//!
//! # Errors
//!
//! Every failure is an [`Error`] with a stable snake_case [`code`](Error::code); through the
//! middleware it arrives as a [`BoxError`] to downcast. Verification codes never appear in errors,
//! `Debug` output or logs.
//!
//! # Features
//!
//! - `email`: [`notify::EmailNotifier`], alerts by SMTP (lettre, rustls on ring).
//! - `webhook`: [`notify::WebhookNotifier`] and [`notify::SlackNotifier`], signed JSON events and
//!   chat messages over HTTPS (reqwest, rustls on ring).
//! - `toml`: [`config::Config::load`], the configuration file.
//! - `axum`: [`http`], gating axum routers and tower HTTP services; and [`approval`], the
//!   approval page and JSON API people and bots decide through ([`approval::router`]).
//! - `sqlite` (default): [`store::SqliteStore`], requests, rules and the audit trail in one
//!   SQLite file (rusqlite with SQLite bundled).
//! - `postgres`: `store::PostgresStore`, one PostgreSQL database that replicas of a service
//!   share: decide on any replica, resume where the caller waits (tokio-postgres, deadpool).
//! - `test-util`: `tollgate::store::conformance`, the checks every [`store::Store`] passes.
//! - `mcp`: `tollgate::mcp`, gating every `tools/call` of an MCP server handler (rmcp).
//! - `metrics`: counts through the `metrics` facade (calls, pending requests, decisions,
//!   notifiers, store); no exporter: install the recorder you use before building the gate.
//! - `cli`: the `tollgate` binary; `tollgate mcp --config FILE -- COMMAND` gates an MCP server
//!   over stdio, `tollgate proxy --config FILE` an HTTP API, each serving the approval page and
//!   API.
//!
//! The core (the gate, policies and their [configuration](config) types, the terminal and
//! recording notifiers, webhook signature checks for receivers, [`store::MemoryStore`]) needs none
//! of them.
// On docs.rs (nightly), each item a feature gates is marked with the feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

// The layers, bottom up (`layers.rs` checks them): the data the whole crate speaks; the plugin
// traits and their implementations (`policy`, `notify`, `store`); the engine (`gate`); the tower
// middleware; the adapters (`http`, `mcp`, `approval`, `config`); above them all, the binary in
// `src/bin`, which uses only the public API.
pub mod args;
mod audit;
mod boxed;
mod by_id;
mod call;
mod code;
mod error;
mod hex;
mod id;
mod meters;
pub mod request;
pub mod rule;
mod scope;
mod text;
mod time;

pub mod notify;
pub mod policy;
pub mod store;

pub mod gate;

pub mod future;
mod layer;
mod pending;
mod service;

#[cfg(feature = "axum")]
pub mod approval;
pub mod config;
#[cfg(feature = "axum")]
pub mod http;
#[cfg(feature = "mcp")]
pub mod mcp;

#[cfg(test)]
mod layers;

pub use crate::call::{Call, Edit, ToolCall};
pub use crate::error::{BoxError, Error, ErrorKind};
pub use crate::gate::{Approval, Approve, Denial, Deny, Gate, Revoke};
pub use crate::layer::RequireApprovalLayer;
pub use crate::pending::{PendingCall, Submitted};
pub use crate::request::{AccessRequest, Outcome, RequestId, Status};
pub use crate::rule::Rule;
pub use crate::scope::Scope;
pub use crate::service::RequireApproval;
