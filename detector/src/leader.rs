//! Which detector leads. Detectors sharing one PostgreSQL store all ingest reports and
//! answer the API, but only one runs the minute rounds, judges the dangerous-exception
//! alerts, expires releases and runs retention: the one holding a PostgreSQL session
//! advisory lock, taken on a connection of its own and kept while that connection lives.
//!
//! - A leader that dies (SIGKILL, crash, host down) loses its connection, and with it the
//!   lock: the server releases a session's advisory locks when the session ends. Another
//!   detector, trying every [`TRY_INTERVAL`], takes it over; its next round judges from the
//!   stored state, catching up the minutes nobody judged.
//! - A leader that cannot reach the server checks its connection every
//!   [`CHECK_INTERVAL`] (each check bounded by [`CHECK_TIMEOUT`]) and steps down when a
//!   check fails, before the server may hand the lock to another.
//! - Leading is an economy, not what makes the judgement right: every change of a release
//!   holds that release's lock in the store ([`crate::store::Store::lock`]) and reads the
//!   release afresh under it, so a detector that still believes it leads for a moment after
//!   losing the lock judges nothing twice and sends no decision twice.
//!
//! A detector with the embedded store is alone with it and always leads.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::watch;

/// The advisory lock the leader holds: `pg_try_advisory_lock(LEADER_LOCK.0, LEADER_LOCK.1)`.
/// The first key is Vigil's (`"VIGL"`), shared with the store's release locks, which use
/// other second keys.
pub const LEADER_LOCK: (i32, i32) = (0x5649_474c, 0);
/// How often a detector that does not lead tries to.
pub const TRY_INTERVAL: Duration = Duration::from_secs(2);
/// How often the leader checks that its connection, and so its lock, is alive.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// The longest a check may take before the leader steps down.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether this detector leads, as it changes.
#[derive(Debug, Clone)]
pub struct Leadership {
    leads: watch::Receiver<bool>,
    /// Whether other detectors share the store.
    shared: bool,
}

impl Leadership {
    /// A detector alone with its store: it always leads.
    pub fn alone() -> Self {
        let (tx, leads) = watch::channel(true);
        // Kept alive by the receiver's clone of the value; nothing ever changes it.
        drop(tx);
        Self {
            leads,
            shared: false,
        }
    }

    /// Competes for the lead among the detectors sharing the PostgreSQL database of
    /// `options`, until `stop` turns true (then the lock is given back).
    pub fn compete(options: PgConnectOptions, stop: watch::Receiver<bool>) -> Self {
        let (tx, leads) = watch::channel(false);
        tokio::spawn(compete(options, tx, stop));
        Self {
            leads,
            shared: true,
        }
    }

    /// Whether other detectors may share the store (and receive alerts this one must
    /// judge when it leads).
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// Whether this detector leads now.
    pub fn leads(&self) -> bool {
        *self.leads.borrow()
    }

    /// Waits until this detector leads.
    pub async fn until_leading(&mut self) {
        let _ = self.leads.wait_for(|l| *l).await;
    }
}

async fn compete(
    options: PgConnectOptions,
    leads: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let options = crate::store::session_options(options)
        .application_name("vigil-detector leader")
        .disable_statement_logging();
    loop {
        if let Some(mut conn) = take_lead(&options, &mut stop).await {
            tracing::info!("this detector leads: it runs the rounds, alerts and retention");
            crate::metrics::global().set_leader(true);
            let _ = leads.send(true);
            let stopping = hold_lead(&mut conn, &mut stop).await;
            let _ = leads.send(false);
            crate::metrics::global().set_leader(false);
            // Closing the session gives the lock back at once; a broken one is gone anyway.
            let _ = tokio::time::timeout(CHECK_TIMEOUT, conn.close()).await;
            if stopping {
                return;
            }
            tracing::warn!("this detector no longer leads (its connection to the store failed)");
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(TRY_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Connects and tries for the lock until it is held (the connection holding it) or `stop`.
async fn take_lead(
    options: &PgConnectOptions,
    stop: &mut watch::Receiver<bool>,
) -> Option<PgConnection> {
    let mut conn = match tokio::time::timeout(CHECK_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot reach the store to compete for the lead");
            return None;
        }
        Err(_) => {
            tracing::warn!("cannot reach the store to compete for the lead: timed out");
            return None;
        }
    };
    loop {
        let tried = tokio::time::timeout(
            CHECK_TIMEOUT,
            sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1, $2)")
                .bind(LEADER_LOCK.0)
                .bind(LEADER_LOCK.1)
                .fetch_one(&mut conn),
        )
        .await;
        match tried {
            Ok(Ok(true)) => return Some(conn),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot compete for the lead");
                return None;
            }
            Err(_) => return None,
        }
        tokio::select! {
            () = tokio::time::sleep(TRY_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return None,
        }
    }
}

/// Holds the lead while the connection answers; returns true when `stop` ended it.
async fn hold_lead(conn: &mut PgConnection, stop: &mut watch::Receiver<bool>) -> bool {
    loop {
        tokio::select! {
            () = tokio::time::sleep(CHECK_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return true,
        }
        let alive = tokio::time::timeout(CHECK_TIMEOUT, conn.ping()).await;
        if !matches!(alive, Ok(Ok(()))) {
            return false;
        }
    }
}
