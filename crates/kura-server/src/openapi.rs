//! The OpenAPI document. Paths come from the handlers' `#[utoipa::path]` through the router, so
//! a route and its documentation cannot drift apart.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

mod links;

#[derive(OpenApi)]
#[openapi(
    info(title = "Kura", description = "A medical information server on which patients own their records."),
    modifiers(&BearerAuth),
    tags(
        (name = "records", description = "Upload, read, transfer, copy, move and delete records"),
        (name = "grants", description = "Usage conditions set by owners"),
        (name = "delegations", description = "Agents and guardians acting for patients"),
        (name = "links", description = "Linking patient accounts to institutions' local ids"),
        (name = "auth", description = "Logins, machine tokens, second factor"),
        (name = "accounts", description = "Organisations, accounts, machine clients"),
        (name = "audit", description = "The hash-chained audit log"),
        (name = "research", description = "Studies, research search, usage requests, preferences"),
        (name = "analysis", description = "Analyses with disclosure control, standing statistics, participation"),
        (name = "providers", description = "External FHIR providers a patient links; Kura pulls their records"),
        (name = "inbox", description = "Notifications: inbox, live events, webhooks"),
        (name = "archives", description = "Removable media: encrypted, signed export archives, moving records to them, import"),
        (name = "peers", description = "Peer servers, move-in tokens and the signed endpoints of moves between servers"),
        (name = "system", description = "Health, metrics, this document"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// The document as JSON.
pub fn openapi_json() -> String {
    let (_, mut doc) = crate::routes::router(0).split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let Ok(mut value) = serde_json::to_value(&doc) else { return "{}".to_owned() };
    contract::complete(&mut value);
    links::add(&mut value);
    serde_json::to_string_pretty(&value).unwrap_or_else(|_| "{}".to_owned())
}

/// What the handlers' annotations leave to one place: operation ids unique across the API, the
/// raw bodies' real media types, and the error answers every route of a kind can give, as
/// shared responses (`components.responses`) so each status means the same everywhere.
mod contract {
    use serde_json::{Map, Value, json};

    /// Every error a route of some kind can answer, with the envelope every error carries.
    const SHARED: &[(&str, &str, &str)] = &[
        ("400", "BadRequest", "The request is malformed: a query parameter or the body does not parse."),
        ("401", "Unauthenticated", "Not authenticated: the credentials are missing, wrong or expired."),
        ("403", "Forbidden", "The caller is known but may not do this."),
        ("404", "NotFound", "Not found, or not visible to the caller: the two look the same."),
        (
            "409",
            "Conflict",
            "The request conflicts with the current state (already done, changed meanwhile, or not allowed in this state).",
        ),
        ("413", "BodyTooLarge", "The body is larger than the server accepts."),
        ("415", "UnsupportedMediaType", "The body's Content-Type is not one this operation accepts."),
        ("422", "InvalidInput", "The request parses but a value in its query or body is not valid for this operation."),
        ("503", "Busy", "The server is busy or not ready; retry after the time in Retry-After."),
    ];

    /// The media types `POST /api/v1/records` accepts (`kura_formats::format_for_content_type`).
    const UPLOAD_TYPES: &[&str] =
        &["application/fhir+json", "application/json", "application/dicom", "application/pdf"];

    pub fn complete(doc: &mut Value) {
        let responses = doc["components"]
            .as_object_mut()
            .map(|components| components.entry("responses").or_insert_with(|| json!({})));
        if let Some(Value::Object(shared)) = responses {
            for (_, name, description) in SHARED {
                shared.insert(
                    (*name).to_owned(),
                    json!({"description": description,
                           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}}),
                );
            }
        }
        let Some(paths) = doc["paths"].as_object_mut() else { return };
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else { continue };
            for (method, operation) in item.iter_mut() {
                if let Some(operation) = operation.as_object_mut() {
                    complete_operation(path, method, operation);
                }
            }
        }
    }

    fn complete_operation(path: &str, method: &str, operation: &mut Map<String, Value>) {
        let tag = operation["tags"][0].as_str().unwrap_or("api").to_owned();
        if let Some(id) = operation.get("operationId").and_then(Value::as_str)
            && !id.starts_with(&format!("{tag}_"))
        {
            operation.insert("operationId".into(), Value::String(format!("{tag}_{id}")));
        }
        if let Some(body) = operation.get_mut("requestBody").and_then(Value::as_object_mut) {
            raw_bodies(path, body);
        }
        let secured = operation.get("security").and_then(Value::as_array).is_some_and(|s| !s.is_empty());
        let signed_by_peer = path.starts_with("/api/v1/peer/");
        let has_body = operation.contains_key("requestBody");
        let has_query = params_in(operation, "query");
        let has_path = params_in(operation, "path");
        let changes_state = method != "get";
        let mut statuses: Vec<&str> = Vec::new();
        if has_body || has_query {
            statuses.push("400");
        }
        if secured || signed_by_peer {
            statuses.extend(["401", "403"]);
        }
        // A path names a resource; a body or query may name one too (a study, a grantee), and
        // each answers 404 when it does not exist.
        if has_path || has_body || has_query {
            statuses.push("404");
        }
        if changes_state && (secured || signed_by_peer) {
            statuses.push("409");
        }
        if has_body {
            statuses.extend(["413", "415"]);
        }
        // Well-formed but unacceptable values (a label not written system:code, a date range
        // the wrong way round) are 422, in a query as in a body.
        if has_body || has_query {
            statuses.push("422");
        }
        statuses.push("503");
        let Some(Value::Object(responses)) = operation.get_mut("responses") else { return };
        for (status, name, _) in SHARED {
            let documented_without_words = responses
                .get(*status)
                .is_some_and(|r| r.get("description").and_then(Value::as_str).unwrap_or("").is_empty());
            if statuses.contains(status) && !responses.contains_key(*status) || documented_without_words {
                responses.insert((*status).to_owned(), json!({"$ref": format!("#/components/responses/{name}")}));
            }
        }
        for (status, response) in responses.iter_mut() {
            if let Some(Value::String(description)) = response.get_mut("description")
                && description.is_empty()
            {
                *description = success_words(status).to_owned();
            }
        }
    }

    fn params_in(operation: &Map<String, Value>, place: &str) -> bool {
        operation
            .get("parameters")
            .and_then(Value::as_array)
            .is_some_and(|params| params.iter().any(|p| p["in"] == place))
    }

    /// Bodies the handlers take as raw bytes: their real media types, as binary strings.
    fn raw_bodies(path: &str, body: &mut Map<String, Value>) {
        let Some(Value::Object(content)) = body.get_mut("content") else { return };
        if content.remove("application/octet-stream").is_none() {
            return;
        }
        let binary = json!({"schema": {"type": "string", "format": "binary"}});
        if path == "/api/v1/records" {
            for media_type in UPLOAD_TYPES {
                content.insert((*media_type).to_owned(), binary.clone());
            }
        } else {
            content.insert("application/octet-stream".to_owned(), binary);
        }
    }

    fn success_words(status: &str) -> &'static str {
        match status {
            "200" => "OK",
            "201" => "Created",
            "204" => "Done; no content",
            "400" => "The request is malformed",
            "401" => "No valid credentials",
            "403" => "Not allowed",
            "404" => "Not found",
            "409" => "Conflicts with the current state",
            "410" => "Gone: no longer available",
            "413" => "Body too large",
            "415" => "Unsupported media type",
            "422" => "Invalid input",
            "429" => "Too many requests; retry after the time in Retry-After",
            "502" => "The other server did not answer as expected",
            "503" => "Busy or not ready; retry after the time in Retry-After",
            _ => "See the error envelope",
        }
    }
}
