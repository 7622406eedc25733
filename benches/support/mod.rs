//! What the benches share.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use tower::Service;

/// A service that answers at once: any cost measured is the gate's.
#[derive(Clone, Copy)]
pub(crate) struct Echo;

impl<R> Service<R> for Echo {
    type Response = ();
    type Error = Infallible;
    type Future = Ready<Result<(), Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: R) -> Self::Future {
        ready(Ok(()))
    }
}
