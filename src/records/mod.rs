//! Retrieving records from FHIR servers (issue 14): an operator configures document
//! sources (a FHIR R4 base URL and SMART Backend Services credentials) for an
//! organization; its members search a patient there, list the patient's documents
//! (`DocumentReference` search, or `$docref` when the server offers it), and retrieve
//! one, which the portal's viewers then show (`web::records`).
//!
//! Every connection goes through the outbound-connection policy
//! ([`directmail_net::Policy::http_client`]) over HTTPS, with the fetch timeout
//! (`DIRECTMAIL_FETCH_TIMEOUT_SECONDS`); answers are read chunk by chunk up to a limit
//! (the message size limit for a document, since it is filed or forwarded as a
//! message), never whole into memory first. A link the server gives (a next page, an
//! attachment's `url`) is followed only when it is on the same server, under the base
//! URL: the access token goes nowhere else.
//!
//! Authorization (SMART Backend Services): a `client_credentials` grant with a
//! `private_key_jwt` client assertion signed with the portal's key ([`keys`]); the
//! access token is kept in memory until shortly before it expires.

pub mod keys;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::Value;

use crate::db::Db;
use crate::secrets::SecretKey;
use crate::store::records::Source;

/// The scopes asked for when the operator gives none.
pub const DEFAULT_SCOPES: &str = "system/Patient.rs system/DocumentReference.rs system/Binary.r";

/// The largest FHIR answer other than a document (a search page, a resource).
const MAX_JSON_BYTES: usize = 8 * 1024 * 1024;

/// A token is used until this many seconds before it expires.
const TOKEN_MARGIN: i64 = 30;

/// What the server's discovery documents say, kept for [`DISCOVERY_SECONDS`].
const DISCOVERY_SECONDS: i64 = 3600;

/// Results asked for per page.
pub const PAGE_SIZE: usize = 20;

/// Why something could not be done, as a sentence for the member, and a short code
/// for the audit log (never the server's words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: &'static str,
    pub sentence: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.sentence)
    }
}

fn failure(code: &'static str, sentence: impl Into<String>) -> Failure {
    Failure {
        code,
        sentence: sentence.into(),
    }
}

/// The operator's settings for a new source, checked: `Err` says what is wrong.
pub fn check_source(
    network: &directmail_net::Policy,
    new: &mut crate::store::records::NewSource,
) -> Result<(), String> {
    new.name = new.name.trim().to_owned();
    if new.name.is_empty()
        || new.name.chars().count() > 100
        || new.name.chars().any(char::is_control)
    {
        return Err("Give the source a name of 1 to 100 characters on one line.".into());
    }
    let base = https_url(&new.base_url, "The FHIR base URL")?;
    network
        .check_url(&base)
        .map_err(|e| format!("The FHIR base URL is not allowed: {e}."))?;
    new.base_url = base.as_str().trim_end_matches('/').to_owned();
    let token = new.token_url.trim();
    new.token_url = if token.is_empty() {
        String::new()
    } else {
        let url = https_url(token, "The token endpoint")?;
        network
            .check_url(&url)
            .map_err(|e| format!("The token endpoint is not allowed: {e}."))?;
        url.to_string()
    };
    new.client_id = new.client_id.trim().to_owned();
    if new.client_id.is_empty()
        || new.client_id.len() > 200
        || !new.client_id.chars().all(|c| c.is_ascii_graphic())
    {
        return Err("The client id is the one the FHIR server's authorization server gave the portal: 1 to 200 printable characters without spaces.".into());
    }
    let scopes = new.scopes.split_whitespace().collect::<Vec<_>>().join(" ");
    new.scopes = if scopes.is_empty() {
        DEFAULT_SCOPES.to_owned()
    } else {
        scopes
    };
    if new.scopes.len() > 500 || !new.scopes.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return Err("The scopes are at most 500 printable characters, separated by spaces.".into());
    }
    Ok(())
}

fn https_url(text: &str, what: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text.trim())
        .map_err(|_| format!("{what} is not a URL (https://fhir.example.org/r4)."))?;
    if url.scheme() != "https" {
        return Err(format!(
            "{what} must be an https:// address: the access token and the records travel over it."
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{what} must not carry a user name or password."));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{what} must not have a query or a fragment."));
    }
    Ok(url)
}

/// A FHIR id (`[A-Za-z0-9\-\.]{1,64}`), the only kind put into a URL path here.
pub fn is_fhir_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// `url` when it is on the source's server, under its base URL (a next page, an
/// attachment): the token is sent nowhere else.
pub fn on_server(source: &Source, url: &str) -> Option<url::Url> {
    let base = url::Url::parse(&format!("{}/", source.base_url)).ok()?;
    let url = base.join(url).ok()?;
    let same = url.scheme() == base.scheme()
        && url.host() == base.host()
        && url.port_or_known_default() == base.port_or_known_default()
        && url.path().starts_with(base.path())
        && url.username().is_empty()
        && url.password().is_none();
    same.then_some(url)
}

struct Token {
    /// Which settings it was granted for (a source edited since asks again).
    settings: String,
    value: String,
    expires_at: i64,
}

#[derive(Clone)]
struct Discovered {
    settings: String,
    token_url: String,
    docref: bool,
    until: i64,
}

/// The HTTP client and what is kept between requests (in `AppState`).
pub struct Records {
    client: reqwest::Client,
    timeout: Duration,
    network: directmail_net::Policy,
    tokens: Mutex<HashMap<i64, Token>>,
    discovered: Mutex<HashMap<i64, Discovered>>,
    /// The largest document retrieved.
    pub max_document_bytes: usize,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records").finish_non_exhaustive()
    }
}

/// A page of results and the server's link to the next one (on its server).
#[derive(Debug, Clone, Default)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
    /// The total the server reported, when it did.
    pub total: Option<u64>,
}

/// A patient found.
#[derive(Debug, Clone)]
pub struct PatientHit {
    pub id: String,
    pub name: String,
    pub birth_date: String,
    pub gender: String,
    /// "system|value" of each identifier, for telling namesakes apart.
    pub identifiers: Vec<String>,
}

/// How a member searches a patient.
#[derive(Debug, Clone)]
pub enum PatientQuery {
    NameAndBirthDate {
        name: String,
        birth_date: String,
    },
    /// `system|value`, or a value alone.
    Identifier(String),
}

impl PatientQuery {
    /// Words for the audit log (the kind of search, never what was typed).
    pub fn kind(&self) -> &'static str {
        match self {
            PatientQuery::NameAndBirthDate { .. } => "by name and birth date",
            PatientQuery::Identifier(_) => "by identifier",
        }
    }
}

/// Filters of a document search.
#[derive(Debug, Clone, Default)]
pub struct DocumentFilter {
    /// A LOINC document type code ("" for all).
    pub type_code: String,
    /// YYYY-MM-DD bounds ("" for none).
    pub from: String,
    pub to: String,
}

/// A document listed.
#[derive(Debug, Clone)]
pub struct DocumentHit {
    pub id: String,
    pub type_text: String,
    pub date: String,
    pub description: String,
    pub status: String,
    /// Each attachment: (title, content type, size in bytes when given).
    pub attachments: Vec<(String, String, Option<u64>)>,
}

/// A document as retrieved.
#[derive(Debug, Clone)]
pub struct Retrieved {
    pub title: String,
    /// The type the server declared (the Binary's, the response's or the attachment's).
    pub declared_type: String,
    pub data: Vec<u8>,
}

fn text_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// A CodeableConcept in words: its text, else its first coding's display or code.
fn concept_text(c: Option<&Value>) -> String {
    let Some(c) = c else { return String::new() };
    let text = text_at(c, "text");
    if !text.is_empty() {
        return text.to_owned();
    }
    array(c, "coding")
        .iter()
        .map(|k| {
            let d = text_at(k, "display");
            if d.is_empty() { text_at(k, "code") } else { d }
        })
        .find(|s| !s.is_empty())
        .unwrap_or_default()
        .to_owned()
}

fn human_name(p: &Value) -> String {
    let Some(n) = array(p, "name").first() else {
        return String::new();
    };
    let text = text_at(n, "text");
    if !text.is_empty() {
        return text.to_owned();
    }
    let given = array(n, "given")
        .iter()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    [given.as_str(), text_at(n, "family")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The diagnostics of an OperationOutcome (its issues' `diagnostics`, else their
/// `details.text`), at most 300 characters; `None` for anything else.
fn outcome_words(v: &Value) -> Option<String> {
    if text_at(v, "resourceType") != "OperationOutcome" {
        return None;
    }
    let words = array(v, "issue")
        .iter()
        .map(|i| {
            let d = text_at(i, "diagnostics");
            if d.is_empty() {
                concept_text(i.get("details"))
            } else {
                d.to_owned()
            }
        })
        .filter(|s| !s.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let words: String = words
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect();
    Some(if words.trim().is_empty() {
        "an error without an explanation".into()
    } else {
        words
    })
}

impl Records {
    pub fn new(config: &crate::config::Config) -> anyhow::Result<Records> {
        let timeout = Duration::from_secs(config.fetch_timeout_seconds);
        let network = config.network_policy();
        let mut builder = network.http_client();
        for root in config.extra_https_roots()? {
            builder = builder.add_root_certificate(root);
        }
        let client = builder
            .https_only(true)
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent("directmail")
            .build()
            .context("the HTTP client for document sources")?;
        Ok(Records {
            client,
            timeout,
            network,
            tokens: Mutex::default(),
            discovered: Mutex::default(),
            max_document_bytes: config.max_message_mb as usize * 1024 * 1024,
        })
    }

    fn settings(source: &Source) -> String {
        format!(
            "{}\n{}\n{}\n{}",
            source.base_url, source.token_url, source.client_id, source.scopes
        )
    }

    /// `url` when the outbound-connection policy allows it (an address in it; names
    /// are checked as they resolve), else why not.
    fn allowed(&self, source: &Source, url: &url::Url) -> Result<(), Failure> {
        self.network.check_url(url).map_err(|e| {
            failure(
                "refused",
                format!(
                    "The portal may not connect to {} ({e}); ask your administrator.",
                    source.name
                ),
            )
        })
    }

    /// Why a request failed, in a sentence.
    fn transport(&self, source: &Source, e: &reqwest::Error) -> Failure {
        if let Some(refused) = directmail_net::refusal(e) {
            return failure(
                "refused",
                format!(
                    "The portal may not connect to {} ({refused}); ask your administrator.",
                    source.name
                ),
            );
        }
        if e.is_timeout() {
            return failure(
                "timeout",
                format!(
                    "{} did not answer within {} seconds; nothing was retrieved. Try again later.",
                    source.name,
                    self.timeout.as_secs()
                ),
            );
        }
        failure(
            "unreachable",
            format!(
                "{} could not be reached; nothing was retrieved. Try again later.",
                source.name
            ),
        )
    }

    /// The body of `response`, read chunk by chunk and refused past `limit` bytes
    /// (at once when the server announces more).
    async fn body(
        &self,
        source: &Source,
        mut response: reqwest::Response,
        limit: usize,
        what: &str,
    ) -> Result<Vec<u8>, Failure> {
        let too_big = || {
            failure(
                "too-large",
                format!(
                    "The {what} from {} is larger than {} MB, the most the portal retrieves; it was not retrieved.",
                    source.name,
                    limit / (1024 * 1024)
                ),
            )
        };
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport(source, &e))?
        {
            if body.len() + chunk.len() > limit {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The server's discovery documents: the token endpoint (the source's, or the
    /// one `.well-known/smart-configuration` names) and whether the server offers
    /// `$docref` (its CapabilityStatement lists the operation on DocumentReference).
    async fn discover(&self, source: &Source, now: i64) -> Result<Discovered, Failure> {
        let settings = Self::settings(source);
        if let Some(d) = self.discovered.lock().ok().and_then(|m| {
            m.get(&source.id)
                .filter(|d| d.settings == settings && d.until > now)
                .cloned()
        }) {
            return Ok(d);
        }
        let token_url = if source.token_url.is_empty() {
            let config = self
                .public_json(
                    source,
                    &format!("{}/.well-known/smart-configuration", source.base_url),
                )
                .await?;
            let url = text_at(&config, "token_endpoint");
            let parsed = url::Url::parse(url).ok().filter(|u| u.scheme() == "https");
            match parsed {
                Some(u) => u.to_string(),
                None => {
                    return Err(failure(
                        "discovery",
                        format!(
                            "{}'s SMART configuration names no https token endpoint; the operator can add the source again with its token endpoint.",
                            source.name
                        ),
                    ));
                }
            }
        } else {
            source.token_url.clone()
        };
        let docref = match self
            .public_json(source, &format!("{}/metadata", source.base_url))
            .await
        {
            Ok(cap) => offers_docref(&cap),
            Err(_) => false,
        };
        let d = Discovered {
            settings,
            token_url,
            docref,
            until: now + DISCOVERY_SECONDS,
        };
        if let Ok(mut m) = self.discovered.lock() {
            m.insert(source.id, d.clone());
        }
        Ok(d)
    }

    /// A JSON document read without a token (discovery).
    async fn public_json(&self, source: &Source, url: &str) -> Result<Value, Failure> {
        let url = url::Url::parse(url)
            .map_err(|_| failure("config", "The source's URL is not valid."))?;
        self.allowed(source, &url)?;
        let response = self
            .client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| self.transport(source, &e))?;
        if !response.status().is_success() {
            return Err(failure(
                "discovery",
                format!(
                    "{} did not give its SMART configuration ({}).",
                    source.name,
                    response.status().as_u16()
                ),
            ));
        }
        let body = self
            .body(source, response, MAX_JSON_BYTES, "answer")
            .await?;
        serde_json::from_slice(&body).map_err(|_| {
            failure(
                "malformed",
                format!(
                    "{} sent a discovery document that is not JSON.",
                    source.name
                ),
            )
        })
    }

    /// An access token for `source`: the one kept, or a new one from a
    /// `client_credentials` grant with a signed client assertion.
    async fn token(
        &self,
        db: &Db,
        secret: &SecretKey,
        source: &Source,
        now: i64,
    ) -> Result<(String, bool), Failure> {
        let settings = Self::settings(source);
        if let Some(t) = self.tokens.lock().ok().and_then(|m| {
            m.get(&source.id)
                .filter(|t| t.settings == settings && t.expires_at - TOKEN_MARGIN > now)
                .map(|t| t.value.clone())
        }) {
            return Ok((t, false));
        }
        let discovered = self.discover(source, now).await?;
        let internal = |e: anyhow::Error| {
            tracing::error!(
                error = format!("{e:#}"),
                "the client assertion could not be made"
            );
            failure(
                "internal",
                "The portal could not sign its request for a token; nothing was retrieved. Ask your administrator.",
            )
        };
        let key = keys::current(db, secret, now).await.map_err(internal)?;
        let assertion = key
            .assertion(&source.client_id, &discovered.token_url, now)
            .map_err(internal)?;
        let url = url::Url::parse(&discovered.token_url)
            .map_err(|_| failure("config", "The token endpoint is not a valid URL."))?;
        self.allowed(source, &url)?;
        let response = self
            .client
            .post(url)
            .header("accept", "application/json")
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", source.scopes.as_str()),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| self.transport(source, &e))?;
        let status = response.status();
        let body = self
            .body(source, response, MAX_JSON_BYTES, "answer")
            .await?;
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let error: String = text_at(&json, "error")
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(60)
                .collect();
            return Err(failure(
                "token-refused",
                format!(
                    "{}'s authorization server refused the portal's credentials ({}{}): the portal's client may not be registered there, or not with the portal's key set. Ask your administrator.",
                    source.name,
                    status.as_u16(),
                    if error.is_empty() {
                        String::new()
                    } else {
                        format!(", {error}")
                    }
                ),
            ));
        }
        let value = text_at(&json, "access_token");
        if value.is_empty() {
            return Err(failure(
                "token-refused",
                format!(
                    "{}'s authorization server answered without an access token.",
                    source.name
                ),
            ));
        }
        let expires_in = json
            .get("expires_in")
            .and_then(Value::as_i64)
            .unwrap_or(300);
        if let Ok(mut m) = self.tokens.lock() {
            m.insert(
                source.id,
                Token {
                    settings,
                    value: value.to_owned(),
                    expires_at: now + expires_in,
                },
            );
        }
        Ok((value.to_owned(), true))
    }

    fn forget_token(&self, source: &Source) {
        if let Ok(mut m) = self.tokens.lock() {
            m.remove(&source.id);
        }
    }

    /// A GET with the access token; the response when it succeeded, else the
    /// failure in words (401/403, 404, an OperationOutcome's diagnostics, any other
    /// status).
    async fn get(
        &self,
        ctx: &Ctx<'_>,
        url: url::Url,
        accept: &str,
    ) -> Result<reqwest::Response, Failure> {
        let source = ctx.source;
        self.allowed(source, &url)?;
        let mut retried = false;
        let (response, status) = loop {
            let (token, fresh) = self.token(ctx.db, ctx.secret, source, ctx.now).await?;
            let response = self
                .client
                .get(url.clone())
                .bearer_auth(token)
                .header("accept", accept)
                .send()
                .await
                .map_err(|e| self.transport(source, &e))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if status.as_u16() != 401 {
                break (response, status);
            }
            // a token the server no longer takes is not used again; a kept one is
            // replaced by a new one once (the server may have ended it early)
            self.forget_token(source);
            if fresh || retried {
                break (response, status);
            }
            retried = true;
        };
        let body = self
            .body(source, response, MAX_JSON_BYTES, "answer")
            .await
            .unwrap_or_default();
        let outcome = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| outcome_words(&v));
        Err(match (status.as_u16(), outcome) {
            (401, _) => failure(
                "401",
                format!(
                    "{} did not accept the portal's access (401): the portal's client may not be registered there, or its access was withdrawn. Ask your administrator.",
                    source.name
                ),
            ),
            (403, _) => failure(
                "403",
                format!(
                    "{} does not allow the portal to read this (403): the portal's client lacks the scope for it.",
                    source.name
                ),
            ),
            (404, _) => failure(
                "404",
                format!(
                    "{} has no such record (404): it may have been removed or merged into another.",
                    source.name
                ),
            ),
            (code, Some(words)) => failure(
                "operation-outcome",
                format!("{} answered with an error ({code}): {words}", source.name),
            ),
            (code, None) => failure(
                "status",
                format!(
                    "{} answered with an error ({code}); nothing was retrieved.",
                    source.name
                ),
            ),
        })
    }

    /// A GET whose answer is a FHIR resource (JSON); an OperationOutcome is a failure.
    async fn get_resource(&self, ctx: &Ctx<'_>, url: url::Url) -> Result<Value, Failure> {
        let source = ctx.source;
        let response = self.get(ctx, url, "application/fhir+json").await?;
        let body = self
            .body(source, response, MAX_JSON_BYTES, "answer")
            .await?;
        let value: Value = serde_json::from_slice(&body).map_err(|_| malformed(source))?;
        if let Some(words) = outcome_words(&value) {
            return Err(failure(
                "operation-outcome",
                format!("{} answered: {words}", source.name),
            ));
        }
        Ok(value)
    }

    /// A search page: the Bundle's resources of type `kind`, and its next link.
    async fn search(
        &self,
        ctx: &Ctx<'_>,
        url: url::Url,
        kind: &str,
    ) -> Result<Page<Value>, Failure> {
        let bundle = self.get_resource(ctx, url).await?;
        read_bundle(ctx.source, bundle, kind)
    }

    /// Patients matching `query` (or the page at `page`, a next link given before).
    pub async fn patients(
        &self,
        ctx: &Ctx<'_>,
        query: &PatientQuery,
        page: Option<&str>,
    ) -> Result<Page<PatientHit>, Failure> {
        let url = match page {
            Some(p) => page_url(ctx.source, p)?,
            None => {
                let mut url = endpoint(ctx.source, "Patient")?;
                {
                    let mut q = url.query_pairs_mut();
                    match query {
                        PatientQuery::NameAndBirthDate { name, birth_date } => {
                            q.append_pair("name", name);
                            q.append_pair("birthdate", birth_date);
                        }
                        PatientQuery::Identifier(id) => {
                            q.append_pair("identifier", id);
                        }
                    }
                    q.append_pair("_count", &PAGE_SIZE.to_string());
                }
                url
            }
        };
        let Page {
            items: resources,
            next,
            total,
        } = self.search(ctx, url, "Patient").await?;
        let items = resources
            .iter()
            .filter_map(|p| {
                let id = text_at(p, "id");
                is_fhir_id(id).then(|| PatientHit {
                    id: id.to_owned(),
                    name: human_name(p),
                    birth_date: text_at(p, "birthDate").to_owned(),
                    gender: text_at(p, "gender").to_owned(),
                    identifiers: array(p, "identifier")
                        .iter()
                        .map(|i| {
                            let (s, v) = (text_at(i, "system"), text_at(i, "value"));
                            if s.is_empty() {
                                v.to_owned()
                            } else {
                                format!("{s}|{v}")
                            }
                        })
                        .filter(|s| !s.is_empty())
                        .take(5)
                        .collect(),
                })
            })
            .collect();
        Ok(Page { items, next, total })
    }

    /// One patient, by id (for the page of their documents).
    pub async fn patient(&self, ctx: &Ctx<'_>, id: &str) -> Result<PatientHit, Failure> {
        let url = endpoint(ctx.source, &format!("Patient/{id}"))?;
        let p = self.get_resource(ctx, url).await?;
        if text_at(&p, "resourceType") != "Patient" {
            return Err(malformed(ctx.source));
        }
        Ok(PatientHit {
            id: id.to_owned(),
            name: human_name(&p),
            birth_date: text_at(&p, "birthDate").to_owned(),
            gender: text_at(&p, "gender").to_owned(),
            identifiers: Vec::new(),
        })
    }

    /// The patient's documents: `$docref` when the server offers it, else a
    /// DocumentReference search by patient, type and date.
    pub async fn documents(
        &self,
        ctx: &Ctx<'_>,
        patient: &str,
        filter: &DocumentFilter,
        page: Option<&str>,
    ) -> Result<(Page<DocumentHit>, bool), Failure> {
        let docref = self.discover(ctx.source, ctx.now).await?.docref;
        let url = match page {
            Some(p) => page_url(ctx.source, p)?,
            None if docref => {
                let mut url = endpoint(ctx.source, "DocumentReference/$docref")?;
                {
                    let mut q = url.query_pairs_mut();
                    q.append_pair("patient", patient);
                    if !filter.from.is_empty() {
                        q.append_pair("start", &filter.from);
                    }
                    if !filter.to.is_empty() {
                        q.append_pair("end", &filter.to);
                    }
                    if !filter.type_code.is_empty() {
                        q.append_pair("type", &format!("http://loinc.org|{}", filter.type_code));
                    }
                }
                url
            }
            None => {
                let mut url = endpoint(ctx.source, "DocumentReference")?;
                {
                    let mut q = url.query_pairs_mut();
                    q.append_pair("patient", patient);
                    if !filter.type_code.is_empty() {
                        q.append_pair("type", &format!("http://loinc.org|{}", filter.type_code));
                    }
                    if !filter.from.is_empty() {
                        q.append_pair("date", &format!("ge{}", filter.from));
                    }
                    if !filter.to.is_empty() {
                        q.append_pair("date", &format!("le{}", filter.to));
                    }
                    q.append_pair("_sort", "-date");
                    q.append_pair("_count", &PAGE_SIZE.to_string());
                }
                url
            }
        };
        let Page {
            items: resources,
            next,
            total,
        } = self.search(ctx, url, "DocumentReference").await?;
        let items = resources
            .iter()
            .filter(|d| subject_is(d, patient))
            .filter_map(|d| {
                let id = text_at(d, "id");
                is_fhir_id(id).then(|| DocumentHit {
                    id: id.to_owned(),
                    type_text: concept_text(d.get("type")),
                    date: text_at(d, "date").chars().take(10).collect(),
                    description: text_at(d, "description").to_owned(),
                    status: text_at(d, "status").to_owned(),
                    attachments: array(d, "content")
                        .iter()
                        .map(|c| {
                            let a = c.get("attachment").unwrap_or(&Value::Null);
                            (
                                text_at(a, "title").to_owned(),
                                text_at(a, "contentType").to_owned(),
                                a.get("size").and_then(Value::as_u64),
                            )
                        })
                        .collect(),
                })
            })
            .collect();
        Ok((Page { items, next, total }, docref))
    }

    /// Attachment `n` of DocumentReference `id` of `patient`: read from the resource
    /// (inline `data`) or from its `url` on the same server (a Binary), at most
    /// [`Records::max_document_bytes`].
    pub async fn retrieve(
        &self,
        ctx: &Ctx<'_>,
        patient: &str,
        id: &str,
        n: usize,
    ) -> Result<Retrieved, Failure> {
        let source = ctx.source;
        let url = endpoint(source, &format!("DocumentReference/{id}"))?;
        let doc = self.get_resource(ctx, url).await?;
        if text_at(&doc, "resourceType") != "DocumentReference" {
            return Err(malformed(source));
        }
        if !subject_is(&doc, patient) {
            return Err(failure(
                "other-patient",
                format!(
                    "{} gave a document of another patient; it was not retrieved.",
                    source.name
                ),
            ));
        }
        let attachment = array(&doc, "content")
            .get(n)
            .and_then(|c| c.get("attachment"))
            .ok_or_else(|| {
                failure(
                    "404",
                    format!("{} lists no such file in this document.", source.name),
                )
            })?;
        let attachment_type = text_at(attachment, "contentType").to_owned();
        let title = [
            text_at(attachment, "title").to_owned(),
            concept_text(doc.get("type")),
            text_at(&doc, "description").to_owned(),
        ]
        .into_iter()
        .find(|t| !t.trim().is_empty())
        .unwrap_or_else(|| format!("Document {id}"));
        let limit = self.max_document_bytes;
        if let Some(data) = attachment.get("data").and_then(Value::as_str) {
            let data = decode_base64(source, data, limit, "document")?;
            return Ok(Retrieved {
                title,
                declared_type: attachment_type,
                data,
            });
        }
        let link = text_at(attachment, "url");
        let Some(url) = on_server(source, link) else {
            return Err(failure(
                "off-server",
                format!(
                    "The document's file is not on {} itself, so the portal did not fetch it (its access token goes to that server only).",
                    source.name
                ),
            ));
        };
        let accept = if attachment_type.is_empty() {
            "*/*".to_owned()
        } else {
            format!("{attachment_type}, application/fhir+json;q=0.5")
        };
        let response = self.get(ctx, url, &accept).await?;
        let response_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let body = self.body(source, response, limit, "document").await?;
        if response_type == "application/fhir+json" || response_type == "application/json" {
            // a Binary resource carrying the file
            let binary: Value = serde_json::from_slice(&body).map_err(|_| malformed(source))?;
            if text_at(&binary, "resourceType") != "Binary" {
                return Err(malformed(source));
            }
            let data = decode_base64(source, text_at(&binary, "data"), limit, "document")?;
            return Ok(Retrieved {
                title,
                declared_type: text_at(&binary, "contentType").to_owned(),
                data,
            });
        }
        Ok(Retrieved {
            title,
            declared_type: if response_type.is_empty() {
                attachment_type
            } else {
                response_type
            },
            data: body,
        })
    }
}

/// What every request needs: the database and key (for the signing key), the
/// source, and the time.
pub struct Ctx<'a> {
    pub db: &'a Db,
    pub secret: &'a SecretKey,
    pub source: &'a Source,
    pub now: i64,
}

fn malformed(source: &Source) -> Failure {
    failure(
        "malformed",
        format!(
            "{} sent an answer that is not readable FHIR; nothing from it is shown.",
            source.name
        ),
    )
}

fn endpoint(source: &Source, path: &str) -> Result<url::Url, Failure> {
    url::Url::parse(&format!("{}/{path}", source.base_url))
        .map_err(|_| failure("config", "The source's FHIR base URL is not valid."))
}

fn page_url(source: &Source, page: &str) -> Result<url::Url, Failure> {
    on_server(source, page).ok_or_else(|| {
        failure(
            "off-server",
            format!("That page is not on {}; it was not fetched.", source.name),
        )
    })
}

fn decode_base64(
    source: &Source,
    data: &str,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, Failure> {
    if data.len() / 4 * 3 > limit {
        return Err(failure(
            "too-large",
            format!(
                "The {what} from {} is larger than {} MB, the most the portal retrieves; it was not retrieved.",
                source.name,
                limit / (1024 * 1024)
            ),
        ));
    }
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| malformed(source))
}

/// Whether a DocumentReference's subject is `Patient/{patient}` (by reference).
fn subject_is(doc: &Value, patient: &str) -> bool {
    let reference = doc
        .get("subject")
        .and_then(|s| s.get("reference"))
        .and_then(Value::as_str)
        .unwrap_or("");
    reference == format!("Patient/{patient}") || reference.ends_with(&format!("/Patient/{patient}"))
}

/// Whether a CapabilityStatement offers `$docref` on DocumentReference.
fn offers_docref(cap: &Value) -> bool {
    array(cap, "rest").iter().any(|rest| {
        array(rest, "resource")
            .iter()
            .filter(|r| text_at(r, "type") == "DocumentReference")
            .flat_map(|r| array(r, "operation"))
            .any(|op| {
                text_at(op, "name") == "docref"
                    || text_at(op, "definition").ends_with("/OperationDefinition/docref")
            })
    })
}

/// A search Bundle's resources of type `kind` (others, such as an OperationOutcome
/// of warnings, are left out), its next link (on the server only) and total.
fn read_bundle(source: &Source, bundle: Value, kind: &str) -> Result<Page<Value>, Failure> {
    if text_at(&bundle, "resourceType") != "Bundle" {
        return Err(malformed(source));
    }
    let entries = match bundle.get("entry") {
        None => Vec::new(),
        Some(Value::Array(entries)) => entries.clone(),
        Some(_) => return Err(malformed(source)),
    };
    let mut out = Vec::new();
    for e in entries {
        let Some(resource) = e.get("resource") else {
            return Err(malformed(source));
        };
        if !resource.is_object() {
            return Err(malformed(source));
        }
        if text_at(resource, "resourceType") == kind {
            out.push(resource.clone());
        }
    }
    let next = array(&bundle, "link")
        .iter()
        .find(|l| text_at(l, "relation") == "next")
        .map(|l| text_at(l, "url"))
        .and_then(|u| on_server(source, u))
        .map(|u| u.to_string());
    let total = bundle.get("total").and_then(Value::as_u64);
    Ok(Page {
        items: out,
        next,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source() -> Source {
        Source {
            id: 1,
            org_id: 1,
            name: "County EHR".into(),
            base_url: "https://fhir.example.org/r4".into(),
            token_url: String::new(),
            client_id: "c".into(),
            scopes: DEFAULT_SCOPES.into(),
            created_at: 0,
        }
    }

    #[test]
    fn links_are_followed_only_under_the_base_url() {
        let s = source();
        assert!(on_server(&s, "https://fhir.example.org/r4/Patient?page=2").is_some());
        assert!(on_server(&s, "Binary/7").is_some());
        assert!(on_server(&s, "https://fhir.example.org/other/Binary/7").is_none());
        assert!(on_server(&s, "https://evil.example/r4/Binary/7").is_none());
        assert!(on_server(&s, "http://fhir.example.org/r4/Binary/7").is_none());
        assert!(on_server(&s, "https://fhir.example.org:444/r4/Binary/7").is_none());
        assert!(on_server(&s, "https://u:p@fhir.example.org/r4/Binary/7").is_none());
        assert!(on_server(&s, "/r4/../admin").is_none());
    }

    #[test]
    fn a_bundle_must_be_a_bundle_of_resources() {
        let s = source();
        assert!(read_bundle(&s, json!({"resourceType": "Patient"}), "Patient").is_err());
        assert!(
            read_bundle(
                &s,
                json!({"resourceType": "Bundle", "entry": "x"}),
                "Patient"
            )
            .is_err()
        );
        assert!(
            read_bundle(
                &s,
                json!({"resourceType": "Bundle", "entry": [{"resource": 3}]}),
                "Patient"
            )
            .is_err()
        );
        let Page { items, next, .. } = read_bundle(
            &s,
            json!({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient", "id": "a"}}],
                   "link": [{"relation": "next", "url": "https://evil.example/x"}]}),
            "Patient",
        )
        .expect("a bundle");
        assert_eq!(items.len(), 1);
        assert_eq!(next, None, "a next link off the server is dropped");
    }

    #[test]
    fn operator_settings_are_checked() {
        let policy = directmail_net::Policy::public_only();
        let mut s = crate::store::records::NewSource {
            name: "EHR".into(),
            base_url: "http://fhir.example.org/r4".into(),
            client_id: "abc".into(),
            ..Default::default()
        };
        assert!(check_source(&policy, &mut s).is_err());
        s.base_url = "https://127.0.0.1/r4".into();
        assert!(check_source(&policy, &mut s).is_err());
        s.base_url = "https://fhir.example.org/r4/".into();
        check_source(&policy, &mut s).expect("fine");
        assert_eq!(s.base_url, "https://fhir.example.org/r4");
        assert_eq!(s.scopes, DEFAULT_SCOPES);
        s.client_id = "a b".into();
        assert!(check_source(&policy, &mut s).is_err());
    }
}
