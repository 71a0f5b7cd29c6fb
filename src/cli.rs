//! `directmail admin …`: provisioning from scripts, on the database named by the same
//! configuration as `serve` (safe while a server runs on it). `--json` prints one JSON
//! object on stdout for scripts; errors are one sentence on stderr and exit non-zero.

use std::path::PathBuf;

mod backups;
mod bundle;
mod records;
mod reporting;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::accounts;
use crate::audit::{self, Actor, Event, Verification};
use crate::auth;
use crate::clock::Clock;
use crate::clock::{format_rfc3339, format_utc};
use crate::config::Config;
use crate::db::Db;
use crate::domain::{DisplayName, DomainName, Email, NewPassword, OrgName, Role};
use crate::pki::{self, KeyFile};
use crate::secrets;
use crate::store::mailboxes::{self, MailboxKind};
use crate::store::{orgs, users};

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Print machine-readable JSON instead of sentences.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminTask,
}

#[derive(Debug, Subcommand)]
pub enum AdminTask {
    #[command(flatten)]
    OnDatabase(AdminCommand),
    /// Copy the SQLite database of a portal, running or not, into FILE (a new zip
    /// archive: a manifest and the copy; never the key-encryption key).
    Backup { file: PathBuf },
    /// Restore a backup made by `backup` as the configured SQLite database, after
    /// checking it against its manifest and the key-encryption key. Refuses while a
    /// portal uses that database.
    Restore {
        file: PathBuf,
        /// Replace a database that is already there (it is moved aside, never deleted).
        #[arg(long)]
        force: bool,
    },
}

/// The commands that work on the configured database, opened (and migrated) first.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Direct domains.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// User accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Mailboxes.
    #[command(subcommand)]
    Mailbox(MailboxCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Certificates and private keys of hosted domains and addresses.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Trust anchors of hosted domains.
    #[command(subcommand)]
    Anchor(AnchorCommand),
    /// Trust bundles: sets of anchors from a file or a URL, assigned to domains.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// FHIR document sources of organizations (records retrieval, SMART Backend
    /// Services) and the portal's public key set.
    #[command(subcommand)]
    Source(records::SourceCommand),
    /// The built-in development CA (for evaluation and tests, never production).
    #[command(subcommand)]
    Pki(PkiCommand),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The provider directory.
    #[command(subcommand)]
    Directory(DirectoryCommand),
    /// Public-health reporting routes (jurisdiction, Direct address, document types).
    #[command(subcommand)]
    Reporting(reporting::ReportingCommand),
}

#[derive(Debug, Subcommand)]
pub enum DirectoryCommand {
    /// Import a CSV file or a FHIR R4 Bundle (the format is read from the content)
    /// into the shared directory, or with --org into an organization's contacts. Every
    /// row is applied, or none (see docs/directory.md).
    Import {
        file: PathBuf,
        /// Check the file and say what would change, changing nothing.
        #[arg(long)]
        dry_run: bool,
        /// Import into this organization's contacts instead.
        #[arg(long)]
        org: Option<String>,
    },
    /// Print the shared directory (or --org's contacts) as CSV or a FHIR R4 Bundle.
    Export {
        #[arg(long, value_parser = ["csv", "fhir"], default_value = "csv")]
        format: String,
        #[arg(long)]
        org: Option<String>,
    },
    /// Attach a certificate (PEM or DER) by hand to the shared directory's entry with
    /// this Direct address; it takes precedence over certificate discovery.
    Cert { address: String, file: PathBuf },
    /// List or unlist a hosted mailbox in the directory.
    Listing {
        address: String,
        #[arg(long, action = clap::ArgAction::Set)]
        listed: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token for a user; prints the token alone (it is shown once).
    Create {
        #[arg(long)]
        user: String,
        /// What the token is for.
        #[arg(long, default_value = "created with the CLI")]
        name: String,
        /// Days until the token stops working (1–365).
        #[arg(long, default_value_t = crate::store::tokens::DEFAULT_DAYS, value_parser = clap::value_parser!(i64).range(1..=crate::store::tokens::MAX_DAYS))]
        expires_in_days: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Print the development CA's certificate (PEM), creating the CA on first use.
    Ca,
    /// Issue a development certificate for a domain (or, with --address, one address),
    /// import it with its key, and make the domain trust the development CA.
    Issue {
        #[arg(long)]
        domain: String,
        #[arg(long)]
        address: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Import a key and certificate (`--cert FILE --key FILE`, or `--p12 FILE
    /// --password-file FILE`) for a domain, or with `--address` for one address.
    Import {
        #[arg(long)]
        domain: String,
        /// For an address-bound certificate: the Direct address it binds.
        #[arg(long)]
        address: Option<String>,
        /// Certificate, then its chain (PEM or DER).
        #[arg(long, conflicts_with = "p12", requires = "key")]
        cert: Option<PathBuf>,
        /// Unencrypted private key (PKCS#8 or PKCS#1, PEM or DER).
        #[arg(long, conflicts_with = "p12", requires = "cert")]
        key: Option<PathBuf>,
        /// PKCS#12 file holding the key, the certificate and its chain.
        #[arg(long, requires = "password_file")]
        p12: Option<PathBuf>,
        /// File whose first line is the PKCS#12 password.
        #[arg(long, requires = "p12")]
        password_file: Option<PathBuf>,
    },
    /// List a domain's certificates (never their keys).
    List {
        #[arg(long)]
        domain: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AnchorCommand {
    /// Add trust anchors to a domain from a PEM, DER or `.p7b` file.
    Add {
        #[arg(long)]
        domain: String,
        file: PathBuf,
    },
    /// List a domain's trust anchors.
    List {
        #[arg(long)]
        domain: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization: `directmail admin org create "Lakeside Clinic"`.
    Create { name: String },
    /// Change an organization's idle timeout or its two-step sign-in requirement.
    Settings {
        name: String,
        /// Minutes of inactivity before sign-out (1–60).
        #[arg(long)]
        idle_timeout: Option<String>,
        /// Whether every user must use two-step sign-in.
        #[arg(long)]
        require_mfa: Option<bool>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// Add a Direct domain to an organization.
    Add {
        domain: String,
        #[arg(long)]
        org: String,
    },
    /// Set a hosted domain's trust policy: what to do when a sender's CRL cannot be
    /// fetched (`soft-fail`, the default, delivers and records it; `fail-closed` refuses).
    Policy {
        domain: String,
        #[arg(long, value_parser = ["soft-fail", "fail-closed"])]
        unreachable_crl: String,
    },
    /// Set how messages to another HISP's domain are encrypted: `rsa-oaep-sha256`
    /// (default) or `rsa-pkcs1v15` for HISPs that cannot read OAEP yet.
    Remote {
        domain: String,
        #[arg(long, value_parser = ["rsa-oaep-sha256", "rsa-pkcs1v15"])]
        key_transport: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user with a password read from a file (first line).
    Add {
        email: String,
        /// Organization name (not for operators).
        #[arg(long)]
        org: Option<String>,
        #[arg(long, value_parser = ["member", "org-admin", "operator"])]
        role: String,
        /// File whose first line is the password (at least 12 characters).
        #[arg(long)]
        password_file: PathBuf,
        /// Display name; defaults to the address's local part.
        #[arg(long)]
        name: Option<String>,
    },
    /// Invite a user to an organization: prints the single-use link (valid 72 hours).
    Invite {
        email: String,
        #[arg(long)]
        org: String,
        #[arg(long, value_parser = ["member", "org-admin"], default_value = "member")]
        role: String,
        /// Display name; defaults to the address's local part.
        #[arg(long)]
        name: Option<String>,
        /// E-mail the link to the address through the alert relay instead of printing
        /// it (the running portal sends it; needs DIRECTMAIL_ALERT_SMTP_RELAY).
        #[arg(long)]
        email_link: bool,
    },
    /// Disable an account and end its sessions.
    Disable { email: String },
    /// Re-enable a disabled account.
    Enable { email: String },
    /// Change the role of an organization's user.
    Role {
        email: String,
        #[arg(long, value_parser = ["member", "org-admin"])]
        role: String,
    },
    /// End the password now and print a single-use link to choose a new one.
    ResetPassword {
        email: String,
        /// E-mail the link to the user's address through the alert relay instead of
        /// printing it (the running portal sends it; needs DIRECTMAIL_ALERT_SMTP_RELAY).
        #[arg(long)]
        email_link: bool,
    },
    /// Remove two-step sign-in and recovery codes.
    ResetMfa { email: String },
}

#[derive(Debug, Subcommand)]
pub enum MailboxCommand {
    /// Add a mailbox on one of the organization's domains and assign it to a user.
    Add {
        address: String,
        #[arg(long)]
        org: String,
        /// User to assign (repeat for a shared mailbox).
        #[arg(long)]
        user: Vec<String>,
        /// A shared mailbox (e.g. referrals@…) rather than a personal one.
        #[arg(long)]
        shared: bool,
        /// Display name; defaults to the address's local part.
        #[arg(long)]
        name: Option<String>,
    },
    /// Let a user of the organization use the mailbox.
    Assign {
        address: String,
        #[arg(long)]
        user: String,
    },
    /// Stop a user from using the mailbox.
    Unassign {
        address: String,
        #[arg(long)]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain and report the first broken link.
    Verify {
        /// A head printed earlier by `audit head` (`ID:HASH`): the chain must still
        /// hold that entry unchanged, so a log truncated or rewritten since is found.
        #[arg(long)]
        head: Option<audit::Head>,
    },
    /// Print the chain's head (`ID:HASH`: the newest entry and its hash), to keep
    /// outside the database and check later with `audit verify --head`.
    Head,
}

/// Runs one admin command; the returned value is what was printed.
pub async fn run(config: &Config, args: AdminArgs) -> anyhow::Result<()> {
    // backup and restore open the database their own way (a restore must not create it)
    let command = match args.command {
        AdminTask::Backup { file } => {
            return print(args.json, backups::make(config, &file).await?);
        }
        AdminTask::Restore { file, force } => {
            return print(args.json, backups::restore(config, &file, force).await?);
        }
        AdminTask::OnDatabase(command) => command,
    };
    let db = Db::connect(&config.database_url()).await?;
    db.migrate().await?;
    let now = Clock::default().now();
    // Once a server start-up has keyed the audit log, every entry this command
    // writes (and `audit verify`) needs the audit key, derived from the KEK.
    let audit_key = if audit::is_keyed(&db).await? {
        let (kek, _) = secrets::load(config)?;
        secrets::check_against_database(&db, &kek).await?;
        let key = audit::AuditKey::derive(&kek);
        audit::install_key(&key);
        Some(key)
    } else {
        None
    };
    let printed = match command {
        AdminCommand::Org(OrgCommand::Create { name }) => org_create(&db, &name, now).await?,
        AdminCommand::Org(OrgCommand::Settings {
            name,
            idle_timeout,
            require_mfa,
        }) => org_settings(&db, &name, idle_timeout.as_deref(), require_mfa, now).await?,
        AdminCommand::User(UserCommand::Invite {
            email,
            org,
            role,
            name,
            email_link,
        }) => {
            if email_link {
                alert_relay_required(config)?;
            }
            let (user, link) =
                user_invite(config, &db, &email, &org, &role, name.as_deref(), now).await?;
            if email_link {
                emailed_link(config, &db, &user, &link, now).await?
            } else {
                (
                    link.clone(),
                    json!({ "id": user.id, "email": user.email, "link": link }),
                )
            }
        }
        AdminCommand::User(UserCommand::Disable { email }) => {
            user_disabled(&db, &email, true, now).await?
        }
        AdminCommand::User(UserCommand::Enable { email }) => {
            user_disabled(&db, &email, false, now).await?
        }
        AdminCommand::User(UserCommand::Role { email, role }) => {
            let user = find_user(&db, &email).await?;
            let role = valid("role", Role::parse(&role))?;
            accounts::set_role(&db, &Actor::cli(), &user, role, now)
                .await
                .map_err(refused)?;
            (
                format!("{} is now: {}.", user.email, role.label()),
                json!({ "email": user.email, "role": role.as_str() }),
            )
        }
        AdminCommand::User(UserCommand::ResetPassword { email, email_link }) => {
            let user = find_user(&db, &email).await?;
            if email_link {
                alert_relay_required(config)?;
            }
            let token = accounts::reset_password(&db, &Actor::cli(), &user, now)
                .await
                .map_err(refused)?;
            let link = link_for(config, &token);
            if email_link {
                emailed_link(config, &db, &user, &link, now).await?
            } else {
                (link.clone(), json!({ "email": user.email, "link": link }))
            }
        }
        AdminCommand::User(UserCommand::ResetMfa { email }) => {
            let user = find_user(&db, &email).await?;
            accounts::reset_mfa(&db, &Actor::cli(), &user, now)
                .await
                .map_err(refused)?;
            (
                format!("Two-step sign-in was reset for {}.", user.email),
                json!({ "email": user.email, "mfa": false }),
            )
        }
        AdminCommand::Mailbox(MailboxCommand::Assign { address, user }) => {
            let (mailbox, user) = mailbox_and_user(&db, &address, &user).await?;
            let added = accounts::assign(&db, &Actor::cli(), &mailbox, &user, now)
                .await
                .map_err(refused)?;
            (
                if added {
                    format!("{} can now use {}.", user.email, mailbox.address)
                } else {
                    format!("{} could already use {}.", user.email, mailbox.address)
                },
                json!({ "address": mailbox.address, "user": user.email, "changed": added }),
            )
        }
        AdminCommand::Mailbox(MailboxCommand::Unassign { address, user }) => {
            let (mailbox, user) = mailbox_and_user(&db, &address, &user).await?;
            let removed = accounts::unassign(&db, &Actor::cli(), &mailbox, &user, now)
                .await
                .map_err(refused)?;
            (
                if removed {
                    format!("{} no longer uses {}.", user.email, mailbox.address)
                } else {
                    format!("{} did not use {}.", user.email, mailbox.address)
                },
                json!({ "address": mailbox.address, "user": user.email, "changed": removed }),
            )
        }
        AdminCommand::Domain(DomainCommand::Add { domain, org }) => {
            domain_add(&db, &domain, &org, now).await?
        }
        AdminCommand::Domain(DomainCommand::Policy {
            domain,
            unreachable_crl,
        }) => {
            let domain = find_domain(&db, &domain).await?;
            let policy = orgs::CrlUnreachable::parse(&unreachable_crl)
                .ok_or_else(|| anyhow!("--unreachable-crl is soft-fail or fail-closed"))?;
            let mut tx = db.begin().await?;
            orgs::set_crl_policy(&mut tx, domain.id, policy).await?;
            audit::append(
                &mut tx,
                now,
                &Actor::cli(),
                Event::new("domain.policy", &domain.name)
                    .detail(format!("unreachable CRL: {}", policy.as_str()))
                    .org(domain.org_id),
            )
            .await?;
            tx.commit().await?;
            (
                format!(
                    "{}: an unreachable CRL now means {}.",
                    domain.name,
                    policy.as_str()
                ),
                json!({ "domain": domain.name, "unreachable_crl": policy.as_str() }),
            )
        }
        AdminCommand::Domain(DomainCommand::Remote {
            domain,
            key_transport,
        }) => {
            let domain = valid("domain", DomainName::parse(&domain))?;
            let mut tx = db.begin().await?;
            orgs::set_remote_key_transport(&mut tx, &domain, &key_transport, now).await?;
            audit::append(
                &mut tx,
                now,
                &Actor::cli(),
                Event::new("remote-domain.key-transport", domain.as_str()).detail(&key_transport),
            )
            .await?;
            tx.commit().await?;
            (
                format!("Messages to {domain} will use {key_transport} key transport."),
                json!({ "domain": domain.as_str(), "key_transport": key_transport }),
            )
        }
        AdminCommand::User(UserCommand::Add {
            email,
            org,
            role,
            password_file,
            name,
        }) => {
            user_add(
                &db,
                &email,
                org.as_deref(),
                &role,
                &password_file,
                name.as_deref(),
                now,
            )
            .await?
        }
        AdminCommand::Mailbox(MailboxCommand::Add {
            address,
            org,
            user,
            shared,
            name,
        }) => mailbox_add(&db, &address, &org, &user, shared, name.as_deref(), now).await?,
        AdminCommand::Cert(command) => cert(config, &db, command, now).await?,
        AdminCommand::Anchor(command) => anchor(&db, command, now).await?,
        AdminCommand::Bundle(command) => bundle::run(config, &db, command, args.json, now).await?,
        AdminCommand::Reporting(command) => reporting::run(&db, command, now).await?,
        AdminCommand::Source(command) => records::run(config, &db, command, now).await?,
        AdminCommand::Pki(command) => dev_pki(config, &db, command, now).await?,
        AdminCommand::Token(TokenCommand::Create {
            user,
            name,
            expires_in_days,
        }) => {
            let user = find_user(&db, &user).await?;
            if !user.is_active() {
                bail!(
                    "{} cannot use a token: the account is disabled or not yet activated.",
                    user.email
                );
            }
            let org = match user.org_id {
                Some(id) => crate::store::orgs::get(&db, id).await?,
                None => None,
            };
            if crate::accounts::lacks_required_two_step(&user, org.as_ref(), config.operator_mfa) {
                bail!(
                    "{} must use two-step sign-in and has not set it up, so a token would be refused; they set it up under My account first.",
                    user.email
                );
            }
            let expires_at = now + expires_in_days * 86_400;
            let (token, hash) = auth::new_token();
            let mut tx = db.begin().await?;
            crate::store::tokens::create(&mut tx, user.id, name.trim(), &hash, now, expires_at)
                .await?;
            audit::append(
                &mut tx,
                now,
                &Actor::cli(),
                Event::new("token.create", &user.email)
                    .detail(format!(
                        "{}, expires {}",
                        name.trim(),
                        crate::clock::format_utc(expires_at)
                    ))
                    .org(user.org_id),
            )
            .await?;
            tx.commit().await?;
            // the token alone on stdout, for scripts
            (
                token.clone(),
                json!({
                    "token": token,
                    "user": user.email,
                    "expires_at": crate::clock::format_rfc3339(expires_at),
                }),
            )
        }
        AdminCommand::Directory(command) => match directory(&db, command, args.json, now).await? {
            Some(printed) => printed,
            // an export was written to stdout as it is
            None => return Ok(()),
        },
        AdminCommand::Audit(AuditCommand::Head) => {
            let head = audit::head(&db).await?;
            // the head alone on stdout, for scripts to keep
            (
                head.to_string(),
                json!({ "head": head.to_string(), "entry": head.id, "hash": head.hash }),
            )
        }
        AdminCommand::Audit(AuditCommand::Verify { head }) => match audit::verify(
            &db,
            audit_key.as_ref(),
            head.as_ref(),
        )
        .await?
        {
            Verification::Intact {
                entries,
                keyed_from,
            } => (
                format!(
                    "The audit log is intact: {entries} entries, every link verified{}{}.",
                    match keyed_from {
                        Some(1) => "; every entry is keyed (HMAC-SHA-256)".to_owned(),
                        Some(k) => format!(
                            "; entries from {k} on are keyed (HMAC-SHA-256), the {} before were written before keying (plain SHA-256)",
                            k - 1
                        ),
                        None =>
                            "; no entry is keyed yet (plain SHA-256 until the server next starts)"
                                .to_owned(),
                    },
                    match &head {
                        Some(h) => format!("; the exported head (entry {}) is unchanged", h.id),
                        None => String::new(),
                    }
                ),
                json!({ "intact": true, "entries": entries, "keyed_from": keyed_from,
                        "exported_head": head.as_ref().map(|h| h.to_string()) }),
            ),
            Verification::Broken { entry_id, problem } => {
                if args.json {
                    println!(
                        "{}",
                        json!({ "intact": false, "entry": entry_id, "problem": problem })
                    );
                }
                bail!("The audit log is broken: {problem}.");
            }
        },
    };
    print(args.json, printed)
}

/// Prints a command's result: the JSON value with `--json`, else the sentence.
fn print(json: bool, (text, value): (String, serde_json::Value)) -> anyhow::Result<()> {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
    Ok(())
}

fn valid<T>(what: &str, r: Result<T, crate::domain::Invalid>) -> anyhow::Result<T> {
    r.map_err(|e| anyhow!("{what}: {e}"))
}

async fn find_org(db: &Db, name: &str) -> anyhow::Result<orgs::Org> {
    orgs::by_name(db, name).await?.ok_or_else(|| {
        anyhow!("There is no organization named \u{201c}{name}\u{201d}; create it with `directmail admin org create`.")
    })
}

async fn org_create(db: &Db, name: &str, now: i64) -> anyhow::Result<(String, serde_json::Value)> {
    let name = valid("organization name", OrgName::parse(name))?;
    if orgs::by_name(db, name.as_str()).await?.is_some() {
        bail!(
            "An organization named \u{201c}{}\u{201d} already exists.",
            name.as_str()
        );
    }
    let mut tx = db.begin().await?;
    let org = orgs::create(&mut tx, &name, now).await?;
    audit::append(
        &mut tx,
        now,
        &Actor::cli(),
        Event::new("org.create", format!("org:{}", org.id))
            .detail(&org.name)
            .org(Some(org.id)),
    )
    .await?;
    tx.commit().await?;
    Ok((
        format!(
            "Created organization \u{201c}{}\u{201d} (id {}).",
            org.name, org.id
        ),
        json!({ "id": org.id, "name": org.name }),
    ))
}

async fn domain_add(
    db: &Db,
    domain: &str,
    org: &str,
    now: i64,
) -> anyhow::Result<(String, serde_json::Value)> {
    let domain = valid("domain", DomainName::parse(domain))?;
    let org = find_org(db, org).await?;
    let existing = orgs::domain_by_name(db, domain.as_str()).await?;
    let mut tx = db.begin().await?;
    let id = match existing {
        Some(d) if d.org_id == Some(org.id) => {
            bail!("The domain {domain} already belongs to {}.", org.name)
        }
        Some(d) if d.org_id.is_some() => {
            bail!("The domain {domain} already belongs to another organization.")
        }
        Some(d) => {
            orgs::assign_domain(&mut tx, d.id, org.id).await?;
            d.id
        }
        None => {
            orgs::add_domain(&mut tx, Some(org.id), &domain, now)
                .await?
                .id
        }
    };
    audit::append(
        &mut tx,
        now,
        &Actor::cli(),
        Event::new("domain.add", domain.as_str()).org(Some(org.id)),
    )
    .await?;
    tx.commit().await?;
    Ok((
        format!("Added the domain {domain} to {}.", org.name),
        json!({ "id": id, "domain": domain.as_str(), "org_id": org.id }),
    ))
}

async fn user_add(
    db: &Db,
    email: &str,
    org: Option<&str>,
    role: &str,
    password_file: &std::path::Path,
    name: Option<&str>,
    now: i64,
) -> anyhow::Result<(String, serde_json::Value)> {
    let email = valid("e-mail address", Email::parse(email))?;
    let role = valid("role", Role::parse(role))?;
    let org = match (role, org) {
        (Role::Operator, None) => None,
        (Role::Operator, Some(_)) => {
            bail!("Operators belong to the HISP, not an organization: leave out --org.")
        }
        (_, Some(name)) => Some(find_org(db, name).await?),
        (_, None) => bail!("Members and organization administrators need --org NAME."),
    };
    let raw = std::fs::read_to_string(password_file)
        .with_context(|| format!("cannot read the password file {}", password_file.display()))?;
    let line = raw.lines().next().unwrap_or("").trim_end_matches('\r');
    let password = NewPassword::parse(line, line).map_err(|e| anyhow!("password: {e}"))?;
    let name = valid(
        "name",
        DisplayName::parse(name.unwrap_or(email.local_part())),
    )?;
    if users::by_email(db, email.as_str()).await?.is_some() {
        bail!("A user with the address {email} already exists.");
    }
    let pw = password.expose().to_owned();
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&pw))
        .await?
        .map_err(|e| anyhow!("cannot hash the password: {e}"))?;
    let mut tx = db.begin().await?;
    let user = users::create(
        &mut tx,
        users::NewUser {
            org_id: org.as_ref().map(|o| o.id),
            email: &email,
            display_name: &name,
            role,
            password_hash: Some(hash),
            must_change_password: false,
        },
        now,
    )
    .await?;
    audit::append(
        &mut tx,
        now,
        &Actor::cli(),
        Event::new("user.create", &user.email)
            .detail(format!("role {}", role.as_str()))
            .org(user.org_id),
    )
    .await?;
    tx.commit().await?;
    Ok((
        format!("Added {} as {}.", user.email, role.label()),
        json!({ "id": user.id, "email": user.email, "role": role.as_str(), "org_id": user.org_id }),
    ))
}

async fn mailbox_add(
    db: &Db,
    address: &str,
    org: &str,
    user_emails: &[String],
    shared: bool,
    name: Option<&str>,
    now: i64,
) -> anyhow::Result<(String, serde_json::Value)> {
    let address = valid("mailbox address", Email::parse(address))?;
    let org = find_org(db, org).await?;
    let domain = orgs::domain_by_name(db, address.domain())
        .await?
        .filter(|d| d.org_id == Some(org.id))
        .ok_or_else(|| {
            anyhow!(
                "{} is not a domain of {}; add it with `directmail admin domain add`.",
                address.domain(),
                org.name
            )
        })?;
    if mailboxes::by_address(db, address.as_str()).await?.is_some() {
        bail!("The mailbox {address} already exists.");
    }
    if !shared && user_emails.len() > 1 {
        bail!("A personal mailbox belongs to one person; give --shared for a team mailbox.");
    }
    let mut members = Vec::new();
    for e in user_emails {
        match users::by_email(db, e).await? {
            Some(u) if u.org_id == Some(org.id) => members.push(u),
            _ => bail!("No user of {} has the address {e}.", org.name),
        }
    }
    let name = valid(
        "name",
        DisplayName::parse(name.unwrap_or(address.local_part())),
    )?;
    let kind = if shared {
        MailboxKind::Shared
    } else {
        MailboxKind::Personal
    };
    let mut tx = db.begin().await?;
    let mailbox = mailboxes::create(&mut tx, org.id, domain.id, &address, kind, &name, now).await?;
    audit::append(
        &mut tx,
        now,
        &Actor::cli(),
        Event::new("mailbox.create", &mailbox.address)
            .detail(kind.as_str())
            .org(Some(org.id)),
    )
    .await?;
    for u in &members {
        mailboxes::assign(&mut tx, mailbox.id, u.id).await?;
        audit::append(
            &mut tx,
            now,
            &Actor::cli(),
            Event::new("mailbox.assign", &mailbox.address)
                .detail(&u.email)
                .org(Some(org.id)),
        )
        .await?;
    }
    tx.commit().await?;
    let emails: Vec<&str> = members.iter().map(|u| u.email.as_str()).collect();
    Ok((
        format!(
            "Created the mailbox {} for {}.",
            mailbox.address,
            if emails.is_empty() {
                "nobody yet".to_owned()
            } else {
                emails.join(", ")
            }
        ),
        json!({ "id": mailbox.id, "address": mailbox.address, "kind": kind.as_str(), "users": emails }),
    ))
}

async fn find_domain(db: &Db, name: &str) -> anyhow::Result<orgs::Domain> {
    let name = valid("domain", DomainName::parse(name))?;
    orgs::domain_by_name(db, name.as_str())
        .await?
        .ok_or_else(|| {
            anyhow!("There is no domain named {name}; add it with `directmail admin domain add`.")
        })
}

fn read_file(path: &std::path::Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} file {}", path.display()))
}

fn cert_json(c: &crate::store::pki::CertRow) -> serde_json::Value {
    json!({
        "id": c.id, "address": c.address, "subject": c.subject, "issuer": c.issuer,
        "serial": c.serial, "fingerprint": c.fingerprint,
        "not_before": format_rfc3339(c.not_before), "not_after": format_rfc3339(c.not_after),
    })
}

async fn cert(
    config: &Config,
    db: &Db,
    command: CertCommand,
    now: i64,
) -> anyhow::Result<(String, serde_json::Value)> {
    match command {
        CertCommand::Import {
            domain,
            address,
            cert,
            key,
            p12,
            password_file,
        } => {
            let domain = find_domain(db, &domain).await?;
            let address = address
                .map(|a| valid("address", Email::parse(&a)))
                .transpose()?;
            let file = match (cert, key, p12, password_file) {
                (Some(cert), Some(key), None, None) => KeyFile::Pem {
                    certs: read_file(&cert, "certificate")?,
                    key: read_file(&key, "key")?,
                },
                (None, None, Some(p12), Some(pw)) => {
                    let raw = String::from_utf8(read_file(&pw, "password")?)
                        .map_err(|_| anyhow!("the password file is not text"))?;
                    KeyFile::Pkcs12 {
                        der: read_file(&p12, "PKCS#12")?,
                        password: raw
                            .lines()
                            .next()
                            .unwrap_or("")
                            .trim_end_matches('\r')
                            .to_owned(),
                    }
                }
                _ => bail!(
                    "Give --cert FILE and --key FILE, or --p12 FILE and --password-file FILE."
                ),
            };
            let (kek, _) = secrets::load(config)?;
            secrets::check_against_database(db, &kek).await?;
            let fetcher = crate::pki::fetch::Fetcher::new(
                std::time::Duration::from_secs(config.fetch_timeout_seconds),
                config.network_policy(),
                &config.extra_https_roots()?,
            )?;
            let pki::Imported { row, chain_gap } = pki::import_certificate(
                db,
                &kek,
                Some(&fetcher),
                &domain,
                address.as_ref(),
                file,
                now,
                &Actor::cli(),
            )
            .await
            .map_err(|e| anyhow!("{e}"))?;
            let mut said = format!(
                "Imported {} for {} (valid until {}, SHA-256 {}).",
                row.subject,
                row.address.as_deref().unwrap_or(&domain.name),
                format_utc(row.not_after),
                row.fingerprint
            );
            let mut json = cert_json(&row);
            if let Some(gap) = &chain_gap {
                said = format!("{said}\n{gap}");
            }
            json["chain_gap"] = serde_json::json!(chain_gap);
            Ok((said, json))
        }
        CertCommand::List { domain } => {
            let domain = find_domain(db, &domain).await?;
            let rows = crate::store::pki::certs_of_domain(db, domain.id).await?;
            let text = if rows.is_empty() {
                format!("{} has no certificate.", domain.name)
            } else {
                rows.iter()
                    .map(|c| {
                        format!(
                            "{}\t{}\tuntil {}\t{}",
                            c.address.as_deref().unwrap_or(&domain.name),
                            c.subject,
                            format_utc(c.not_after),
                            c.fingerprint
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Ok((
                text,
                serde_json::Value::Array(rows.iter().map(cert_json).collect()),
            ))
        }
    }
}

async fn anchor(
    db: &Db,
    command: AnchorCommand,
    now: i64,
) -> anyhow::Result<(String, serde_json::Value)> {
    match command {
        AnchorCommand::Add { domain, file } => {
            let domain = find_domain(db, &domain).await?;
            let bytes = read_file(&file, "anchor")?;
            let result = pki::add_anchors(db, &domain, &bytes, now, &Actor::cli())
                .await
                .map_err(|e| anyhow!("{e}"))?;
            let mut text = format!(
                "Added {} trust anchor(s) to {}",
                result.added.len(),
                domain.name
            );
            if !result.already.is_empty() {
                text.push_str(&format!("; {} were already there", result.already.len()));
            }
            text.push('.');
            Ok((text, serde_json::to_value(&result)?))
        }
        AnchorCommand::List { domain } => {
            let domain = find_domain(db, &domain).await?;
            let rows = crate::store::pki::anchors_of_domain(db, domain.id).await?;
            let text = if rows.is_empty() {
                format!("{} trusts no anchor yet.", domain.name)
            } else {
                rows.iter()
                    .map(|a| {
                        format!(
                            "{}\tuntil {}\t{}",
                            a.subject,
                            format_utc(a.not_after),
                            a.fingerprint
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Ok((text, serde_json::to_value(&rows)?))
        }
    }
}

fn refused(e: accounts::Refusal) -> anyhow::Error {
    anyhow!("{e}")
}

async fn find_user(db: &Db, email: &str) -> anyhow::Result<users::User> {
    let email = valid("e-mail address", Email::parse(email))?;
    users::by_email(db, email.as_str())
        .await?
        .ok_or_else(|| anyhow!("There is no user with the address {email}."))
}

async fn mailbox_and_user(
    db: &Db,
    address: &str,
    user: &str,
) -> anyhow::Result<(mailboxes::Mailbox, users::User)> {
    let address = valid("mailbox address", Email::parse(address))?;
    let mailbox = mailboxes::by_address(db, address.as_str())
        .await?
        .ok_or_else(|| {
            anyhow!("There is no mailbox {address}; create it with `directmail admin mailbox add`.")
        })?;
    Ok((mailbox, find_user(db, user).await?))
}

/// The link users open: `DIRECTMAIL_PUBLIC_URL`, else the configured listen address.
fn link_for(config: &Config, token: &str) -> String {
    let base = config
        .public_url
        .as_ref()
        .map(|u| u.as_str().trim_end_matches('/').to_owned())
        .unwrap_or_else(|| format!("http://{}", config.http_addr));
    format!("{base}/invite/{token}")
}

/// Refuses `--email-link` on a portal without an alert relay, before anything changes.
fn alert_relay_required(config: &Config) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.alert_smtp_relay.is_some(),
        "--email-link needs the alert relay: set DIRECTMAIL_ALERT_SMTP_RELAY (as the running portal has it), or leave out --email-link to print the link."
    );
    Ok(())
}

/// Queues the link for the alert relay; the running portal's alert worker sends it.
async fn emailed_link(
    config: &Config,
    db: &Db,
    user: &users::User,
    link: &str,
    now: i64,
) -> anyhow::Result<(String, serde_json::Value)> {
    let (kek, _) = secrets::load(config)?;
    accounts::email_link(db, &kek, &Actor::cli(), user, link, now).await?;
    Ok((
        format!(
            "The link is queued for {}; the running portal e-mails it through the alert relay.",
            user.email
        ),
        json!({ "email": user.email, "emailed": true }),
    ))
}

async fn user_invite(
    config: &Config,
    db: &Db,
    email: &str,
    org: &str,
    role: &str,
    name: Option<&str>,
    now: i64,
) -> anyhow::Result<(users::User, String)> {
    let email = valid("e-mail address", Email::parse(email))?;
    let role = valid("role", Role::parse(role))?;
    let org = find_org(db, org).await?;
    let name = valid(
        "name",
        DisplayName::parse(name.unwrap_or(email.local_part())),
    )?;
    let (user, token) = accounts::invite(db, &Actor::cli(), &org, &email, &name, role, now)
        .await
        .map_err(refused)?;
    Ok((user, link_for(config, &token)))
}

async fn user_disabled(
    db: &Db,
    email: &str,
    disabled: bool,
    now: i64,
) -> anyhow::Result<(String, serde_json::Value)> {
    let user = find_user(db, email).await?;
    accounts::set_disabled(db, &Actor::cli(), &user, disabled, now)
        .await
        .map_err(refused)?;
    Ok((
        if disabled {
            format!("{} is disabled and was signed out everywhere.", user.email)
        } else {
            format!("{} can sign in again.", user.email)
        },
        json!({ "email": user.email, "disabled": disabled }),
    ))
}

async fn org_settings(
    db: &Db,
    name: &str,
    idle: Option<&str>,
    require_mfa: Option<bool>,
    now: i64,
) -> anyhow::Result<(String, serde_json::Value)> {
    let org = find_org(db, name).await?;
    let idle = match idle {
        Some(v) => valid("idle timeout", crate::domain::parse_idle_timeout(v))?,
        None => org.idle_timeout_minutes,
    };
    let require_mfa = require_mfa.unwrap_or(org.require_mfa);
    accounts::update_settings(db, &Actor::cli(), &org, idle, require_mfa, now)
        .await
        .map_err(refused)?;
    Ok((
        format!(
            "{}: sign-out after {idle} idle minutes; two-step sign-in {}.",
            org.name,
            if require_mfa { "required" } else { "optional" }
        ),
        json!({ "org": org.name, "idle_timeout_minutes": idle, "require_mfa": require_mfa }),
    ))
}

async fn dev_pki(
    config: &Config,
    db: &Db,
    command: PkiCommand,
    now: i64,
) -> anyhow::Result<(String, serde_json::Value)> {
    let (kek, _) = secrets::load(config)?;
    secrets::check_against_database(db, &kek).await?;
    match command {
        PkiCommand::Ca => {
            let ca = pki::dev_ca(db, &kek, now).await?;
            let facts = pki::info(ca.certificate());
            let (pem, _) = ca.to_pem()?;
            Ok((
                pem.trim_end().to_owned(),
                json!({ "subject": facts.subject, "fingerprint": facts.fingerprint, "pem": pem }),
            ))
        }
        PkiCommand::Issue { domain, address } => {
            let domain = find_domain(db, &domain).await?;
            let address = address
                .map(|a| valid("address", Email::parse(&a)))
                .transpose()?;
            let row =
                pki::issue_dev_certificate(db, &kek, &domain, address.as_ref(), now, &Actor::cli())
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
            Ok((
                format!(
                    "Issued a DEVELOPMENT certificate (not for production) for {}: {} (SHA-256 {}).",
                    row.address.as_deref().unwrap_or(&domain.name),
                    row.subject,
                    row.fingerprint
                ),
                cert_json(&row),
            ))
        }
    }
}

async fn directory_scope(db: &Db, org: Option<&str>) -> anyhow::Result<crate::directory::Scope> {
    Ok(match org {
        Some(name) => crate::directory::Scope::Org(find_org(db, name).await?.id),
        None => crate::directory::Scope::Public,
    })
}

/// `directmail admin directory …`; `None` when the output was written already.
async fn directory(
    db: &Db,
    command: DirectoryCommand,
    json_out: bool,
    now: i64,
) -> anyhow::Result<Option<(String, serde_json::Value)>> {
    use crate::directory::import::{self, Format, Options};
    use crate::directory::{self as dir, Scope};
    match command {
        DirectoryCommand::Import { file, dry_run, org } => {
            let scope = directory_scope(db, org.as_deref()).await?;
            let bytes = read_file(&file, "directory")?;
            let options = Options {
                scope,
                source: import::source_for(&file.to_string_lossy()),
                dry_run,
                prune: false,
            };
            let outcome = import::run(db, &Actor::cli(), &bytes, &options, now)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            let value = serde_json::to_value(&outcome)?;
            if !outcome.errors.is_empty() {
                if json_out {
                    println!("{value}");
                } else {
                    for e in &outcome.errors {
                        eprintln!("row {}: {}", e.row, e.message);
                    }
                }
                bail!(
                    "Nothing was imported: {} row(s) of {} are wrong (listed above); correct them and import the file again.",
                    outcome.errors.len(),
                    file.display()
                );
            }
            let skipped = if outcome.skipped > 0 {
                format!(
                    "; {} resource(s) without a Direct address were skipped",
                    outcome.skipped
                )
            } else {
                String::new()
            };
            let text = if dry_run {
                format!(
                    "Dry run of {} ({}): would add {} and update {} entries{skipped}; nothing was changed.",
                    file.display(),
                    outcome.format.label(),
                    outcome.added,
                    outcome.updated
                )
            } else {
                format!(
                    "Imported {} ({}): {} added, {} updated{skipped}.",
                    file.display(),
                    outcome.format.label(),
                    outcome.added,
                    outcome.updated
                )
            };
            Ok(Some((text, value)))
        }
        DirectoryCommand::Export { format, org } => {
            let scope = directory_scope(db, org.as_deref()).await?;
            let format = if format == "fhir" {
                Format::Fhir
            } else {
                Format::Csv
            };
            let bytes = import::export(db, scope, format).await?;
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)
                .and_then(|()| out.flush())
                .context("cannot write the export")?;
            Ok(None)
        }
        DirectoryCommand::Cert { address, file } => {
            let address = valid("address", Email::parse(&address))?;
            let bytes = read_file(&file, "certificate")?;
            let found = {
                let mut conn = db.pool.acquire().await?;
                crate::store::directory::find_by_key(
                    &mut conn,
                    &Scope::Public.key(),
                    crate::store::directory::KeyColumn::Address,
                    address.as_str(),
                )
                .await?
            };
            let entry = match found {
                Some((id, _)) => crate::store::directory::get(db, id).await?,
                None => None,
            }
            .ok_or_else(|| {
                anyhow!("No entry of the shared directory has the address {address}; import or add it first.")
            })?;
            let cert =
                dir::attach_certificate(db, &Actor::cli(), &entry, &address, Some(&bytes), now)
                    .await
                    .map_err(refused)?
                    .ok_or_else(|| anyhow!("the certificate was not attached"))?;
            Ok(Some((
                format!(
                    "Attached {} (valid until {}, SHA-256 {}) to {address}.",
                    cert.subject,
                    format_utc(cert.not_after),
                    cert.fingerprint
                ),
                json!({ "address": address.as_str(), "subject": cert.subject,
                        "fingerprint": cert.fingerprint, "not_after": format_rfc3339(cert.not_after) }),
            )))
        }
        DirectoryCommand::Listing { address, listed } => {
            let address = valid("mailbox address", Email::parse(&address))?;
            let mailbox = mailboxes::by_address(db, address.as_str())
                .await?
                .ok_or_else(|| anyhow!("There is no mailbox {address} hosted here."))?;
            dir::set_listing(db, &Actor::cli(), &mailbox, listed, now)
                .await
                .map_err(refused)?;
            Ok(Some((
                if listed {
                    format!("{address} is listed in the directory.")
                } else {
                    format!("{address} is no longer listed in the directory.")
                },
                json!({ "address": address.as_str(), "listed": listed }),
            )))
        }
    }
}
