//! `directmail admin reporting …`: the public-health reporting routes from scripts,
//! as the console's `/reporting` page keeps them.

use anyhow::bail;
use clap::Subcommand;
use serde_json::json;

use crate::audit::{self, Actor, Event};
use crate::db::Db;
use crate::store::reporting as store;

#[derive(Debug, Subcommand)]
pub enum ReportingCommand {
    /// Add a route, or change the address and document types of the jurisdiction's.
    Add {
        /// The jurisdiction (a state or local health department).
        #[arg(long)]
        jurisdiction: String,
        /// The agency's Direct address (for eCR, the AIMS address).
        #[arg(long)]
        address: String,
        /// LOINC document type codes, comma separated.
        #[arg(long, default_value = "55751-2")]
        types: String,
    },
    /// List the routes.
    List,
    /// Remove the jurisdiction's route.
    Remove { jurisdiction: String },
}

pub async fn run(
    db: &Db,
    command: ReportingCommand,
    now: i64,
) -> anyhow::Result<(String, serde_json::Value)> {
    match command {
        ReportingCommand::Add {
            jurisdiction,
            address,
            types,
        } => {
            let crate::reporting::CheckedRoute {
                jurisdiction,
                address,
                document_types: types,
            } = crate::reporting::check_route(&jurisdiction, &address, &types).map_err(|e| {
                anyhow::anyhow!(
                    e.into_iter()
                        .map(|(_, why)| why)
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            })?;
            let mut tx = db.begin().await?;
            let id = store::upsert(&mut tx, &jurisdiction, &address, &types, now).await?;
            audit::append(
                &mut tx,
                now,
                &Actor::cli(),
                Event::new("reporting.route.save", format!("reporting-route:{id}"))
                    .detail(format!("{jurisdiction}: {address}; {}", types.join(","))),
            )
            .await?;
            tx.commit().await?;
            Ok((
                format!(
                    "Reporting route for {jurisdiction} saved: {address} ({}).",
                    types.join(", ")
                ),
                json!({"id": id, "jurisdiction": jurisdiction, "address": address, "document_types": types}),
            ))
        }
        ReportingCommand::List => {
            let routes = store::list(db).await?;
            let lines: Vec<String> = routes
                .iter()
                .map(|r| {
                    format!(
                        "{}\t{}\t{}",
                        r.jurisdiction,
                        r.address,
                        r.document_types.join(",")
                    )
                })
                .collect();
            Ok((
                if lines.is_empty() {
                    "No reporting routes.".into()
                } else {
                    lines.join("\n")
                },
                json!({"routes": routes}),
            ))
        }
        ReportingCommand::Remove { jurisdiction } => {
            let wanted = jurisdiction.trim();
            let Some(route) = store::list(db)
                .await?
                .into_iter()
                .find(|r| r.jurisdiction.eq_ignore_ascii_case(wanted))
            else {
                bail!(
                    "There is no reporting route for \u{201c}{wanted}\u{201d}; list them with `directmail admin reporting list`."
                );
            };
            let mut tx = db.begin().await?;
            store::remove(&mut tx, route.id).await?;
            audit::append(
                &mut tx,
                now,
                &Actor::cli(),
                Event::new(
                    "reporting.route.remove",
                    format!("reporting-route:{}", route.id),
                ),
            )
            .await?;
            tx.commit().await?;
            Ok((
                format!("Reporting route for {} removed.", route.jurisdiction),
                json!({"id": route.id, "jurisdiction": route.jurisdiction}),
            ))
        }
    }
}
