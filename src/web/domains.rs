//! A hosted domain's certificates, private keys and trust anchors (HISP operators).

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use super::session::{self, Chrome, CurrentUser};
use super::{AppError, AppResult, AppState, ClientIp};
use crate::audit::{self, Event};
use crate::clock::format_utc;
use crate::domain::Email;
use crate::pki::{self, ImportProblem, KeyFile};
use crate::store::orgs::{self, Domain, Org};
use crate::store::pki as store;

/// Largest upload accepted here (certificates, keys and bundles are small).
pub const UPLOAD_LIMIT: usize = 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/orgs/{org}/domains/{domain}", get(domain_page))
        .route(
            "/orgs/{org}/domains/{domain}/certificates",
            post(import_certificate),
        )
        .route("/orgs/{org}/domains/{domain}/anchors", post(add_anchors))
        .route("/orgs/{org}/domains/{domain}/policy", post(set_policy))
        .route("/orgs/{org}/domains/{domain}/dns-check", post(check_dns))
        .route(
            "/orgs/{org}/domains/{domain}/anchors/{anchor}/remove",
            post(remove_anchor),
        )
}

/// The organization and one of its domains, for an operator; 403/404 otherwise.
async fn operator_domain(
    state: &AppState,
    current: &CurrentUser,
    org_id: i64,
    domain_id: i64,
) -> AppResult<(Org, Domain)> {
    current.require_operator()?;
    let org = orgs::get(&state.db, org_id)
        .await?
        .ok_or(AppError::NotFound)?;
    let domain = orgs::domains_of(&state.db, org.id)
        .await?
        .into_iter()
        .find(|d| d.id == domain_id)
        .ok_or(AppError::NotFound)?;
    Ok((org, domain))
}

/// "Valid", "Expires in 12 days" or "Expired" — in words, not colour alone.
pub(super) fn status(not_before: i64, not_after: i64, now: i64) -> String {
    if now > not_after {
        "Expired".into()
    } else if now < not_before {
        "Not yet valid".into()
    } else if not_after - now < 30 * 86_400 {
        format!("Valid — expires in {} days", (not_after - now) / 86_400)
    } else {
        "Valid".into()
    }
}

pub struct CertView {
    pub bound_to: String,
    pub subject: String,
    pub issuer: String,
    pub fingerprint: String,
    pub until: String,
    pub status: String,
    /// What other HISPs may miss to verify its signatures, when anything.
    pub chain_gap: Option<String>,
}

pub struct AnchorView {
    pub id: i64,
    pub subject: String,
    pub fingerprint: String,
    pub until: String,
    pub status: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "orgs/domain.html")]
struct DomainPage {
    chrome: Chrome,
    org: Org,
    domain: Domain,
    certs: Vec<CertView>,
    anchors: Vec<AnchorView>,
    /// `soft-fail` or `fail-closed`
    crl_policy: String,
    /// The trust bundles the domain uses, and for what.
    bundles: Vec<crate::store::bundles::Assignment>,
    /// DNS CERT records to publish: (owner, zone-file line).
    dns_records: Vec<(String, String)>,
    address: String,
    error: String,
}

async fn view(
    state: &AppState,
    chrome: Chrome,
    org: Org,
    domain: Domain,
    address: String,
    error: String,
) -> AppResult<DomainPage> {
    let now = state.clock.now();
    let mut certs = Vec::new();
    let anchors = pki::sending_anchors(&state.db).await?;
    for c in store::certs_of_domain(&state.db, domain.id).await? {
        certs.push(CertView {
            bound_to: c
                .address
                .clone()
                .unwrap_or_else(|| format!("the whole domain {}", domain.name)),
            status: status(c.not_before, c.not_after, now),
            until: format_utc(c.not_after),
            chain_gap: pki::chain_gap(&c, &anchors),
            subject: c.subject,
            issuer: c.issuer,
            fingerprint: c.fingerprint,
        });
    }
    let anchors = store::anchors_of_domain(&state.db, domain.id)
        .await?
        .into_iter()
        .map(|a| AnchorView {
            id: a.id,
            status: status(a.not_before, a.not_after, now),
            until: format_utc(a.not_after),
            subject: a.subject,
            fingerprint: a.fingerprint,
        })
        .collect();
    let crl_policy = orgs::crl_policy(&state.db, domain.id)
        .await?
        .as_str()
        .to_owned();
    let bundles = crate::store::bundles::assignments_of_domain(&state.db, domain.id).await?;
    let dns_records = crate::pki::publish::records(&state.db, Some(domain.id), now)
        .await?
        .into_iter()
        .map(|p| (p.owner, p.zone_line))
        .collect();
    Ok(DomainPage {
        chrome,
        org,
        domain,
        certs,
        anchors,
        crl_policy,
        bundles,
        dns_records,
        address,
        error,
    })
}

async fn domain_page(
    State(state): State<AppState>,
    current: CurrentUser,
    Path((org_id, domain_id)): Path<(i64, i64)>,
) -> AppResult<DomainPage> {
    let (org, domain) = operator_domain(&state, &current, org_id, domain_id).await?;
    view(
        &state,
        current.chrome,
        org,
        domain,
        String::new(),
        String::new(),
    )
    .await
}

/// The parts of an upload form, by name: text fields as text, files as bytes.
pub(crate) async fn read_form(mut multipart: Multipart) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut fields = Vec::new();
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_owned();
                let bytes = field.bytes().await.map_err(|_| {
                    "The upload was cut off or too large; try again with smaller files.".to_owned()
                })?;
                fields.push((name, bytes.to_vec()));
            }
            Ok(None) => return Ok(fields),
            Err(_) => {
                return Err(
                    "The upload could not be read; choose the files again and send it.".into(),
                );
            }
        }
    }
}

pub(crate) fn field<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(n, v)| n == name && !v.is_empty())
        .map(|(_, v)| v.as_slice())
}

async fn import_certificate(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((org_id, domain_id)): Path<(i64, i64)>,
    multipart: Multipart,
) -> AppResult<Response> {
    let (org, domain) = operator_domain(&state, &current, org_id, domain_id).await?;
    let fields = match read_form(multipart).await {
        Ok(f) => f,
        Err(message) => {
            let page = view(
                &state,
                current.chrome.clone(),
                org,
                domain,
                String::new(),
                message,
            )
            .await?;
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    let text = |name: &str| {
        field(&fields, name)
            .map(|v| String::from_utf8_lossy(v).trim().to_owned())
            .unwrap_or_default()
    };
    let typed_address = text("address");
    let refuse = |message: String| async {
        let page = view(
            &state,
            current.chrome.clone(),
            org.clone(),
            domain.clone(),
            typed_address.clone(),
            message,
        )
        .await?;
        Ok::<_, AppError>((StatusCode::BAD_REQUEST, page).into_response())
    };
    let address = if typed_address.is_empty() {
        None
    } else {
        match Email::parse(&typed_address) {
            Ok(a) => Some(a),
            Err(e) => return refuse(e.0).await,
        }
    };
    let file = match (
        field(&fields, "p12"),
        field(&fields, "cert"),
        field(&fields, "key"),
    ) {
        (Some(p12), _, _) => KeyFile::Pkcs12 {
            der: p12.to_vec(),
            password: text("password"),
        },
        (None, Some(cert), Some(key)) => KeyFile::Pem {
            certs: cert.to_vec(),
            key: key.to_vec(),
        },
        _ => {
            return refuse(
                "Choose a certificate file and its private key file, or one PKCS#12 file.".into(),
            )
            .await;
        }
    };
    let now = state.clock.now();
    match pki::import_certificate(
        &state.db,
        &state.secret,
        Some(&state.fetcher),
        &domain,
        address.as_ref(),
        file,
        now,
        &current.actor(ip),
    )
    .await
    {
        Ok(pki::Imported {
            row: cert,
            chain_gap,
        }) => {
            let mut said = format!(
                "Imported the certificate {} for {}.",
                cert.subject,
                cert.address.as_deref().unwrap_or(&domain.name)
            );
            if let Some(gap) = chain_gap {
                said = format!("{said} {gap}");
            }
            session::flash(&current.session, said).await?;
            Ok(Redirect::to(&format!("/orgs/{}/domains/{}", org.id, domain.id)).into_response())
        }
        Err(ImportProblem::Refused(message)) => refuse(message).await,
        Err(ImportProblem::Internal(e)) => Err(AppError::Internal(e)),
    }
}

async fn add_anchors(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((org_id, domain_id)): Path<(i64, i64)>,
    multipart: Multipart,
) -> AppResult<Response> {
    let (org, domain) = operator_domain(&state, &current, org_id, domain_id).await?;
    let fields = read_form(multipart).await;
    let bytes = match &fields {
        Ok(f) => field(f, "anchor").map(<[u8]>::to_vec),
        Err(_) => None,
    };
    let Some(bytes) = bytes else {
        let message = fields
            .err()
            .unwrap_or_else(|| "Choose a certificate file (PEM, DER or .p7b) to add.".into());
        let page = view(
            &state,
            current.chrome.clone(),
            org,
            domain,
            String::new(),
            message,
        )
        .await?;
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    };
    let now = state.clock.now();
    match pki::add_anchors(&state.db, &domain, &bytes, now, &current.actor(ip)).await {
        Ok(result) => {
            let mut message = format!("Added {} trust anchor(s).", result.added.len());
            if !result.already.is_empty() {
                message.push_str(&format!(" {} were already trusted.", result.already.len()));
            }
            session::flash(&current.session, message).await?;
            Ok(Redirect::to(&format!("/orgs/{}/domains/{}", org.id, domain.id)).into_response())
        }
        Err(ImportProblem::Refused(message)) => {
            let page = view(
                &state,
                current.chrome.clone(),
                org,
                domain,
                String::new(),
                message,
            )
            .await?;
            Ok((StatusCode::BAD_REQUEST, page).into_response())
        }
        Err(ImportProblem::Internal(e)) => Err(AppError::Internal(e)),
    }
}

async fn remove_anchor(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((org_id, domain_id, anchor_id)): Path<(i64, i64, i64)>,
) -> AppResult<Response> {
    let (org, domain) = operator_domain(&state, &current, org_id, domain_id).await?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let Some(fingerprint) = store::delete_anchor(&mut tx, domain.id, anchor_id).await? else {
        return Err(AppError::NotFound);
    };
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("anchor.remove", &domain.name)
            .detail(format!("sha256 {fingerprint}"))
            .org(Some(org.id)),
    )
    .await?;
    tx.commit().await?;
    session::flash(&current.session, "Trust anchor removed.").await?;
    Ok(Redirect::to(&format!("/orgs/{}/domains/{}", org.id, domain.id)).into_response())
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub struct PolicyForm {
    unreachable_crl: String,
}

async fn set_policy(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((org_id, domain_id)): Path<(i64, i64)>,
    form: Result<axum::Form<PolicyForm>, axum::extract::rejection::FormRejection>,
) -> AppResult<Response> {
    let form = super::form_or_400(form)?;
    let (org, domain) = operator_domain(&state, &current, org_id, domain_id).await?;
    let policy = orgs::CrlUnreachable::parse(&form.unreachable_crl).ok_or_else(|| {
        AppError::BadRequest("Choose what to do when a revocation list cannot be fetched.".into())
    })?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    orgs::set_crl_policy(&mut tx, domain.id, policy).await?;
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("domain.policy", &domain.name)
            .detail(format!("unreachable CRL: {}", policy.as_str()))
            .org(Some(org.id)),
    )
    .await?;
    tx.commit().await?;
    session::flash(&current.session, "Trust policy saved.").await?;
    Ok(Redirect::to(&format!("/orgs/{}/domains/{}", org.id, domain.id)).into_response())
}

/// Asks the live DNS whether each certificate of the domain is published as its CERT
/// record, and says so per owner name.
async fn check_dns(
    State(state): State<AppState>,
    current: CurrentUser,
    Path((org_id, domain_id)): Path<(i64, i64)>,
) -> AppResult<Response> {
    let (org, domain) = operator_domain(&state, &current, org_id, domain_id).await?;
    let records =
        crate::pki::publish::records(&state.db, Some(domain.id), state.clock.now()).await?;
    let mut lines = Vec::new();
    for p in &records {
        lines.push(
            match state.discovery.check_published(&p.owner, &p.der).await {
                Ok(r) if r.published => format!("{}: published ({}).", p.owner, r.detail),
                Ok(r) => format!("{}: not published yet ({}).", p.owner, r.detail),
                Err(e) => format!("{}: {e}.", p.owner),
            },
        );
    }
    if lines.is_empty() {
        lines.push("This domain has no valid certificate to publish.".into());
    }
    session::flash(&current.session, lines.join(" ")).await?;
    Ok(Redirect::to(&format!("/orgs/{}/domains/{}#dns-title", org.id, domain.id)).into_response())
}
