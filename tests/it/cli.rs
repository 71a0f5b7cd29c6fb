//! `directmail admin …` against the database of a running server, and start-up
//! errors that say what to fix.

use std::process::{Command, Output};

use reqwest::StatusCode;
use serde_json::Value;

use directmail::domain::Role;

use crate::helpers::{PASSWORD, TestApp, test_config};

pub(crate) async fn directmail(app: &TestApp, args: &[&str]) -> Output {
    app.cli(args).await
}

pub(crate) fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

#[tokio::test]
async fn scripts_provision_an_organization_that_can_sign_in_while_the_server_runs() {
    let app = TestApp::spawn().await;
    let pw = app.data_dir.path().join("pw.txt");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let pw = pw.to_str().unwrap();

    let org = json(
        &directmail(
            &app,
            &["admin", "org", "create", "Lakeside Clinic", "--json"],
        )
        .await,
    );
    assert_eq!(org["name"], "Lakeside Clinic");
    let domain = json(
        &directmail(
            &app,
            &[
                "admin",
                "domain",
                "add",
                "direct.lakeside.test",
                "--org",
                "Lakeside Clinic",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(domain["domain"], "direct.lakeside.test");
    let user = json(
        &directmail(
            &app,
            &[
                "admin",
                "user",
                "add",
                "Ana@Direct.Lakeside.test",
                "--org",
                "Lakeside Clinic",
                "--role",
                "org-admin",
                "--password-file",
                pw,
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(user["email"], "ana@direct.lakeside.test");
    assert_eq!(user["role"], "org-admin");
    let mailbox = json(
        &directmail(
            &app,
            &[
                "admin",
                "mailbox",
                "add",
                "dr.ruiz@direct.lakeside.test",
                "--org",
                "Lakeside Clinic",
                "--user",
                "ana@direct.lakeside.test",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(mailbox["users"][0], "ana@direct.lakeside.test");
    json(
        &directmail(
            &app,
            &[
                "admin",
                "user",
                "add",
                "op2@hisp.test",
                "--role",
                "operator",
                "--password-file",
                pw,
                "--json",
            ],
        )
        .await,
    );

    // plain output is a sentence
    let out = directmail(&app, &["admin", "org", "create", "Hillside Care"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Created organization"));

    // the running server sees it all at once
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let home = ana.get("/").await;
    assert!(home.body.contains("dr.ruiz@direct.lakeside.test"));
    let org_id = org["id"].as_i64().unwrap();
    assert_eq!(
        ana.get(&format!("/orgs/{org_id}/users")).await.status,
        StatusCode::OK
    );
    let mut op2 = app.signed_in("op2@hisp.test").await;
    assert_eq!(op2.get("/orgs").await.status, StatusCode::OK);

    // every provisioning step is audited as the command line
    let entries = directmail::audit::list(&app.state.db, &Default::default(), 100)
        .await
        .unwrap();
    assert!(entries.iter().filter(|e| e.actor == "cli").count() >= 5);
}

#[tokio::test]
async fn bad_provisioning_input_gets_one_sentence_and_a_failing_exit_code() {
    let app = TestApp::spawn().await;
    let pw = app.data_dir.path().join("pw.txt");
    std::fs::write(&pw, "short\n").unwrap();
    let pw = pw.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["admin", "domain", "add", "direct.x.test", "--org", "Nope"],
            "There is no organization named",
        ),
        (
            vec!["admin", "domain", "add", "bad_domain.test", "--org", "Nope"],
            "not a valid domain name",
        ),
        (
            vec![
                "admin",
                "user",
                "add",
                "a@b.test",
                "--org",
                "Nope",
                "--role",
                "member",
                "--password-file",
                pw,
            ],
            "There is no organization named",
        ),
        (
            vec![
                "admin",
                "user",
                "add",
                "a@b.test",
                "--role",
                "member",
                "--password-file",
                pw,
            ],
            "need --org",
        ),
        (
            vec![
                "admin",
                "user",
                "add",
                "op@b.test",
                "--role",
                "operator",
                "--password-file",
                pw,
            ],
            "at least 12 characters",
        ),
        (
            vec![
                "admin",
                "user",
                "add",
                "op@b.test",
                "--role",
                "operator",
                "--password-file",
                "/nonexistent/pw",
            ],
            "cannot read the password file",
        ),
        (
            vec![
                "admin",
                "mailbox",
                "add",
                "x@direct.localhost",
                "--org",
                "Nope",
            ],
            "There is no organization named",
        ),
    ];
    for (args, expect) in cases {
        let out = directmail(&app, &args).await;
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{args:?}: one sentence: {stderr}"
        );
    }
    let out = directmail(&app, &["admin", "audit", "verify", "--json"]).await;
    assert_eq!(json(&out)["intact"], true);
}

#[tokio::test]
async fn start_up_errors_say_what_to_fix_and_exit_non_zero() {
    let app = TestApp::spawn().await;
    // the port is in use (our test server holds it)
    let mut command = app.command();
    command.env("DIRECTMAIL_HTTP_ADDR", app.addr.to_string());
    let out = crate::helpers::run(command).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("port is in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // a database that is not there
    let out = Command::new(env!("CARGO_BIN_EXE_directmail"))
        .env(
            "DIRECTMAIL_DATABASE_URL",
            "postgres://nobody:secret-pw@127.0.0.1:1/none",
        )
        .env("DIRECTMAIL_HTTP_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot connect to the PostgreSQL database"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("secret-pw"),
        "the password is never printed: {stderr}"
    );

    // bad values
    for (var, value, expect) in [
        (
            "DIRECTMAIL_HTTP_ADDR",
            "not-an-address",
            "--http-addr or DIRECTMAIL_HTTP_ADDR",
        ),
        (
            "DIRECTMAIL_DATABASE_URL",
            "mysql://x",
            "expected sqlite://PATH or postgres://",
        ),
        (
            "DIRECTMAIL_LOCKOUT_THRESHOLD",
            "many",
            "DIRECTMAIL_LOCKOUT_THRESHOLD",
        ),
        (
            "DIRECTMAIL_CLAIM_SECONDS",
            "2",
            "--claim-seconds or DIRECTMAIL_CLAIM_SECONDS",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_directmail"))
            .env(var, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{var}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expect), "{var}: {stderr}");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.hisp_domain = "bad domain".into();
    let err = directmail::app::Application::build(config)
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("DIRECTMAIL_HISP_DOMAIN"));
}

#[tokio::test]
async fn the_portal_starts_with_no_configuration_and_prints_the_first_password_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_directmail"))
            .current_dir(dir.path())
            .env("DIRECTMAIL_HTTP_ADDR", "127.0.0.1:0")
            .env("DIRECTMAIL_SMTP_ADDR", "127.0.0.1:0")
            .env_remove("DIRECTMAIL_DATABASE_URL")
            .env_remove("DIRECTMAIL_DATA_DIR")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // wait until it says it listens, then stop it with SIGTERM
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead as _;
            let mut all = String::new();
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("directmail is listening") {
                    let _ = tx.send(line.clone());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("the server starts");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let out = child.wait_with_output().unwrap();
        let stderr = reader.join().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        )
    };
    let (status, stdout, stderr) = run();
    assert!(status.success(), "graceful shutdown exits 0: {stderr}");
    assert!(stdout.contains("one-time password:"), "{stdout}");
    let password = stdout
        .split("one-time password:")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(!stderr.contains(&password), "never in the log");
    assert!(dir.path().join("data/directmail.db").exists());
    // journal mode is WAL, foreign keys are enforced
    let (status2, stdout2, _) = run();
    assert!(status2.success());
    assert!(
        !stdout2.contains("one-time password"),
        "shown once, never again"
    );
    use sqlx::Connection as _;
    let url = format!(
        "sqlite://{}",
        dir.path().join("data/directmail.db").display()
    );
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let mode: String = sqlx::query_scalar("pragma journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_failed_first_start_does_not_lose_the_one_time_password() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_directmail"))
        .env("DIRECTMAIL_DATA_DIR", dir.path())
        .env(
            "DIRECTMAIL_HTTP_ADDR",
            busy.local_addr().unwrap().to_string(),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("one-time password"));
    drop(busy);
    // the next, successful start still creates and prints it
    let config = {
        let mut c = directmail::config::Config::defaults();
        c.data_dir = dir.path().to_path_buf();
        c.database_url = None;
        c.http_addr = "127.0.0.1:0".parse().unwrap();
        c.smtp_addr = "127.0.0.1:0".parse().unwrap();
        c
    };
    let app = directmail::app::Application::build(config).await.unwrap();
    assert!(app.first_operator.is_some());
}

#[tokio::test]
async fn scripts_can_do_what_the_console_does_for_users_mailboxes_and_settings() {
    let app = TestApp::spawn().await;
    let pw = app.data_dir.path().join("pw.txt");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let pw = pw.to_str().unwrap();
    json(
        &directmail(
            &app,
            &["admin", "org", "create", "Lakeside Clinic", "--json"],
        )
        .await,
    );
    json(
        &directmail(
            &app,
            &[
                "admin",
                "domain",
                "add",
                "direct.lakeside.test",
                "--org",
                "Lakeside Clinic",
                "--json",
            ],
        )
        .await,
    );
    json(
        &directmail(
            &app,
            &[
                "admin",
                "user",
                "add",
                "ana@direct.lakeside.test",
                "--org",
                "Lakeside Clinic",
                "--role",
                "member",
                "--password-file",
                pw,
                "--json",
            ],
        )
        .await,
    );

    // invite: the link works in the browser
    let invite = json(
        &directmail(
            &app,
            &[
                "admin",
                "user",
                "invite",
                "ben@direct.lakeside.test",
                "--org",
                "Lakeside Clinic",
                "--role",
                "org-admin",
                "--json",
            ],
        )
        .await,
    );
    let link = invite["link"].as_str().unwrap().to_owned();
    let path = &link[link.find("/invite/").unwrap()..];
    let mut ben = app.browser();
    assert!(
        ben.get(path)
            .await
            .body
            .contains("ben@direct.lakeside.test")
    );

    // role, disable, enable
    json(
        &directmail(
            &app,
            &[
                "admin",
                "user",
                "role",
                "ana@direct.lakeside.test",
                "--role",
                "org-admin",
                "--json",
            ],
        )
        .await,
    );
    let ana = directmail::store::users::by_email(&app.state.db, "ana@direct.lakeside.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ana.role, Role::OrgAdmin);
    json(
        &directmail(
            &app,
            &[
                "admin",
                "user",
                "disable",
                "ana@direct.lakeside.test",
                "--json",
            ],
        )
        .await,
    );
    assert!(
        app.browser()
            .sign_in("ana@direct.lakeside.test", PASSWORD)
            .await
            .body
            .contains("disabled")
    );
    json(
        &directmail(
            &app,
            &[
                "admin",
                "user",
                "enable",
                "ana@direct.lakeside.test",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(
        app.browser()
            .sign_in("ana@direct.lakeside.test", PASSWORD)
            .await
            .status,
        StatusCode::SEE_OTHER
    );

    // reset password: the old one stops working, the link is printed
    let reset = json(
        &directmail(
            &app,
            &[
                "admin",
                "user",
                "reset-password",
                "ana@direct.lakeside.test",
                "--json",
            ],
        )
        .await,
    );
    assert!(reset["link"].as_str().unwrap().contains("/invite/"));
    assert_eq!(
        app.browser()
            .sign_in("ana@direct.lakeside.test", PASSWORD)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    json(
        &directmail(
            &app,
            &[
                "admin",
                "user",
                "reset-mfa",
                "ana@direct.lakeside.test",
                "--json",
            ],
        )
        .await,
    );

    // mailboxes: assign, unassign; a personal one stays personal
    json(
        &directmail(
            &app,
            &[
                "admin",
                "mailbox",
                "add",
                "dr.ana@direct.lakeside.test",
                "--org",
                "Lakeside Clinic",
                "--json",
            ],
        )
        .await,
    );
    let a = json(
        &directmail(
            &app,
            &[
                "admin",
                "mailbox",
                "assign",
                "dr.ana@direct.lakeside.test",
                "--user",
                "ana@direct.lakeside.test",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(a["changed"], true);
    let out = directmail(
        &app,
        &[
            "admin",
            "mailbox",
            "assign",
            "dr.ana@direct.lakeside.test",
            "--user",
            "ben@direct.lakeside.test",
        ],
    )
    .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("personal mailbox"));
    let u = json(
        &directmail(
            &app,
            &[
                "admin",
                "mailbox",
                "unassign",
                "dr.ana@direct.lakeside.test",
                "--user",
                "ana@direct.lakeside.test",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(u["changed"], true);

    // settings
    let s = json(
        &directmail(
            &app,
            &[
                "admin",
                "org",
                "settings",
                "Lakeside Clinic",
                "--idle-timeout",
                "30",
                "--require-mfa",
                "true",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(s["idle_timeout_minutes"], 30);
    let out = directmail(
        &app,
        &[
            "admin",
            "org",
            "settings",
            "Lakeside Clinic",
            "--idle-timeout",
            "0",
        ],
    )
    .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("from 1 to 60"));
    let out = directmail(
        &app,
        &["admin", "user", "disable", "nobody@direct.lakeside.test"],
    )
    .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("There is no user"));
    let entries = directmail::audit::list(&app.state.db, &Default::default(), 100)
        .await
        .unwrap();
    for action in [
        "user.invite",
        "user.role",
        "user.disable",
        "user.enable",
        "password.reset",
        "mfa.reset",
        "mailbox.assign",
        "mailbox.unassign",
        "org.settings",
    ] {
        assert!(
            entries
                .iter()
                .any(|e| e.action == action && e.actor == "cli"),
            "{action}"
        );
    }
}

#[test]
fn the_version_names_the_cryptographic_module() {
    let out = Command::new(env!("CARGO_BIN_EXE_directmail"))
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.starts_with(&format!("directmail {}", env!("CARGO_PKG_VERSION")))
            && text.contains("(cryptography: AWS-LC ")
            && text.contains(if cfg!(feature = "fips") {
                "(FIPS 140-3 module)"
            } else {
                "(not FIPS mode)"
            }),
        "{text}"
    );
}
