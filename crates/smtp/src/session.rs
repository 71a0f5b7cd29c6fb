//! One SMTP session: the RFC 5321 command state machine, from greeting to close.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use smtp_proto::{Error as ParseError, Request};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::timeout;

use crate::backend::{Backend, DeliverError, Envelope, RcptDecision};
use crate::config::Config;
use crate::io::{Conn, Data, Line};

/// Recipient domains remembered for the session log line, at most.
const MAX_LOGGED_DOMAINS: usize = 16;

/// Whether the session goes on after a command.
enum Flow {
    Continue,
    /// Close the connection; the text says why, for the log.
    Close(&'static str),
}

struct Session<B> {
    conn: Conn,
    config: Arc<Config>,
    backend: B,
    remote_ip: IpAddr,
    /// Name from EHLO/HELO; `None` until then, and again after STARTTLS (RFC 3207 §4.2).
    helo: Option<String>,
    /// Reverse-path of the open transaction (RFC 5321 §4.1.1.2), if any.
    mail_from: Option<String>,
    /// Accepted forward-paths of the open transaction.
    rcpt_to: Vec<String>,
    commands: usize,
    invalid: usize,
    messages: usize,
    rcpt_domains: BTreeSet<String>,
}

/// Serves one connection until QUIT, a limit, a timeout, shutdown or disconnect, then
/// logs one line about it.
pub(crate) async fn run<B: Backend>(
    tcp: TcpStream,
    remote_ip: IpAddr,
    config: Arc<Config>,
    backend: B,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut session = Session {
        conn: Conn::new(tcp, config.command_timeout),
        config,
        backend,
        remote_ip,
        helo: None,
        mail_from: None,
        rcpt_to: Vec::new(),
        commands: 0,
        invalid: 0,
        messages: 0,
        rcpt_domains: BTreeSet::new(),
    };
    let outcome = session.serve(&mut shutdown).await;
    session.conn.close().await;
    // No addresses or contents in the log: the operator gets the peer, the outcome and
    // the recipient domains only.
    tracing::info!(
        remote_ip = %session.remote_ip,
        tls = session.conn.is_tls(),
        commands = session.commands,
        messages = session.messages,
        rcpt_domains = ?session.rcpt_domains,
        outcome,
        "smtp session ended"
    );
}

impl<B: Backend> Session<B> {
    async fn serve(&mut self, shutdown: &mut watch::Receiver<bool>) -> &'static str {
        // RFC 5321 §4.2 / §3.1: the greeting.
        let greeting = format!("220 {} ESMTP directmail", self.config.hostname);
        self.conn.queue(&greeting);
        loop {
            if *shutdown.borrow() {
                self.shutting_down();
                return "server shutdown";
            }
            let limit = self.config.max_line_length;
            let read = tokio::select! {
                read = timeout(self.config.command_timeout, self.conn.read_line(limit)) => read,
                _ = shutdown.changed() => {
                    self.shutting_down();
                    return "server shutdown";
                }
            };
            let line = match read {
                Err(_) => {
                    // RFC 5321 §4.5.3.2.7: the server may close an idle connection; 421 first.
                    let reply = format!(
                        "421 4.4.2 {} command timeout, closing connection",
                        self.config.hostname
                    );
                    self.conn.queue(&reply);
                    return "command timeout";
                }
                Ok(Err(_)) => return "connection error",
                Ok(Ok(Line::Eof)) => return "client disconnected",
                Ok(Ok(Line::TooLong)) => {
                    // RFC 5321 §4.5.3.1.4 limits command lines; §4.2.2 500 "line too long".
                    match self.invalid("500 5.5.2 line too long") {
                        Flow::Continue => continue,
                        Flow::Close(why) => return why,
                    }
                }
                Ok(Ok(Line::Complete(line))) => line,
            };
            self.commands += 1;
            if self.commands > self.config.max_commands {
                self.conn
                    .queue("421 4.7.0 too many commands in this session, closing connection");
                return "too many commands";
            }
            if let Flow::Close(why) = self.command(&line).await {
                return why;
            }
        }
    }

    fn shutting_down(&mut self) {
        let reply = format!(
            "421 4.3.2 {} service shutting down, try again later",
            self.config.hostname
        );
        self.conn.queue(&reply);
    }

    /// Answers an invalid command and closes once too many were sent.
    fn invalid(&mut self, reply: &str) -> Flow {
        self.conn.queue(reply);
        self.invalid += 1;
        if self.invalid > self.config.max_invalid_commands {
            self.conn
                .queue("421 4.7.0 too many invalid commands, closing connection");
            return Flow::Close("too many invalid commands");
        }
        Flow::Continue
    }

    /// RFC 5321 §4.1.1.5: RSET (and a new EHLO/HELO) clears the transaction.
    fn reset_transaction(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
    }

    async fn command(&mut self, line: &[u8]) -> Flow {
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request.into_owned(),
            Err(error) => return self.parse_error(error),
        };
        match request {
            Request::Ehlo { host } => {
                self.reset_transaction();
                self.helo = Some(host.clone());
                // RFC 5321 §4.1.1.1 and the extensions' RFCs: 1870 SIZE, 6152 8BITMIME,
                // 2920 PIPELINING, 2034 ENHANCEDSTATUSCODES, 3207 STARTTLS.
                let mut lines = vec![
                    format!("{} greets {}", self.config.hostname, sanitize(&host, 64)),
                    format!("SIZE {}", self.config.max_message_size),
                    "8BITMIME".to_string(),
                    "PIPELINING".to_string(),
                    "ENHANCEDSTATUSCODES".to_string(),
                ];
                if self.config.tls.is_some() && !self.conn.is_tls() {
                    lines.push("STARTTLS".to_string());
                }
                let last = lines.len() - 1;
                for (i, text) in lines.iter().enumerate() {
                    let sep = if i == last { ' ' } else { '-' };
                    self.conn.queue(&format!("250{sep}{text}"));
                }
                Flow::Continue
            }
            Request::Helo { host } => {
                self.reset_transaction();
                self.helo = Some(host);
                let reply = format!("250 {}", self.config.hostname);
                self.conn.queue(&reply);
                Flow::Continue
            }
            Request::Mail { from } => {
                if self.helo.is_none() {
                    return self.invalid("503 5.5.1 send EHLO or HELO first");
                }
                if self.mail_from.is_some() {
                    return self.invalid("503 5.5.1 nested MAIL command");
                }
                // RFC 1870 §6.2: a declared size above the limit is refused at once.
                if from.size > self.config.max_message_size {
                    self.conn
                        .queue("552 5.3.4 message size exceeds fixed maximum message size");
                    return Flow::Continue;
                }
                self.mail_from = Some(from.address);
                self.conn.queue("250 2.1.0 OK");
                Flow::Continue
            }
            Request::Rcpt { to } => self.rcpt(to.address).await,
            Request::Data => self.data().await,
            Request::Rset => {
                self.reset_transaction();
                self.conn.queue("250 2.0.0 OK");
                Flow::Continue
            }
            Request::Noop { .. } => {
                self.conn.queue("250 2.0.0 OK");
                Flow::Continue
            }
            Request::Vrfy { .. } => {
                // RFC 5321 §3.5.3: 252 when we will not confirm addresses.
                self.conn.queue(
                    "252 2.5.0 cannot VRFY user, but will accept message for hosted addresses",
                );
                Flow::Continue
            }
            Request::Help { .. } => {
                self.conn.queue(
                    "214 2.0.0 supported: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY STARTTLS",
                );
                Flow::Continue
            }
            Request::StartTls => self.starttls().await,
            Request::Quit => {
                let reply = format!("221 2.0.0 {} closing connection", self.config.hostname);
                self.conn.queue(&reply);
                Flow::Close("quit")
            }
            Request::Lhlo { .. }
            | Request::Bdat { .. }
            | Request::Auth { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.invalid("502 5.5.1 command not implemented"),
        }
    }

    /// RFC 5321 §4.2.2 / RFC 1869 §6: 500 for unknown commands, 501 for bad arguments,
    /// 555 for parameters we do not support. Client text is never echoed back.
    fn parse_error(&mut self, error: ParseError) -> Flow {
        let reply = match error {
            ParseError::UnknownCommand => "500 5.5.2 command not recognized".to_string(),
            ParseError::InvalidSenderAddress => "501 5.1.7 bad sender address syntax".to_string(),
            ParseError::InvalidRecipientAddress => {
                "501 5.1.3 bad recipient address syntax".to_string()
            }
            ParseError::SyntaxError { syntax } => format!("501 5.5.4 syntax: {syntax}"),
            ParseError::InvalidParameter { param } => {
                format!("501 5.5.4 invalid value for parameter {param}")
            }
            ParseError::UnsupportedParameter { .. } => {
                "555 5.5.4 parameter not recognized or not implemented".to_string()
            }
            _ => "501 5.5.2 syntax error".to_string(),
        };
        self.invalid(&reply)
    }

    async fn rcpt(&mut self, address: String) -> Flow {
        let Some(mail_from) = self.mail_from.clone() else {
            return self.invalid("503 5.5.1 need MAIL before RCPT");
        };
        if address.is_empty() {
            return self.invalid("501 5.1.3 empty recipient address");
        }
        // RFC 5321 §4.5.3.1.10: too many recipients is a temporary 452.
        if self.rcpt_to.len() >= self.config.max_recipients {
            self.conn.queue("452 4.5.3 too many recipients");
            return Flow::Continue;
        }
        match self.backend.rcpt(&mail_from, &address).await {
            RcptDecision::Accept => {
                if self.rcpt_domains.len() < MAX_LOGGED_DOMAINS
                    && let Some((_, domain)) = address.rsplit_once('@')
                {
                    self.rcpt_domains.insert(domain.to_ascii_lowercase());
                }
                self.rcpt_to.push(address);
                self.conn.queue("250 2.1.5 OK");
            }
            RcptDecision::Reject {
                code,
                enhanced,
                text,
            } => {
                let reply = reject_reply(code, &enhanced, &text);
                self.conn.queue(&reply);
            }
        }
        Flow::Continue
    }

    async fn data(&mut self) -> Flow {
        let Some(mail_from) = self.mail_from.clone() else {
            return self.invalid("503 5.5.1 need MAIL and RCPT before DATA");
        };
        if self.rcpt_to.is_empty() {
            // RFC 5321 §3.3 / RFC 2920 §3.1: 554 "no valid recipients".
            return self.invalid("554 5.5.1 no valid recipients");
        }
        self.conn
            .queue("354 start mail input; end with <CRLF>.<CRLF>");
        let started = std::time::Instant::now();
        let read = self
            .conn
            .read_data(
                self.config.max_message_size,
                self.config.data_timeout,
                self.config.data_total_timeout,
            )
            .await;
        let body = match read {
            Ok(Data::Complete(body)) => body,
            Ok(Data::TooBig) => {
                self.reset_transaction();
                // RFC 1870 §6.3 / RFC 5321 §4.2.3: 552 when the data exceeds the limit.
                self.conn
                    .queue("552 5.3.4 message size exceeds fixed maximum message size");
                return Flow::Continue;
            }
            Ok(Data::Eof) => return Flow::Close("client disconnected during data"),
            Ok(Data::TimedOut) => {
                let reply = format!(
                    "421 4.4.2 {} data timeout, closing connection",
                    self.config.hostname
                );
                self.conn.queue(&reply);
                return Flow::Close("data timeout");
            }
            Err(_) => return Flow::Close("connection error during data"),
        };
        let envelope = Envelope {
            mail_from,
            rcpt_to: std::mem::take(&mut self.rcpt_to),
            remote_ip: self.remote_ip,
            helo: self.helo.clone().unwrap_or_default(),
            tls: self.conn.is_tls(),
            data_time: started.elapsed(),
        };
        self.reset_transaction();
        let size = body.len();
        // RFC 5321 §6.1: "250" means we are now responsible for the message, so it is
        // said only after the backend has stored it durably.
        match self.backend.deliver(envelope, body).await {
            Ok(queue_id) => {
                self.messages += 1;
                tracing::debug!(remote_ip = %self.remote_ip, size, queue_id = %sanitize(&queue_id, 64), "message accepted");
                let reply = format!("250 2.0.0 OK {}", sanitize(&queue_id, 64));
                self.conn.queue(&reply);
            }
            Err(DeliverError::Temporary(text)) => {
                tracing::warn!(remote_ip = %self.remote_ip, size, "delivery failed temporarily");
                let reply = format!("451 4.3.0 {}", sanitize(&text, 200));
                self.conn.queue(&reply);
            }
            Err(DeliverError::Permanent(text)) => {
                tracing::info!(remote_ip = %self.remote_ip, size, "message refused by the backend");
                let reply = format!("554 5.3.0 {}", sanitize(&text, 200));
                self.conn.queue(&reply);
            }
        }
        Flow::Continue
    }

    async fn starttls(&mut self) -> Flow {
        let Some(tls) = self.config.tls.clone() else {
            return self.invalid("502 5.5.1 STARTTLS not available");
        };
        if self.conn.is_tls() {
            return self.invalid("503 5.5.1 TLS already active");
        }
        self.conn.queue("220 2.0.0 ready to start TLS");
        if self
            .conn
            .start_tls(tls, self.config.command_timeout)
            .await
            .is_err()
        {
            return Flow::Close("TLS handshake failed");
        }
        // RFC 3207 §4.2: forget everything learnt before TLS; the client must EHLO again.
        self.helo = None;
        self.reset_transaction();
        Flow::Continue
    }
}

/// The reply for a backend's refusal, kept within what RFC 5321 §4.2 allows.
fn reject_reply(code: u16, enhanced: &str, text: &str) -> String {
    let code = if (400..=599).contains(&code) {
        code
    } else {
        550
    };
    let class = char::from(b'0' + (code / 100) as u8);
    let valid_enhanced = {
        let mut parts = enhanced.split('.');
        let ok = parts
            .next()
            .is_some_and(|c| c.len() == 1 && c.starts_with(class))
            && parts.next().is_some_and(|p| {
                (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
            })
            && parts.next().is_some_and(|p| {
                (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
            });
        ok && parts.next().is_none()
    };
    let enhanced = if valid_enhanced {
        enhanced.to_string()
    } else {
        format!("{class}.0.0")
    };
    format!("{code} {enhanced} {}", sanitize(text, 200))
}

/// Makes text safe inside one reply line: printable ASCII only, bounded length.
fn sanitize(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_reply_with_a_bad_code_becomes_550() {
        assert_eq!(reject_reply(250, "2.0.0", "x"), "550 5.0.0 x");
        assert_eq!(
            reject_reply(550, "5.1.1", "no such\r\nmailbox"),
            "550 5.1.1 no such??mailbox"
        );
        assert_eq!(reject_reply(451, "5.1.1", "later"), "451 4.0.0 later");
        assert_eq!(reject_reply(451, "4.7.12", "later"), "451 4.7.12 later");
    }
}
