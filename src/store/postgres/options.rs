//! How a `PostgresStore` runs: its instance name, lease, re-scan, pool and TLS roots.

use std::time::Duration;

/// How a [`PostgresStore`](super::PostgresStore) runs: its instance name, its lease, how it
/// watches for changes.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PostgresOptions {
    pub(super) instance: Option<String>,
    pub(super) lease: Duration,
    pub(super) rescan: Duration,
    pub(super) listen: bool,
    pub(super) pool_size: usize,
    pub(super) connect_timeout: Duration,
    /// Extra trusted roots, PEM, for a server whose certificate a private CA signed.
    pub(super) tls_roots: Vec<u8>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            instance: None,
            lease: Duration::from_secs(10),
            rescan: Duration::from_secs(1),
            listen: true,
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            tls_roots: Vec::new(),
        }
    }
}

impl PostgresOptions {
    /// The defaults: a random instance name, a 10 s lease, a re-scan every second, `LISTEN` on,
    /// 16 pooled connections, 5 s to connect.
    pub fn new() -> Self {
        Self::default()
    }

    /// This process's name among the replicas, stable across its restarts (a pod name, a host
    /// name): a replica that starts again under its name abandons the requests it left
    /// unfinished at once, instead of when its old lease runs out. Random if not set. Two live
    /// processes must never share a name.
    pub fn instance(mut self, name: impl Into<String>) -> Self {
        self.instance = Some(name.into());
        self
    }

    /// How long a replica's lease lasts; it is renewed every third of it. When a replica stops
    /// (killed, cut off), its requests are abandoned once its lease has run out and the next
    /// re-scan of another replica comes: within `lease + rescan`.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How often the change feed is read whether or not a notification came; the bound on how
    /// late a replica learns of a change when notifications are lost.
    pub fn rescan(mut self, every: Duration) -> Self {
        self.rescan = every;
        self
    }

    /// Whether to `LISTEN` for changes (on by default). Off, a replica learns of changes by the
    /// re-scan only: for tests of that path, and for poolers that do not pass notifications on.
    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }

    /// The most connections the store's pool opens (16 by default).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// Trusts the certificates in `pem` (PEM text, one or more) as roots for the server's TLS
    /// certificate, beside the public roots that are always trusted: for a server whose
    /// certificate a private CA signed.
    ///
    /// TLS (rustls with ring) is used when the connection string says `sslmode=require`, or
    /// when roots are given here; the server's certificate must then verify against the public
    /// roots or these, for the host named in the connection string, or nothing connects (with
    /// `require` that is stricter than libpq's, which does not verify). Otherwise connections
    /// are plain: `sslmode=prefer`, the default, is taken as `disable`, since a certificate
    /// nobody said how to verify proves nothing.
    pub fn tls_roots(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.tls_roots.extend_from_slice(pem.as_ref());
        self.tls_roots.push(b'\n');
        self
    }

    /// How long to wait for a connection, new or from the pool (5 s by default); past it, the
    /// operation fails with `store_failed`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}
