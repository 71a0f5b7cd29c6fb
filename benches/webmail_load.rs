//! Webmail benchmark (not a test): a mailbox seeded with N messages (100 000 by
//! default), then `wrk` on loopback against the inbox, page 50 of the list, a search,
//! opening a message, and opening clinical content (a message with a 5 MB C-CDA, its
//! viewer page and rendered document, a message with a 20 MB XDM package, whose card
//! is read from the package on every view), at 1 and 32 connections, next to a static file served by the
//! same server as the ceiling. Prints requests/s and p50/p99 latency.
//!
//! `cargo bench --bench webmail_load` (SQLite in a temporary directory); set
//! `DIRECTMAIL_BENCH_POSTGRES_URL=postgres://…/postgres` for PostgreSQL (a fresh
//! database is created on it). `BENCH_MESSAGES` sizes the mailbox, `BENCH_SECONDS`
//! (default 10) each wrk run, `BENCH_ONLY` (parts of rows' names, comma-separated) picks
//! rows, `BENCH_USERS` (default `1,32`) the connection counts. The row for a mailbox of a
//! million messages: `BENCH_MESSAGES=1000000 BENCH_USERS=1 BENCH_ONLY='inbox,page 50,search,open'`.
//! `BENCH_DATABASE` keeps the seeded mailbox between runs (a million messages take
//! minutes to seed): a database name (lowercase letters, digits, `_`) on that
//! PostgreSQL server, else a SQLite file's path; its development key is kept in the
//! temporary directory under a name made from it. The first run seeds it; a later run
//! finds the mailbox holding `BENCH_MESSAGES` (and the two clinical) messages, applies
//! any new migration and only measures. Another count (an interrupted seeding) is
//! refused: drop it.
//! Needs `wrk` (Debian: `apt-get install wrk`);
//! `scripts/bench-webmail.sh` installs it and runs both databases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Instant;

use directmail::app::Application;
use directmail::clock::Clock;
use directmail::config::Config;
use directmail::domain::{DisplayName, DomainName, Email, Role};
use directmail::store::inbound::{self, NewMessage};
use directmail::store::mailboxes::{self, MailboxKind};
use directmail::store::{orgs, users};

mod common;
use common::{database, env_usize, kept_database};
#[path = "../crates/content/benches/fixtures/mod.rs"]
mod clinical;

const WORDS: [&str; 24] = [
    "referral",
    "cardiology",
    "discharge",
    "summary",
    "potassium",
    "follow-up",
    "imaging",
    "results",
    "consult",
    "insurance",
    "allergy",
    "medication",
    "radiology",
    "pediatrics",
    "oncology",
    "appointment",
    "lab",
    "report",
    "x-ray",
    "biopsy",
    "prescription",
    "vaccine",
    "therapy",
    "dermatology",
];

fn message(i: usize) -> Vec<u8> {
    let w = |k: usize| WORDS[(i * 7 + k * 13) % WORDS.len()];
    let body: String = (0..12)
        .map(|l| {
            format!(
                "Line {l}: {} {} {} for patient {i}.\r\n",
                w(l),
                w(l + 1),
                w(l + 2)
            )
        })
        .collect();
    format!(
        "From: \"Dr. Sender {n}\" <dr.s{n}@direct.other{m}.test>\r\nTo: front@direct.bench.test\r\nSubject: {a} {b} #{i}\r\nMessage-ID: <bench-{i}@direct.other.test>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain\r\n\r\n{body}",
        n = i % 500,
        m = i % 40,
        a = w(0),
        b = w(5),
    )
    .into_bytes()
}

/// Runs wrk and returns (requests/s, p50 ms, p90 ms, p99 ms).
fn wrk(url: &str, cookie: &str, connections: usize, seconds: usize) -> (f64, f64, f64, f64) {
    let out = Command::new("wrk")
        .args([
            "-t",
            &connections.min(2).to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
            "-H",
            &format!("Cookie: {cookie}"),
            url,
        ])
        .output()
        .expect("wrk is installed (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !text.contains("Non-2xx"),
        "{url} answered errors under load:\n{text}"
    );
    let ms = |label: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label} in wrk output:\n{text}"));
        let v = line.split_whitespace().nth(1).unwrap();
        let (num, factor) = if let Some(n) = v.strip_suffix("us") {
            (n, 0.001)
        } else if let Some(n) = v.strip_suffix("ms") {
            (n, 1.0)
        } else if let Some(n) = v.strip_suffix('s') {
            (n, 1000.0)
        } else {
            (v, 1.0)
        };
        num.parse::<f64>().unwrap() * factor
    };
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    (rps, ms("50%"), ms("90%"), ms("99%"))
}

/// Seeds the bench mailbox with `n` messages and the two with clinical content; its id.
async fn seed(state: &directmail::web::AppState, n: usize, password: &str, backend: &str) -> i64 {
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
        &DisplayName::parse("Front desk").unwrap(),
        now,
    )
    .await
    .unwrap();
    let user = users::create(
        &mut tx,
        users::NewUser {
            org_id: Some(org.id),
            email: &Email::parse("clerk@direct.bench.test").unwrap(),
            display_name: &DisplayName::parse("Clerk").unwrap(),
            role: Role::Member,
            password_hash: Some(directmail::auth::hash_password(password).unwrap()),
            must_change_password: false,
        },
        now,
    )
    .await
    .unwrap();
    mailboxes::assign(&mut tx, mailbox.id, user.id)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    println!("seeding {n} messages into one Inbox ({backend})…");
    let mut i = 0;
    while i < n {
        let mut tx = state.db.begin().await.unwrap();
        for _ in 0..2000.min(n - i) {
            let raw = message(i);
            inbound::deliver(
                &mut tx,
                NewMessage {
                    mailbox_id: mailbox.id,
                    inbound_id: None,
                    message_id: None,
                    from_addr: "dr.sender@direct.other.test",
                    subject: &format!("{} #{i}", WORDS[i % WORDS.len()]),
                    trust_code: "trusted",
                    trust_sentence: "Signed by Dr. Sender, Other Clinic.",
                    signer_subject: None,
                    signer_issuer: None,
                    revocation: "checked",
                    raw: &raw,
                    index: &directmail::store::messages::Indexed::of(&raw),
                    attachment_checks: "",
                    filing: &Default::default(),
                    signer_facts: None,
                },
                now - (n - i) as i64,
            )
            .await
            .unwrap();
            i += 1;
        }
        tx.commit().await.unwrap();
    }
    // two messages with clinical content of the sizes issue #12 names
    let clinical_message = |subject: &str, name: &str, content_type: &str, bytes: Vec<u8>| {
        mail_builder::MessageBuilder::new()
            .from(("Dr Samuel Okafor", "dr.okafor@direct.riverside.test"))
            .to("clerk@direct.bench.test")
            .subject(subject)
            .text_body("Please see the attached documents.")
            .attachment(content_type.to_owned(), name.to_owned(), bytes)
            .write_to_vec()
            .unwrap()
    };
    let cda = clinical::big_cda(5 * 1024 * 1024);
    let with_cda = clinical_message(
        "Referral, 5 MB C-CDA",
        "referral.xml",
        "text/xml",
        cda.clone(),
    );
    let with_xdm = clinical_message(
        "Referral, 20 MB XDM",
        "package.zip",
        "application/zip",
        clinical::big_xdm(&cda),
    );
    let mut tx = state.db.begin().await.unwrap();
    for (subject, raw) in [
        ("Referral, 5 MB C-CDA", &with_cda),
        ("Referral, 20 MB XDM", &with_xdm),
    ] {
        assert!(
            inbound::deliver(
                &mut tx,
                NewMessage {
                    mailbox_id: mailbox.id,
                    inbound_id: None,
                    message_id: None,
                    from_addr: "dr.okafor@direct.riverside.test",
                    subject,
                    trust_code: "trusted",
                    trust_sentence: "Signed by Dr Samuel Okafor, Riverside Family Medicine.",
                    signer_subject: None,
                    signer_issuer: None,
                    revocation: "checked",
                    raw,
                    index: &directmail::store::messages::Indexed::of(raw),
                    attachment_checks: "",
                    filing: &Default::default(),
                    signer_facts: None,
                },
                now - n as i64 - 10,
            )
            .await
            .unwrap()
        );
    }
    tx.commit().await.unwrap();

    // most of a real inbox has been read
    sqlx::query("update messages set is_read = 1 where mailbox_id = $1 and id % 50 <> 0")
        .bind(mailbox.id)
        .execute(&state.db.pool)
        .await
        .unwrap();
    // as autovacuum leaves a table after such an update: without it, every count of
    // unread messages visits the 100 000 dead rows the update left in the index
    if backend == "PostgreSQL" {
        sqlx::query("vacuum analyze")
            .execute(&state.db.pool)
            .await
            .unwrap();
    }
    mailbox.id
}

#[tokio::main]
async fn main() {
    let n = env_usize("BENCH_MESSAGES", 100_000);
    let seconds = env_usize("BENCH_SECONDS", 10);
    let dir = tempfile::tempdir().unwrap();
    // a kept database keeps its data directory (the development key) beside it
    let ((url, backend), data_dir) = match std::env::var("BENCH_DATABASE") {
        Ok(name) if !name.is_empty() => (
            kept_database(&name).await,
            std::env::temp_dir().join(format!(
                "directmail-bench-{}",
                name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            )),
        ),
        _ => (
            database(dir.path(), "bench_mail").await,
            dir.path().to_path_buf(),
        ),
    };
    let mut config = Config::defaults();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.smtp_addr = "127.0.0.1:0".parse().unwrap();
    config.data_dir = data_dir;
    config.database_url = Some(url);
    config.dev_pki = false;
    config.dns_resolver = Some("127.0.0.1:9".parse().unwrap());
    config.log = "warn".into();
    let app = Application::build_with_clock(config, Clock::default())
        .await
        .unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    let state = app.state.clone();
    tokio::spawn(app.run_until(std::future::pending()));

    let password = "bench password long enough";
    let started = Instant::now();
    let m = match mailboxes::by_address(&state.db, "front@direct.bench.test")
        .await
        .unwrap()
    {
        Some(kept) => {
            let held: i64 =
                sqlx::query_scalar("select count(*) from messages where mailbox_id = $1")
                    .bind(kept.id)
                    .fetch_one(&state.db.pool)
                    .await
                    .unwrap();
            assert_eq!(
                held as usize,
                n + 2,
                "BENCH_DATABASE holds {held} messages, not BENCH_MESSAGES={n} and 2: drop it"
            );
            println!("{n} messages already in the kept database ({backend})");
            kept.id
        }
        None => seed(&state, n, password, backend).await,
    };
    println!("  ready in {:.1} s", started.elapsed().as_secs_f64());

    // sign in once; every request carries the session cookie
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = client
        .get(format!("{base}/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = login
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    let r = client
        .post(format!("{base}/login"))
        .form(&[
            ("_csrf", csrf.as_str()),
            ("email", "clerk@direct.bench.test"),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("; ");
    assert!(!cookie.is_empty(), "signed in");

    // page 50 of the list: follow the keyset to the 50th page once
    let newest: i64 = sqlx::query_scalar("select max(id) from messages where mailbox_id = $1")
        .bind(m)
        .fetch_one(&state.db.pool)
        .await
        .unwrap();
    let page50 = newest - 49 * 50 + 1;
    let a_message = newest - 1234;
    let mut clinical_ids: Vec<i64> = Vec::new();
    for subject in ["Referral, 5 MB C-CDA", "Referral, 20 MB XDM"] {
        clinical_ids.push(
            sqlx::query_scalar("select id from messages where mailbox_id = $1 and subject = $2")
                .bind(m)
                .bind(subject)
                .fetch_one(&state.db.pool)
                .await
                .unwrap(),
        );
    }
    let targets = [
        ("static file (ceiling)", "/static/app.css".to_owned()),
        ("inbox", format!("/mail/{m}/inbox")),
        (
            "page 50 of the list",
            format!("/mail/{m}/inbox?before={page50}"),
        ),
        (
            "search \"potassium referral\"",
            format!("/mail/{m}/search?q=potassium+referral"),
        ),
        ("open a message", format!("/mail/messages/{a_message}")),
        (
            "message with a 5 MB C-CDA",
            format!("/mail/messages/{}", clinical_ids[0]),
        ),
        (
            "its C-CDA viewer page",
            format!("/mail/messages/{}/attachments/0/cda", clinical_ids[0]),
        ),
        (
            "its rendered C-CDA (frame)",
            format!("/mail/messages/{}/attachments/0/cda/frame", clinical_ids[0]),
        ),
        (
            "message with a 20 MB XDM",
            format!("/mail/messages/{}", clinical_ids[1]),
        ),
    ];
    println!(
        "\n{backend}: {n} messages in one Inbox; wrk {seconds} s per row on loopback, this machine ({} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "{:<30} {:>6} {:>10} {:>9} {:>9} {:>9}",
        "what", "users", "req/s", "p50 ms", "p90 ms", "p99 ms"
    );
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let only: Vec<&str> = only.split(',').map(str::trim).collect();
    let users: Vec<usize> = std::env::var("BENCH_USERS")
        .unwrap_or_else(|_| "1,32".into())
        .split(',')
        .map(|u| {
            u.trim()
                .parse()
                .expect("BENCH_USERS: numbers, comma-separated")
        })
        .collect();
    for (label, path) in targets
        .iter()
        .filter(|(l, _)| only.iter().any(|o| l.contains(o)))
    {
        for &c in &users {
            let (rps, p50, p90, p99) = wrk(&format!("{base}{path}"), &cookie, c, seconds);
            println!("{label:<30} {c:>6} {rps:>10.0} {p50:>9.2} {p90:>9.2} {p99:>9.2}");
        }
    }
}
