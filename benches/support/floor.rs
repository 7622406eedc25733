//! The naive floor: an approval layer written from the bare description, with none of the
//! gate's guarantees, so that the benches can report the gate's figures as ratios to it.
//!
//! A tower layer; a call whose capability needs approval gets a random id and a `oneshot`
//! channel, whose sender waits in a `Mutex<HashMap>`; the alert (id, code) goes out on an
//! unbounded channel; `approve` recomputes the HMAC-SHA256 code from the request, compares it in
//! constant time, and sends on the channel. No store, audit, expiry, scopes, rules, joining of
//! identical calls or notifier fan-out.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};
use tollgate::{Call, ToolCall};
use tower::{Layer, Service};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the approver is sent.
pub(crate) struct FloorAlert {
    pub(crate) id: u128,
    pub(crate) code: String,
}

struct Parked {
    decision: oneshot::Sender<bool>,
    capability: String,
    principal: String,
    args: String,
}

/// Whether a call needs a person.
type Ask = Arc<dyn Fn(&ToolCall) -> bool + Send + Sync>;

/// The approver's handle and the layer in one.
#[derive(Clone)]
pub(crate) struct Floor {
    key: Hmac<Sha256>,
    ask: Ask,
    parked: Arc<Mutex<HashMap<u128, Parked>>>,
    alerts: mpsc::UnboundedSender<FloorAlert>,
}

impl Floor {
    /// A floor that asks a person before any call to `capability`.
    pub(crate) fn new(capability: &'static str) -> (Floor, mpsc::UnboundedReceiver<FloorAlert>) {
        let (alerts, inbox) = mpsc::unbounded_channel();
        let floor = Floor {
            key: Hmac::new_from_slice(b"a benchmark secret, sixteen bytes or more").unwrap(),
            ask: Arc::new(move |call: &ToolCall| call.capability() == capability),
            parked: Arc::default(),
            alerts,
        };
        (floor, inbox)
    }

    fn code(&self, id: u128, capability: &str, principal: &str, args: &str) -> String {
        let mut mac = self.key.clone();
        mac.update(&id.to_be_bytes());
        for field in [capability, principal, args] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field.as_bytes());
        }
        let digest = mac.finalize().into_bytes();
        digest[..4].iter().map(|b| format!("{b:02X}")).collect()
    }

    /// Resumes call `id` if `code` is its code. Whether a caller took it.
    pub(crate) fn approve(&self, id: u128, code: &str) -> bool {
        let mut parked = self.parked.lock().unwrap();
        let Some(call) = parked.get(&id) else {
            return false;
        };
        let expected = self.code(id, &call.capability, &call.principal, &call.args);
        if !bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            return false;
        }
        let call = parked.remove(&id).unwrap();
        drop(parked);
        call.decision.send(true).is_ok()
    }
}

/// The floor around a service.
#[derive(Clone)]
pub(crate) struct FloorService<S> {
    floor: Floor,
    inner: S,
}

impl<S> Layer<S> for Floor {
    type Service = FloorService<S>;
    fn layer(&self, inner: S) -> FloorService<S> {
        FloorService {
            floor: self.clone(),
            inner,
        }
    }
}

/// Why the floor did not run a call.
#[derive(Debug)]
pub(crate) struct Denied;

impl<S> Service<ToolCall> for FloorService<S>
where
    S: Service<ToolCall> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = S::Response;
    type Error = Denied;
    type Future = BoxFuture<Result<S::Response, Denied>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Denied>> {
        self.inner.poll_ready(cx).map_err(|_| Denied)
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        if !(self.floor.ask)(&call) {
            let future = self.inner.call(call);
            return Box::pin(async move { future.await.map_err(|_| Denied) });
        }
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).unwrap();
        let id = u128::from_le_bytes(bytes);
        let capability = call.capability().to_owned();
        let principal = Call::principal(&call).unwrap_or("anonymous").to_owned();
        let args = serde_json::to_string(call.args()).unwrap();
        let code = self.floor.code(id, &capability, &principal, &args);
        let (decision, decided) = oneshot::channel();
        let parked = Parked {
            decision,
            capability,
            principal,
            args,
        };
        self.floor.parked.lock().unwrap().insert(id, parked);
        let _ = self.floor.alerts.send(FloorAlert { id, code });
        let mut inner = self.inner.clone();
        Box::pin(async move {
            match decided.await {
                Ok(true) => inner.call(call).await.map_err(|_| Denied),
                _ => Err(Denied),
            }
        })
    }
}
