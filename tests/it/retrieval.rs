//! Retrieving records from FHIR servers: a FHIR R4 server on loopback (HTTPS, the
//! test CA) that checks every SMART Backend Services client assertion the way an
//! EHR's authorization server does — the signature against the portal's own JWKS,
//! fetched from the portal; `iss`, `sub`, `aud`, `exp`, and a `jti` never seen before
//! — and answers from fixture bundles. The signature is checked by the `openssl` CLI.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode as AxStatus, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use directmail::domain::Role;
use directmail::store::inbound;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::clinical::cda_fixture;
use crate::helpers::{Browser, Page, TestApp, pdf, serve_https};
use crate::webmail::unescape;

const CLIENT_ID: &str = "directmail-test-client";
/// A client id the FHIR server does not know.
const UNREGISTERED: &str = "never-registered";

/// The loopback FHIR server and what it saw.
#[derive(Default)]
struct Fhir {
    /// `https://127.0.0.1:{port}`.
    origin: OnceLock<String>,
    /// The portal's JWKS URL.
    jwks: OnceLock<String>,
    jtis: Mutex<HashSet<String>>,
    /// Every way an assertion failed the checks (none, when the portal is right).
    problems: Mutex<Vec<String>>,
    /// Token requests per tenant.
    token_requests: Mutex<Vec<String>>,
    tokens: Mutex<HashSet<String>>,
    /// Every request to a resource: `tenant path?query`.
    seen: Mutex<Vec<String>>,
    /// Bytes of the 50 MB document handed to the connection so far.
    big_sent: AtomicUsize,
}

type Shared = Arc<Fhir>;

fn b64url(data: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(data)
        .unwrap_or_default()
}

/// DER: a tag, a length, the content.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

fn der_integer(big_endian: &[u8]) -> Vec<u8> {
    let mut v = big_endian.to_vec();
    if v.first().is_some_and(|b| b & 0x80 != 0) {
        v.insert(0, 0);
    }
    tlv(0x02, &v)
}

/// A JWK's public key as a PEM SubjectPublicKeyInfo, for `openssl`.
fn jwk_to_pem(jwk: &Value) -> String {
    let n = b64url(jwk["n"].as_str().unwrap_or(""));
    let e = b64url(jwk["e"].as_str().unwrap_or(""));
    let rsa = tlv(0x30, &[der_integer(&n), der_integer(&e)].concat());
    // rsaEncryption with NULL parameters
    let alg = tlv(
        0x30,
        &[
            tlv(
                0x06,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            ),
            vec![0x05, 0x00],
        ]
        .concat(),
    );
    let spki = tlv(
        0x30,
        &[alg, tlv(0x03, &[&[0u8][..], &rsa].concat())].concat(),
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(spki);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

/// `openssl dgst -sha384 -verify`: RS384 over `input`.
fn openssl_verifies(pem: &str, input: &[u8], signature: &[u8]) -> bool {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("key.pem"), pem).expect("key");
    std::fs::write(dir.path().join("input"), input).expect("input");
    std::fs::write(dir.path().join("sig"), signature).expect("sig");
    std::process::Command::new("openssl")
        .args([
            "dgst",
            "-sha384",
            "-verify",
            "key.pem",
            "-signature",
            "sig",
            "input",
        ])
        .current_dir(dir.path())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The checks an authorization server makes of a client assertion; `Err` says which
/// failed.
async fn check_assertion(fhir: &Fhir, tenant: &str, jwt: &str) -> Result<(), String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, s] = parts.as_slice() else {
        return Err("not three parts".into());
    };
    let header: Value = serde_json::from_slice(&b64url(h)).map_err(|_| "header")?;
    let claims: Value = serde_json::from_slice(&b64url(c)).map_err(|_| "claims")?;
    if header["alg"] != "RS384" || header["typ"] != "JWT" {
        return Err(format!("header {header}"));
    }
    // the key, from the portal's JWKS (fetched now, as a server does for a new kid)
    let jwks: Value = reqwest::get(fhir.jwks.get().expect("jwks url"))
        .await
        .map_err(|e| format!("jwks fetch: {e}"))?
        .json()
        .await
        .map_err(|e| format!("jwks json: {e}"))?;
    let kid = header["kid"].as_str().unwrap_or("");
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid))
        .ok_or_else(|| format!("kid {kid} is not in the JWKS"))?
        .clone();
    if jwk["kty"] != "RSA" || jwk["alg"] != "RS384" {
        return Err(format!("jwk {jwk}"));
    }
    let input = format!("{h}.{c}").into_bytes();
    let signature = b64url(s);
    let pem = jwk_to_pem(&jwk);
    let valid = tokio::task::spawn_blocking(move || openssl_verifies(&pem, &input, &signature))
        .await
        .expect("openssl");
    if !valid {
        return Err("the signature does not verify".into());
    }
    let origin = fhir.origin.get().expect("origin");
    if claims["iss"] != CLIENT_ID || claims["sub"] != CLIENT_ID {
        return Err(format!("iss/sub {claims}"));
    }
    if claims["aud"] != format!("{origin}/{tenant}/auth/token") {
        return Err(format!("aud {}", claims["aud"]));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    let exp = claims["exp"].as_i64().unwrap_or(0);
    if exp <= now || exp > now + 300 + 5 {
        return Err(format!("exp {exp} at {now}"));
    }
    let jti = claims["jti"].as_str().unwrap_or("").to_owned();
    if jti.len() < 16 || !fhir.jtis.lock().expect("jtis").insert(jti.clone()) {
        return Err(format!("jti {jti:?} reused or too short"));
    }
    Ok(())
}

async fn token(
    State(fhir): State<Shared>,
    Path(tenant): Path<String>,
    axum::Form(form): axum::Form<std::collections::HashMap<String, String>>,
) -> Response {
    fhir.token_requests
        .lock()
        .expect("requests")
        .push(tenant.clone());
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    // a client this server never registered: refused, as the portal expects
    let claims: Value = field("client_assertion")
        .split('.')
        .nth(1)
        .and_then(|c| serde_json::from_slice(&b64url(c)).ok())
        .unwrap_or(Value::Null);
    if claims["iss"] == UNREGISTERED {
        return (
            AxStatus::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client", "error_description": "unknown client"})),
        )
            .into_response();
    }
    let checked = if field("grant_type") != "client_credentials" {
        Err("grant_type".to_owned())
    } else if field("client_assertion_type")
        != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    {
        Err("client_assertion_type".to_owned())
    } else if !field("scope").contains("system/DocumentReference.rs") {
        Err(format!("scope {}", field("scope")))
    } else {
        check_assertion(&fhir, &tenant, field("client_assertion")).await
    };
    if let Err(problem) = checked {
        fhir.problems.lock().expect("problems").push(problem);
        return (
            AxStatus::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let access = directmail::auth::new_token().0;
    fhir.tokens.lock().expect("tokens").insert(access.clone());
    // the docref tenant's tokens expire at once, so every request asks again
    let expires_in = if tenant == "docref" { 1 } else { 3600 };
    axum::Json(json!({
        "access_token": access, "token_type": "bearer", "expires_in": expires_in,
        "scope": field("scope"),
    }))
    .into_response()
}

fn fhir_json(status: AxStatus, v: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/fhir+json")],
        v.to_string(),
    )
        .into_response()
}

fn outcome(status: AxStatus, diagnostics: &str) -> Response {
    fhir_json(
        status,
        json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing", "diagnostics": diagnostics}]}),
    )
}

/// The bearer token is one this server issued.
fn authorized(fhir: &Fhir, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| fhir.tokens.lock().expect("tokens").contains(t))
}

fn bundle(origin: &str, tenant: &str, resources: Vec<Value>, next: Option<&str>) -> Value {
    let mut b = json!({
        "resourceType": "Bundle", "type": "searchset", "total": resources.len(),
        "entry": resources.into_iter().map(|r| json!({"resource": r})).collect::<Vec<_>>(),
    });
    if let Some(next) = next {
        b["link"] = json!([{"relation": "next", "url": format!("{origin}/{tenant}/{next}")}]);
    }
    b
}

fn patient(id: &str, given: &str, family: &str, born: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "name": [{"given": [given], "family": family}],
           "birthDate": born, "gender": "female",
           "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5", "value": format!("MRN-{id}")}]})
}

/// The documents of Lena Lopez: (id, LOINC type, type words, declared content type).
const DOCUMENTS: [(&str, &str, &str, &str); 10] = [
    (
        "hostile",
        "11506-3",
        "Consult note",
        "application/hl7-v3+xml",
    ),
    (
        "cda1",
        "34133-9",
        "Summary of episode note",
        "application/hl7-v3+xml",
    ),
    ("pdf1", "11506-3", "Progress note", "application/pdf"),
    ("big", "18748-4", "Imaging report", "application/pdf"),
    ("liar", "11506-3", "Progress note", "application/pdf"),
    ("slow", "11506-3", "Progress note", "application/pdf"),
    ("gone", "11506-3", "Progress note", "application/pdf"),
    ("outcome", "11506-3", "Progress note", "application/pdf"),
    ("offsite", "11506-3", "Progress note", "application/pdf"),
    ("inline", "11506-3", "Progress note", "application/pdf"),
];

fn document_reference(id: &str) -> Option<Value> {
    let (_, code, words, ctype) = DOCUMENTS.iter().find(|d| d.0 == id)?;
    let attachment = match id {
        "offsite" => {
            json!({"contentType": ctype, "url": "https://records.elsewhere.example/Binary/1", "title": "Outside file"})
        }
        "inline" => json!({"contentType": ctype, "title": "Inline note",
                           "data": base64::engine::general_purpose::STANDARD.encode(pdf("Inline note"))}),
        _ => {
            json!({"contentType": ctype, "url": format!("Binary/{id}"), "title": format!("{words} {id}")})
        }
    };
    Some(json!({
        "resourceType": "DocumentReference", "id": id, "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": code, "display": words}]},
        "subject": {"reference": "Patient/lena"},
        "date": "2026-11-02T10:00:00Z",
        "description": format!("{words} ({id})"),
        "content": [{"attachment": attachment}],
    }))
}

async fn search_patients(
    State(fhir): State<Shared>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if !authorized(&fhir, &headers) {
        return outcome(AxStatus::UNAUTHORIZED, "no valid token");
    }
    let origin = fhir.origin.get().expect("origin").clone();
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    match (
        get("identifier"),
        get("name"),
        get("birthdate"),
        get("page"),
    ) {
        ("deny", ..) => outcome(AxStatus::UNAUTHORIZED, "access withdrawn"),
        ("broken", ..) => fhir_json(
            AxStatus::OK,
            json!({"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": "oops"}]}),
        ),
        ("locked", ..) => outcome(
            AxStatus::UNPROCESSABLE_ENTITY,
            "<script>alert(1)</script> Record locked by health information management",
        ),
        ("", "Lopez", "1980-04-12", _) => fhir_json(
            AxStatus::OK,
            bundle(
                &origin,
                &tenant,
                vec![patient("lena", "Lena", "Lopez", "1980-04-12")],
                None,
            ),
        ),
        ("", "Smith", "1970-01-01", "") => fhir_json(
            AxStatus::OK,
            bundle(
                &origin,
                &tenant,
                vec![patient("smith1", "Ann", "Smith", "1970-01-01")],
                Some("Patient?name=Smith&birthdate=1970-01-01&page=2"),
            ),
        ),
        ("", "Smith", "1970-01-01", "2") => fhir_json(
            AxStatus::OK,
            bundle(
                &origin,
                &tenant,
                vec![patient("smith2", "Bea", "Smith", "1970-01-01")],
                None,
            ),
        ),
        _ => fhir_json(AxStatus::OK, bundle(&origin, &tenant, Vec::new(), None)),
    }
}

async fn read_patient(
    State(fhir): State<Shared>,
    Path((_tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&fhir, &headers) {
        return outcome(AxStatus::UNAUTHORIZED, "no valid token");
    }
    match id.as_str() {
        "lena" => fhir_json(AxStatus::OK, patient("lena", "Lena", "Lopez", "1980-04-12")),
        _ => outcome(AxStatus::NOT_FOUND, "no such patient"),
    }
}

async fn documents(
    State(fhir): State<Shared>,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if !authorized(&fhir, &headers) {
        return outcome(AxStatus::UNAUTHORIZED, "no valid token");
    }
    fhir.seen.lock().expect("seen").push(format!(
        "{tenant} {} {}",
        uri.path(),
        uri.query().unwrap_or("")
    ));
    let q: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    if id == "$search" || id == "$docref" {
        let patient = q
            .iter()
            .find(|(k, _)| k == "patient")
            .map(|(_, v)| v.as_str());
        let type_code = q
            .iter()
            .find(|(k, _)| k == "type")
            .map(|(_, v)| v.trim_start_matches("http://loinc.org|").to_owned());
        if patient != Some("lena") {
            return fhir_json(
                AxStatus::OK,
                bundle(
                    fhir.origin.get().expect("origin"),
                    &tenant,
                    Vec::new(),
                    None,
                ),
            );
        }
        let docs = DOCUMENTS
            .iter()
            .filter(|d| type_code.as_deref().is_none_or(|t| t == d.1))
            .filter_map(|d| document_reference(d.0))
            .collect();
        return fhir_json(
            AxStatus::OK,
            bundle(fhir.origin.get().expect("origin"), &tenant, docs, None),
        );
    }
    match id.as_str() {
        "gone" => outcome(AxStatus::NOT_FOUND, "deleted"),
        "outcome" => outcome(
            AxStatus::INTERNAL_SERVER_ERROR,
            "Document <b>sealed</b> pending review",
        ),
        _ => match document_reference(&id) {
            Some(d) => fhir_json(AxStatus::OK, d),
            None => outcome(AxStatus::NOT_FOUND, "no such document"),
        },
    }
}

async fn search_documents(
    state: State<Shared>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    documents(state, Path((tenant, "$search".into())), headers, uri).await
}

async fn binary(
    State(fhir): State<Shared>,
    Path((_tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&fhir, &headers) {
        return outcome(AxStatus::UNAUTHORIZED, "no valid token");
    }
    match id.as_str() {
        "cda1" => (
            [(header::CONTENT_TYPE, "application/hl7-v3+xml")],
            cda_fixture("referral-note.xml"),
        )
            .into_response(),
        "hostile" => (
            [(header::CONTENT_TYPE, "application/hl7-v3+xml")],
            cda_fixture("hostile.xml"),
        )
            .into_response(),
        "pdf1" => (
            [(header::CONTENT_TYPE, "application/pdf")],
            pdf("Progress note for Lena Lopez"),
        )
            .into_response(),
        "liar" => (
            [(header::CONTENT_TYPE, "application/pdf")],
            "<html><body><script>alert('not a pdf')</script></body></html>",
        )
            .into_response(),
        "big" => {
            // 50 MB, made as it is sent (no Content-Length): the portal must stop
            // reading long before the end
            let shared = fhir.clone();
            let chunks = futures_util::stream::iter((0..800).map(move |_| {
                shared.big_sent.fetch_add(65536, Ordering::SeqCst);
                Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b'%'; 65536]))
            }));
            (
                [(header::CONTENT_TYPE, "application/pdf")],
                Body::from_stream(chunks),
            )
                .into_response()
        }
        "slow" => std::future::pending::<Response>().await,
        _ => outcome(AxStatus::NOT_FOUND, "no such binary"),
    }
}

async fn smart_configuration(State(fhir): State<Shared>, Path(tenant): Path<String>) -> Response {
    let origin = fhir.origin.get().expect("origin");
    axum::Json(json!({
        "token_endpoint": format!("{origin}/{tenant}/auth/token"),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "grant_types_supported": ["client_credentials"],
        "capabilities": ["client-confidential-asymmetric"],
    }))
    .into_response()
}

async fn metadata(Path(tenant): Path<String>) -> Response {
    let operations = if tenant == "docref" {
        json!([{"name": "docref", "definition": "http://hl7.org/fhir/us/core/OperationDefinition/docref"}])
    } else {
        json!([])
    };
    fhir_json(
        AxStatus::OK,
        json!({"resourceType": "CapabilityStatement", "status": "active", "fhirVersion": "4.0.1",
               "rest": [{"mode": "server", "resource": [{"type": "DocumentReference", "operation": operations}]}]}),
    )
}

/// Starts the FHIR server for `app`; its state and origin.
async fn start_fhir(app: &TestApp) -> (Shared, String) {
    let fhir: Shared = Arc::default();
    let _ = fhir.jwks.set(app.url("/.well-known/jwks.json"));
    let router = Router::new()
        .route(
            "/{tenant}/.well-known/smart-configuration",
            get(smart_configuration),
        )
        .route("/{tenant}/metadata", get(metadata))
        .route("/{tenant}/auth/token", post(token))
        .route("/{tenant}/Patient", get(search_patients))
        .route("/{tenant}/Patient/{id}", get(read_patient))
        .route("/{tenant}/DocumentReference", get(search_documents))
        .route("/{tenant}/DocumentReference/{id}", get(documents))
        .route("/{tenant}/Binary/{id}", get(binary))
        .with_state(fhir.clone());
    let port = serve_https(router).await;
    let origin = format!("https://127.0.0.1:{port}");
    let _ = fhir.origin.set(origin.clone());
    (fhir, origin)
}

/// An operator adds a source for Lakeside Clinic through the console; its id.
async fn add_source(
    app: &TestApp,
    name: &str,
    base_url: &str,
    token_url: &str,
    client_id: &str,
) -> i64 {
    let lakeside = lakeside(app).await;
    let mut op = operator(app).await;
    op.get("/records/sources").await;
    let added = source_posted(&mut op, lakeside.id, name, base_url, token_url, client_id).await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    directmail::store::records::of_org(&app.state.db, lakeside.id)
        .await
        .expect("sources")
        .into_iter()
        .find(|s| s.name == name)
        .expect("the source")
        .id
}

async fn lakeside(app: &TestApp) -> directmail::store::orgs::Org {
    directmail::store::orgs::by_name(&app.state.db, "Lakeside Clinic")
        .await
        .expect("query")
        .expect("Lakeside")
}

/// The console's form for a new source of organization `org`, as an operator sends it.
async fn source_posted(
    op: &mut Browser,
    org: i64,
    name: &str,
    base_url: &str,
    token_url: &str,
    client_id: &str,
) -> Page {
    op.post(
        "/records/sources",
        &[
            ("org", &org.to_string()),
            ("name", name),
            ("base_url", base_url),
            ("token_url", token_url),
            ("client_id", client_id),
            ("scopes", ""),
        ],
    )
    .await
}

/// `directmail admin source add` for Lakeside Clinic, which must succeed.
async fn source_added_by_cli(app: &TestApp, name: &str, base_url: &str) {
    cli_ok(
        app,
        &[
            "admin",
            "source",
            "add",
            "--org",
            "Lakeside Clinic",
            "--name",
            name,
            "--base-url",
            base_url,
            "--client-id",
            "abc",
        ],
    )
    .await;
}

async fn operator(app: &TestApp) -> Browser {
    let email = "op@hisp.test";
    if directmail::store::users::by_email(&app.state.db, email)
        .await
        .expect("query")
        .is_none()
    {
        app.user(None, email, Role::Operator).await;
    }
    app.signed_in(email).await
}

/// The audit entries with this action, as `object | detail`.
async fn audited(app: &TestApp, action: &str) -> Vec<String> {
    let rows = sqlx::query("select object, detail from audit_log where action = $1 order by id")
        .bind(action)
        .fetch_all(&app.state.db.pool)
        .await
        .expect("audit");
    rows.iter()
        .map(|r| {
            use sqlx::Row as _;
            format!(
                "{} | {}",
                r.try_get::<String, _>("object").unwrap_or_default(),
                r.try_get::<String, _>("detail").unwrap_or_default()
            )
        })
        .collect()
}

fn retrieval_id(location: &str) -> i64 {
    location
        .strip_prefix("/records/retrieved/")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a retrieval: {location}"))
}

/// `directmail ARGS`, which must succeed; its output.
async fn cli_ok(app: &TestApp, args: &[&str]) -> std::process::Output {
    let out = app.cli(args).await;
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Asserts that `page` says `sentence` (its entities decoded).
fn assert_says(page: &Page, sentence: &str) {
    assert!(
        unescape(&page.body).contains(sentence),
        "{sentence}: {} {}",
        page.status,
        page.body
    );
}

const PURPOSE: [(&str, &str); 1] = [("purpose", "treatment")];

async fn open_document(b: &mut Browser, source: i64, doc: &str) -> Page {
    b.post(
        &format!("/records/{source}/patients/lena/documents/{doc}/0"),
        &PURPOSE,
    )
    .await
}

#[tokio::test]
async fn a_member_finds_a_patients_documents_views_files_and_forwards_one() {
    let app = TestApp::spawn().await;
    let (ana_box, kim_box) = app.lakeside_and_hillside().await;
    let (fhir, origin) = start_fhir(&app).await;

    // the operator adds a source (the token endpoint read from smart-configuration)
    let source = add_source(
        &app,
        "County EHR",
        &format!("{origin}/fhir/"),
        "",
        CLIENT_ID,
    )
    .await;
    let mut op = operator(&app).await;
    let sources = op.get("/records/sources").await;
    assert!(
        sources.body.contains(&format!("{origin}/fhir")),
        "{}",
        sources.body
    );
    assert!(sources.body.contains(&app.url("/.well-known/jwks.json")));

    // the JWKS: one RSA key for RS384 with a kid, public parts only
    let jwks: Value = reqwest::get(app.url("/.well-known/jwks.json"))
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1, "{jwks}");
    let key = &keys[0];
    assert_eq!(
        (
            key["kty"].as_str(),
            key["alg"].as_str(),
            key["use"].as_str()
        ),
        (Some("RSA"), Some("RS384"), Some("sig"))
    );
    assert!(key["kid"].as_str().is_some_and(|k| k.len() >= 40), "{key}");
    assert!(
        key.get("d").is_none() && key.get("p").is_none(),
        "no private part: {key}"
    );
    assert!(b64url(key["n"].as_str().expect("n")).len() >= 256);
    // the private key is sealed at rest
    let stored: String = sqlx::query_scalar("select private_key from signing_keys")
        .fetch_one(&app.state.db.pool)
        .await
        .expect("key row");
    assert!(
        stored.starts_with("v1:") && !stored.contains("PRIVATE"),
        "sealed"
    );

    // Ana (Lakeside) searches; a purpose is required
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let page = ana.get("/records").await;
    assert!(page.body.contains("County EHR"), "{}", page.body);
    let no_purpose = ana
        .get(&format!(
            "/records?source={source}&name=Lopez&birth_date=1980-04-12"
        ))
        .await;
    assert_eq!(no_purpose.status, StatusCode::BAD_REQUEST);
    assert_says(
        &no_purpose,
        "Say why you are looking up this patient's records.",
    );
    let found = ana
        .get(&format!(
            "/records?source={source}&name=Lopez&birth_date=1980-04-12&purpose=treatment"
        ))
        .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert!(
        found.body.contains("Lena Lopez") && found.body.contains("MRN-lena"),
        "{}",
        found.body
    );
    let href = format!("/records/{source}/patients/lena?purpose=treatment");
    assert!(
        found.body.contains(&href.replace('&', "&amp;")) || found.body.contains(&href),
        "{}",
        found.body
    );

    // paged results: the server's next link, followed on the same server only
    let first = ana
        .get(&format!(
            "/records?source={source}&name=Smith&birth_date=1970-01-01&purpose=treatment"
        ))
        .await;
    assert!(first.body.contains("Ann Smith") && !first.body.contains("Bea Smith"));
    let next = first.by_id("next-page").map(|_| ()).and_then(|()| {
        regex::Regex::new(r#"<a href="([^"]+)" id="next-page""#)
            .ok()?
            .captures(&first.body)
            .map(|c| unescape(&c[1]))
    });
    let second = ana.get(&next.expect("a next page")).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert!(second.body.contains("Bea Smith") && !second.body.contains("Ann Smith"));
    let off = ana
        .get(&format!(
            "/records?source={source}&name=Smith&birth_date=1970-01-01&purpose=treatment&page={}",
            url::form_urlencoded::byte_serialize(b"https://evil.example/fhir/Patient")
                .collect::<String>()
        ))
        .await;
    assert_says(&off, "That page is not on County EHR; it was not fetched.");

    // the documents, filtered by type (a DocumentReference search: no $docref here)
    let docs = ana
        .get(&format!(
            "/records/{source}/patients/lena?purpose=treatment&type=34133-9&from=2026-01-01"
        ))
        .await;
    assert_eq!(docs.status, StatusCode::OK, "{}", docs.body);
    assert!(
        docs.body.contains("Lena Lopez, born 1980-04-12"),
        "{}",
        docs.body
    );
    assert!(
        docs.body.contains("open-cda1-0") && !docs.body.contains("open-pdf1-0"),
        "{}",
        docs.body
    );
    let seen = fhir.seen.lock().expect("seen").clone();
    assert!(
        seen.iter().any(
            |s| s.starts_with("fhir /fhir/DocumentReference patient=lena")
                && s.contains("type=http%3A%2F%2Floinc.org%7C34133-9")
                && s.contains("date=ge2026-01-01")
        ),
        "{seen:?}"
    );

    // the C-CDA opens in the viewer: its frame rendered by the portal, sandboxed
    let opened = open_document(&mut ana, source, "cda1").await;
    assert_eq!(opened.status, StatusCode::SEE_OTHER, "{}", opened.body);
    let cda_id = retrieval_id(&opened.location());
    let viewer = ana.get(&opened.location()).await;
    assert_eq!(viewer.status, StatusCode::OK, "{}", viewer.body);
    assert!(
        viewer
            .body
            .contains(&format!(r#"src="/records/retrieved/{cda_id}/frame""#)),
        "{}",
        viewer.body
    );
    assert!(
        viewer.by_id("document-warning").is_none(),
        "{}",
        viewer.body
    );
    let frame = ana.get(&format!("/records/retrieved/{cda_id}/frame")).await;
    assert_eq!(frame.status, StatusCode::OK);
    assert!(
        frame.headers["content-security-policy"]
            .to_str()
            .unwrap_or("")
            .starts_with("sandbox"),
        "{:?}",
        frame.headers
    );
    assert!(frame.body.contains("Lopez"), "{}", frame.body);

    // a hostile C-CDA is sanitized like a received one: nothing of it is markup
    let opened = open_document(&mut ana, source, "hostile").await;
    let hostile = retrieval_id(&opened.location());
    let viewer = ana.get(&opened.location()).await;
    let frame = ana
        .get(&format!("/records/retrieved/{hostile}/frame"))
        .await;
    assert_eq!(frame.status, StatusCode::OK);
    let handler = regex::Regex::new(r#"\son[a-z]+\s*="#).expect("regex");
    let markup = regex::Regex::new(r"<[a-zA-Z!/][^>]*>").expect("regex");
    for (what, body) in [("page", &viewer.body), ("frame", &frame.body)] {
        for tag in markup
            .find_iter(body)
            .map(|t| t.as_str().to_ascii_lowercase())
        {
            assert!(!handler.is_match(&tag), "{what}: {tag}");
            assert!(
                !tag.contains("javascript:") && !tag.contains("attacker.example"),
                "{what}: {tag}"
            );
            if tag.starts_with("<script") {
                assert!(
                    what == "page" && tag.starts_with(r#"<script src="/static/"#),
                    "{what}: {tag}"
                );
            }
        }
        assert!(!body.contains("<script>alert"), "{what}: {body}");
    }
    assert!(
        frame
            .body
            .contains("Parts of this document were left out or shown as plain text for safety"),
        "{}",
        frame.body
    );

    // a PDF opens in the browser's viewer from a sandboxed response
    let opened = open_document(&mut ana, source, "pdf1").await;
    let pdf_id = retrieval_id(&opened.location());
    let viewer = ana.get(&opened.location()).await;
    assert!(viewer.by_id("open-pdf").is_some(), "{}", viewer.body);
    let file = ana
        .get(&format!("/records/retrieved/{pdf_id}/content?inline=1"))
        .await;
    assert_eq!(file.headers["content-type"], "application/pdf");
    assert!(
        file.headers["content-security-policy"]
            .to_str()
            .unwrap_or("")
            .contains("sandbox")
    );

    // the token was asked for once and kept (it expires in an hour)
    let requests = fhir.token_requests.lock().expect("requests").clone();
    assert_eq!(
        requests,
        vec!["fhir".to_owned()],
        "one token for every query"
    );
    // the server forgets its tokens (a restart): the kept one is refused once, and a
    // new one is asked for at once
    fhir.tokens.lock().expect("tokens").clear();
    let again = ana
        .get(&format!(
            "/records?source={source}&name=Lopez&birth_date=1980-04-12&purpose=treatment"
        ))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert!(again.body.contains("Lena Lopez"));
    assert_eq!(fhir.token_requests.lock().expect("requests").len(), 2);

    // filed in Ana's Archive: a message with the document attached
    let filed = ana
        .post(
            &format!("/records/retrieved/{cda_id}/file-to"),
            &[("folder", &format!("{}:archive", ana_box.id))],
        )
        .await;
    assert_eq!(filed.status, StatusCode::SEE_OTHER, "{}", filed.body);
    let archived = inbound::messages_in(&app.state.db, ana_box.id, "archive", 10)
        .await
        .expect("archive");
    assert_eq!(archived.len(), 1);
    assert!(archived[0].subject.contains("retrieved from County EHR"));
    assert_eq!(
        filed.location(),
        format!("/mail/messages/{}", archived[0].id)
    );
    let message = ana.get(&filed.location()).await;
    assert_eq!(message.status, StatusCode::OK, "{}", message.body);
    assert!(
        message.body.contains("Retrieved from a FHIR server"),
        "{}",
        message.body
    );
    let stored = inbound::message(&app.state.db, archived[0].id)
        .await
        .expect("query")
        .expect("message");
    assert_eq!(
        stored.patient.as_ref().map(|p| p.family.as_str()),
        Some("Lopez"),
        "the patient read from the C-CDA"
    );
    // a folder of someone else's mailbox is refused
    let theirs = ana
        .post(
            &format!("/records/retrieved/{cda_id}/file-to"),
            &[("folder", &format!("{}:inbox", kim_box.id))],
        )
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);

    // forwarded by Direct: a draft with the PDF attached, sent to Hillside
    let forwarded = ana
        .post(
            &format!("/records/retrieved/{pdf_id}/forward"),
            &[("mailbox", &ana_box.id.to_string())],
        )
        .await;
    assert_eq!(
        forwarded.status,
        StatusCode::SEE_OTHER,
        "{}",
        forwarded.body
    );
    let draft_path = forwarded.location();
    assert!(draft_path.starts_with("/mail/drafts/"), "{draft_path}");
    let draft = ana.get(&draft_path).await;
    assert!(
        draft.body.contains("Progress note pdf1.pdf"),
        "{}",
        draft.body
    );
    let sent = ana
        .post(
            &format!("{draft_path}/send"),
            &[
                ("to", "front@direct.hillside.test"),
                ("cc", ""),
                ("subject", "Fwd: Progress note pdf1"),
                ("body", "Lena's progress note, retrieved from County EHR."),
            ],
        )
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    let received = crate::webmail::delivered(&app, kim_box.id, "Fwd: Progress note pdf1").await;
    let kims = inbound::message(&app.state.db, received)
        .await
        .expect("query")
        .expect("message");
    let parsed = mail_parser::MessageParser::default()
        .parse(&kims.raw)
        .expect("MIME");
    let attachment = parsed.attachments().next().expect("the document went out");
    assert_eq!(
        attachment.contents(),
        pdf("Progress note for Lena Lopez").as_slice()
    );

    // every assertion passed the server's checks, each jti once
    assert!(fhir.problems.lock().expect("problems").is_empty());

    // audited: source, patient, purpose
    let searches = audited(&app, "records.patient_search").await;
    assert!(
        searches.iter().any(|s| s
            == &format!("source:{source} | by name and birth date; purpose: treatment; 1 found")),
        "{searches:?}"
    );
    assert!(
        searches.iter().all(|s| !s.contains("Lopez")),
        "no name in the log: {searches:?}"
    );
    let listed = audited(&app, "records.document_search").await;
    assert!(
        listed.iter().any(|s| s.starts_with(&format!(
            "source:{source}/Patient/lena | purpose: treatment; type 34133-9"
        ))),
        "{listed:?}"
    );
    let retrieved = audited(&app, "records.retrieve").await;
    assert!(
        retrieved.iter().any(|s| s.starts_with(&format!(
            "source:{source}/DocumentReference/cda1 | Patient/lena; file 0; purpose: treatment;"
        ))),
        "{retrieved:?}"
    );
    let filed = audited(&app, "records.file").await;
    assert!(
        filed
            .iter()
            .any(|s| s.contains(&format!("retrieval:{cda_id}"))
                && s.contains("Patient/lena")
                && s.contains("purpose: treatment")),
        "{filed:?}"
    );
    let drafts = audited(&app, "draft.create").await;
    assert!(
        drafts
            .iter()
            .any(|s| s.starts_with(&format!("retrieval:{pdf_id} | forward of source:{source}"))),
        "{drafts:?}"
    );

    // reads of the retrieved copies are audited too
    let views = audited(&app, "records.view").await;
    assert!(
        views
            .iter()
            .any(|s| s.starts_with(&format!("retrieval:{cda_id} |"))
                && s.contains("the rendered document; purpose: treatment")),
        "{views:?}"
    );
    // hostile ids and filters go nowhere
    let sneaky = ana
        .get(&format!(
            "/records/{source}/patients/..%2Fmetadata?purpose=treatment"
        ))
        .await;
    assert_eq!(sneaky.status, StatusCode::NOT_FOUND);
    let bad = ana
        .get(&format!(
            "/records/{source}/patients/lena?purpose=treatment&type=%3Cx%3E"
        ))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_says(&bad, "Choose a document type from the list");

    // Kim (Hillside) can use none of it: not the source, not Ana's retrievals
    let before = audited(&app, "records.retrieve").await.len();
    let mut kim = app.signed_in("kim@direct.hillside.test").await;
    let page = kim.get("/records").await;
    assert!(!page.body.contains("County EHR"));
    for path in [
        format!("/records?source={source}&name=Lopez&birth_date=1980-04-12&purpose=treatment"),
        format!("/records/{source}/patients/lena?purpose=treatment"),
        format!("/records/retrieved/{cda_id}"),
        format!("/records/retrieved/{cda_id}/frame"),
        format!("/records/retrieved/{pdf_id}/content"),
    ] {
        assert_eq!(kim.get(&path).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    let taken = open_document(&mut kim, source, "cda1").await;
    assert_eq!(taken.status, StatusCode::NOT_FOUND);
    let forward = kim
        .post(
            &format!("/records/retrieved/{pdf_id}/forward"),
            &[("mailbox", &kim_box.id.to_string())],
        )
        .await;
    assert_eq!(forward.status, StatusCode::NOT_FOUND);
    assert_eq!(audited(&app, "records.retrieve").await.len(), before);
    // and a member cannot open the operator's page
    assert_eq!(
        kim.get("/records/sources").await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn each_failure_of_a_fhir_server_gets_a_sentence_and_no_jti_is_used_twice() {
    let app = TestApp::spawn_with(|c| {
        c.fetch_timeout_seconds = 3;
        c.max_message_mb = 5;
    })
    .await;
    app.lakeside_and_hillside().await;
    let (fhir, origin) = start_fhir(&app).await;
    // this server offers $docref, and its tokens expire at once: every query asks
    // for a new one with a new assertion
    let source = add_source(
        &app,
        "Docref EHR",
        &format!("{origin}/docref"),
        &format!("{origin}/docref/auth/token"),
        CLIENT_ID,
    )
    .await;
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let search = |id: &str| format!("/records?source={source}&identifier={id}&purpose=treatment");

    // 401
    let page = ana.get(&search("deny")).await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY);
    assert_says(&page, "Docref EHR did not accept the portal's access (401)");
    // a malformed bundle
    let page = ana.get(&search("broken")).await;
    assert_says(
        &page,
        "Docref EHR sent an answer that is not readable FHIR; nothing from it is shown.",
    );
    // an OperationOutcome: its diagnostics, escaped
    let page = ana.get(&search("locked")).await;
    assert!(page.body.contains("&#60;script&#62;alert(1)&#60;/script&#62; Record locked by health information management"), "{}", page.body);
    assert!(!page.body.contains("<script>alert(1)"), "{}", page.body);

    // the documents come from $docref
    let docs = ana
        .get(&format!(
            "/records/{source}/patients/lena?purpose=treatment&from=2026-01-01"
        ))
        .await;
    assert_eq!(docs.status, StatusCode::OK, "{}", docs.body);
    assert!(docs.body.contains("$docref"), "{}", docs.body);
    let seen = fhir.seen.lock().expect("seen").clone();
    assert!(
        seen.iter().any(|s| s
            .starts_with("docref /docref/DocumentReference/$docref patient=lena&start=2026-01-01")),
        "{seen:?}"
    );

    // 404 and an OperationOutcome on retrieval: an error page with the sentence
    let page = open_document(&mut ana, source, "gone").await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY);
    assert_says(&page, "Docref EHR has no such record (404)");
    let page = open_document(&mut ana, source, "outcome").await;
    assert!(
        page.body
            .contains("Document &#60;b&#62;sealed&#60;/b&#62; pending review"),
        "{}",
        page.body
    );
    // a file elsewhere is not fetched with the token
    let page = open_document(&mut ana, source, "offsite").await;
    assert_says(&page, "is not on Docref EHR itself");
    // a timeout
    let page = open_document(&mut ana, source, "slow").await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY);
    assert_says(&page, "Docref EHR did not answer within 3 seconds");
    // 50 MB: refused at the limit, not read to the end
    let page = open_document(&mut ana, source, "big").await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY);
    assert_says(&page, "is larger than 5 MB, the most the portal retrieves");
    let sent = fhir.big_sent.load(Ordering::SeqCst);
    assert!(
        sent < 50 * 1024 * 1024,
        "the server handed over {sent} bytes"
    );
    // a Binary whose content type lies: said, and only offered as a download
    let opened = open_document(&mut ana, source, "liar").await;
    assert_eq!(opened.status, StatusCode::SEE_OTHER, "{}", opened.body);
    let liar = retrieval_id(&opened.location());
    let viewer = ana.get(&opened.location()).await;
    let warning = viewer.by_id("document-warning").expect("a warning");
    assert!(
        warning.contains("declared this document as application/pdf, but its content is not that"),
        "{warning}"
    );
    assert!(viewer.by_id("open-pdf").is_none() && viewer.by_id("cda-frame").is_none());
    let file = ana
        .get(&format!("/records/retrieved/{liar}/content?inline=1"))
        .await;
    assert_eq!(file.headers["content-type"], "application/octet-stream");
    assert!(
        file.headers["content-disposition"]
            .to_str()
            .unwrap_or("")
            .starts_with("attachment")
    );
    // an inline attachment (data in the DocumentReference) needs no Binary
    let opened = open_document(&mut ana, source, "inline").await;
    assert_eq!(opened.status, StatusCode::SEE_OTHER, "{}", opened.body);

    // a client the server does not know: its authorization server's refusal, said
    let unknown = add_source(
        &app,
        "Unregistered EHR",
        &format!("{origin}/docref"),
        &format!("{origin}/docref/auth/token"),
        UNREGISTERED,
    )
    .await;
    let page = ana
        .get(&format!(
            "/records?source={unknown}&identifier=x&purpose=treatment"
        ))
        .await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY);
    assert_says(
        &page,
        "Unregistered EHR's authorization server refused the portal's credentials (401, invalid_client)",
    );
    let unknown_requests = 1;

    // every token request carried a fresh, valid assertion
    assert!(
        fhir.problems.lock().expect("problems").is_empty(),
        "{:?}",
        fhir.problems.lock()
    );
    let requests = fhir.token_requests.lock().expect("requests").len();
    assert!(requests >= 8, "{requests} token requests");
    assert_eq!(
        fhir.jtis.lock().expect("jtis").len(),
        requests - unknown_requests,
        "a new jti each time"
    );

    // failures are audited too, with what failed
    let retrieved = audited(&app, "records.retrieve").await;
    for (doc, code) in [
        ("gone", "404"),
        ("outcome", "operation-outcome"),
        ("slow", "timeout"),
        ("big", "too-large"),
        ("offsite", "off-server"),
    ] {
        assert!(
            retrieved.iter().any(|s| s
                .starts_with(&format!("source:{source}/DocumentReference/{doc} |"))
                && s.ends_with(&format!("failed ({code})"))),
            "{doc}: {retrieved:?}"
        );
    }
    let searches = audited(&app, "records.patient_search").await;
    assert!(
        searches
            .iter()
            .any(|s| s.ends_with("by identifier; purpose: treatment; failed (401)")),
        "{searches:?}"
    );
}

#[tokio::test]
async fn the_console_refuses_a_source_that_is_not_https_and_the_cli_adds_and_lists_one() {
    let app = TestApp::spawn().await;
    app.lakeside_and_hillside().await;
    let lakeside = lakeside(&app).await;
    let mut op = operator(&app).await;
    op.get("/records/sources").await;
    let refused = source_posted(
        &mut op,
        lakeside.id,
        "Plain",
        "http://fhir.example.org/r4",
        "",
        CLIENT_ID,
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_says(&refused, "The FHIR base URL must be an https:// address");
    source_added_by_cli(&app, "State HIE", "https://fhir.hie.example/r4").await;
    let listed = app.cli(&["admin", "--json", "source", "list"]).await;
    let v: Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(v["sources"][0]["base_url"], "https://fhir.hie.example/r4");
    let jwks = app.cli(&["admin", "source", "jwks"]).await;
    let set: Value = serde_json::from_slice(&jwks.stdout).expect("jwks");
    assert_eq!(set["keys"].as_array().map(Vec::len), Some(1));
    // the console lists it and removes it
    let page = op.get("/records/sources").await;
    assert!(
        page.body.contains("https://fhir.hie.example/r4"),
        "{}",
        page.body
    );
    let id = v["sources"][0]["id"].as_i64().expect("id");
    let removed = op.post(&format!("/records/sources/{id}/remove"), &[]).await;
    assert_eq!(removed.status, StatusCode::SEE_OTHER, "{}", removed.body);
    let page = op.get("/records/sources").await;
    assert!(page.by_id("no-sources").is_some(), "{}", page.body);
    // and the CLI removes one it added
    source_added_by_cli(&app, "Second", "https://fhir.second.example/r4").await;
    cli_ok(
        &app,
        &[
            "admin",
            "source",
            "remove",
            "--org",
            "Lakeside Clinic",
            "Second",
        ],
    )
    .await;
    let again = app
        .cli(&[
            "admin",
            "source",
            "remove",
            "--org",
            "Lakeside Clinic",
            "Second",
        ])
        .await;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("Lakeside Clinic has no source called")
    );
    assert_eq!(audited(&app, "records.source_add").await.len(), 2);
    assert_eq!(audited(&app, "records.source_remove").await.len(), 2);
}
