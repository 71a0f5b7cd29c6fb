//! Group commit on SQLite: writers that wait for the one write turn at the same
//! moment are written together, by whichever of them gets the turn, in one
//! transaction (one commit, and where it waits for the disk one sync, for all of
//! them), and each learns its own result.

use std::future::Future;
use std::sync::Mutex;

use super::WriteTurn;

/// Work waiting for the write turn, each with where its result goes.
pub struct Waiting<T, R>(Mutex<Vec<(T, Done<R>)>>);

type Done<R> = tokio::sync::oneshot::Sender<Result<R, String>>;

impl<T, R> Default for Waiting<T, R> {
    fn default() -> Self {
        Waiting(Mutex::new(Vec::new()))
    }
}

impl<T, R> std::fmt::Debug for Waiting<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting").finish_non_exhaustive()
    }
}

impl<T, R> Waiting<T, R> {
    /// Queues `work`, waits for `turn` ([`super::Db::write_turn`], taken where the
    /// caller is so that the breakdown by writer names it), and if this caller is the
    /// first to get it, writes everything queued by then with `write`, which answers
    /// each piece of work, in order (an error for one need not fail the others). The
    /// answer to this caller's own `work`, whoever wrote it.
    pub async fn write<W, F>(
        &self,
        turn: impl Future<Output = Option<WriteTurn>>,
        work: T,
        write: W,
    ) -> Result<R, String>
    where
        W: FnOnce(Vec<T>) -> F,
        F: Future<Output = Vec<Result<R, String>>>,
    {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.lock().push((work, done));
        let turn = turn.await;
        let batch = std::mem::take(&mut *self.lock());
        if !batch.is_empty() {
            let (work, done): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let mut answers = write(work).await.into_iter();
            for done in done {
                let answer = answers
                    .next()
                    .unwrap_or_else(|| Err("the write gave no answer for this work".into()));
                let _ = done.send(answer);
            }
        }
        drop(turn);
        answer.await.unwrap_or_else(|_| {
            Err("the task writing this stopped before it finished; it was not written".into())
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(T, Done<R>)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
