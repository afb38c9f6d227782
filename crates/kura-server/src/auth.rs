//! Authentication: passwords (argon2id), TOTP, bearer tokens, machine client assertions
//! (SMART Backend Services `private_key_jwt`), the login throttle, and the [`Caller`] extractor
//! that turns a request into a policy [`Actor`].

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordVerifier};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use kura_core::ids::AccountId;
use kura_core::party::{AccountKind, Party};
use kura_core::policy::Actor;
use kura_core::time::Timestamp;
use kura_store::envelope::MasterKey;
use kura_store::model::{Account, DelegationRow, MachineClient, ThrottleRule, ThrottleVerdict};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::service::accounts::hash_password;
use crate::state::AppState;

/// The header an agent sets to act as a patient: the patient's account id.
pub const ACT_AS_HEADER: &str = "kura-act-as";

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

/// A TOTP code that matched: the time step it belongs to (to be marked used, so that it opens
/// one login), and the secret sealed anew when it was still stored in plaintext.
pub struct TotpUse {
    pub step: i64,
    pub resealed: Option<String>,
}

/// Checks username, password and (when enabled) the TOTP code. Every failure looks the same.
/// The caller marks the returned TOTP step as used before letting the login through.
pub fn verify_login(
    account: Option<&Account>,
    password: &str,
    totp: Option<&str>,
    master: &MasterKey,
    now: Timestamp,
) -> Result<Option<TotpUse>, ApiError> {
    let Some(account) = account.filter(|a| a.kind != AccountKind::Machine) else {
        verify_password(decoy_hash(), password);
        return Err(invalid_credentials());
    };
    if !verify_password(&account.password_hash, password) {
        return Err(invalid_credentials());
    }
    let Some(stored) = &account.totp_secret else {
        return Ok(None);
    };
    let Some(code) = totp else {
        return Err(ApiError::unauthorized("totp_required", "this account needs its one-time code"));
    };
    let Some(secret) = open_totp_secret(master, &account.id, stored) else {
        tracing::error!(account = %account.id, "a stored TOTP secret does not open");
        return Err(ApiError::internal());
    };
    let step = totp_step_matching(&secret.base32, code, now).ok_or_else(invalid_credentials)?;
    let resealed =
        if secret.was_plaintext { Some(seal_totp_secret(master, &account.id, &secret.base32)?) } else { None };
    Ok(Some(TotpUse { step, resealed }))
}

pub fn invalid_credentials() -> ApiError {
    ApiError::unauthorized("invalid_credentials", "the username, password or code is wrong")
}

/// Checks a signed-in person's password again (confirming a change to their second factor).
pub fn password_matches(account: &Account, password: &str) -> bool {
    account.kind != AccountKind::Machine && verify_password(&account.password_hash, password)
}

const TOTP_PERIOD_SECS: i64 = 30;

fn totp_for(secret_base32: &str) -> Option<totp_rs::TOTP> {
    let bytes = totp_rs::Secret::Encoded(secret_base32.to_owned()).to_bytes().ok()?;
    totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes).ok()
}

/// The time step (30 s) whose code `code` is, within one step either side of `now` for clock
/// drift; `None` when it matches none. Codes are compared in constant time.
pub fn totp_step_matching(secret_base32: &str, code: &str, now: Timestamp) -> Option<i64> {
    let totp = totp_for(secret_base32)?;
    let code = code.trim().as_bytes();
    let current = now.as_millis().div_euclid(1000) / TOTP_PERIOD_SECS;
    let mut matched = None;
    for step in [current - 1, current, current + 1] {
        let Ok(seconds) = u64::try_from(step * TOTP_PERIOD_SECS) else { continue };
        let expected = totp.generate(seconds);
        let same_length = expected.len() == code.len();
        let difference = expected.bytes().zip(code.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if same_length && difference == 0 && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
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

/// How a sealed TOTP secret starts in the database; anything else is a plaintext base32 secret
/// stored before secrets were sealed (read as it is, and sealed at its next use).
const SEALED_TOTP_PREFIX: &str = "sealed-v1:";

fn totp_context(account: &AccountId) -> String {
    format!("totp/{account}")
}

/// Seals a TOTP secret under the master key, bound to its account.
pub fn seal_totp_secret(master: &MasterKey, account: &AccountId, secret_base32: &str) -> Result<String, ApiError> {
    let sealed = master.seal(&totp_context(account), secret_base32.as_bytes()).map_err(|e| {
        tracing::error!(account = %account, error = %e, "sealing a TOTP secret failed");
        ApiError::internal()
    })?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Ok(format!("{SEALED_TOTP_PREFIX}{}.{}", b64.encode(&sealed.wrapped_key), b64.encode(&sealed.ciphertext)))
}

/// A TOTP secret as read from the database.
pub struct OpenedTotpSecret {
    pub base32: String,
    pub was_plaintext: bool,
}

/// Opens a stored TOTP secret, sealed or (from before sealing) plaintext.
pub fn open_totp_secret(master: &MasterKey, account: &AccountId, stored: &str) -> Option<OpenedTotpSecret> {
    let Some(sealed) = stored.strip_prefix(SEALED_TOTP_PREFIX) else {
        return Some(OpenedTotpSecret { base32: stored.to_owned(), was_plaintext: true });
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (wrapped, ciphertext) = sealed.split_once('.')?;
    let (wrapped, ciphertext) = (b64.decode(wrapped).ok()?, b64.decode(ciphertext).ok()?);
    let plain = master.open(&totp_context(account), &wrapped, ciphertext).ok()?;
    Some(OpenedTotpSecret { base32: String::from_utf8(plain).ok()?, was_plaintext: false })
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

/// The login throttle's policy. An account gets five attempts at once, then one attempt after a
/// wait that doubles from two seconds up to a minute: guessing stays slow, and nobody can lock
/// the account's owner out for longer than a minute at a time. A client address gets twenty,
/// then waits doubling up to fifteen minutes: one address guessing across many accounts slows
/// to a crawl. Counts start afresh after a quiet window.
const ACCOUNT_FREE_ATTEMPTS: i64 = 5;
const ACCOUNT_MAX_DELAY_MS: i64 = 60_000;
const ADDRESS_FREE_ATTEMPTS: i64 = 20;
const ADDRESS_MAX_DELAY_MS: i64 = 15 * 60_000;
const THROTTLE_BASE_DELAY_MS: i64 = 2_000;
const ACCOUNT_WINDOW_MS: i64 = 15 * 60_000;
const ADDRESS_WINDOW_MS: i64 = 60 * 60_000;

/// The throttle key of an account, by its username's folded form (any spelling of one
/// username counts together, whether or not the account exists).
pub fn account_throttle_key(username: &str) -> String {
    format!("account:{}", kura_core::party::username_key(username))
}

/// The throttle key of a client address: the address itself for IPv4, its /64 for IPv6 (one
/// host usually holds a whole /64).
pub fn address_throttle_key(address: &str) -> String {
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("address:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(std::net::IpAddr::V6(v6)) => format!("address:{}", v6.to_canonical()),
        Ok(ip) => format!("address:{ip}"),
        Err(_) => format!("address:{address}"),
    }
}

/// The throttle rules one login attempt is counted under: its account's and, when known, its
/// client address's.
pub fn login_throttle_rules(username: &str, address: Option<&str>) -> Vec<ThrottleRule> {
    let mut rules = vec![ThrottleRule {
        key: account_throttle_key(username),
        free_attempts: ACCOUNT_FREE_ATTEMPTS,
        base_delay_ms: THROTTLE_BASE_DELAY_MS,
        max_delay_ms: ACCOUNT_MAX_DELAY_MS,
        window_ms: ACCOUNT_WINDOW_MS,
    }];
    if let Some(address) = address {
        rules.push(ThrottleRule {
            key: address_throttle_key(address),
            free_attempts: ADDRESS_FREE_ATTEMPTS,
            base_delay_ms: THROTTLE_BASE_DELAY_MS,
            max_delay_ms: ADDRESS_MAX_DELAY_MS,
            window_ms: ADDRESS_WINDOW_MS,
        });
    }
    rules
}

/// Self-registrations one client address may make: ten in an hour, then one after a wait that
/// doubles up to an hour, so that accounts cannot be made in bulk (each also costs an argon2
/// hash). Counted in the same table as login attempts, under keys of their own.
const REGISTRATION_FREE: i64 = 10;
const REGISTRATION_MAX_DELAY_MS: i64 = 60 * 60_000;
const REGISTRATION_WINDOW_MS: i64 = 60 * 60_000;

/// The throttle rule a self-registration from `address` is counted under (none when the address
/// is unknown, as for in-process calls).
pub fn registration_throttle_rules(address: Option<&str>) -> Vec<ThrottleRule> {
    address
        .map(|address| ThrottleRule {
            key: format!("register:{}", address_throttle_key(address)),
            free_attempts: REGISTRATION_FREE,
            base_delay_ms: THROTTLE_BASE_DELAY_MS,
            max_delay_ms: REGISTRATION_MAX_DELAY_MS,
            window_ms: REGISTRATION_WINDOW_MS,
        })
        .into_iter()
        .collect()
}

/// Counts a login attempt before it is evaluated, or refuses it (429 with `Retry-After`)
/// without evaluating it while one of its keys backs off.
pub async fn reserve_login_attempt(state: &AppState, rules: &[ThrottleRule]) -> Result<(), ApiError> {
    let now = state.clock.now();
    match state.store.reserve_login_attempt(rules, now).await? {
        ThrottleVerdict::Allowed => Ok(()),
        ThrottleVerdict::Refused { retry_at } => {
            let wait_ms = (retry_at.as_millis() - now.as_millis()).max(0);
            Err(ApiError::too_many_attempts(u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1)))
        }
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
