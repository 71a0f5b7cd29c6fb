//! Claims on shared work are leases. A worker that claims a received message (to
//! process it) or queue entries (to deliver them) holds them until
//! `now + DIRECTMAIL_CLAIM_SECONDS`; while it works, its instance renews the lease
//! every third of that time, however long a slow peer or CRL server takes. An
//! instance that dies (SIGKILL, power loss) renews nothing, so its claims lapse
//! within one lease and another instance (or the next start) claims them again.
//!
//! Every claim raises the row's `attempts`; that number is the claim's fencing
//! token. Renewals and outcomes are written only while the row still carries the
//! holder's number, so a worker whose lease lapsed (an instance frozen longer than a
//! lease) cannot extend or overwrite the claim another instance took since.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::clock::Clock;
use crate::db::Db;

/// What a claim is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Claim {
    /// A received message being processed (`inbound_messages`).
    Inbound(i64),
    /// A queue entry being delivered (`outbound_queue`).
    Outbound(i64),
}

/// The claims an instance's workers hold, and the lease length; cheap to clone.
#[derive(Clone, Debug)]
pub struct Leases {
    seconds: i64,
    /// Each claim held, with its fencing number (the row's `attempts`).
    held: Arc<Mutex<HashMap<Claim, i64>>>,
}

/// A claim a worker holds: renewed until this is dropped (when the worker is done
/// with it, whatever the outcome, or when it gives up on an error).
#[must_use = "the claim is renewed only while this is held"]
pub struct Held {
    held: Weak<Mutex<HashMap<Claim, i64>>>,
    claim: Claim,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(held) = self.held.upgrade() {
            held.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&self.claim);
        }
    }
}

impl Leases {
    /// Leases of `seconds` (at least one).
    pub fn new(seconds: u64) -> Leases {
        Leases {
            seconds: i64::try_from(seconds).unwrap_or(i64::MAX / 4).max(1),
            held: Arc::default(),
        }
    }

    /// How long a claim lasts without renewal.
    pub fn seconds(&self) -> i64 {
        self.seconds
    }

    /// Records that a worker holds `claim`, taken with fencing number `attempts`.
    pub fn hold(&self, claim: Claim, attempts: i64) -> Held {
        self.lock().insert(claim, attempts);
        Held {
            held: Arc::downgrade(&self.held),
            claim,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Claim, i64>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Extends every claim held to `now` plus a lease, in one write; how many were
    /// still this instance's.
    pub async fn renew(&self, db: &Db, now: i64) -> sqlx::Result<u64> {
        let held: Vec<(Claim, i64)> = self.lock().iter().map(|(c, a)| (*c, *a)).collect();
        if held.is_empty() {
            return Ok(0);
        }
        let _turn = db.write_turn().await;
        let mut tx = db.begin_redoable().await?;
        let mut renewed = 0;
        for (claim, attempts) in held {
            let (sql, id) = match claim {
                Claim::Inbound(id) => (
                    "update inbound_messages set claimed_until = $1
                     where id = $2 and attempts = $3 and state = 'processing'",
                    id,
                ),
                Claim::Outbound(id) => (
                    "update outbound_queue set claimed_until = $1
                     where id = $2 and attempts = $3 and state = 'sending'",
                    id,
                ),
            };
            renewed += sqlx::query(sql)
                .bind(now + self.seconds)
                .bind(id)
                .bind(attempts)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(renewed)
    }

    /// Renews the claims held every third of a lease, for as long as any worker
    /// keeps a handle on these leases.
    pub fn spawn_renewal(&self, db: Db, clock: Clock) {
        let held = Arc::downgrade(&self.held);
        let seconds = self.seconds;
        let every = Duration::from_millis(u64::try_from(seconds).unwrap_or(1) * 1000 / 3);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(held) = held.upgrade() else { break };
                let leases = Leases { seconds, held };
                if let Err(e) = leases.renew(&db, clock.now()).await {
                    tracing::warn!(error = %e, "renewing this instance's claims failed");
                }
            }
        });
    }
}
