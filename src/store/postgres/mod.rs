//! `PostgresStore`: one PostgreSQL database that the replicas of a gate share.
//!
//! One file a job: `schema` (tables and migrations), `queries` (the `Store` methods),
//! `writes` (what one transaction writes, with its change rows), `feed` (the change feed and
//! the store's task), `lease` (leases, abandoning and purging), `options` and `tls`.
//!
//! - **Decisions** are conditional updates (`… WHERE id = $1 AND status = $2`): of two replicas
//!   deciding one request, exactly one updates a row.
//! - **The change feed.** Every transition, filed rule and revocation appends a row to
//!   `tollgate_changes` in the same transaction, numbered by a counter row that the transaction
//!   holds locked until it commits, so numbers appear in commit order and a reader that has seen
//!   number `n` has seen every number before it. Each replica reads the rows after the last it saw
//!   when `NOTIFY tollgate_changes` wakes it, and every re-scan interval whether woken or not
//!   (notifications are lost while a connection is down).
//! - **Leases.** Each store handle is an instance with a name and a lease it renews; requests
//!   record the instance that holds their callers. A request whose owner's lease ran out is
//!   abandoned by whichever replica's sweep gets to it first: the `UPDATE … RETURNING` tells
//!   exactly one replica, which tells the notifiers.

mod feed;
mod handover;
mod lease;
mod options;
mod queries;
mod schema;
mod tls;
mod writes;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;

pub use self::options::PostgresOptions;

use self::feed::Watcher;
use self::lease::{random_instance, recover};
use self::schema::migrate;
use self::tls::tls;
use self::writes::{Unkept, write_in};
use super::{Change, Recovered, Write};
use crate::error::{Error, ErrorKind};
use crate::request::Status;

/// Keeps requests, rules and the audit trail in a PostgreSQL database that replicas of one
/// service share. See the crate's README, "Deploying replicas", for what is shared and the
/// bounds on how soon each replica learns of a change.
///
/// [`connect`](Self::connect) creates or migrates the schema (under an advisory lock, so
/// replicas starting together take turns), registers this process as an instance with a
/// lease, abandons what it may (its own earlier run's unfinished requests, and those of instances
/// whose lease ran out), and starts the task that renews the lease and reads the change feed.
/// Clones share one pool and one task; the task stops when the last clone is dropped.
///
/// Tables are named `tollgate_*`, in the connection's default schema.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    instance: Arc<str>,
    recovered: Mutex<Option<Recovered>>,
    changes: Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("instance", &self.inner.instance)
            .finish_non_exhaustive()
    }
}

fn failed(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(ErrorKind::StoreFailed).with_source(e)
}

fn unreadable(why: impl fmt::Display) -> Error {
    Error::new(ErrorKind::StoreUnreadable).with_detail(why.to_string())
}

impl PostgresStore {
    /// Connects with the default [`PostgresOptions`]; see [`connect_with`](Self::connect_with).
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects to the database at `url` (`postgres://user@host:port/db` or a key-value
    /// string), brings its schema up to date, registers this instance, recovers, and starts
    /// watching for changes. Must be called inside a Tokio runtime.
    ///
    /// Errors: `invalid_config` if `url` does not parse, `store_failed` if the database cannot be
    /// reached or written, `store_unreadable` if its schema is newer than this version knows.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self, Error> {
        let mut config: tokio_postgres::Config = url
            .parse()
            // The parser's error is not kept: it may quote the string, password and all.
            .map_err(|_| {
                Error::new(ErrorKind::InvalidConfig)
                    .with_detail("not a PostgreSQL connection string")
            })?;
        config.connect_timeout(options.connect_timeout);
        config.application_name("tollgate");
        // TLS, verified, when asked for: `sslmode=require`, or roots of its own. Otherwise
        // plain, as `sslmode=prefer` cannot verify a server it was told nothing about.
        let tls = (config.get_ssl_mode() == SslMode::Require || !options.tls_roots.is_empty())
            .then(|| tls(&options.tls_roots))
            .transpose()?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Some(tls) => Manager::from_config(config.clone(), tls.clone(), manager_config),
            None => {
                config.ssl_mode(SslMode::Disable);
                Manager::from_config(config.clone(), NoTls, manager_config)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .build()
            .map_err(failed)?;
        let instance: Arc<str> = options
            .instance
            .clone()
            .unwrap_or_else(random_instance)
            .into();
        migrate(&pool).await?;
        let now = SystemTime::now();
        let (recovered, seen) = recover(&pool, &instance, options.lease, now).await?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let watcher = Watcher {
            pool: pool.clone(),
            config,
            tls,
            instance: instance.clone(),
            options,
            seen,
            sender,
            wake: Arc::new(Notify::new()),
        };
        let task = tokio::spawn(watcher.run());
        tracing::info!(instance = %instance, "postgres store connected");
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                instance,
                recovered: Mutex::new(Some(recovered)),
                changes: Mutex::new(Some(receiver)),
                task,
            }),
        })
    }

    /// This instance's name among the replicas.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// `writes` in one transaction, with one commit: whether each applied.
    async fn together(&self, writes: &[Write<'_>]) -> Result<Vec<bool>, Unkept> {
        let mut client = self.client().await.map_err(Unkept::Before)?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| Unkept::Before(failed(e)))?;
        let origin = &*self.inner.instance;
        let mut applied = Vec::with_capacity(writes.len());
        for &write in writes {
            let done = write_in(&tx, origin, write).await;
            applied.push(done.map_err(Unkept::Before)?);
        }
        tx.commit().await.map_err(|e| Unkept::Commit(failed(e)))?;
        Ok(applied)
    }

    async fn client(&self) -> Result<Object, Error> {
        client(&self.inner.pool).await
    }
}

async fn client(pool: &Pool) -> Result<Object, Error> {
    pool.get().await.map_err(|e| {
        Error::new(ErrorKind::StoreFailed)
            .with_detail("cannot reach PostgreSQL")
            .with_source(e)
    })
}

fn status_of(name: &str) -> Result<Status, Error> {
    Status::from_name(name).ok_or_else(|| unreadable(format!("unknown status `{name}`")))
}
