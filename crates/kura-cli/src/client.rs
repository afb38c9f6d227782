//! A small HTTP client for Kura's API over reqwest: JSON in, JSON out, the bearer token and the
//! `kura-act-as` header attached, and the server's error envelope turned into one [`ApiFailure`]
//! that reads `<message> (<code>)`.
//!
//! Answers come back as `serde_json::Value` so that `--json` can print exactly what the server
//! said; [`decode`] turns them into the shared wire types of `kura-api-types` for people.

use anyhow::{Context, Result};
use kura_api_types as api;
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::secrets::Secret;

/// The header an agent sends to act as a patient (the patient's account id).
pub const ACT_AS_HEADER: &str = "kura-act-as";

/// The server refused: its error envelope, or the status when it sent none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiFailure {}

impl ApiFailure {
    /// Reads a failing answer's body: the envelope when there is one, else the status and the
    /// start of the text.
    pub fn from_body(status: StatusCode, body: &[u8]) -> Self {
        if let Ok(envelope) = serde_json::from_slice::<api::ErrorEnvelope>(body) {
            return Self { status: status.as_u16(), code: envelope.error.code, message: envelope.error.message };
        }
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let message = if text.is_empty() {
            format!("the server answered {status}")
        } else {
            let short: String = text.chars().take(200).collect();
            format!("the server answered {status}: {short}")
        };
        Self { status: status.as_u16(), code: format!("http_{}", status.as_u16()), message }
    }
}

/// A connection to one Kura server, as one caller.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<Secret>,
    act_as: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("authenticated", &self.token.is_some())
            .field("act_as", &self.act_as)
            .finish()
    }
}

impl Client {
    pub fn new(server: &str, token: Option<Secret>) -> Result<Self> {
        let server = server.trim();
        let with_scheme = if server.contains("://") { server.to_owned() } else { format!("http://{server}") };
        let mut base = Url::parse(&with_scheme).with_context(|| format!("'{server}' is not a server URL"))?;
        if !matches!(base.scheme(), "http" | "https") {
            anyhow::bail!("'{server}' is not an http:// or https:// URL");
        }
        if base.scheme() == "https" {
            // This build of the CLI carries no TLS stack; say so instead of failing obscurely.
            anyhow::bail!("this kura build speaks plain http only; put a TLS proxy in front or use http://");
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("kura-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Self { http, base, token, act_as: None })
    }

    /// Sends `kura-act-as: <patient>` with every request (agents acting for a patient).
    pub fn acting_as(mut self, patient: Option<String>) -> Self {
        self.act_as = patient;
        self
    }

    pub fn server(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// Whether `url` is on this server's origin (scheme, host and port), the only place this
    /// client's token may go.
    pub fn is_same_origin(&self, url: &Url) -> bool {
        url.origin() == self.base.origin()
    }

    /// The URL of the path made of `segments` under the base, each segment escaped.
    fn url(&self, segments: &[&str]) -> Result<Url> {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().map_err(|_| anyhow::anyhow!("the server URL cannot have a path"))?;
            path.pop_if_empty();
            path.extend(segments);
        }
        Ok(url)
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        if let Some(patient) = &self.act_as {
            request = request.header(ACT_AS_HEADER, patient);
        }
        request
    }

    /// Sends the request; a failure to reach the server says so in words.
    async fn dispatch(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        request.send().await.map_err(|e| {
            let what = if e.is_connect() { "cannot connect to" } else { "the request failed at" };
            anyhow::anyhow!("{what} {}: {}", self.server(), root_cause(&e))
        })
    }

    /// Sends the request; a success's JSON body (or `null` when it has none), else the failure.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value> {
        let response = self.dispatch(request).await?;
        let status = response.status();
        let body = response.bytes().await.with_context(|| format!("the answer from {} broke off", self.server()))?;
        if !status.is_success() {
            return Err(ApiFailure::from_body(status, &body).into());
        }
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body)
            .with_context(|| format!("the server answered {status} with something that is not JSON"))
    }

    /// GET returning a success's body exactly as sent (a record whose content must be written
    /// byte for byte); a refusal comes back as the server's [`ApiFailure`].
    pub async fn get_bytes(&self, segments: &[&str]) -> Result<Vec<u8>> {
        let response = self.dispatch(self.request(Method::GET, self.url(segments)?)).await?;
        let status = response.status();
        let body = response.bytes().await.with_context(|| format!("the answer from {} broke off", self.server()))?;
        if !status.is_success() {
            return Err(ApiFailure::from_body(status, &body).into());
        }
        Ok(body.to_vec())
    }

    pub async fn get(&self, segments: &[&str]) -> Result<Value> {
        self.send(self.request(Method::GET, self.url(segments)?)).await
    }

    /// GET with query pairs (a key may repeat, as `label` does).
    pub async fn get_query(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Value> {
        let mut url = self.url(segments)?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        self.send(self.request(Method::GET, url)).await
    }

    pub async fn post<B: Serialize + ?Sized>(&self, segments: &[&str], body: &B) -> Result<Value> {
        self.send(self.request(Method::POST, self.url(segments)?).json(body)).await
    }

    pub async fn put<B: Serialize + ?Sized>(&self, segments: &[&str], body: &B) -> Result<Value> {
        self.send(self.request(Method::PUT, self.url(segments)?).json(body)).await
    }

    /// Opens a stream of server-sent events at `segments`, sending `Last-Event-ID` when given.
    /// The answer is returned unread so that its body can be followed chunk by chunk; a refusal
    /// comes back as the server's [`ApiFailure`].
    pub async fn open_event_stream(&self, segments: &[&str], last_event_id: Option<&str>) -> Result<reqwest::Response> {
        let mut request =
            self.request(Method::GET, self.url(segments)?).header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = self.dispatch(request).await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(ApiFailure::from_body(status, &body).into());
        }
        Ok(response)
    }

    /// POST without a body (copy).
    pub async fn post_empty(&self, segments: &[&str]) -> Result<Value> {
        self.send(self.request(Method::POST, self.url(segments)?)).await
    }

    pub async fn delete(&self, segments: &[&str]) -> Result<Value> {
        self.send(self.request(Method::DELETE, self.url(segments)?)).await
    }

    /// Uploads content for an institution's local patient id. `category` is for PDFs only.
    pub async fn upload(
        &self,
        mrn: &str,
        category: Option<api::Category>,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<Value> {
        let mut url = self.url(&["api", "v1", "records"])?;
        url.query_pairs_mut().append_pair("patient", mrn);
        if let Some(category) = category {
            url.query_pairs_mut().append_pair("category", category_name(category));
        }
        let request = self.request(Method::POST, url).header(reqwest::header::CONTENT_TYPE, content_type).body(bytes);
        self.send(request).await
    }

    /// POSTs JSON and returns a successful answer's body as bytes with its headers (an
    /// exported archive, a sealed copy's package); a refusal comes back as the server's [`ApiFailure`].
    pub async fn post_for_bytes<B: Serialize + ?Sized>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<(Vec<u8>, reqwest::header::HeaderMap)> {
        let response = self.dispatch(self.request(Method::POST, self.url(segments)?).json(body)).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.with_context(|| format!("the answer from {} broke off", self.server()))?;
        if !status.is_success() {
            return Err(ApiFailure::from_body(status, &bytes).into());
        }
        Ok((bytes.to_vec(), headers))
    }

    /// POSTs raw bytes with a secret header (an archive and its passphrase, which is marked
    /// sensitive so that it never shows in reqwest's debug output).
    pub async fn post_with_secret_header(
        &self,
        segments: &[&str],
        content_type: &str,
        bytes: Vec<u8>,
        secret_header: (&str, &Secret),
    ) -> Result<Value> {
        let mut value = reqwest::header::HeaderValue::from_bytes(secret_header.1.expose().as_bytes())
            .map_err(|_| anyhow::anyhow!("the {} cannot be sent: it contains control characters", secret_header.0))?;
        value.set_sensitive(true);
        let request = self
            .request(Method::POST, self.url(segments)?)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(secret_header.0, value)
            .body(bytes);
        self.send(request).await
    }

    /// Logs a person in; the answer carries the token.
    pub async fn login(&self, username: &str, password: &Secret, totp: Option<String>) -> Result<api::LoginResponse> {
        let body = api::LoginRequest { username: username.to_owned(), password: password.expose().to_owned(), totp };
        decode(self.post(&["api", "v1", "auth", "login"], &body).await?)
    }
}

/// The wire name of a category (`certificate`, `patient_entered`, ...).
pub fn category_name(category: api::Category) -> &'static str {
    match category {
        api::Category::Certificate => "certificate",
        api::Category::Image => "image",
        api::Category::Medication => "medication",
        api::Category::Observation => "observation",
        api::Category::Condition => "condition",
        api::Category::Procedure => "procedure",
        api::Category::Document => "document",
        api::Category::PatientEntered => "patient_entered",
        api::Category::Other => "other",
    }
}

/// Turns a JSON answer into a wire type; a mismatch means client and server disagree.
pub fn decode<T: DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value)
        .context("the server's answer has an unexpected shape (is the server another version?)")
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_envelope_reads_as_message_and_code() {
        let body = br#"{"error":{"code":"not_found","message":"record not found"}}"#;
        let failure = ApiFailure::from_body(StatusCode::NOT_FOUND, body);
        assert_eq!(failure.to_string(), "record not found (not_found)");
        assert_eq!(failure.status, 404);
    }

    #[test]
    fn answers_without_an_envelope_still_say_what_happened() {
        let failure = ApiFailure::from_body(StatusCode::BAD_GATEWAY, b"upstream down");
        assert_eq!(failure.to_string(), "the server answered 502 Bad Gateway: upstream down (http_502)");
        let failure = ApiFailure::from_body(StatusCode::INTERNAL_SERVER_ERROR, b"");
        assert_eq!(failure.to_string(), "the server answered 500 Internal Server Error (http_500)");
    }

    #[test]
    fn paths_are_joined_under_the_base_and_escaped() {
        let check = |server: &str, segments: &[&str], expected: &str| {
            let client = Client::new(server, None).unwrap();
            assert_eq!(client.url(segments).unwrap().as_str(), expected);
        };
        check("http://127.0.0.1:8080", &["api", "v1", "me"], "http://127.0.0.1:8080/api/v1/me");
        check("http://127.0.0.1:8080/", &["api", "v1", "records", "abc"], "http://127.0.0.1:8080/api/v1/records/abc");
        check("127.0.0.1:8080", &["healthz"], "http://127.0.0.1:8080/healthz");
        check("http://host/kura", &["api", "v1", "me"], "http://host/kura/api/v1/me");
        check("http://host", &["api", "v1", "records", "a b?c/d"], "http://host/api/v1/records/a%20b%3Fc%2Fd");
    }

    #[test]
    fn server_urls_must_be_plain_http() {
        assert!(Client::new("ftp://host", None).is_err());
        assert!(Client::new("https://host", None).is_err());
    }

    #[test]
    fn debug_does_not_show_the_token() {
        let client = Client::new("http://host", Some(Secret::new("tok-123"))).unwrap();
        assert!(!format!("{client:?}").contains("tok-123"));
    }
}
