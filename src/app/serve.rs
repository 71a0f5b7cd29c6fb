//! Serving the web portal over HTTP or HTTPS with hyper, with the limits a listener
//! open to the Internet needs: a bound on connections served at once, the TLS
//! handshake and each request's headers within a set time, and silent connections
//! closed. Both listeners go through the same loop; only the handshake differs.
//!
//! HTTP/1.1 only (the TLS listener already offered only `http/1.1` by ALPN): the
//! header timeout is an HTTP/1 mechanism, and one protocol keeps the limits simple.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tower::Service as _;

use crate::config::Config;

/// How long connections may take and how many there may be.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// For the TLS handshake, and for a request's headers once the connection is
    /// ready for a request (hyper's `header_read_timeout`).
    pub header_timeout: Duration,
    /// Nothing received or sent for this long: the connection is asked to close
    /// (after the request in progress); a write blocked this long ends it.
    pub idle_timeout: Duration,
    /// Connections served at once; the next waits in the listen backlog.
    pub max_connections: usize,
}

impl Limits {
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(config.http_header_timeout_seconds),
            idle_timeout: Duration::from_secs(config.http_idle_timeout_seconds),
            max_connections: usize::try_from(config.http_max_connections).unwrap_or(512),
        }
    }
}

/// Accepts and serves connections until `shutdown` resolves, then asks every
/// connection to close after its request in flight and waits for them (30 s at most).
pub async fn serve(
    listener: TcpListener,
    mut make: IntoMakeServiceWithConnectInfo<Router, SocketAddr>,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        // A free slot first, then accept: beyond the bound, new connections wait in
        // the kernel's listen backlog until one closes, rather than being refused.
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // out of file descriptors, most likely: back off rather than spin
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // small responses go out at once rather than waiting on delayed ACKs
        let _ = stream.set_nodelay(true);
        let Ok(service) = make.call(peer).await;
        let acceptor = acceptor.clone();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let _slot = permit;
            match acceptor {
                None => connection(stream, service, limits, stopping).await,
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    connection(stream, service, limits, stopping).await;
                }
            }
        });
    }
    let _ = stop.send(true);
    // every slot back means every connection has finished
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(all) => {},
        () = tokio::time::sleep(Duration::from_secs(30)) => {
            tracing::warn!("connections still open after 30 s; stopping anyway");
        }
    }
    Ok(())
}

/// What the router becomes for one connection (it carries the peer's address).
type ConnectionService =
    axum::middleware::AddExtension<Router, axum::extract::ConnectInfo<SocketAddr>>;

/// Serves one connection with hyper, watching it for silence.
async fn connection<S>(
    stream: S,
    service: ConnectionService,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = Watched {
        inner: stream,
        activity: activity.clone(),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(
        TokioIo::new(io),
        hyper_util::service::TowerToHyperService::new(service),
    );
    tokio::pin!(conn);
    let idle = limits.idle_timeout;
    let mut closing = false;
    loop {
        let next = if closing {
            Instant::now() + idle
        } else {
            activity.last() + idle
        };
        let next = match activity.write_blocked_since() {
            Some(since) => next.min(since + idle),
            None => next,
        };
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = stopping.wait_for(|stop| *stop), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(next) => {
                let now = Instant::now();
                if activity
                    .write_blocked_since()
                    .is_some_and(|since| now >= since + idle)
                {
                    // the client stopped reading its response: nothing will finish
                    break;
                }
                if !closing && now >= activity.last() + idle {
                    // silent (a kept-alive connection, or a handler at work): close
                    // once the request in progress, if any, is answered
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// When bytes last moved on a connection, and since when a write has been waiting.
struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last byte read or written.
    last: AtomicU64,
    /// Milliseconds after `start`, plus one, since a write has been pending; 0: none.
    blocked: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            blocked: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last.store(self.now_ms(), Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    fn write_blocked(&self, blocked: bool) {
        if blocked {
            let now = self.now_ms().saturating_add(1);
            let _ = self
                .blocked
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        } else {
            self.blocked.store(0, Ordering::Relaxed);
        }
    }

    fn write_blocked_since(&self) -> Option<Instant> {
        match self.blocked.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.start + Duration::from_millis(ms - 1)),
        }
    }
}

/// A connection's stream that records its [`Activity`].
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> Watched<S> {
    fn after_write(&self, result: &Poll<std::io::Result<usize>>) {
        match result {
            Poll::Pending => self.activity.write_blocked(true),
            Poll::Ready(Ok(n)) if *n > 0 => {
                self.activity.write_blocked(false);
                self.activity.touch();
            }
            Poll::Ready(_) => self.activity.write_blocked(false),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after_write(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that fails when no data arrives for `idle` (the clock runs only
/// while the body is being read), so a stalled upload cannot hold a connection.
/// Unlike tower-http's `TimeoutBody`, it keeps the body's size hint and end, which
/// the length limits read.
pub fn stall_limited(body: axum::body::Body, idle: Duration) -> axum::body::Body {
    axum::body::Body::new(StallLimited {
        body,
        idle,
        sleep: None,
    })
}

struct StallLimited {
    body: axum::body::Body,
    idle: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// What a stalled body fails with.
#[derive(Debug, thiserror::Error)]
#[error("the request body stopped arriving")]
struct Stalled;

impl http_body::Body for StallLimited {
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Stalled.into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
