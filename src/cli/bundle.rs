//! `directmail admin bundle …`: trust bundles from scripts (import, list, refresh,
//! assign to domains, remove). A running server notices the change within a minute.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::Subcommand;
use serde_json::json;

use crate::audit::Actor;
use crate::clock::{format_rfc3339, format_utc};
use crate::config::Config;
use crate::db::Db;
use crate::pki::bundles::{self, NewImport, Reader};
use crate::pki::fetch::Fetcher;
use crate::store::bundles::{self as store, BundleRow, Refresh, Uses};

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Import a trust bundle (`.p7b`, certs-only or in a signed CMS wrapper) from a
    /// file or a URL.
    Add {
        /// What the bundle is called in the console and these commands.
        #[arg(long)]
        name: String,
        /// The bundle file (DER or PEM).
        #[arg(long, conflicts_with = "url", required_unless_present = "url")]
        file: Option<PathBuf>,
        /// The URL the bundle is read from now and refreshed from on a schedule.
        #[arg(long)]
        url: Option<String>,
        /// The certificate (PEM or DER) that must have signed the bundle; unsigned or
        /// otherwise signed bundles are then refused.
        #[arg(long)]
        signer: Option<PathBuf>,
        /// Hours between scheduled refreshes of a URL bundle (1–8760).
        #[arg(long, default_value_t = bundles::DEFAULT_REFRESH_HOURS)]
        refresh_hours: i64,
    },
    /// List the trust bundles with their last refresh and the domains using them.
    List,
    /// Refresh a bundle from its URL now, or replace a file bundle's anchors with
    /// `--file`. A bundle that cannot be read keeps its anchors.
    Refresh {
        name: String,
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Set what a hosted domain trusts the bundle's anchors for: `receiving`
    /// (senders), `sending` (recipients' discovered certificates), `both`, or `none`.
    Assign {
        name: String,
        #[arg(long)]
        domain: String,
        #[arg(long = "for", value_parser = ["sending", "receiving", "both", "none"])]
        uses: String,
    },
    /// Remove a bundle, its anchors and its assignments.
    Remove { name: String },
}

/// Reads at most one byte more than `max`, so an oversized file is refused by the
/// size check without being read whole.
fn read_bounded(path: &Path, max: usize, what: &str) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    Ok(bytes)
}

async fn find(db: &Db, name: &str) -> anyhow::Result<BundleRow> {
    store::by_name(db, name.trim()).await?.ok_or_else(|| {
        anyhow!(
            "There is no trust bundle named \u{201c}{}\u{201d}; list them with `directmail admin bundle list`.",
            name.trim()
        )
    })
}

fn refresh_json(r: &Refresh) -> serde_json::Value {
    json!({
        "at": format_rfc3339(r.at),
        "error": r.error,
        "added": r.added,
        "removed": r.removed,
        "expiring": r.expiring,
        "anchor_count": r.anchor_count,
    })
}

pub async fn run(
    config: &Config,
    db: &Db,
    command: BundleCommand,
    json_output: bool,
    now: i64,
) -> anyhow::Result<(String, serde_json::Value)> {
    let reader = Reader::new(
        &Fetcher::new(
            Duration::from_secs(config.fetch_timeout_seconds),
            config.network_policy(),
            &config.extra_https_roots()?,
        )?,
        config,
    );
    match command {
        BundleCommand::Add {
            name,
            file,
            url,
            signer,
            refresh_hours,
        } => {
            let file = file
                .map(|f| read_bounded(&f, reader.max_bytes, "bundle"))
                .transpose()?;
            // a certificate is small; the limit only guards against a wrong path
            let signer = signer
                .map(|f| read_bounded(&f, 1024 * 1024, "signer certificate"))
                .transpose()?;
            let (row, refresh) = bundles::import(
                db,
                &reader,
                NewImport {
                    name,
                    url,
                    file,
                    signer,
                    refresh_hours,
                },
                now,
                &Actor::cli(),
            )
            .await
            .map_err(|e| anyhow!("{e}"))?;
            Ok((
                format!(
                    "Imported the bundle \u{201c}{}\u{201d}: {}. Use it with `directmail admin bundle assign \"{}\" --domain DOMAIN --for both`.",
                    row.name,
                    bundles::summary(&refresh),
                    row.name
                ),
                json!({ "id": row.id, "name": row.name, "url": row.url, "refresh": refresh_json(&refresh) }),
            ))
        }
        BundleCommand::List => {
            let rows = store::list(db).await?;
            let mut lines = Vec::new();
            let mut values = Vec::new();
            for b in &rows {
                let assigned = store::assignments_of_bundle(db, b.id).await?;
                let used_by = if assigned.is_empty() {
                    "used by no domain".to_owned()
                } else {
                    format!(
                        "used by {}",
                        assigned
                            .iter()
                            .map(|a| format!("{} ({})", a.domain, a.uses.as_str()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                let last = match (b.last_attempt_at, &b.last_error) {
                    (None, _) => "never refreshed".to_owned(),
                    (Some(at), None) => format!("refreshed {}", format_utc(at)),
                    (Some(at), Some(e)) => format!("refresh FAILED {}: {e}", format_utc(at)),
                };
                lines.push(format!(
                    "{}\t{}\t{} anchors\t{last}\t{used_by}",
                    b.name,
                    b.url.as_deref().unwrap_or("file"),
                    b.anchor_count
                ));
                values.push(json!({
                    "id": b.id,
                    "name": b.name,
                    "url": b.url,
                    "signed": b.signer_pem.is_some(),
                    "refresh_hours": b.refresh_hours,
                    "anchors": b.anchor_count,
                    "last_attempt_at": b.last_attempt_at.map(format_rfc3339),
                    "last_success_at": b.last_success_at.map(format_rfc3339),
                    "last_error": b.last_error,
                    "next_refresh_at": b.next_refresh_at.map(format_rfc3339),
                    "domains": assigned.iter().map(|a| json!({
                        "domain": a.domain, "receiving": a.uses.receiving, "sending": a.uses.sending,
                    })).collect::<Vec<_>>(),
                }));
            }
            let text = if lines.is_empty() {
                "There is no trust bundle yet.".to_owned()
            } else {
                lines.join("\n")
            };
            Ok((text, serde_json::Value::Array(values)))
        }
        BundleCommand::Refresh { name, file } => {
            let bundle = find(db, &name).await?;
            let file = file
                .map(|f| read_bounded(&f, reader.max_bytes, "bundle"))
                .transpose()?;
            let r = bundles::refresh(db, &reader, &bundle, file, now, &Actor::cli())
                .await
                .map_err(|e| anyhow!("{e}"))?;
            if let Some(e) = &r.error {
                if json_output {
                    println!(
                        "{}",
                        json!({ "name": bundle.name, "refresh": refresh_json(&r) })
                    );
                }
                bail!(
                    "The refresh of \u{201c}{}\u{201d} failed, so its {} anchor(s) were kept: {e}.",
                    bundle.name,
                    r.anchor_count
                );
            }
            let mut text = format!(
                "Refreshed \u{201c}{}\u{201d}: {}.",
                bundle.name,
                bundles::summary(&r)
            );
            for (label, list) in [
                ("added", &r.added),
                ("removed", &r.removed),
                ("expiring within 30 days", &r.expiring),
            ] {
                for f in list {
                    text.push_str(&format!(
                        "\n{label}\t{}\tuntil {}\t{}",
                        f.subject,
                        format_utc(f.not_after),
                        f.fingerprint
                    ));
                }
            }
            Ok((
                text,
                json!({ "name": bundle.name, "refresh": refresh_json(&r) }),
            ))
        }
        BundleCommand::Assign { name, domain, uses } => {
            let bundle = find(db, &name).await?;
            let domain = super::find_domain(db, &domain).await?;
            let uses = Uses::parse(&uses)
                .ok_or_else(|| anyhow!("--for is sending, receiving, both or none"))?;
            bundles::assign(db, &bundle, &domain, uses, now, &Actor::cli()).await?;
            Ok((
                if uses == Uses::NONE {
                    format!(
                        "{} no longer uses \u{201c}{}\u{201d}.",
                        domain.name, bundle.name
                    )
                } else {
                    format!(
                        "{} now trusts the anchors of \u{201c}{}\u{201d} for {}.",
                        domain.name,
                        bundle.name,
                        uses.label()
                    )
                },
                json!({
                    "name": bundle.name, "domain": domain.name,
                    "receiving": uses.receiving, "sending": uses.sending,
                }),
            ))
        }
        BundleCommand::Remove { name } => {
            let bundle = find(db, &name).await?;
            bundles::remove(db, &bundle, now, &Actor::cli()).await?;
            Ok((
                format!(
                    "Removed the bundle \u{201c}{}\u{201d} with its {} anchor(s) and its domain assignments.",
                    bundle.name, bundle.anchor_count
                ),
                json!({ "name": bundle.name, "removed": true }),
            ))
        }
    }
}
