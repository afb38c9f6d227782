//! Authentication: passwords (argon2id), TOTP, bearer tokens, machine client assertions
//! (SMART Backend Services `private_key_jwt`), login rate limiting, and the [`Caller`] extractor
//! that turns a request into a policy [`Actor`].

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use kura_core::ids::AccountId;
use kura_core::party::{AccountKind, Party};
use kura_core::policy::Actor;
use kura_core::time::Timestamp;
use kura_store::envelope::MasterKey;
use kura_store::model::{Account, DelegationRow, MachineClient};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::error::ApiError;

/// The header an agent sets to act as a patient: the patient's account id.
pub const ACT_AS_HEADER: &str = "kura-act-as";

pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|_| ApiError::internal())?;
    let salt = SaltString::encode_b64(&salt).map_err(|_| ApiError::internal())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|_| ApiError::internal())
}

pub fn check_password_rules(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < 10 || password.len() > 1024 {
        return Err(ApiError::invalid("a password must have between 10 and 1024 characters"));
    }
    Ok(())
}

fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        .unwrap_or(false)
}

/// A hash to verify against when the username is unknown, so that the answer takes as long as
/// for a known user with a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password that matches nothing").unwrap_or_default())
}

/// Checks username, password and (when enabled) the TOTP code. Every failure looks the same.
pub fn verify_login(
    account: Option<&Account>,
    password: &str,
    totp: Option<&str>,
    now: Timestamp,
) -> Result<(), ApiError> {
    let invalid = || ApiError::unauthorized("invalid_credentials", "the username, password or code is wrong");
    let Some(account) = account.filter(|a| a.kind != AccountKind::Machine) else {
        verify_password(decoy_hash(), password);
        return Err(invalid());
    };
    if !verify_password(&account.password_hash, password) {
        return Err(invalid());
    }
    if let Some(secret) = &account.totp_secret {
        match totp {
            None => return Err(ApiError::unauthorized("totp_required", "this account needs its one-time code")),
            Some(code) if !totp_matches(secret, code, now) => return Err(invalid()),
            Some(_) => {}
        }
    }
    Ok(())
}

fn totp_for(secret_base32: &str) -> Option<totp_rs::TOTP> {
    let bytes = totp_rs::Secret::Encoded(secret_base32.to_owned()).to_bytes().ok()?;
    totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes).ok()
}

pub fn totp_matches(secret_base32: &str, code: &str, now: Timestamp) -> bool {
    let seconds = u64::try_from(now.as_millis() / 1000).unwrap_or(0);
    totp_for(secret_base32).is_some_and(|t| t.check(code.trim(), seconds))
}

/// A fresh TOTP secret (160 bits, base32).
pub fn new_totp_secret() -> Result<String, ApiError> {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).map_err(|_| ApiError::internal())?;
    Ok(totp_rs::Secret::Raw(bytes.to_vec()).to_encoded().to_string())
}

/// The current code for a secret (tests and the CLI's enrolment check use it).
pub fn totp_code(secret_base32: &str, now: Timestamp) -> Option<String> {
    let seconds = u64::try_from(now.as_millis() / 1000).unwrap_or(0);
    totp_for(secret_base32).map(|t| t.generate(seconds))
}

/// Signing keys for bearer tokens, derived from the master key.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: i64,
    exp: i64,
    jti: String,
}

impl TokenKeys {
    pub fn new(master: &MasterKey) -> Self {
        let secret = master.derive("bearer-tokens");
        Self { encoding: EncodingKey::from_secret(&secret), decoding: DecodingKey::from_secret(&secret) }
    }

    /// Issues a bearer token for `account` valid for `ttl_secs` from `now`.
    pub fn issue(&self, account: &AccountId, now: Timestamp, ttl_secs: i64) -> Result<(String, Timestamp), ApiError> {
        let iat = now.as_millis() / 1000;
        let claims =
            Claims { sub: account.to_string(), iat, exp: iat + ttl_secs, jti: uuid::Uuid::now_v7().to_string() };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| ApiError::internal())?;
        Ok((token, Timestamp::from_millis(claims.exp * 1000)))
    }

    /// Verifies signature and expiry (against the server's clock) and returns the account id.
    fn verify(&self, token: &str, now: Timestamp) -> Result<AccountId, ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked against the server's clock below, so that it follows a test clock.
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|_| ApiError::unauthorized("invalid_token", "the bearer token is not valid"))?;
        if data.claims.exp * 1000 <= now.as_millis() {
            return Err(ApiError::unauthorized("token_expired", "the bearer token has expired; log in again"));
        }
        AccountId::parse(&data.claims.sub)
            .map_err(|_| ApiError::unauthorized("invalid_token", "the bearer token is not valid"))
    }
}

/// Counts failed logins per username and per client address, in memory.
#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);
const MAX_FAILURES_PER_USER: usize = 5;
const MAX_FAILURES_PER_ADDRESS: usize = 30;

impl LoginLimiter {
    fn recent(&self, key: &str) -> usize {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(key.to_owned()).or_default();
        entry.retain(|t| t.elapsed() < LOGIN_WINDOW);
        entry.len()
    }

    /// Refuses an attempt when too many recent ones failed for this user or address.
    pub fn check(&self, username: &str, address: Option<&str>) -> Result<(), ApiError> {
        let too_many = self.recent(&format!("user:{}", username.to_lowercase())) >= MAX_FAILURES_PER_USER
            || address.is_some_and(|a| self.recent(&format!("addr:{a}")) >= MAX_FAILURES_PER_ADDRESS);
        if too_many {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "too many failed logins; wait 15 minutes and try again",
            ));
        }
        Ok(())
    }

    pub fn record_failure(&self, username: &str, address: Option<&str>) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(format!("user:{}", username.to_lowercase())).or_default().push(Instant::now());
        if let Some(a) = address {
            map.entry(format!("addr:{a}")).or_default().push(Instant::now());
        }
        // Keep the map from growing without bound under a spray of usernames.
        if map.len() > 100_000 {
            map.retain(|_, times| times.iter().any(|t| t.elapsed() < LOGIN_WINDOW));
        }
    }

    pub fn record_success(&self, username: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&format!("user:{}", username.to_lowercase()));
    }
}

pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// SMART Backend Services: an assertion expires no more than five minutes after it is made.
const MAX_ASSERTION_LIFETIME_SECS: i64 = 300;
pub const MACHINE_TOKEN_SECS: i64 = 300;

pub fn parse_algorithm(raw: &str) -> Result<Algorithm, ApiError> {
    match raw {
        "ES384" => Ok(Algorithm::ES384),
        "ES256" => Ok(Algorithm::ES256),
        "RS384" => Ok(Algorithm::RS384),
        "RS256" => Ok(Algorithm::RS256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        _ => Err(ApiError::invalid("algorithm must be ES384, ES256, RS384, RS256 or EdDSA")),
    }
}

pub fn decoding_key(algorithm: Algorithm, pem: &str) -> Result<DecodingKey, ApiError> {
    let key = match algorithm {
        Algorithm::ES384 | Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
        Algorithm::RS384 | Algorithm::RS256 => DecodingKey::from_rsa_pem(pem.as_bytes()),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem.as_bytes()),
        _ => return Err(ApiError::invalid("unsupported algorithm")),
    };
    key.map_err(|_| ApiError::invalid("public_key_pem is not a PEM public key for the algorithm"))
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    exp: i64,
    jti: String,
}

fn invalid_client(message: &str) -> ApiError {
    ApiError::unauthorized("invalid_client", message.to_owned())
}

/// Reads the `iss` of an assertion before its signature is checked, to find the client's key.
fn unverified_issuer(assertion: &str) -> Option<String> {
    let payload = assertion.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("iss")?.as_str().map(str::to_owned)
}

/// Verifies a client assertion by SMART Backend Services rules and returns the client.
pub async fn verify_client_assertion(state: &AppState, assertion: &str) -> Result<MachineClient, ApiError> {
    let issuer =
        unverified_issuer(assertion).ok_or_else(|| invalid_client("the client assertion is not a JWT with an iss"))?;
    let client = state.store.client(&issuer).await?.ok_or_else(|| invalid_client("unknown client"))?;
    let algorithm = parse_algorithm(&client.algorithm)?;
    let key = decoding_key(algorithm, &client.public_key_pem)?;
    let mut validation = Validation::new(algorithm);
    validation.validate_exp = false;
    validation.set_audience(&[state.config.token_endpoint()]);
    validation.set_issuer(&[client.client_id.as_str()]);
    validation.set_required_spec_claims(&["iss", "sub", "aud", "exp", "jti"]);
    let data = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidAudience => invalid_client("the assertion's aud is not this server's token endpoint"),
            ErrorKind::InvalidSignature => {
                invalid_client("the assertion's signature does not match the registered key")
            }
            ErrorKind::InvalidIssuer => invalid_client("the assertion's iss is not the client id"),
            _ => invalid_client("the client assertion is not valid"),
        }
    })?;
    let claims = data.claims;
    if claims.sub != claims.iss {
        return Err(invalid_client("the assertion's sub must equal its iss"));
    }
    let now_secs = state.clock.now().as_millis() / 1000;
    if claims.exp <= now_secs {
        return Err(invalid_client("the client assertion has expired"));
    }
    if claims.exp > now_secs + MAX_ASSERTION_LIFETIME_SECS + 10 {
        return Err(invalid_client("the assertion's exp is more than five minutes ahead"));
    }
    if claims.jti.is_empty() || claims.jti.len() > 256 {
        return Err(invalid_client("the assertion needs a jti"));
    }
    let now = state.clock.now();
    match state
        .store
        .use_assertion_id(&client.client_id, &claims.jti, Timestamp::from_millis(claims.exp * 1000), now)
        .await
    {
        Ok(()) => Ok(client),
        Err(kura_store::StoreError::Conflict(_)) => Err(invalid_client("the assertion's jti was used before (replay)")),
        Err(e) => Err(e.into()),
    }
}

/// The authenticated caller of a request, as the policy sees it.
pub struct Caller {
    pub account: Account,
    pub actor: Actor,
    /// The delegation an agent acts under, when it sent the act-as header.
    pub delegation: Option<DelegationRow>,
}

impl Caller {
    pub fn party(&self) -> Party {
        Party::Account(self.account.id.clone())
    }

    /// The organisation a member or machine acts for.
    pub fn org(&self) -> Option<&kura_core::ids::OrgId> {
        self.account.org.as_ref().filter(|_| self.account.kind.acts_for_organisation())
    }

    /// The parties whose records and grants this request concerns: the represented patient's
    /// when acting as an agent, the caller's own otherwise.
    pub fn parties(&self) -> Vec<Party> {
        match &self.delegation {
            Some(d) => vec![Party::Account(d.delegation.patient.clone())],
            None => self.actor.identities.clone(),
        }
    }

    /// `account:<id>`: who acted, for the audit log.
    pub fn audit_actor(&self) -> String {
        self.party().to_text()
    }

    pub fn on_behalf_of(&self) -> String {
        self.delegation.as_ref().map(|d| Party::Account(d.delegation.patient.clone()).to_text()).unwrap_or_default()
    }

    /// The owner whose records and choices the caller manages: the represented patient for an
    /// agent, the patient themself, or the institution a staff member or machine acts for (for
    /// the records it still owns). Other accounts get `refusal`.
    pub fn owner_party(&self, refusal: &str) -> Result<Party, ApiError> {
        if let Some(d) = &self.delegation {
            return Ok(Party::Account(d.delegation.patient.clone()));
        }
        match self.account.kind {
            AccountKind::Patient => Ok(self.party()),
            AccountKind::Staff | AccountKind::Machine => self
                .org()
                .map(|o| Party::Organisation(o.clone()))
                .ok_or_else(|| ApiError::forbidden("your account does not act for an organisation")),
            _ => Err(ApiError::forbidden(refusal.to_owned())),
        }
    }

    pub fn require(&self, kinds: &[AccountKind], what: &str) -> Result<(), ApiError> {
        if kinds.contains(&self.account.kind) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("{what} is not open to {} accounts", self.account.kind.as_str())))
        }
    }
}

fn identities_of(account: &Account) -> Vec<Party> {
    let mut parties = Vec::new();
    if account.kind != AccountKind::Machine {
        parties.push(Party::Account(account.id.clone()));
    }
    if let (true, Some(org)) = (account.kind.acts_for_organisation(), &account.org) {
        parties.push(Party::Organisation(org.clone()));
    }
    parties
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized("unauthenticated", "send Authorization: Bearer <token>"))?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| ApiError::unauthorized("unauthenticated", "send Authorization: Bearer <token>"))?;
        let now = state.clock.now();
        let account_id = state.tokens.verify(token.trim(), now)?;
        let account = state
            .store
            .account(&account_id)
            .await?
            .ok_or_else(|| ApiError::unauthorized("invalid_token", "the account no longer exists"))?;
        let mut actor = Actor::new(identities_of(&account));
        let mut delegation = None;
        if let Some(patient) = parts.headers.get(ACT_AS_HEADER) {
            let patient = patient
                .to_str()
                .ok()
                .and_then(|p| AccountId::parse(p.trim()).ok())
                .ok_or_else(|| ApiError::bad_request(format!("{ACT_AS_HEADER} must be a patient account id")))?;
            let found = state
                .store
                .delegations_involving(&account.id)
                .await?
                .into_iter()
                .find(|d| {
                    d.delegation.agent == account.id && d.delegation.patient == patient && d.delegation.is_active(now)
                })
                .ok_or_else(|| ApiError::forbidden("no delegation in force lets you act for this patient"))?;
            actor = actor.acting_for(found.delegation.clone());
            delegation = Some(found);
        }
        Ok(Caller { account, actor, delegation })
    }
}

/// The client's address, when the server runs with connection info (not in router tests).
pub struct ClientAddress(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip().to_string()),
        ))
    }
}
