//! Single sign-on, the protocol side: an organization's own OpenID provider, and an
//! EHR that launches the portal as a SMART app (SMART App Launch 2.2, EHR launch).
//!
//! Both are the OpenID Connect authorization code flow with PKCE (S256), `state` and
//! `nonce`, done with the `openidconnect` crate over an HTTP client held to the
//! outbound-connection policy. What differs is where the endpoints come from (the
//! issuer's `/.well-known/openid-configuration`, or the FHIR server's
//! `/.well-known/smart-configuration`) and what a SMART authorization adds (`aud`,
//! `launch`, the launch scopes, and the patient in the token response).
//!
//! Every failure is a [`Refusal`]: a sentence for the person signing in.

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreResponseType, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthUrl, AuthenticationFlow, AuthorizationCode, ClaimsVerificationError,
    ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet, ExtraTokenFields,
    IdTokenFields, IssuerUrl, Nonce, OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RequestTokenError, Scope, StandardErrorResponse, StandardTokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

use crate::store::sso::{Kind, Provider};

/// The scopes of a SMART EHR launch.
pub const SMART_SCOPES: &[&str] = &["launch", "openid", "fhirUser", "patient/Patient.rs"];
/// A sign-in at an EHR outside a launch (a user linking their EHR account from My
/// account): who the user is, nothing of a patient.
pub const SMART_LINK_SCOPES: &[&str] = &["openid", "fhirUser"];
/// The scopes of a plain sign-in (`openid` is always asked for).
pub const OIDC_SCOPES: &[&str] = &["openid", "email", "profile"];
/// The most read from a provider's metadata, JWKS or a FHIR resource.
const MAX_BYTES: usize = 1024 * 1024;

/// Why a sign-in was refused, as a sentence for the person signing in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn refuse<T>(sentence: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(sentence.into()))
}

/// The SMART launch context in the token response.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LaunchContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub need_patient_banner: Option<bool>,
}
impl ExtraTokenFields for LaunchContext {}

/// The id_token's claims beyond the standard ones: SMART's `fhirUser`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SmartClaims {
    #[serde(rename = "fhirUser", default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
}
impl AdditionalClaims for SmartClaims {}

type Fields = IdTokenFields<
    SmartClaims,
    LaunchContext,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<Fields, CoreTokenType>;
type ClientWith<Endpoint> = openidconnect::Client<
    SmartClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    Endpoint,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    Endpoint,
    EndpointNotSet,
>;
/// The client with its authorization and token endpoints set.
type SsoClient = ClientWith<EndpointSet>;

/// What both metadata documents say about the endpoints.
#[derive(Debug, Deserialize)]
struct Metadata {
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    authorization_endpoint: String,
    #[serde(default)]
    token_endpoint: String,
    #[serde(default)]
    jwks_uri: String,
    #[serde(default)]
    code_challenge_methods_supported: Vec<String>,
}

/// Where the portal talks to the outside: the policy-held client and the policy
/// (an address in a URL is checked here; names are checked as they resolve).
pub struct Http<'a> {
    pub client: &'a reqwest::Client,
    pub policy: &'a directmail_net::Policy,
}

impl Http<'_> {
    fn check(&self, what: &str, url: &str) -> Result<url::Url, Refusal> {
        let parsed = url::Url::parse(url)
            .map_err(|_| Refusal(format!("The {what} address ({url}) is not a valid URL.")))?;
        if parsed.scheme() != "https" {
            return refuse(format!(
                "The {what} address ({url}) does not use https, so the portal does not use it."
            ));
        }
        self.policy.check_url(&parsed).map_err(|e| {
            Refusal(format!(
                "The {what} address is not one the portal may connect to ({e})."
            ))
        })?;
        Ok(parsed)
    }

    /// GETs JSON (at most [`MAX_BYTES`]), with a bearer token when given.
    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<T, Refusal> {
        let parsed = self.check(what, url)?;
        let mut request = self
            .client
            .get(parsed)
            .header("accept", "application/json, application/fhir+json");
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let unreachable = |e: reqwest::Error| {
            let why = directmail_net::refusal(&e)
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            Refusal(format!(
                "The {what} could not be reached{why}. Try again later."
            ))
        };
        let mut response = request.send().await.map_err(unreachable)?;
        if !response.status().is_success() {
            return refuse(format!(
                "The {what} answered with an error ({}).",
                response.status()
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_BYTES {
                return refuse(format!("The {what} sent more than the portal reads."));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body)
            .map_err(|_| Refusal(format!("The {what} sent an answer the portal cannot read.")))
    }
}

/// A provider's endpoints and keys, ready for a sign-in.
pub struct Ready {
    client: SsoClient,
    kind: Kind,
    /// For SMART: the FHIR base URL (`aud`).
    fhir_base: String,
}

/// Reads the provider's metadata and keys (OpenID discovery, or SMART configuration),
/// and makes the client that signs in through it.
pub async fn prepare(
    http: &Http<'_>,
    provider: &Provider,
    client_secret: Option<String>,
    redirect_uri: &str,
) -> Result<Ready, Refusal> {
    let base = provider.issuer.trim_end_matches('/');
    let (doc, what) = match provider.kind {
        Kind::Oidc => (
            format!("{base}/.well-known/openid-configuration"),
            "identity provider",
        ),
        Kind::Smart => (format!("{base}/.well-known/smart-configuration"), "EHR"),
    };
    let meta: Metadata = http.json(what, &doc, None).await?;
    if provider.kind == Kind::Oidc && meta.issuer.trim_end_matches('/') != base {
        return refuse(format!(
            "The identity provider at {base} names another issuer ({}), so the portal does not trust it.",
            meta.issuer
        ));
    }
    if meta.issuer.is_empty() || meta.jwks_uri.is_empty() {
        return refuse(format!(
            "The {what} does not offer OpenID Connect sign-in (its configuration has no issuer or keys)."
        ));
    }
    if !meta.code_challenge_methods_supported.is_empty()
        && !meta
            .code_challenge_methods_supported
            .iter()
            .any(|m| m == "S256")
    {
        return refuse(format!(
            "The {what} does not support PKCE with S256, which the portal requires."
        ));
    }
    for url in [
        &meta.authorization_endpoint,
        &meta.token_endpoint,
        &meta.jwks_uri,
    ] {
        http.check(what, url)?;
    }
    let bad = |_| {
        Refusal(format!(
            "The {what}'s configuration has an invalid address."
        ))
    };
    let keys: CoreJsonWebKeySet = http
        .json(&format!("{what}'s signing keys"), &meta.jwks_uri, None)
        .await?;
    let mut client = ClientWith::<EndpointNotSet>::new(
        ClientId::new(provider.client_id.clone()),
        IssuerUrl::new(meta.issuer.clone()).map_err(bad)?,
        keys,
    )
    .set_auth_uri(AuthUrl::new(meta.authorization_endpoint.clone()).map_err(bad)?)
    .set_token_uri(TokenUrl::new(meta.token_endpoint.clone()).map_err(bad)?)
    .set_redirect_uri(
        RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|_| Refusal("The portal's own address is not set right.".into()))?,
    );
    if let Some(secret) = client_secret.filter(|s| !s.is_empty()) {
        client = client.set_client_secret(ClientSecret::new(secret));
    }
    Ok(Ready {
        client,
        kind: provider.kind,
        fhir_base: base.to_owned(),
    })
}

/// What the portal keeps (sealed) while the browser is at the provider.
#[derive(Serialize, Deserialize)]
pub struct Secrets {
    pub nonce: String,
    pub verifier: String,
}

/// Where to send the browser, and what to keep until it comes back.
pub struct Authorization {
    pub url: url::Url,
    pub state: String,
    pub secrets: Secrets,
}

impl Ready {
    /// The authorization request: code flow, PKCE S256, fresh `state` and `nonce`;
    /// for SMART, `aud` (the FHIR server) and the EHR's `launch`.
    pub fn authorize(&self, launch: &str) -> Authorization {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = self
            .client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        let scopes = match self.kind {
            Kind::Oidc => OIDC_SCOPES,
            Kind::Smart if launch.is_empty() => SMART_LINK_SCOPES,
            Kind::Smart => SMART_SCOPES,
        };
        for scope in scopes.iter().filter(|s| **s != "openid") {
            request = request.add_scope(Scope::new((*scope).to_owned()));
        }
        if self.kind == Kind::Smart {
            request = request.add_extra_param("aud", self.fhir_base.clone());
            if !launch.is_empty() {
                request = request.add_extra_param("launch", launch.to_owned());
            }
        }
        let (url, state, nonce) = request.url();
        Authorization {
            url,
            state: state.secret().clone(),
            secrets: Secrets {
                nonce: nonce.secret().clone(),
                verifier: verifier.secret().clone(),
            },
        }
    }

    /// Exchanges the code and verifies the id_token (signature, issuer, audience,
    /// expiry at `now`, nonce).
    pub async fn finish(
        &self,
        http: &Http<'_>,
        code: &str,
        secrets: &Secrets,
        now: i64,
    ) -> Result<SignedIn, Refusal> {
        let tokens = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(secrets.verifier.clone()))
            .request_async(http.client)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => Refusal(match r.error() {
                    CoreErrorResponseType::InvalidGrant => "The sign-in provider refused the sign-in code: it was already used, has expired, or belongs to another sign-in. Start again.".to_owned(),
                    CoreErrorResponseType::InvalidClient | CoreErrorResponseType::UnauthorizedClient => "The sign-in provider does not accept the portal's client id or secret. Ask your administrator to check the single sign-on settings.".to_owned(),
                    other => format!("The sign-in provider refused the sign-in ({}).", other.as_ref()),
                }),
                RequestTokenError::Request(_) => {
                    Refusal("The sign-in provider could not be reached. Try again later.".into())
                }
                _ => Refusal("The sign-in provider's answer could not be read.".into()),
            })?;
        let Some(id_token) = tokens.extra_fields().id_token() else {
            return refuse("The sign-in provider sent no id_token, so nobody could be signed in.");
        };
        // expiry is judged by the portal's clock (which tests can move)
        let verifier = self
            .client
            .id_token_verifier()
            .set_time_fn(move || chrono::DateTime::from_timestamp(now, 0).unwrap_or_default());
        let claims = id_token
            .claims(&verifier, &Nonce::new(secrets.nonce.clone()))
            .map_err(|e| {
                Refusal(
                    match e {
                        ClaimsVerificationError::Expired(_) => "The sign-in provider's answer has expired. Check that this computer's clock is right and sign in again.",
                        ClaimsVerificationError::InvalidAudience(_) => "The sign-in provider's answer was meant for another application, so it was not accepted.",
                        ClaimsVerificationError::InvalidNonce(_) => "The sign-in provider's answer belongs to another sign-in (its nonce does not match), so it was not accepted.",
                        ClaimsVerificationError::InvalidIssuer(_) => "The sign-in provider's answer was issued by someone else, so it was not accepted.",
                        ClaimsVerificationError::SignatureVerification(_) => "The signature of the sign-in provider's answer does not verify, so it was not accepted.",
                        _ => "The sign-in provider's answer could not be verified, so it was not accepted.",
                    }
                    .to_owned(),
                )
            })?;
        let mut methods: Vec<String> = claims
            .auth_method_refs()
            .map(|v| v.iter().map(|m| m.as_str().to_owned()).collect())
            .unwrap_or_default();
        if let Some(acr) = claims.auth_context_ref() {
            methods.push(acr.as_str().to_owned());
        }
        let email = claims
            .email()
            .filter(|_| claims.email_verified() == Some(true))
            .map(|e| e.as_str().to_ascii_lowercase());
        Ok(SignedIn {
            subject: claims.subject().as_str().to_owned(),
            methods,
            email,
            fhir_user: claims.additional_claims().fhir_user.clone(),
            access_token: tokens.access_token().secret().clone(),
            launch: tokens.extra_fields().extra_fields().clone(),
        })
    }

    /// The FHIR server's base URL (SMART).
    pub fn fhir_base(&self) -> &str {
        &self.fhir_base
    }
}

/// Who signed in, as the verified id_token and the token response say.
pub struct SignedIn {
    pub subject: String,
    /// The `amr` values and the `acr`.
    pub methods: Vec<String>,
    /// A verified e-mail address, when the provider gave one.
    pub email: Option<String>,
    pub fhir_user: Option<String>,
    pub access_token: String,
    pub launch: LaunchContext,
}

impl SignedIn {
    /// Whether the provider says the user signed in with two steps, by the values
    /// this provider's settings name.
    pub fn two_step(&self, provider: &Provider) -> bool {
        self.methods
            .iter()
            .any(|m| provider.two_step_values.iter().any(|v| v == m))
    }
}

/// The parts of a FHIR Patient the patient block holds.
#[derive(Debug, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct FhirPatient {
    resource_type: String,
    id: String,
    name: Vec<FhirName>,
    birth_date: String,
    gender: String,
    identifier: Vec<FhirIdentifier>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct FhirName {
    family: String,
    given: Vec<String>,
    #[serde(rename = "use")]
    name_use: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct FhirIdentifier {
    system: String,
    value: String,
}

/// Reads `Patient/{id}` from the launch's FHIR server with the access token, as a
/// patient block for a new message.
pub async fn read_patient(
    http: &Http<'_>,
    fhir_base: &str,
    id: &str,
    access_token: &str,
) -> Result<crate::patient::DraftPatient, Refusal> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return refuse("The EHR named the patient with an identifier that is not a FHIR id.");
    }
    let url = format!("{}/Patient/{id}", fhir_base.trim_end_matches('/'));
    let patient: FhirPatient = http
        .json("EHR's FHIR server", &url, Some(access_token))
        .await?;
    if patient.resource_type != "Patient" || patient.id != id {
        return refuse("The EHR's FHIR server answered with something other than the patient.");
    }
    Ok(draft_of(&patient))
}

fn draft_of(p: &FhirPatient) -> crate::patient::DraftPatient {
    let name = p
        .name
        .iter()
        .find(|n| n.name_use == "official")
        .or_else(|| p.name.first());
    let clip = |s: &str| {
        s.trim()
            .chars()
            .take(crate::patient::MAX_TYPED)
            .collect::<String>()
    };
    let sex = match p.gender.as_str() {
        "female" => "F",
        "male" => "M",
        "other" => "O",
        "unknown" => "U",
        _ => "",
    };
    // an OID system is written `oid:value` in a patient block; any other the value
    let id = p
        .identifier
        .iter()
        .find(|i| i.system.starts_with("urn:oid:") && !i.value.is_empty())
        .map(|i| format!("{}:{}", &i.system["urn:oid:".len()..], clip(&i.value)))
        .or_else(|| {
            p.identifier
                .iter()
                .find(|i| !i.value.is_empty())
                .map(|i| clip(&i.value))
        })
        .unwrap_or_default();
    crate::patient::DraftPatient {
        given: name.map(|n| clip(&n.given.join(" "))).unwrap_or_default(),
        family: name.map(|n| clip(&n.family)).unwrap_or_default(),
        birth_date: if crate::patient::normal_birth_date(&p.birth_date).len() == 10 {
            p.birth_date.clone()
        } else {
            String::new()
        },
        sex: if crate::patient::SEXES.iter().any(|(c, _)| *c == sex) {
            sex.to_owned()
        } else {
            String::new()
        },
        id,
        purpose: "treatment".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient(json: serde_json::Value) -> crate::patient::DraftPatient {
        draft_of(&serde_json::from_value(json).expect("a Patient"))
    }

    #[test]
    fn a_fhir_patient_becomes_a_patient_block() {
        let p = patient(serde_json::json!({
            "resourceType": "Patient", "id": "p1",
            "name": [{ "use": "nickname", "given": ["Mo"] },
                     { "use": "official", "family": "Rivera", "given": ["Maria", "Elena"] }],
            "identifier": [{ "system": "http://hospital.example/mrn", "value": "77" },
                           { "system": "urn:oid:2.16.840.1.113883.19.5", "value": "HX-4471" }],
            "gender": "female", "birthDate": "1961-04-17"
        }));
        assert_eq!(
            (p.given.as_str(), p.family.as_str()),
            ("Maria Elena", "Rivera")
        );
        assert_eq!(p.id, "2.16.840.1.113883.19.5:HX-4471");
        assert_eq!((p.sex.as_str(), p.birth_date.as_str()), ("F", "1961-04-17"));
        // no OID: the first identifier's value; odd values are left out, not guessed
        let p = patient(serde_json::json!({
            "resourceType": "Patient", "id": "p2",
            "name": [{ "family": "Lee" }],
            "identifier": [{ "system": "http://hospital.example/mrn", "value": "77" }],
            "gender": "unknown", "birthDate": "1961"
        }));
        assert_eq!((p.family.as_str(), p.id.as_str()), ("Lee", "77"));
        assert_eq!((p.sex.as_str(), p.birth_date.as_str()), ("U", ""));
        let p = patient(serde_json::json!({
            "resourceType": "Patient", "id": "p3", "gender": "robot",
            "name": [{ "family": "x".repeat(500) }]
        }));
        assert_eq!(p.sex, "");
        assert_eq!(p.family.chars().count(), crate::patient::MAX_TYPED);
    }

    #[test]
    fn two_step_is_what_the_settings_name() {
        let signed = |methods: &[&str]| SignedIn {
            subject: "s".into(),
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            email: None,
            fhir_user: None,
            access_token: String::new(),
            launch: LaunchContext::default(),
        };
        let provider = Provider {
            id: 1,
            org_id: 1,
            kind: Kind::Oidc,
            name: "P".into(),
            issuer: "https://p.example".into(),
            client_id: "c".into(),
            client_secret: String::new(),
            two_step_values: vec!["mfa".into(), "urn:acr:2fa".into()],
            create_accounts: false,
        };
        assert!(signed(&["pwd", "mfa"]).two_step(&provider));
        assert!(signed(&["urn:acr:2fa"]).two_step(&provider));
        assert!(!signed(&["pwd"]).two_step(&provider));
        assert!(!signed(&[]).two_step(&provider));
    }
}
