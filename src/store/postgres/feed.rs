//! The change feed: every change a transaction makes is numbered in commit order; a task per
//! store renews the lease, `LISTEN`s, reads the feed past what it saw, and sweeps.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Object, Pool};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, NoTls, Row, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::lease::{abandon, renew};
use super::options::PostgresOptions;
use super::writes::CHANNEL;
use super::{client, failed, status_of, unreadable};
use crate::error::Error;
use crate::id::{RequestId, RuleId};
use crate::request::Outcome;
use crate::rule::Rule;
use crate::store::Change;

/// The store's task: renews the lease, listens for notifications, reads the change feed on each
/// and every re-scan interval, and sweeps up the requests of replicas whose lease ran out.
pub(super) struct Watcher {
    pub(super) pool: Pool,
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: Option<MakeRustlsConnect>,
    pub(super) instance: Arc<str>,
    pub(super) options: PostgresOptions,
    /// The last change number read.
    pub(super) seen: i64,
    pub(super) sender: mpsc::UnboundedSender<Change>,
    /// Woken by a notification.
    pub(super) wake: Arc<Notify>,
}

impl Watcher {
    pub(super) async fn run(mut self) {
        /// Stops the listener when the watcher stops (aborted with the store).
        struct Listener(Option<JoinHandle<()>>);
        impl Drop for Listener {
            fn drop(&mut self) {
                if let Some(task) = &self.0 {
                    task.abort();
                }
            }
        }
        let _listener = Listener(self.options.listen.then(|| {
            tokio::spawn(listen(
                self.config.clone(),
                self.tls.clone(),
                self.wake.clone(),
                self.options.rescan,
            ))
        }));
        let mut renewed = tokio::time::Instant::now();
        // Since when this replica has reached the database without a break. It sweeps up other
        // replicas' requests only once that is a whole lease: after an outage every replica's
        // lease has run out on the database's clock, and each must have had the time to renew
        // before any calls another dead.
        let mut connected = Some(tokio::time::Instant::now());
        let mut swept = tokio::time::Instant::now();
        loop {
            let wake = self.wake.clone();
            let woken = wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            // Sweeping is a write: once a re-scan interval, not on every notification.
            let sweep = connected.is_some_and(|since| since.elapsed() >= self.options.lease)
                && swept.elapsed() >= self.options.rescan;
            let result = self.round(&mut renewed, sweep).await;
            if sweep && result.is_ok() {
                swept = tokio::time::Instant::now();
            }
            match (&result, connected) {
                (Err(error), Some(_)) => {
                    tracing::warn!(instance = %self.instance, %error, "postgres store: cannot reach the database; retrying");
                    connected = None;
                }
                (Ok(()), None) => {
                    tracing::info!(instance = %self.instance, "postgres store: reaching the database again");
                    connected = Some(tokio::time::Instant::now());
                }
                _ => {}
            }
            if self.sender.is_closed() {
                return;
            }
            let _ = tokio::time::timeout(self.options.rescan, woken).await;
        }
    }

    /// One round: renew the lease if a third of it has passed, read the feed, and `sweep` up
    /// the requests of replicas whose lease ran out.
    async fn round(
        &mut self,
        renewed: &mut tokio::time::Instant,
        sweep: bool,
    ) -> Result<(), Error> {
        let connection = client(&self.pool).await?;
        if renewed.elapsed() >= self.options.lease / 3 {
            renew(&connection, &self.instance, self.options.lease).await?;
            *renewed = tokio::time::Instant::now();
        }
        self.read(&connection).await?;
        drop(connection);
        if !sweep {
            return Ok(());
        }
        let mut client = client(&self.pool).await?;
        let tx = client.transaction().await.map_err(failed)?;
        let abandoned = abandon(&tx, &self.instance, None, SystemTime::now()).await?;
        tx.commit().await.map_err(failed)?;
        for request in abandoned {
            tracing::warn!(request_id = %request.id, "abandoned a request of a replica whose lease ran out");
            let _ = self.sender.send(Change::Abandoned(request));
        }
        Ok(())
    }

    /// Reads the feed past the last change seen, sending on the changes other instances made.
    async fn read(&mut self, client: &Object) -> Result<(), Error> {
        let query = client
            .prepare_cached(
                "SELECT seq, origin, kind, request, status, outcome, verdict, rule, record
                 FROM tollgate_changes WHERE seq > $1 ORDER BY seq LIMIT 1000",
            )
            .await
            .map_err(failed)?;
        loop {
            let rows = client.query(&query, &[&self.seen]).await.map_err(failed)?;
            let full = rows.len() == 1000;
            for row in rows {
                self.seen = row.get(0);
                if row.get::<_, &str>(1) == &*self.instance {
                    continue;
                }
                // A request handed over is news to the process it was handed to only.
                if row.get::<_, &str>(2) == "handover"
                    && row.get::<_, Option<&str>>(8) != Some(&*self.instance)
                {
                    continue;
                }
                match change_of(&row) {
                    Ok(Some(change)) => {
                        let _ = self.sender.send(change);
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(seq = self.seen, %error, "postgres store: unreadable change skipped")
                    }
                }
            }
            if !full {
                return Ok(());
            }
        }
    }
}

pub(super) fn change_of(row: &Row) -> Result<Option<Change>, Error> {
    let id = |i: usize| -> Result<[u8; 16], Error> {
        row.get::<_, Option<&[u8]>>(i)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .ok_or_else(|| unreadable("a change without its id"))
    };
    Ok(Some(match row.get::<_, &str>(2) {
        "request" => Change::Request {
            id: RequestId::from_bytes(id(3)?),
            status: status_of(row.get::<_, Option<&str>>(4).unwrap_or(""))?,
            outcome: row
                .get::<_, Option<&str>>(5)
                .map(Outcome::from_record)
                .transpose()?,
            verdict: row.get::<_, Option<&str>>(6).map(Into::into),
        },
        "rule" => Change::RuleGranted(Rule::from_record(
            row.get::<_, Option<&str>>(8)
                .ok_or_else(|| unreadable("a rule change without its rule"))?,
        )?),
        "revoke" => Change::RuleRevoked(RuleId::from_bytes(id(7)?)),
        "handover" => Change::HandedOver(RequestId::from_bytes(id(3)?)),
        _ => return Ok(None),
    }))
}

/// Holds a connection that `LISTEN`s on the channel and wakes the watcher on each notification;
/// reconnects when the connection drops (each reconnect wakes the watcher too, to re-scan what
/// was missed meanwhile).
pub(super) async fn listen(
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    wake: Arc<Notify>,
    retry: Duration,
) {
    loop {
        match &tls {
            Some(tls) => listen_once(&config, tls.clone(), &wake).await,
            None => listen_once(&config, NoTls, &wake).await,
        }
        wake.notify_one();
        tokio::time::sleep(retry).await;
    }
}

/// One `LISTEN` connection, until it drops.
pub(super) async fn listen_once<T>(config: &tokio_postgres::Config, tls: T, wake: &Arc<Notify>)
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = match config.connect(tls).await {
        Ok(connected) => connected,
        Err(error) => {
            tracing::debug!(%error, "postgres store: cannot connect to LISTEN");
            return;
        }
    };
    // The connection carries the notifications; it must be polled for the LISTEN itself to be
    // sent, so it runs as its own task until it drops.
    let woken = wake.clone();
    let driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(_)) => woken.notify_one(),
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "postgres store: LISTEN connection lost");
                    return;
                }
            }
        }
    });
    if client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .is_ok()
    {
        // Whatever was missed while not listening is read now.
        wake.notify_one();
    }
    let _ = driver.await;
}
