//! `directmail admin source …`: the FHIR document sources of organizations (add,
//! list, remove), as on the console's Document sources page, and the portal's public
//! key set (`jwks`) to register at a FHIR server.

use anyhow::{anyhow, bail};
use clap::Subcommand;
use serde_json::json;

use crate::audit::{self, Actor, Event};
use crate::config::Config;
use crate::db::Db;
use crate::records;
use crate::store::records::{self as store, NewSource};

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Add a FHIR R4 server an organization's members may retrieve documents from
    /// (SMART Backend Services: the portal's key signs its client assertions; the key
    /// is made now if there is none).
    Add {
        /// The organization whose members use it.
        #[arg(long)]
        org: String,
        #[arg(long)]
        name: String,
        /// The FHIR R4 base URL (https://).
        #[arg(long)]
        base_url: String,
        /// The token endpoint; without it, read from the server's
        /// `.well-known/smart-configuration`.
        #[arg(long, default_value = "")]
        token_url: String,
        /// The client id the server's authorization server gave the portal.
        #[arg(long)]
        client_id: String,
        /// Space-separated scopes (default: system/Patient.rs
        /// system/DocumentReference.rs system/Binary.r).
        #[arg(long, default_value = "")]
        scopes: String,
    },
    /// List the document sources.
    List,
    /// Remove an organization's source (and the documents its members retrieved from
    /// it and did not file).
    Remove {
        #[arg(long)]
        org: String,
        name: String,
    },
    /// Print the portal's public key set (JWKS), as served at /.well-known/jwks.json.
    Jwks,
}

pub async fn run(
    config: &Config,
    db: &Db,
    command: SourceCommand,
    now: i64,
) -> anyhow::Result<(String, serde_json::Value)> {
    match command {
        SourceCommand::Add {
            org,
            name,
            base_url,
            token_url,
            client_id,
            scopes,
        } => {
            let org = super::find_org(db, &org).await?;
            let mut new = NewSource {
                org_id: org.id,
                name,
                base_url,
                token_url,
                client_id,
                scopes,
            };
            records::check_source(&config.network_policy(), &mut new).map_err(|e| anyhow!(e))?;
            let (kek, _) = crate::secrets::load(config)?;
            let key = records::keys::current(db, &kek, now).await?;
            let mut tx = db.begin().await?;
            let Some(id) = store::add(&mut tx, &new, now).await? else {
                bail!(
                    "{} already has a source called \u{201c}{}\u{201d}.",
                    org.name,
                    new.name
                );
            };
            audit::append(
                &mut tx,
                now,
                &Actor::cli(),
                Event::new("records.source_add", format!("source:{id}"))
                    .detail(format!(
                        "{} at {}, client id {}, scopes {}",
                        new.name, new.base_url, new.client_id, new.scopes
                    ))
                    .org(Some(org.id)),
            )
            .await?;
            tx.commit().await?;
            Ok((
                format!(
                    "Added the source \u{201c}{}\u{201d} for {}. Register the portal there with client id {}, the key set at <portal>/.well-known/jwks.json (key {}) and the scopes {}.",
                    new.name, org.name, new.client_id, key.kid, new.scopes
                ),
                json!({ "id": id, "org": org.name.to_string(), "name": new.name, "base_url": new.base_url,
                        "token_url": new.token_url, "client_id": new.client_id, "scopes": new.scopes, "kid": key.kid }),
            ))
        }
        SourceCommand::List => {
            let sources = store::list(db).await?;
            let text = if sources.is_empty() {
                "No document source.".to_owned()
            } else {
                sources
                    .iter()
                    .map(|s| {
                        format!(
                            "{} (organization {}): {} client {} scopes {}",
                            s.name, s.org_id, s.base_url, s.client_id, s.scopes
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Ok((text, json!({ "sources": sources })))
        }
        SourceCommand::Remove { org, name } => {
            let org = super::find_org(db, &org).await?;
            let source = store::of_org(db, org.id)
                .await?
                .into_iter()
                .find(|s| s.name == name)
                .ok_or_else(|| {
                    anyhow!("{} has no source called \u{201c}{name}\u{201d}.", org.name)
                })?;
            let mut tx = db.begin().await?;
            store::remove(&mut tx, source.id).await?;
            audit::append(
                &mut tx,
                now,
                &Actor::cli(),
                Event::new("records.source_remove", format!("source:{}", source.id))
                    .detail(source.name.clone())
                    .org(Some(org.id)),
            )
            .await?;
            tx.commit().await?;
            Ok((
                format!("Removed the source \u{201c}{name}\u{201d} of {}.", org.name),
                json!({ "removed": source.id }),
            ))
        }
        SourceCommand::Jwks => {
            let set = records::keys::jwks(db).await?;
            Ok((set.to_string(), set))
        }
    }
}
