//! Load benchmark (not a test): N Direct messages of about 100 KB, signed and
//! encrypted beforehand, sent over SMTP from C concurrent connections to a portal
//! running in this process; reports accepted/s (250s) and delivered-to-mailbox/s.
//!
//! `cargo bench --bench smtp_load` (SQLite in a temporary directory); set
//! `DIRECTMAIL_BENCH_POSTGRES_URL=postgres://…/postgres` (or `DIRECTMAIL_TEST_POSTGRES_URL`) for PostgreSQL (a fresh
//! database is created on it). `BENCH_MESSAGES` (default 300) and
//! `BENCH_CONNECTIONS` (default 8) size the run. After the figures it prints the
//! time spent in each stage of a message's way (`directmail::stages`): SMTP
//! receive, store, keys, decrypt + verify, revocation, read, deliver, seal (the
//! notifications) and send, so a regression shows where it is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant, SystemTime};

use directmail::app::Application;
use directmail::audit::Actor;
use directmail::clock::Clock;
use directmail::config::Config;
use directmail::domain::{DisplayName, DomainName, Email};
use directmail::store::mailboxes::{self, MailboxKind};
use directmail::store::orgs;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

mod common;
use common::{database, env_usize};

/// One SMTP session that sends `messages` (already dot-stuffed, CRLF) one after another.
async fn session(addr: std::net::SocketAddr, messages: Vec<Vec<u8>>) -> usize {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    async fn reply(read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if read.read_line(&mut line).await.unwrap() == 0 {
                return all;
            }
            let last = line.as_bytes().get(3) == Some(&b' ');
            all.push_str(&line);
            if last {
                return all;
            }
        }
    }
    reply(&mut read).await;
    write.write_all(b"EHLO bench.test\r\n").await.unwrap();
    reply(&mut read).await;
    let mut accepted = 0;
    for m in messages {
        write
            .write_all(b"MAIL FROM:<dr.load@direct.sender.test>\r\nRCPT TO:<front@direct.bench.test>\r\nDATA\r\n")
            .await
            .unwrap();
        for _ in 0..3 {
            reply(&mut read).await;
        }
        write.write_all(&m).await.unwrap();
        write.write_all(b"\r\n.\r\n").await.unwrap();
        if reply(&mut read).await.starts_with("250") {
            accepted += 1;
        }
    }
    write.write_all(b"QUIT\r\n").await.unwrap();
    accepted
}

/// The senders' HISP: a loopback SMTP server the portal relays its notifications to,
/// counting what arrives.
#[derive(Clone, Default)]
struct Sink(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl directmail_smtp::Backend for Sink {
    async fn rcpt(&self, _: &str, _: &str) -> directmail_smtp::RcptDecision {
        directmail_smtp::RcptDecision::Accept
    }
    fn deliver(
        &self,
        _: directmail_smtp::Envelope,
        _: Vec<u8>,
    ) -> impl Future<Output = Result<String, directmail_smtp::DeliverError>> + Send {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async { Ok("1".into()) }
    }
}

impl Sink {
    fn received(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[tokio::main]
async fn main() {
    let n = env_usize("BENCH_MESSAGES", 300);
    let c = env_usize("BENCH_CONNECTIONS", 8).max(1);
    let dir = tempfile::tempdir().unwrap();
    let (url, backend) = database(dir.path(), "bench").await;
    let mut config = Config::defaults();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.smtp_addr = "127.0.0.1:0".parse().unwrap();
    config.data_dir = dir.path().to_path_buf();
    config.database_url = Some(url);
    config.dev_pki = false;
    // notifications to the (fictional) senders' domain must not query real DNS: they
    // go to a loopback relay standing for the senders' HISP
    config.dns_resolver = Some("127.0.0.1:9".parse().unwrap());
    let sink = Sink::default();
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    config.smtp_relay = Some(relay.local_addr().unwrap().to_string());
    tokio::spawn(directmail_smtp::serve(
        relay,
        directmail_smtp::Config::default(),
        sink.clone(),
        std::future::pending(),
    ));
    config.log = "warn".into();
    let app = Application::build_with_clock(config, Clock::default())
        .await
        .unwrap();
    let smtp = app.smtp_addr().unwrap();
    let state = app.state.clone();
    tokio::spawn(app.run_until(std::future::pending()));

    // a hosted domain with a mailbox; the sender's certificate comes from the same
    // development CA, which the domain trusts
    let now = state.clock.now();
    let mut tx = state.db.begin().await.unwrap();
    let org = orgs::create(&mut tx, &DisplayName::parse("Bench Clinic").unwrap(), now)
        .await
        .unwrap();
    let domain = orgs::add_domain(
        &mut tx,
        Some(org.id),
        &DomainName::parse("direct.bench.test").unwrap(),
        now,
    )
    .await
    .unwrap();
    let mailbox = mailboxes::create(
        &mut tx,
        org.id,
        domain.id,
        &Email::parse("front@direct.bench.test").unwrap(),
        MailboxKind::Shared,
        &DisplayName::parse("Front").unwrap(),
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    directmail::pki::issue_dev_certificate(
        &state.db,
        &state.secret,
        &domain,
        None,
        now,
        &Actor::system(),
    )
    .await
    .unwrap();
    let ca = directmail::pki::dev_ca(&state.db, &state.secret, now)
        .await
        .unwrap();
    let sender = ca
        .issue_address("dr.load@direct.sender.test", SystemTime::now())
        .unwrap();
    let recipient = directmail::pki::identities(&state.db, &state.secret, domain.id)
        .await
        .unwrap()
        .remove(0);

    println!("sealing {n} messages of ~100 KB…");
    let body: String = (0..1400)
        .map(|i| format!("Line {i:04} of the clinical summary, nothing to see here.\r\n"))
        .collect();
    let mut sealed = Vec::with_capacity(n);
    for i in 0..n {
        let m = format!(
            "From: dr.load@direct.sender.test\r\nTo: front@direct.bench.test\r\nSubject: Load {i}\r\nMessage-ID: <load-{i}@direct.sender.test>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain\r\n\r\n{body}"
        );
        let r = directmail_smime::Recipient::new(recipient.certificate().clone());
        let s = directmail_smime::seal(
            m.as_bytes(),
            &sender,
            &[r],
            &Default::default(),
            SystemTime::now(),
        )
        .unwrap();
        let text = String::from_utf8(s).unwrap();
        let stuffed: Vec<String> = text
            .split("\r\n")
            .map(|l| {
                if l.starts_with('.') {
                    format!(".{l}")
                } else {
                    l.to_owned()
                }
            })
            .collect();
        sealed.push(stuffed.join("\r\n").into_bytes());
    }
    let size = sealed[0].len();

    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut chunks: Vec<Vec<Vec<u8>>> = (0..c).map(|_| Vec::new()).collect();
    for (i, m) in sealed.into_iter().enumerate() {
        chunks[i % c].push(m);
    }
    for chunk in chunks {
        tasks.push(tokio::spawn(session(smtp, chunk)));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap();
    }
    let accept_time = started.elapsed();
    loop {
        let delivered: i64 =
            sqlx::query_scalar("select count(*) from messages where mailbox_id = $1")
                .bind(mailbox.id)
                .fetch_one(&state.db.pool)
                .await
                .unwrap();
        let quarantined: i64 =
            sqlx::query_scalar("select count(*) from inbound_messages where state = 'quarantined'")
                .fetch_one(&state.db.pool)
                .await
                .unwrap();
        if delivered + quarantined >= accepted as i64 {
            let total = started.elapsed();
            println!("\n{backend}: {n} messages of {size} bytes over {c} SMTP connections");
            println!(
                "  accepted (250):  {accepted} in {:.2} s = {:.1} messages/s",
                accept_time.as_secs_f64(),
                accepted as f64 / accept_time.as_secs_f64()
            );
            println!(
                "  delivered:       {delivered} in {:.2} s = {:.1} messages/s (quarantined: {quarantined})",
                total.as_secs_f64(),
                delivered as f64 / total.as_secs_f64()
            );
            // each delivered message is answered with processed and dispatched
            let wanted = 2 * delivered as usize;
            while sink.received() < wanted && started.elapsed() < Duration::from_secs(900) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let with_mdns = started.elapsed();
            println!(
                "  notifications:   {} received by the senders' HISP in {:.2} s = {:.1} messages/s answered",
                sink.received(),
                with_mdns.as_secs_f64(),
                delivered as f64 / with_mdns.as_secs_f64()
            );
            println!("  time per stage (summed over concurrent workers):");
            println!(
                "    {:<18} {:>7} {:>11} {:>10}",
                "stage", "passes", "total ms", "ms each"
            );
            for (stage, passes, time) in directmail::stages::snapshot() {
                if passes == 0 {
                    continue;
                }
                let ms = time.as_secs_f64() * 1000.0;
                println!(
                    "    {:<18} {passes:>7} {ms:>11.1} {:>10.2}",
                    stage.name(),
                    ms / passes as f64
                );
            }
            let writers = directmail::stages::writers();
            if !writers.is_empty() {
                println!("  SQLite write turns by writer:");
                for (at, passes, time) in writers {
                    let ms = time.as_secs_f64() * 1000.0;
                    println!(
                        "    {at:<34} {passes:>7} {ms:>11.1} {:>10.2}",
                        ms / passes as f64
                    );
                }
            }
            break;
        }
        if started.elapsed() > Duration::from_secs(900) {
            println!("gave up after 15 minutes: {delivered} delivered");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
