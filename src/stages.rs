//! Where a Direct message's time goes, stage by stage: a running total and a count
//! per stage, kept in atomics (two additions per stage a message passes), so the
//! load benchmark can print a breakdown and a regression shows where it is.

use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The stages of a message's way through this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// An SMTP DATA transfer, from the first byte to the reply.
    SmtpReceive,
    /// Storing a received message before the 250 reply.
    Store,
    /// Loading a receiving domain's keys and anchors.
    Keys,
    /// Decrypting, verifying and judging the signer (the engine's `judge`).
    Judge,
    /// Fetching CRLs and AIA issuers (cache hits included).
    Revocation,
    /// Reading attachments and clinical documents for the page.
    Read,
    /// The delivery transaction: messages, notifications queued, the audit.
    Deliver,
    /// Signing and encrypting an outgoing message or notification.
    Seal,
    /// Handing a sealed message to the next hop (or to our own inbound queue).
    Send,
    /// Holding SQLite's write turn (every write that queues for it, any stage).
    WriteTurn,
}

impl Stage {
    /// Every stage, in a message's order.
    pub const ALL: [Stage; 10] = [
        Stage::SmtpReceive,
        Stage::Store,
        Stage::Keys,
        Stage::Judge,
        Stage::Revocation,
        Stage::Read,
        Stage::Deliver,
        Stage::Seal,
        Stage::Send,
        Stage::WriteTurn,
    ];

    /// A short name for printing.
    pub fn name(self) -> &'static str {
        match self {
            Stage::SmtpReceive => "SMTP receive",
            Stage::Store => "store",
            Stage::Keys => "keys",
            Stage::Judge => "decrypt + verify",
            Stage::Revocation => "revocation",
            Stage::Read => "read",
            Stage::Deliver => "deliver",
            Stage::Seal => "MDN/message seal",
            Stage::Send => "send",
            Stage::WriteTurn => "SQLite write turn",
        }
    }
}

static NANOS: [AtomicU64; Stage::ALL.len()] = [const { AtomicU64::new(0) }; Stage::ALL.len()];
static COUNTS: [AtomicU64; Stage::ALL.len()] = [const { AtomicU64::new(0) }; Stage::ALL.len()];

fn index(stage: Stage) -> usize {
    Stage::ALL.iter().position(|s| *s == stage).unwrap_or(0)
}

/// Adds one pass through `stage` that took `elapsed`.
pub fn record(stage: Stage, elapsed: Duration) {
    let i = index(stage);
    NANOS[i].fetch_add(
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    COUNTS[i].fetch_add(1, Ordering::Relaxed);
}

/// Write turns by the place in the source that took them: passes and nanoseconds.
static WRITERS: std::sync::Mutex<Vec<(&'static Location<'static>, u64, u64)>> =
    std::sync::Mutex::new(Vec::new());

/// Adds one SQLite write turn taken at `at` and held for `held`.
pub fn record_write(at: &'static Location<'static>, held: Duration) {
    record(Stage::WriteTurn, held);
    let nanos = u64::try_from(held.as_nanos()).unwrap_or(u64::MAX);
    let mut writers = WRITERS.lock().unwrap_or_else(|e| e.into_inner());
    match writers.iter_mut().find(|(l, _, _)| *l == at) {
        Some((_, n, total)) => {
            *n += 1;
            *total += nanos;
        }
        None => writers.push((at, 1, nanos)),
    }
}

/// The write turns by where they were taken (`file:line`), most time first.
pub fn writers() -> Vec<(String, u64, Duration)> {
    let writers = WRITERS.lock().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<_> = writers
        .iter()
        .map(|(at, n, nanos)| {
            (
                format!("{}:{}", at.file(), at.line()),
                *n,
                Duration::from_nanos(*nanos),
            )
        })
        .collect();
    out.sort_by_key(|w| std::cmp::Reverse(w.2));
    out
}

/// Times `work` as one pass through `stage`.
pub async fn timed<T>(stage: Stage, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = work.await;
    record(stage, started.elapsed());
    out
}

/// Each stage's passes and total time since the process started.
pub fn snapshot() -> Vec<(Stage, u64, Duration)> {
    Stage::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                *s,
                COUNTS[i].load(Ordering::Relaxed),
                Duration::from_nanos(NANOS[i].load(Ordering::Relaxed)),
            )
        })
        .collect()
}
