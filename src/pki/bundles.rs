//! Trust bundles (DIRECT.md "Trust anchors and bundles"): importing a `.p7b` from a
//! file or a URL (certs-only, or in a signed CMS wrapper checked against the
//! configured signer), refreshing it on a schedule or on demand, and assigning it to
//! hosted domains for receiving and sending. A failed refresh keeps the anchors the
//! bundle had; every attempt is kept with what it changed.
//!
//! Shared by the console (`web::bundles`), the CLI and the scheduled refresh.

use directmail_smime::{self as smime, Certificate};

use super::{ImportProblem, fetch, info, to_pem};
use crate::audit::{self, Actor, Event};
use crate::db::Db;
use crate::store::bundles::{self as store, AnchorFact, BundleAnchor, BundleRow, Refresh, Uses};
use crate::store::orgs::Domain;

/// An anchor whose validity ends within this many seconds is reported as expiring.
pub const EXPIRING_WITHIN: i64 = 30 * 86_400;
/// After a failed scheduled refresh, the next try comes this soon (or at the bundle's
/// own interval when that is shorter).
const RETRY_AFTER_FAILURE: i64 = 3600;
/// A claimed refresh that never finished (the instance died) is due again after this.
const CLAIM_LEASE: i64 = 900;
/// Refresh intervals accepted, in hours (one hour to one year).
pub const REFRESH_HOURS: std::ops::RangeInclusive<i64> = 1..=8760;
/// The interval when none is given.
pub const DEFAULT_REFRESH_HOURS: i64 = 24;

/// Reads bundles from their source: the shared HTTP client and the size limit
/// (`DIRECTMAIL_BUNDLE_MAX_BYTES`).
#[derive(Clone)]
pub struct Reader {
    pub fetcher: fetch::Fetcher,
    pub max_bytes: usize,
}

impl Reader {
    pub fn new(fetcher: &fetch::Fetcher, config: &crate::config::Config) -> Reader {
        Reader {
            fetcher: fetcher.clone(),
            max_bytes: usize::try_from(config.bundle_max_bytes).unwrap_or(usize::MAX),
        }
    }

    /// The bundle's bytes, from the file given or from `url`; an error is a sentence.
    async fn bytes(&self, url: Option<&str>, file: Option<Vec<u8>>) -> Result<Vec<u8>, String> {
        let bytes = match (file, url) {
            (Some(bytes), _) => bytes,
            (None, Some(url)) => self
                .fetcher
                .bundle(url, self.max_bytes)
                .await
                .map_err(|e| e.0)?,
            (None, None) => return Err("no file was given".into()),
        };
        if bytes.len() > self.max_bytes {
            return Err(format!(
                "the file is {} bytes, more than the {} bytes allowed (DIRECTMAIL_BUNDLE_MAX_BYTES)",
                bytes.len(),
                self.max_bytes
            ));
        }
        Ok(bytes)
    }

    /// Reads and checks a bundle: its anchors as stored, or why it was refused.
    async fn anchors(
        &self,
        url: Option<&str>,
        file: Option<Vec<u8>>,
        signer: Option<Certificate>,
    ) -> Result<Vec<BundleAnchor>, ImportProblem> {
        // plain HTTP can be changed on the way: only a signature makes it safe
        if signer.is_none()
            && url.is_some_and(|u| {
                u.get(..7)
                    .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
            })
        {
            return Err(ImportProblem::Refused(
                "a trust bundle over plain http:// could be altered on the way; use an https:// address or give the certificate that signs the bundle".into(),
            ));
        }
        let bytes = self
            .bytes(url, file)
            .await
            .map_err(ImportProblem::Refused)?;
        // signature checks are RSA work: off the async threads
        let bundle =
            tokio::task::spawn_blocking(move || smime::read_bundle(&bytes, signer.as_ref()))
                .await
                .map_err(anyhow::Error::from)?
                .map_err(|e| ImportProblem::Refused(e.to_string()))?;
        let mut out = Vec::with_capacity(bundle.anchors.len());
        for cert in &bundle.anchors {
            let facts = info(cert);
            out.push(BundleAnchor {
                fingerprint: facts.fingerprint,
                subject: facts.subject,
                issuer: facts.issuer,
                not_before: facts.not_before,
                not_after: facts.not_after,
                cert_pem: to_pem(&[cert])?,
            });
        }
        Ok(out)
    }
}

/// A bundle to import.
pub struct NewImport {
    pub name: String,
    /// The URL to refresh from; `None` for a file.
    pub url: Option<String>,
    /// The file's bytes (for a file bundle).
    pub file: Option<Vec<u8>>,
    /// The signer's certificate (PEM or DER), when the bundle must be signed by it.
    pub signer: Option<Vec<u8>>,
    pub refresh_hours: i64,
}

/// Checks a bundle name: what the console and the CLI call it by.
pub fn valid_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("Give the bundle a name.".into());
    }
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err("A bundle name is at most 100 characters, on one line.".into());
    }
    Ok(name.to_owned())
}

/// Checks a bundle URL: `http://` or `https://` with a host.
pub fn valid_url(url: &str) -> Result<String, String> {
    let url = url.trim();
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(url.to_owned()),
        _ => Err(format!(
            "\u{201c}{url}\u{201d} is not an http:// or https:// address."
        )),
    }
}

/// Checks a refresh interval in hours.
pub fn valid_refresh_hours(hours: i64) -> Result<i64, String> {
    if REFRESH_HOURS.contains(&hours) {
        Ok(hours)
    } else {
        Err("The refresh interval is between 1 and 8760 hours (a year).".into())
    }
}

fn signer_certificate(pem: Option<&[u8]>) -> Result<Option<Certificate>, ImportProblem> {
    let Some(bytes) = pem else {
        return Ok(None);
    };
    let mut certs = smime::parse_certificates(bytes).map_err(|_| {
        ImportProblem::Refused(
            "The signer certificate could not be read (expected one PEM or DER certificate)."
                .into(),
        )
    })?;
    if certs.len() != 1 {
        return Err(ImportProblem::Refused(
            "Give exactly one signer certificate: the one the publisher signs the bundle with."
                .into(),
        ));
    }
    Ok(Some(certs.remove(0)))
}

fn stored_signer(bundle: &BundleRow) -> Result<Option<Certificate>, ImportProblem> {
    match bundle.signer_pem.as_deref() {
        None => Ok(None),
        Some(pem) => Ok(smime::parse_certificates(pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("stored signer of bundle {}: {e}", bundle.name))?
            .into_iter()
            .next()),
    }
}

fn fact(a: &BundleAnchor) -> AnchorFact {
    AnchorFact {
        subject: a.subject.clone(),
        fingerprint: a.fingerprint.clone(),
        not_after: a.not_after,
    }
}

/// What replacing `old` with `new` changes, at `now`.
fn changes(old: &[BundleAnchor], new: &[BundleAnchor], now: i64) -> Refresh {
    let has = |set: &[BundleAnchor], f: &str| set.iter().any(|a| a.fingerprint == f);
    Refresh {
        at: now,
        error: None,
        added: new
            .iter()
            .filter(|a| !has(old, &a.fingerprint))
            .map(fact)
            .collect(),
        removed: old
            .iter()
            .filter(|a| !has(new, &a.fingerprint))
            .map(fact)
            .collect(),
        expiring: new
            .iter()
            .filter(|a| a.not_after < now + EXPIRING_WITHIN)
            .map(fact)
            .collect(),
        anchor_count: new.len() as i64,
    }
}

/// One line for the audit log and the CLI: "+2 −1, 1 expiring within 30 days (5 anchors)".
pub fn summary(r: &Refresh) -> String {
    match &r.error {
        Some(e) => format!("failed: {e}"),
        None => format!(
            "+{} \u{2212}{}, {} expiring within 30 days ({} anchors)",
            r.added.len(),
            r.removed.len(),
            r.expiring.len(),
            r.anchor_count
        ),
    }
}

/// Imports a bundle: reads and checks it (nothing is stored unless it is a good,
/// non-empty bundle from the right signer), then stores it with its anchors, its
/// first history entry and an audit entry.
pub async fn import(
    db: &Db,
    reader: &Reader,
    new: NewImport,
    now: i64,
    actor: &Actor,
) -> Result<(BundleRow, Refresh), ImportProblem> {
    let name = valid_name(&new.name).map_err(ImportProblem::Refused)?;
    let url = new
        .url
        .as_deref()
        .map(valid_url)
        .transpose()
        .map_err(ImportProblem::Refused)?;
    let refresh_hours = valid_refresh_hours(new.refresh_hours).map_err(ImportProblem::Refused)?;
    if store::by_name(db, &name).await?.is_some() {
        return Err(ImportProblem::Refused(format!(
            "A bundle named \u{201c}{name}\u{201d} already exists; refresh it or choose another name."
        )));
    }
    let signer = signer_certificate(new.signer.as_deref())?;
    let signer_pem = signer.as_ref().map(|c| to_pem(&[c])).transpose()?;
    let file = match (&url, new.file) {
        (Some(_), _) => None,
        (None, Some(bytes)) => Some(bytes),
        (None, None) => {
            return Err(ImportProblem::Refused(
                "Choose a bundle file (.p7b) or give its URL.".into(),
            ));
        }
    };
    let anchors = reader
        .anchors(url.as_deref(), file, signer)
        .await
        .map_err(|e| match e {
            ImportProblem::Refused(why) => {
                ImportProblem::Refused(format!("The bundle was not imported: {why}."))
            }
            other => other,
        })?;
    let refresh = changes(&[], &anchors, now);
    let mut tx = db.begin().await?;
    let id = match store::insert(
        &mut tx,
        store::NewBundle {
            name: &name,
            url: url.as_deref(),
            signer_pem: signer_pem.as_deref(),
            refresh_hours,
            next_refresh_at: url.as_ref().map(|_| now + refresh_hours * 3600),
        },
        now,
    )
    .await
    {
        Ok(id) => id,
        Err(e) if crate::store::is_unique_violation(&e) => {
            return Err(ImportProblem::Refused(format!(
                "A bundle named \u{201c}{name}\u{201d} already exists; refresh it or choose another name."
            )));
        }
        Err(e) => return Err(e.into()),
    };
    store::replace_anchors(&mut tx, id, &anchors).await?;
    store::record_refresh(
        &mut tx,
        id,
        &refresh,
        url.as_ref().map(|_| now + refresh_hours * 3600),
    )
    .await?;
    audit::append(
        &mut tx,
        now,
        actor,
        Event::new("bundle.import", &name).detail(format!(
            "{}{}; {}",
            url.as_deref().unwrap_or("from a file"),
            if signer_pem.is_some() {
                ", signer checked"
            } else {
                ""
            },
            summary(&refresh)
        )),
    )
    .await?;
    tx.commit().await?;
    let row = store::get(db, id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("bundle {id} vanished after import"))?;
    Ok((row, refresh))
}

/// Refreshes a bundle: from its URL, or for a file bundle from the new `file`. A
/// bundle that cannot be read keeps its anchors; the attempt is recorded with its
/// error either way (the returned [`Refresh`] has `error` set). Refused outright only
/// when the source does not fit the bundle (a file for a URL bundle, or none for a
/// file bundle).
pub async fn refresh(
    db: &Db,
    reader: &Reader,
    bundle: &BundleRow,
    file: Option<Vec<u8>>,
    now: i64,
    actor: &Actor,
) -> Result<Refresh, ImportProblem> {
    match (&bundle.url, &file) {
        (Some(_), Some(_)) => {
            return Err(ImportProblem::Refused(format!(
                "\u{201c}{}\u{201d} is refreshed from its URL; a file cannot replace it.",
                bundle.name
            )));
        }
        (None, None) => {
            return Err(ImportProblem::Refused(format!(
                "\u{201c}{}\u{201d} was imported from a file: give the new file to refresh it.",
                bundle.name
            )));
        }
        _ => {}
    }
    let signer = stored_signer(bundle)?;
    let read = reader.anchors(bundle.url.as_deref(), file, signer).await;
    let next = bundle.url.as_ref().map(|_| {
        let interval = bundle.refresh_hours * 3600;
        match &read {
            Ok(_) => now + interval,
            Err(_) => now + interval.min(RETRY_AFTER_FAILURE),
        }
    });
    let mut tx = db.begin().await?;
    // one refresh of a bundle at a time (the console's and the schedule's): the row
    // lock is held until commit, and the anchors are read after it
    sqlx::query("update trust_bundles set refresh_hours = refresh_hours where id = $1")
        .bind(bundle.id)
        .execute(&mut *tx)
        .await?;
    let current = store::anchors_on(&mut tx, bundle.id).await?;
    let refresh = match read {
        Ok(anchors) => {
            let refresh = changes(&current, &anchors, now);
            store::replace_anchors(&mut tx, bundle.id, &anchors).await?;
            refresh
        }
        Err(ImportProblem::Refused(why)) => Refresh {
            at: now,
            error: Some(why),
            anchor_count: current.len() as i64,
            ..Refresh::default()
        },
        Err(other) => return Err(other),
    };
    store::record_refresh(&mut tx, bundle.id, &refresh, next).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        Event::new("bundle.refresh", &bundle.name).detail(summary(&refresh)),
    )
    .await?;
    tx.commit().await?;
    Ok(refresh)
}

/// Refreshes every URL bundle whose time has come (the scheduled task calls this
/// every minute). Each is claimed first, so of several instances only one fetches.
/// Returns how many were refreshed (successfully or not).
pub async fn refresh_due(db: &Db, reader: &Reader, now: i64) -> anyhow::Result<usize> {
    let mut done = 0;
    for (id, was_due) in store::due(db, now).await? {
        if !store::claim(db, id, was_due, now + CLAIM_LEASE).await? {
            continue;
        }
        let Some(bundle) = store::get(db, id).await? else {
            continue;
        };
        // the console and the CLI show their own refreshes; scheduled ones are logged
        match refresh(db, reader, &bundle, None, now, &Actor::system()).await {
            Ok(r) => {
                done += 1;
                match &r.error {
                    Some(e) => tracing::warn!(
                        bundle = %bundle.name,
                        error = %e,
                        "trust bundle refresh failed; keeping its anchors"
                    ),
                    None => tracing::info!(
                        bundle = %bundle.name,
                        changes = %summary(&r),
                        "trust bundle refreshed"
                    ),
                }
            }
            Err(e) => {
                tracing::warn!(bundle = %bundle.name, error = %e, "could not refresh a trust bundle")
            }
        }
    }
    Ok(done)
}

/// Notices when the anchors for sending change, wherever the change was made (the
/// console, the CLI, another instance), so that what certificate discovery
/// remembered about recipients can be forgotten.
#[derive(Debug, Default)]
pub struct SendingAnchorsWatch {
    seen: Option<Vec<String>>,
}

impl SendingAnchorsWatch {
    /// Whether the anchors for sending differ from the last look (false at the first).
    pub async fn changed(&mut self, db: &Db) -> sqlx::Result<bool> {
        let now = store::sending_fingerprints(db).await?;
        let changed = self.seen.as_ref().is_some_and(|before| *before != now);
        self.seen = Some(now);
        Ok(changed)
    }
}

/// Sets what `domain` uses the bundle for ([`Uses::NONE`] stops using it), audited.
/// Returns what it used it for before.
pub async fn assign(
    db: &Db,
    bundle: &BundleRow,
    domain: &Domain,
    uses: Uses,
    now: i64,
    actor: &Actor,
) -> anyhow::Result<Uses> {
    let mut tx = db.begin().await?;
    let before = store::assign(&mut tx, domain.id, bundle.id, uses).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        Event::new("bundle.assign", &bundle.name)
            .detail(format!("{}: {}", domain.name, uses.as_str()))
            .org(domain.org_id),
    )
    .await?;
    tx.commit().await?;
    Ok(before)
}

/// Removes a bundle with its anchors, history and assignments, audited.
pub async fn remove(db: &Db, bundle: &BundleRow, now: i64, actor: &Actor) -> anyhow::Result<bool> {
    let assigned = store::assignments_of_bundle(db, bundle.id).await?;
    let mut tx = db.begin().await?;
    let removed = store::delete(&mut tx, bundle.id).await?;
    if removed {
        audit::append(
            &mut tx,
            now,
            actor,
            Event::new("bundle.remove", &bundle.name).detail(format!(
                "{} anchors; was used by {}",
                bundle.anchor_count,
                if assigned.is_empty() {
                    "no domain".to_owned()
                } else {
                    assigned
                        .iter()
                        .map(|a| format!("{} ({})", a.domain, a.uses.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchor(fingerprint: &str, not_after: i64) -> BundleAnchor {
        BundleAnchor {
            fingerprint: fingerprint.into(),
            subject: format!("CN={fingerprint}"),
            issuer: String::new(),
            not_before: 0,
            not_after,
            cert_pem: String::new(),
        }
    }

    #[test]
    fn changes_name_added_removed_and_expiring_anchors() {
        let now = 1_000_000_000;
        let far = now + 365 * 86_400;
        let old = [anchor("A", far), anchor("B", far)];
        let new = [
            anchor("B", far),
            anchor("C", now + 10 * 86_400),
            anchor("D", now - 1),
        ];
        let r = changes(&old, &new, now);
        let names = |f: &[AnchorFact]| f.iter().map(|a| a.fingerprint.clone()).collect::<Vec<_>>();
        assert_eq!(names(&r.added), ["C", "D"]);
        assert_eq!(names(&r.removed), ["A"]);
        assert_eq!(names(&r.expiring), ["C", "D"]);
        assert_eq!(r.anchor_count, 3);
        assert_eq!(
            summary(&r),
            "+2 \u{2212}1, 2 expiring within 30 days (3 anchors)"
        );
    }

    #[test]
    fn names_urls_and_intervals_are_checked() {
        assert!(valid_name("  ").is_err());
        assert_eq!(valid_name(" DirectTrust ").unwrap(), "DirectTrust");
        assert!(valid_name("a\nb").is_err());
        assert!(valid_url("ftp://example.test/b.p7b").is_err());
        assert!(valid_url("not a url").is_err());
        assert!(valid_url("https://bundles.example.test/b.p7b").is_ok());
        assert!(valid_refresh_hours(0).is_err());
        assert!(valid_refresh_hours(24).is_ok());
    }
}
