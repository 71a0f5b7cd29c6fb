//! The accept loop: session limit, busy replies and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::timeout;

use crate::backend::{Backend, SessionEvent};
use crate::config::Config;
use crate::session;

/// How long a refused connection may take to receive its `421`.
const BUSY_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves SMTP on `listener` until `shutdown` completes.
///
/// At most [`Config::max_sessions`] sessions run at once; an extra connection gets
/// `421 4.3.2 too busy` and is closed (RFC 5321 §3.8). When `shutdown` completes the
/// listener is closed at once; sessions waiting for a command get `421` and close,
/// while a session receiving data or waiting for [`Backend::deliver`] finishes that
/// message first. `serve` returns when every session has ended.
pub async fn serve<B: Backend>(
    listener: TcpListener,
    config: Config,
    backend: B,
    shutdown: impl Future<Output = ()>,
) {
    // A million sessions is far beyond what one process should hold; the clamp keeps the
    // permit count inside what `acquire_many` (u32) can wait for.
    let max_sessions = config.max_sessions.clamp(1, 1_000_000);
    let config = Arc::new(config);
    let sessions = Arc::new(Semaphore::new(max_sessions));
    // Refusals are cheap but still tasks: bound them too, and simply drop beyond that.
    let refusals = Arc::new(Semaphore::new(max_sessions));
    let (stop_tx, stop_rx) = watch::channel(false);
    let local = listener.local_addr().ok();
    tracing::info!(addr = ?local, hostname = %config.hostname, "smtp listening");

    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            // replies are small and answer the client at once: no Nagle delay
            Ok(pair) => {
                let _ = pair.0.set_nodelay(true);
                pair
            }
            Err(error) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                tracing::warn!(%error, "smtp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match sessions.clone().try_acquire_owned() {
            Ok(permit) => {
                let config = config.clone();
                let backend = backend.clone();
                let stop = stop_rx.clone();
                backend.session_event(SessionEvent::Started);
                tokio::spawn(async move {
                    session::run(tcp, peer.ip(), config, backend.clone(), stop).await;
                    backend.session_event(SessionEvent::Ended);
                    drop(permit);
                });
            }
            Err(_) => {
                tracing::warn!(remote_ip = %peer.ip(), "smtp session refused: too busy");
                backend.session_event(SessionEvent::RefusedBusy);
                if let Ok(permit) = refusals.clone().try_acquire_owned() {
                    let hostname = config.hostname.clone();
                    tokio::spawn(async move {
                        refuse_busy(tcp, &hostname).await;
                        drop(permit);
                    });
                }
            }
        }
    }

    drop(listener);
    tracing::info!("smtp shutting down: waiting for sessions to finish");
    let _ = stop_tx.send(true);
    // Every session holds a permit until it ends: having them all back means done.
    let all = u32::try_from(max_sessions).unwrap_or(u32::MAX);
    let _ = sessions.acquire_many(all).await;
    tracing::info!("smtp stopped");
}

async fn refuse_busy(mut tcp: TcpStream, hostname: &str) {
    let reply = format!("421 4.3.2 {hostname} too busy, try again later\r\n");
    let _ = timeout(BUSY_WRITE_TIMEOUT, async {
        tcp.write_all(reply.as_bytes()).await?;
        tcp.shutdown().await
    })
    .await;
}
