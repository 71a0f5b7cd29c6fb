//! Several instances, nothing lost, nothing twice: real server processes (this
//! build's `directmail` binary) on one database — two on PostgreSQL, one on SQLite —
//! receive signed and encrypted Direct messages over SMTP and send through the API to
//! another HISP (a loopback SMTP sink that counts what it gets by Message-ID). One
//! instance is killed with SIGKILL while received mail is being processed, restarted,
//! killed again while mail is being delivered, and restarted; once everything has
//! settled the test checks what the README promises after a crash.

use std::collections::{HashMap, HashSet};
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use directmail::audit::Actor;
use directmail::domain::{DisplayName, Email};
use directmail::store::{mailboxes, orgs};

use crate::helpers::{NO_DNS, TestApp, postgres_admin_url};
use crate::outbound::Sink;

/// Received messages sent in over SMTP, each to two mailboxes.
const RECEIVED: usize = 100;
/// Messages sent through the API to the other HISP.
const SENT: usize = 100;
/// `DIRECTMAIL_CLAIM_SECONDS` of the instances: a killed instance's claims are taken
/// over within this, plus the five seconds an idle worker waits before looking again.
const LEASE_SECONDS: u64 = 6;
/// SMTP conversations and API requests the test holds open at once.
const CLIENTS: usize = 3;

const KIM: &str = "kim@direct.far.test";
const ANA: &str = "dr.ana@direct.lakeside.test";
const FRONT: &str = "front@direct.lakeside.test";

/// Where each instance listens (HTTP, SMTP) while it is up, by number.
type Up = Arc<Mutex<Vec<Option<(SocketAddr, SocketAddr)>>>>;

/// One `directmail` server process; killed (SIGKILL) when dropped.
struct Instance {
    child: Child,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The instances, by number, and where each listens while it is up.
struct Cluster {
    dir: PathBuf,
    env: Vec<(&'static str, String)>,
    instances: Vec<Option<Instance>>,
    up: Up,
    starts: usize,
}

impl Cluster {
    fn new(app: &TestApp, sink: &str, count: usize) -> Cluster {
        let env = vec![
            (
                "DIRECTMAIL_DATABASE_URL",
                app.config.database_url().as_str().to_owned(),
            ),
            (
                "DIRECTMAIL_DATA_DIR",
                app.data_dir.path().display().to_string(),
            ),
            ("DIRECTMAIL_HTTP_ADDR", "127.0.0.1:0".into()),
            ("DIRECTMAIL_SMTP_ADDR", "127.0.0.1:0".into()),
            ("DIRECTMAIL_SMTP_RELAY", sink.to_owned()),
            ("DIRECTMAIL_DNS_RESOLVER", NO_DNS.into()),
            ("DIRECTMAIL_ALLOW_PRIVATE_NETWORKS", "true".into()),
            ("DIRECTMAIL_DEV_PKI", "false".into()),
            ("DIRECTMAIL_OPERATOR_MFA", "false".into()),
            ("DIRECTMAIL_CLAIM_SECONDS", LEASE_SECONDS.to_string()),
            ("DIRECTMAIL_LOG_FORMAT", "json".into()),
        ];
        let mut cluster = Cluster {
            dir: app.data_dir.path().to_path_buf(),
            env,
            instances: (0..count).map(|_| None).collect(),
            up: Arc::new(Mutex::new(vec![None; count])),
            starts: 0,
        };
        for n in 0..count {
            cluster.start(n);
        }
        cluster
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_directmail"));
        command
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env_remove("DIRECTMAIL_SECRET_KEY")
            .env_remove("DIRECTMAIL_SECRET_KEY_FILE");
        command
    }

    /// Starts instance `n` and waits until it says where it listens; its log goes to
    /// `instance-<n>-<start>.log` in the data directory.
    fn start(&mut self, n: usize) {
        self.starts += 1;
        let log = self.dir.join(format!("instance-{n}-{}.log", self.starts));
        let mut child = self
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the server starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel::<(SocketAddr, SocketAddr)>();
        let path = log.clone();
        std::thread::spawn(move || {
            use std::io::Write as _;
            let mut file = std::fs::File::create(&path).expect("log file");
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = writeln!(file, "{line}");
                let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let fields = &entry["fields"];
                if fields["message"] == "directmail is listening" {
                    let addr = |k: &str| fields[k].as_str().and_then(|a| a.parse().ok());
                    if let (Some(http), Some(smtp)) = (addr("addr"), addr("smtp")) {
                        let _ = tx.send((http, smtp));
                    }
                }
            }
        });
        let (http, smtp) = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| {
                panic!(
                    "instance {n} did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        self.instances[n] = Some(Instance { child });
        self.up.lock().unwrap()[n] = Some((http, smtp));
    }

    /// SIGKILL: the instance gets no chance to finish or release anything.
    fn kill(&mut self, n: usize) {
        self.up.lock().unwrap()[n] = None;
        let mut instance = self.instances[n].take().expect("running");
        instance.child.kill().expect("SIGKILL");
        instance.child.wait().expect("reaped");
    }
}

/// Waits for `check`, polling; fails after `limit`.
async fn settle(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap()
}

/// The Message-IDs of queue entries being sent at this moment (by any instance).
async fn being_sent(app: &TestApp) -> HashSet<String> {
    sqlx::query_scalar::<_, String>(
        "select m.message_id from outbound_queue q join outbound_messages m on m.id = q.outbound_id
         where q.state = 'sending'",
    )
    .fetch_all(&app.state.db.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|m| bare_id(&m))
    .collect()
}

fn bare_id(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

/// The Message-ID in the outer header of what the sink received.
fn message_id_of(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let header = text.split("\r\n\r\n").next().unwrap_or_default();
    header
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("message-id"))
                .map(|(_, v)| bare_id(v))
        })
        .unwrap_or_default()
}

/// One SMTP transaction from Kim with lettre; Ok only on a 250 after the message.
async fn smtp_send(addr: SocketAddr, to: &[&str], raw: &[u8]) -> Result<(), String> {
    use lettre::transport::smtp::client::AsyncSmtpConnection;
    use lettre::transport::smtp::extension::ClientId;
    let envelope = lettre::address::Envelope::new(
        Some(KIM.parse().unwrap()),
        to.iter().map(|t| t.parse().unwrap()).collect(),
    )
    .unwrap();
    let hello = ClientId::Domain("mx.direct.far.test".into());
    let conversation = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello)
            .await
            .map_err(|e| e.to_string())?;
        conn.send(&envelope, raw).await.map_err(|e| e.to_string())?;
        let _ = conn.quit().await;
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(60), conversation)
        .await
        .unwrap_or_else(|_| Err("no answer in 60 s".into()))
}

/// What happened to one message handed over SMTP: 250 replies, and attempts that
/// ended without an answer to the message (refused connection, cut off by a kill).
#[derive(Default, Clone, Copy, Debug)]
struct Handed {
    accepted: usize,
    unanswered: usize,
}

/// Hands each message to an instance over SMTP (message `n` to instance `n %
/// instances` while it is up, else to another), `CLIENTS` at a time, trying again
/// after an attempt without a 250 — as another HISP's mail exchanger would.
fn hand_over_all(
    up: Up,
    to: &'static [&'static str],
    messages: Arc<Vec<Vec<u8>>>,
) -> tokio::task::JoinHandle<Vec<Handed>> {
    let handed = Arc::new(Mutex::new(vec![Handed::default(); messages.len()]));
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (up, messages, handed, next) =
                (up.clone(), messages.clone(), handed.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= messages.len() {
                        break;
                    }
                    loop {
                        let smtp = pick(&up, n).await.1;
                        let result = smtp_send(smtp, to, &messages[n]).await;
                        let mut h = handed.lock().unwrap();
                        match result {
                            Ok(()) => {
                                h[n].accepted += 1;
                                break;
                            }
                            Err(_) => {
                                h[n].unanswered += 1;
                                assert!(h[n].unanswered < 50, "message {n} never accepted");
                            }
                        }
                    }
                }
            })
        })
        .collect();
    tokio::spawn(async move {
        for c in clients {
            c.await.unwrap();
        }
        handed.lock().unwrap().clone()
    })
}

/// The addresses of instance `n % count` if it is up, else of another that is
/// (waiting while none is: the only one is restarting).
async fn pick(
    up: &Mutex<Vec<Option<(SocketAddr, SocketAddr)>>>,
    n: usize,
) -> (SocketAddr, SocketAddr) {
    loop {
        {
            let up = up.lock().unwrap();
            let count = up.len();
            if let Some(found) = (0..count).find_map(|k| up[(n + k) % count]) {
                return found;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The portal's setup, made by an in-process portal that is then stopped: Lakeside
/// Clinic (direct.lakeside.test) with Ana's mailbox (and her API token) and the front
/// desk's; Kim at the foreign HISP (direct.far.test) with a certificate from a CA
/// Lakeside trusts; and `ours.pem`, Lakeside's certificate to encrypt to.
async fn setup(sink: &str) -> (TestApp, String) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (app, serving) =
        TestApp::spawn_until(|c| c.smtp_relay = Some(sink.to_owned()), async move {
            let _ = stopped.await;
        })
        .await;
    let token = crate::api::practice(
        &app,
        "Lakeside Clinic",
        "direct.lakeside.test",
        "ana@direct.lakeside.test",
        ANA,
    )
    .await;
    let domain = orgs::domain_by_name(&app.state.db, "direct.lakeside.test")
        .await
        .unwrap()
        .unwrap();
    let mut tx = app.state.db.begin().await.unwrap();
    mailboxes::create(
        &mut tx,
        domain.org_id.unwrap(),
        domain.id,
        &Email::parse(FRONT).unwrap(),
        mailboxes::MailboxKind::Shared,
        &DisplayName::parse("Front desk").unwrap(),
        app.now(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    crate::outbound::foreign_kim(&app).await;
    let dir = app.data_dir.path();
    directmail::pki::add_anchors(
        &app.state.db,
        &domain,
        &std::fs::read(dir.join("fca.pem")).unwrap(),
        app.now(),
        &Actor::system(),
    )
    .await
    .unwrap();
    let ours: String = sqlx::query_scalar("select chain_pem from domain_certificates")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    std::fs::write(dir.join("ours.pem"), ours).unwrap();
    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
    (app, token)
}

/// Kim's message `n` to the front desk and Ana, signed by Kim and encrypted to
/// Lakeside with `openssl cms`.
fn kims_message(dir: &Path, n: usize) -> Vec<u8> {
    let entity = format!(
        "From: {KIM}\r\nTo: {FRONT}, {ANA}\r\nSubject: Lab results {n}\r\nMessage-ID: <in-{n}@direct.far.test>\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\nContent-Type: text/plain\r\n\r\nThe results of patient {n} are attached.\r\n"
    );
    crate::revocation::sealed_by_openssl(dir, "kim", &entity, &[], KIM, "Direct secure message")
}

/// Sends Ana's `SENT` messages to Kim through the API of the instances, in turn,
/// `CLIENTS` at a time; a request cut off by a kill is sent again (to another
/// instance, or after the restart) with the same Idempotency-Key, as the README asks
/// of EHRs. How many requests went unanswered.
fn send_through_api(up: Up, token: String) -> tokio::task::JoinHandle<usize> {
    let http = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let unanswered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (up, token, http, next, unanswered) = (
                up.clone(),
                token.clone(),
                http.clone(),
                next.clone(),
                unanswered.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= SENT {
                        break;
                    }
                    for attempt in 0.. {
                        assert!(attempt < 50, "message {n} never accepted");
                        let addr = pick(&up, n).await.0;
                        let form = reqwest::multipart::Form::new()
                            .text("to", KIM)
                            .text("subject", format!("Referral {n}"))
                            .text("text", format!("Please see patient {n} this week."));
                        let sent = http
                            .post(format!("http://{addr}/api/v1/messages"))
                            .bearer_auth(&token)
                            .header("Idempotency-Key", format!("referral-{n}"))
                            .multipart(form)
                            .send()
                            .await;
                        match sent {
                            Ok(r) => {
                                assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
                                break;
                            }
                            Err(_) => {
                                unanswered.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    tokio::spawn(async move {
        for c in clients {
            c.await.unwrap();
        }
        unanswered.load(Ordering::SeqCst)
    })
}

/// What the sink holds, by Message-ID: how many times each arrived.
fn received_by_id(sink: &Sink) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (_, data) in sink.received.lock().unwrap().iter() {
        *counts.entry(message_id_of(data)).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_killed_mid_processing_and_mid_delivery_lose_nothing_and_do_nothing_twice() {
    let started = Instant::now();
    let (sink, sink_addr) = crate::outbound::sink().await;
    let (app, token) = setup(&sink_addr).await;
    let dir = app.data_dir.path().to_path_buf();
    // Kim's messages, made before any instance runs (openssl takes its time)
    let messages: Vec<Vec<u8>> = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || (0..RECEIVED).map(|n| kims_message(&dir, n)).collect())
            .await
            .unwrap()
    };
    let instances = if postgres_admin_url().is_some() { 2 } else { 1 };
    let mut cluster = Cluster::new(&app, &sink_addr, instances);
    let setup_took = started.elapsed();

    // 1. received mail, into every instance; instance 0 is killed while messages are
    // being processed: some delivered, others waiting or in hand
    let receiving = Instant::now();
    let handing = hand_over_all(cluster.up.clone(), &[FRONT, ANA], Arc::new(messages));
    settle(
        "some but not all received messages processed, some in hand",
        Duration::from_secs(120),
        async || {
            let done = count(
                &app,
                "select count(*) from inbound_messages where state = 'delivered'",
            )
            .await;
            let held = count(
                &app,
                "select count(*) from inbound_messages where state = 'processing'",
            )
            .await;
            done >= (RECEIVED / 4) as i64 && done < RECEIVED as i64 && held > 0
        },
    )
    .await;
    cluster.kill(0);
    let held_inbound: Vec<i64> =
        sqlx::query_scalar("select id from inbound_messages where state = 'processing'")
            .fetch_all(&app.state.db.pool)
            .await
            .unwrap();
    // notifications that were being sent when it died may reach the peer twice
    let mut in_flight = being_sent(&app).await;
    cluster.start(0);
    let handed = handing.await.unwrap();
    settle(
        "every received message processed",
        Duration::from_secs(180),
        async || {
            count(
                &app,
                "select count(*) from inbound_messages where state in ('received', 'processing')",
            )
            .await
                == 0
        },
    )
    .await;
    let receiving_took = receiving.elapsed();

    // 2. Ana's messages through the API of every instance; instance 0 is killed
    // while they (and the notifications for Kim) are being delivered
    let sending = Instant::now();
    let posting = send_through_api(cluster.up.clone(), token.clone());
    settle(
        "some but not all of Ana's messages sent, some in hand",
        Duration::from_secs(120),
        async || {
            let of_ana = "select count(*) from outbound_queue q join outbound_messages m on m.id = q.outbound_id
                          where m.kind = 'message' and q.state";
            let sent = count(&app, &format!("{of_ana} = 'sent'")).await;
            let held = count(&app, &format!("{of_ana} = 'sending'")).await;
            sent >= (SENT / 4) as i64 && sent < SENT as i64 && held > 0
        },
    )
    .await;
    cluster.kill(0);
    let held_outbound = being_sent(&app).await;
    in_flight.extend(held_outbound.iter().cloned());
    cluster.start(0);
    let api_unanswered = posting.await.unwrap();
    settle(
        "every queue entry sent",
        Duration::from_secs(180),
        async || {
            count(
                &app,
                "select count(*) from outbound_queue where state <> 'sent'",
            )
            .await
                == 0
        },
    )
    .await;
    let sending_took = sending.elapsed();
    assert_eq!(
        count(
            &app,
            "select count(*) from outbound_messages where kind = 'message'"
        )
        .await,
        SENT as i64,
        "a request repeated after a lost answer queued nothing more"
    );

    // Received mail: every message accepted (a 250) is in each mailbox once. An
    // attempt cut off by the kill may have been stored before its 250 was written;
    // Kim's side then sent it again, and that copy is delivered too (SMTP's own
    // duplicate window, RFC 1047): at most one more copy per such attempt.
    let front = mailboxes::by_address(&app.state.db, FRONT)
        .await
        .unwrap()
        .unwrap();
    let ana = mailboxes::by_address(&app.state.db, ANA)
        .await
        .unwrap()
        .unwrap();
    let copies = async |mailbox: i64| -> HashMap<String, usize> {
        let ids: Vec<String> = sqlx::query_scalar(
            "select message_id from messages where mailbox_id = $1 and inbound_id is not null",
        )
        .bind(mailbox)
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap();
        let mut counts = HashMap::new();
        for id in ids {
            *counts.entry(bare_id(&id)).or_insert(0) += 1;
        }
        counts
    };
    let (at_front, at_ana) = (copies(front.id).await, copies(ana.id).await);
    let mut resent = 0;
    for (n, h) in handed.iter().enumerate() {
        assert_eq!(h.accepted, 1, "message {n} was accepted once: {h:?}");
        let id = format!("in-{n}@direct.far.test");
        for (who, counts) in [(FRONT, &at_front), (ANA, &at_ana)] {
            let got = counts.get(&id).copied().unwrap_or(0);
            assert!(
                got >= 1 && got <= 1 + h.unanswered,
                "{id} is in {who}'s mailbox {got} times ({h:?})"
            );
        }
        if at_front.get(&id) > Some(&1) {
            resent += 1;
        }
    }
    assert_eq!(
        count(
            &app,
            "select count(*) from inbound_messages where state <> 'delivered'"
        )
        .await,
        0,
        "nothing quarantined, nothing left"
    );
    // one processed notification per delivered copy and recipient, never two
    let mdns: Vec<Vec<u8>> =
        sqlx::query_scalar("select raw from outbound_messages where kind = 'mdn'")
            .fetch_all(&app.state.db.pool)
            .await
            .unwrap();
    let mut notified: HashMap<(String, String), usize> = HashMap::new();
    for raw in &mdns {
        let n = directmail::outbound::read_mdn(raw).expect("an MDN");
        assert_eq!(n.disposition, "processed");
        *notified
            .entry((bare_id(&n.original_message_id), n.final_recipient))
            .or_insert(0) += 1;
    }
    for (who, counts) in [(FRONT, &at_front), (ANA, &at_ana)] {
        for (id, copies) in counts.iter() {
            assert_eq!(
                notified.get(&(id.clone(), who.to_owned())),
                Some(copies),
                "processed notifications of {id} for {who}"
            );
        }
    }
    assert_eq!(mdns.len(), at_front.values().sum::<usize>() * 2);

    // Sent mail: every message and notification for Kim reached the peer. A message
    // reaches it twice only if it was being delivered when an instance died: the
    // peer's 250 may have come before the instance could record it, and the message
    // is sent again (with the same Message-ID) once the claim lapses. That is what is
    // guaranteed — at least once, and exactly once except for what the killed
    // instance held — so that is what is checked.
    let expected: HashSet<String> =
        sqlx::query_scalar::<_, String>("select message_id from outbound_messages")
            .fetch_all(&app.state.db.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|m| bare_id(&m))
            .collect();
    let received = received_by_id(&sink);
    let mut twice = Vec::new();
    for id in &expected {
        match received.get(id).copied().unwrap_or(0) {
            0 => panic!("{id} never reached the peer"),
            1 => {}
            n => {
                assert!(
                    in_flight.contains(id),
                    "{id} reached the peer {n} times but was not being sent at a kill"
                );
                twice.push(id.clone());
            }
        }
    }
    assert_eq!(
        received.keys().collect::<HashSet<_>>(),
        expected.iter().collect::<HashSet<_>>(),
        "the peer got only what was sent"
    );
    assert_eq!(
        count(
            &app,
            "select count(*) from delivery_status where state <> 'sent'"
        )
        .await,
        0
    );

    // 3. Kim's HISP answers every copy of Ana's messages it got with a processed
    // notification (a repeat too: it does not drop them by Message-ID)
    let answering = Instant::now();
    let ana_ids: HashSet<String> = sqlx::query_scalar::<_, String>(
        "select message_id from outbound_messages where kind = 'message'",
    )
    .fetch_all(&app.state.db.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|m| bare_id(&m))
    .collect();
    let answers: Vec<Vec<u8>> = {
        let (dir, now) = (dir.clone(), app.now());
        let copies: Vec<String> = sink
            .received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, data)| message_id_of(data))
            .filter(|id| ana_ids.contains(id))
            .collect();
        tokio::task::spawn_blocking(move || {
            copies
                .iter()
                .map(|id| {
                    let (_, raw) = directmail::outbound::build_mdn(
                        KIM,
                        ANA,
                        id,
                        "Referral",
                        directmail::outbound::Disposition::Processed,
                        now,
                    );
                    let raw = String::from_utf8(raw).unwrap();
                    crate::revocation::sealed_by_openssl(
                        &dir,
                        "kim",
                        &raw,
                        &[],
                        KIM,
                        "Direct secure message",
                    )
                })
                .collect()
        })
        .await
        .unwrap()
    };
    let answered = answers.len();
    let handed_answers = hand_over_all(cluster.up.clone(), &[ANA], Arc::new(answers))
        .await
        .unwrap();
    assert!(handed_answers.iter().all(|h| h.accepted == 1));
    settle(
        "every notification from Kim processed",
        Duration::from_secs(120),
        async || {
            count(
                &app,
                "select count(*) from inbound_messages where state in ('received', 'processing')",
            )
            .await
                == 0
        },
    )
    .await;
    let answering_took = answering.elapsed();
    assert_eq!(
        count(
            &app,
            "select count(*) from inbound_messages where verdict = 'mdn'"
        )
        .await,
        answered as i64,
        "each notification is recorded as one"
    );
    // one final outcome per recipient: each of Ana's recipients is processed, once
    // (a repeated notification is only noted); our own notifications stay sent; no
    // failure notice was written, and no notification landed in a mailbox
    let states = async |kind: &str| -> Vec<(String, i64)> {
        sqlx::query_as(
            "select s.state, count(*) from delivery_status s join outbound_messages m on m.id = s.outbound_id
             where m.kind = $1 group by s.state",
        )
        .bind(kind)
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap()
    };
    assert_eq!(
        states("message").await,
        [("processed".to_owned(), ana_ids.len() as i64)]
    );
    assert_eq!(
        states("mdn").await,
        [("sent".to_owned(), mdns.len() as i64)]
    );
    assert_eq!(
        count(&app, "select count(*) from delivery_status").await,
        count(&app, "select count(*) from outbound_messages").await,
        "one status per message and recipient (one recipient each)"
    );
    assert_eq!(
        count(
            &app,
            "select count(*) from messages where inbound_id is not null"
        )
        .await,
        (at_front.values().sum::<usize>() * 2) as i64,
        "notifications are not mail"
    );
    assert_eq!(
        count(
            &app,
            "select count(*) from messages where subject like 'Not delivered%'"
        )
        .await,
        0
    );

    // the audit log, written by every instance, is one intact chain
    let out = crate::helpers::run({
        let mut c = cluster.command();
        c.args(["admin", "audit", "verify"]);
        c
    })
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(cluster);
    eprintln!(
        "fault: {instances} instance(s); {RECEIVED} received messages ({} SMTP attempts without a 250, {resent} delivered twice after such an attempt), \
         {SENT} sent through the API ({api_unanswered} requests without an answer), {} notifications; \
         claims in hand at the kills: {} received messages, {} queue entries; \
         {} reached the peer twice; {answered} notifications back from the peer; \
         setup {:.1?}, receiving {:.1?}, sending {:.1?}, notifications back {:.1?}, total {:.1?}",
        handed.iter().map(|h| h.unanswered).sum::<usize>(),
        mdns.len(),
        held_inbound.len(),
        held_outbound.len(),
        twice.len(),
        setup_took,
        receiving_took,
        sending_took,
        answering_took,
        started.elapsed()
    );
}

/// A database of this lane's kind, migrated, with no portal on it.
async fn bare_database(dir: &Path) -> directmail::db::Db {
    let db = directmail::db::Db::connect(&crate::helpers::fresh_database(dir).await)
        .await
        .unwrap();
    db.migrate().await.unwrap();
    db
}

#[tokio::test]
async fn a_claim_is_renewed_while_held_lapses_once_let_go_and_a_lapsed_holder_records_nothing() {
    use directmail::leases::{Claim, Leases};
    use directmail::store::inbound::{self, NewInbound};
    let dir = tempfile::tempdir().unwrap();
    let db = bare_database(dir.path()).await;
    let to = vec![FRONT.to_owned()];
    inbound::insert(
        &db,
        NewInbound {
            mail_from: KIM,
            rcpt_to: &to,
            remote_ip: "127.0.0.1",
            helo: "mx.direct.far.test",
            tls: true,
            raw: b"a stored message",
        },
        1_000,
    )
    .await
    .unwrap();
    let leases = Leases::new(10);
    let first = inbound::claim_next(&db, 1_000, leases.seconds())
        .await
        .unwrap()
        .unwrap();
    let held = leases.hold(Claim::Inbound(first.id), first.attempts);
    // a worker still on it at 1 008: its instance renews the claim to 1 018
    assert_eq!(leases.renew(&db, 1_008).await.unwrap(), 1);
    assert!(
        inbound::claim_next(&db, 1_015, 10).await.unwrap().is_none(),
        "a renewed claim is not taken over"
    );
    // the worker let go of it (it died, or gave up on an error): nothing renews it
    drop(held);
    assert_eq!(leases.renew(&db, 1_016).await.unwrap(), 0);
    let second = inbound::claim_next(&db, 1_019, 10)
        .await
        .unwrap()
        .expect("a lapsed claim is taken over");
    assert_eq!((second.id, second.attempts), (first.id, first.attempts + 1));
    // the first worker, back from a freeze, can neither extend nor finish the claim
    // it lost; the new one records the outcome
    let stale = leases.hold(Claim::Inbound(first.id), first.attempts);
    assert_eq!(leases.renew(&db, 1_020).await.unwrap(), 0);
    drop(stale);
    let mut tx = db.begin().await.unwrap();
    let refused = inbound::finish(&mut tx, &first, "delivered", "trusted", "", "", 1_021)
        .await
        .unwrap_err();
    assert!(format!("{refused:#}").contains("lapsed"), "{refused:#}");
    drop(tx);
    let mut tx = db.begin().await.unwrap();
    inbound::finish(&mut tx, &second, "delivered", "trusted", "", "", 1_021)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        inbound::get(&db, first.id).await.unwrap().unwrap().state,
        "delivered"
    );
}

#[tokio::test]
async fn a_delivery_whose_claim_was_taken_over_records_no_outcome() {
    use directmail::store::outbound;
    let dir = tempfile::tempdir().unwrap();
    let db = bare_database(dir.path()).await;
    let mut tx = db.begin().await.unwrap();
    let id = outbound::insert(
        &mut tx,
        outbound::NewOutbound {
            mailbox_id: None,
            kind: "message",
            from_addr: ANA,
            message_id: "1@direct.lakeside.test",
            subject: "s",
            raw: b"x",
            recipient_cert: None,
        },
        &[KIM.to_owned()],
        1_000,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let claim = async |now: i64| {
        let mut conn = db.pool.acquire().await.unwrap();
        let ids = outbound::claim_on(&mut conn, db.backend, now, 10, 4)
            .await
            .unwrap();
        drop(conn);
        outbound::jobs(&db, &ids).await.unwrap().remove(0)
    };
    let first = claim(1_000).await;
    // its instance died (or froze) without renewing; another claims it again
    let second = claim(1_011).await;
    assert_eq!(second.queue_id, first.queue_id);
    let status = async || outbound::statuses(&db, id).await.unwrap()[0].1.clone();
    let mut tx = db.begin().await.unwrap();
    assert!(!outbound::mark_sent(&mut tx, &first, 1_012).await.unwrap());
    assert!(
        !outbound::mark_failed(&mut tx, &first, "refused", 1_012)
            .await
            .unwrap()
    );
    assert!(
        !outbound::retry_later(&mut tx, &first, "busy", 1_100, 1_012)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    assert_eq!(
        status().await,
        "queued",
        "the lapsed holder recorded nothing"
    );
    let mut tx = db.begin().await.unwrap();
    assert!(outbound::mark_sent(&mut tx, &second, 1_012).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(status().await, "sent");
}
