//! What the gate measures, through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`). Without the feature every function here is empty and compiles to nothing; with
//! it and no recorder installed, the facade's no-op recorder takes the values.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `tollgate_calls_total` | counter | `decision`: `allowed_by_policy`, `allowed_by_rule`, `denied_by_policy`, `refused`, `asked`, `observed` |
//! | `tollgate_pending_requests` | gauge | |
//! | `tollgate_parked_callers` | gauge | |
//! | `tollgate_requests_resolved_total` | counter | `status`: `approved`, `denied`, `expired`, `cancelled`, … |
//! | `tollgate_decision_seconds` | histogram | `status` |
//! | `tollgate_notifier_deliveries_total` | counter | `notifier` (its name), `result`: `accepted`, `failed` |
//! | `tollgate_store_write_seconds` | histogram | |
//! | `tollgate_store_write_failures_total` | counter | |
//! | `tollgate_wrong_codes_total` | counter | |
//!
//! No label carries a principal, a session, an argument or a capability (whose values callers
//! choose: a label per value would grow without bound), and nothing carries a code. The
//! counters of calls are registered once per gate, so counting a call is one atomic add.

/// How policy and gate disposed of one call.
#[cfg(feature = "metrics")]
#[derive(Clone, Copy, Debug)]
pub(crate) enum Disposed {
    AllowedByPolicy,
    AllowedByRule,
    DeniedByPolicy,
    /// Refused by the gate: a remembered denial, a cap, a missing reason.
    Refused,
    Asked,
    /// Run under an observed policy that would have asked or refused it.
    Observed,
}

#[cfg(feature = "metrics")]
impl Disposed {
    const ALL: [Disposed; 6] = [
        Disposed::AllowedByPolicy,
        Disposed::AllowedByRule,
        Disposed::DeniedByPolicy,
        Disposed::Refused,
        Disposed::Asked,
        Disposed::Observed,
    ];

    fn label(self) -> &'static str {
        match self {
            Disposed::AllowedByPolicy => "allowed_by_policy",
            Disposed::AllowedByRule => "allowed_by_rule",
            Disposed::DeniedByPolicy => "denied_by_policy",
            Disposed::Refused => "refused",
            Disposed::Asked => "asked",
            Disposed::Observed => "observed",
        }
    }
}

/// The handles a gate counts its calls and load with, registered when it is built.
#[cfg(feature = "metrics")]
pub(crate) struct Meters {
    calls: [metrics::Counter; 6],
    pending: metrics::Gauge,
    parked: metrics::Gauge,
}

#[cfg(feature = "metrics")]
impl std::fmt::Debug for Meters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Meters")
    }
}

#[cfg(feature = "metrics")]
impl Meters {
    pub(crate) fn new() -> Self {
        Meters {
            calls: Disposed::ALL
                .map(|d| metrics::counter!("tollgate_calls_total", "decision" => d.label())),
            pending: metrics::gauge!("tollgate_pending_requests"),
            parked: metrics::gauge!("tollgate_parked_callers"),
        }
    }

    /// Counts one call.
    pub(crate) fn call(&self, disposed: Disposed) {
        self.calls[disposed as usize].increment(1);
    }

    /// The pending requests and parked callers now.
    pub(crate) fn load(&self, pending: usize, parked: usize) {
        self.pending.set(pending as f64);
        self.parked.set(parked as f64);
    }
}

/// `_request` ended with `_outcome`.
#[inline]
pub(crate) fn resolved(
    _request: &crate::request::AccessRequest,
    _outcome: &crate::request::Outcome,
) {
    #[cfg(feature = "metrics")]
    {
        let status = _outcome.status().as_str();
        let waited = std::time::SystemTime::now()
            .duration_since(_request.created_at())
            .unwrap_or_default();
        metrics::counter!("tollgate_requests_resolved_total", "status" => status).increment(1);
        metrics::histogram!("tollgate_decision_seconds", "status" => status).record(waited);
    }
}

/// A notifier accepted a delivery, or failed it.
#[inline]
pub(crate) fn delivery(_notifier: &str, _accepted: bool) {
    #[cfg(feature = "metrics")]
    {
        let result = if _accepted { "accepted" } else { "failed" };
        let notifier = _notifier.to_owned();
        metrics::counter!("tollgate_notifier_deliveries_total", "notifier" => notifier, "result" => result)
            .increment(1);
    }
}

/// Times a store write; without the feature, reads no clock.
pub(crate) struct Timing(#[cfg(feature = "metrics")] std::time::Instant);

impl Timing {
    #[inline]
    pub(crate) fn start() -> Self {
        Timing(
            #[cfg(feature = "metrics")]
            std::time::Instant::now(),
        )
    }

    /// The write (or the `writes` of one batch) ended; `failed` of them failed.
    #[inline]
    pub(crate) fn stop(self, _writes: usize, _failed: usize) {
        #[cfg(feature = "metrics")]
        {
            let took = self.0.elapsed();
            let histogram = metrics::histogram!("tollgate_store_write_seconds");
            for _ in 0.._writes {
                histogram.record(took);
            }
            if _failed > 0 {
                metrics::counter!("tollgate_store_write_failures_total").increment(_failed as u64);
            }
        }
    }
}

/// Someone gave a wrong code.
#[inline]
pub(crate) fn wrong_code() {
    #[cfg(feature = "metrics")]
    metrics::counter!("tollgate_wrong_codes_total").increment(1);
}
