//! Buffered connection I/O: command lines, message data (dot-unstuffing, RFC 5321 §4.5.2)
//! and the STARTTLS upgrade, over a plain or TLS stream.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Bytes asked from the socket per read.
const READ_CHUNK: usize = 16 * 1024;

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only between taking the plain stream and finishing the TLS handshake.
    Closed,
}

/// One client connection with its input and output buffers.
pub(crate) struct Conn {
    stream: Stream,
    input: Vec<u8>,
    /// Start of unconsumed bytes in `input`.
    pos: usize,
    output: Vec<u8>,
    /// Deadline for writing out a reply to a client that does not read.
    write_timeout: Duration,
}

/// Result of reading one command line.
pub(crate) enum Line {
    /// A complete line, terminator included.
    Complete(Vec<u8>),
    /// The line exceeded the limit; it was read to its end and discarded.
    TooLong,
    /// The client closed the connection.
    Eof,
}

/// Result of reading message data after `354`.
pub(crate) enum Data {
    /// The unstuffed message, up to (not including) the CRLF that precedes the final dot.
    Complete(Vec<u8>),
    /// More than the limit arrived; the rest was read to the final dot and discarded.
    TooBig,
    /// The client closed the connection before the final dot.
    Eof,
    /// Silence longer than the idle timeout, or the total data time ran out.
    TimedOut,
}

/// States of the data reader: where we are relative to line starts.
#[derive(Clone, Copy)]
enum DataState {
    /// After CRLF (or at the start of data).
    LineStart,
    /// Saw `.` at a line start.
    Dot,
    /// Saw `.` CR at a line start.
    DotCr,
    /// Inside a line.
    Mid,
    /// Saw CR inside a line.
    Cr,
}

impl Conn {
    pub(crate) fn new(tcp: TcpStream, write_timeout: Duration) -> Self {
        Self {
            stream: Stream::Plain(tcp),
            input: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            output: Vec::with_capacity(1024),
            write_timeout,
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Queues a reply; it is sent before the next read from the socket, so a pipelined
    /// batch of commands gets its replies in one write (RFC 2920 §3.1).
    pub(crate) fn queue(&mut self, reply: &str) {
        self.output.extend_from_slice(reply.as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    /// Writes out queued replies.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.output);
        let write = async {
            match &mut self.stream {
                Stream::Plain(s) => {
                    s.write_all(&out).await?;
                    s.flush().await
                }
                Stream::Tls(s) => {
                    s.write_all(&out).await?;
                    s.flush().await
                }
                Stream::Closed => Err(io::ErrorKind::NotConnected.into()),
            }
        };
        match timeout(self.write_timeout, write).await {
            Ok(result) => result,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Reads more bytes from the socket into `input`, flushing queued replies first.
    /// Returns the number of bytes read (0 at end of stream).
    async fn fill(&mut self) -> io::Result<usize> {
        self.flush().await?;
        if self.pos > 0 && self.pos == self.input.len() {
            self.input.clear();
            self.pos = 0;
        } else if self.pos > READ_CHUNK {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        let start = self.input.len();
        self.input.resize(start + READ_CHUNK, 0);
        let read = match &mut self.stream {
            Stream::Plain(s) => s.read(&mut self.input[start..]).await,
            Stream::Tls(s) => s.read(&mut self.input[start..]).await,
            Stream::Closed => Err(io::ErrorKind::NotConnected.into()),
        };
        let n = *read.as_ref().unwrap_or(&0);
        self.input.truncate(start + n);
        read
    }

    /// Reads one command line of at most `max` octets (terminator included).
    pub(crate) async fn read_line(&mut self, max: usize) -> io::Result<Line> {
        let mut discarding = false;
        loop {
            let pending = &self.input[self.pos..];
            if let Some(i) = pending.iter().position(|&b| b == b'\n') {
                let line = pending[..=i].to_vec();
                self.pos += i + 1;
                if discarding || line.len() > max {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Complete(line));
            }
            if pending.len() > max {
                // Keep memory bounded: drop the oversized line and skip to its end.
                discarding = true;
                self.pos = self.input.len();
            }
            if self.fill().await? == 0 {
                return Ok(Line::Eof);
            }
        }
    }

    /// Reads message data up to `<CRLF>.<CRLF>` (RFC 5321 §4.1.1.4), removing the
    /// transparency dot (§4.5.2) and keeping at most `max` octets.
    ///
    /// Only CRLF ends a line: a bare LF followed by `.` does not end the data, so a
    /// message cannot smuggle a second transaction past a relay that reads it differently.
    pub(crate) async fn read_data(
        &mut self,
        max: usize,
        idle: Duration,
        total: Duration,
    ) -> io::Result<Data> {
        let deadline = Instant::now() + total;
        let mut body = Vec::with_capacity(max.min(64 * 1024));
        let mut too_big = false;
        let mut state = DataState::LineStart;
        loop {
            let pending = &self.input[self.pos..];
            let mut consumed = pending.len();
            let mut done = false;
            {
                let mut emit = |bytes: &[u8]| {
                    if too_big {
                        return;
                    }
                    if body.len() + bytes.len() > max {
                        too_big = true;
                        body = Vec::new();
                    } else {
                        body.extend_from_slice(bytes);
                    }
                };
                let mut i = 0;
                while i < pending.len() {
                    if matches!(state, DataState::Mid) {
                        // Fast path: inside a line only CR matters; copy up to it at once.
                        let rest = &pending[i..];
                        let n = rest.iter().position(|&b| b == b'\r').unwrap_or(rest.len());
                        emit(&rest[..n]);
                        i += n;
                        if i == pending.len() {
                            break;
                        }
                    }
                    let b = pending[i];
                    state = match (state, b) {
                        (DataState::LineStart, b'.') => DataState::Dot,
                        (DataState::Dot, b'\r') => DataState::DotCr,
                        (DataState::DotCr, b'\n') => {
                            consumed = i + 1;
                            done = true;
                            break;
                        }
                        (DataState::DotCr, other) => {
                            // ".\r" then something else: the dot was stuffing, the CR is data.
                            emit(b"\r");
                            emit(&[other]);
                            if other == b'\r' {
                                DataState::Cr
                            } else {
                                DataState::Mid
                            }
                        }
                        (DataState::Cr, b'\n') => {
                            emit(b"\n");
                            DataState::LineStart
                        }
                        // LineStart (not a dot), Dot (the stuffed dot is dropped), Mid, Cr.
                        (_, other) => {
                            emit(&[other]);
                            if other == b'\r' {
                                DataState::Cr
                            } else {
                                DataState::Mid
                            }
                        }
                    };
                    i += 1;
                }
            }
            self.pos += consumed;
            if done {
                if too_big {
                    return Ok(Data::TooBig);
                }
                // The CRLF before the final dot belongs to the terminator (§4.1.1.4),
                // but the message's own last line ends with it: keep it.
                return Ok(Data::Complete(body));
            }
            let read = timeout_at(deadline.min(Instant::now() + idle), self.fill()).await;
            match read {
                Ok(Ok(0)) => return Ok(Data::Eof),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(Data::TimedOut),
            }
        }
    }

    /// Upgrades to TLS after `220 Ready to start TLS` (RFC 3207 §4).
    ///
    /// Anything the client sent after the STARTTLS line is discarded: it arrived in
    /// clear text and would otherwise be executed inside the protected session
    /// (the command-injection attack, CVE-2011-0411; RFC 3207 §5).
    pub(crate) async fn start_tls(
        &mut self,
        acceptor: Arc<rustls::ServerConfig>,
        handshake_timeout: Duration,
    ) -> io::Result<()> {
        self.flush().await?;
        self.input.clear();
        self.pos = 0;
        let tcp = match std::mem::replace(&mut self.stream, Stream::Closed) {
            Stream::Plain(tcp) => tcp,
            other => {
                self.stream = other;
                return Err(io::Error::other("STARTTLS on a stream that is not plain"));
            }
        };
        let accept = TlsAcceptor::from(acceptor).accept(tcp);
        match timeout(handshake_timeout, accept).await {
            Ok(Ok(tls)) => {
                self.stream = Stream::Tls(Box::new(tls));
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Sends queued replies and closes the connection politely.
    pub(crate) async fn close(&mut self) {
        let _ = self.flush().await;
        let shutdown = async {
            match &mut self.stream {
                Stream::Plain(s) => s.shutdown().await,
                Stream::Tls(s) => s.shutdown().await,
                Stream::Closed => Ok(()),
            }
        };
        let _ = timeout(Duration::from_secs(1), shutdown).await;
    }
}
