//! The boxed future the plugin traits ([`Notifier`](crate::notify::Notifier),
//! [`Store`](crate::store::Store)) return, so they stay object-safe.

use std::future::Future;
use std::pin::Pin;

/// A boxed future, as notifier and store methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
