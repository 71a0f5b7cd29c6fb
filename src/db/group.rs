//! Group commit on SQLite: writers that wait for the one write turn at the same
//! moment are written together, by whichever of them gets the turn, in one
//! transaction (one commit, and where it waits for the disk one sync, for all of
//! them), and each learns its own result.

use std::future::Future;
use std::sync::Mutex;

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
    /// caller is so that the breakdown by writer names it; or any guard held while
    /// the batch is written), and if this caller is the
    /// first to get it, writes everything queued by then with `write`, which answers
    /// each piece of work, in order (an error for one need not fail the others). The
    /// answer to this caller's own `work`, whoever wrote it.
    pub async fn write<G, W, F>(
        &self,
        turn: impl Future<Output = G>,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::Waiting;
    use crate::config::DatabaseUrl;
    use crate::db::Db;

    #[tokio::test]
    async fn writers_waiting_for_the_turn_together_are_written_in_one_go_and_each_gets_its_own_answer()
     {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Db::connect(&DatabaseUrl(url)).await.unwrap();
        let waiting: Arc<Waiting<i64, i64>> = Arc::default();
        let writes = Arc::new(AtomicUsize::new(0));
        // the turn is held while five writers queue up behind it
        let turn = db.write_turn().await;
        let writers: Vec<_> = (0..5)
            .map(|i| {
                let (db, waiting, writes) = (db.clone(), waiting.clone(), writes.clone());
                tokio::spawn(async move {
                    waiting
                        .write(db.write_turn(), i, move |batch| async move {
                            writes.fetch_add(1, Ordering::SeqCst);
                            assert_eq!(batch.len(), 5, "everything waiting is written together");
                            batch
                                .into_iter()
                                .map(|i| {
                                    if i == 3 {
                                        Err("three".into())
                                    } else {
                                        Ok(i * 10)
                                    }
                                })
                                .collect()
                        })
                        .await
                })
            })
            .collect();
        while waiting.lock().len() < 5 {
            tokio::task::yield_now().await;
        }
        drop(turn);
        let mut answers = Vec::new();
        for w in writers {
            answers.push(w.await.unwrap());
        }
        assert_eq!(
            answers,
            [Ok(0), Ok(10), Ok(20), Err("three".to_owned()), Ok(40)]
        );
        assert_eq!(writes.load(Ordering::SeqCst), 1);
    }
}
