//! The tower [`Layer`] that wraps a service in [`RequireApproval`].

use std::fmt;

use tower_layer::Layer;

use crate::gate::Gate;
use crate::service::RequireApproval;

/// Applies [`RequireApproval`] to a service: calls the policy does not allow wait for a person.
///
/// Made by [`Gate::layer`]. Cheap to clone: the gate is one `Arc`, the policy is yours.
#[derive(Clone)]
#[must_use]
pub struct RequireApprovalLayer<P> {
    gate: Gate,
    policy: P,
}

impl<P> RequireApprovalLayer<P> {
    /// A layer gating calls through `gate` with `policy`.
    pub fn new(gate: Gate, policy: P) -> Self {
        RequireApprovalLayer { gate, policy }
    }
}

impl<P: fmt::Debug> fmt::Debug for RequireApprovalLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireApprovalLayer")
            .field("gate", &self.gate)
            .field("policy", &self.policy)
            .finish()
    }
}

impl<S, P: Clone> Layer<S> for RequireApprovalLayer<P> {
    type Service = RequireApproval<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireApproval::new(inner, self.gate.clone(), self.policy.clone())
    }
}

/// The layer is made from the gate's side; the method lives here, with the middleware, so that
/// the engine needs nothing from the layer above it.
impl Gate {
    /// A layer that puts this gate, with `policy`, in front of a service.
    pub fn layer<P>(&self, policy: P) -> RequireApprovalLayer<P> {
        RequireApprovalLayer::new(self.clone(), policy)
    }
}
