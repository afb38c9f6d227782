//! OpenAPI links: which answer's id another operation takes. They tell a client (and
//! schemathesis' stateful phase) that the `id` a `POST /records` answers with is what
//! `GET /records/{id}` wants, so generated sequences reach real resources instead of 404s.

use serde_json::{Map, Value, json};

/// `(producer operationId, status, consumer operationId, consumer path parameter, where the value
/// is in the producer's answer)`. The link is named after the consumer.
pub(super) const LINKS: &[(&str, &str, &str, &str, &str)] = &[
    ("records_upload", "201", "records_get", "id", "$response.body#/id"),
    ("records_upload", "201", "records_ledger", "id", "$response.body#/id"),
    ("records_upload", "201", "records_transfer", "id", "$response.body#/id"),
    ("records_upload", "201", "records_copy", "id", "$response.body#/id"),
    ("records_upload", "201", "records_create_sealed_copy", "id", "$response.body#/id"),
    ("records_upload", "201", "records_move_record", "id", "$response.body#/id"),
    ("records_upload", "201", "records_delete", "id", "$response.body#/id"),
    ("records_copy", "201", "records_get", "id", "$response.body#/id"),
    ("records_copy", "201", "records_delete", "id", "$response.body#/id"),
    ("grants_create", "201", "grants_revoke", "id", "$response.body#/id"),
    ("delegations_create", "201", "delegations_accept", "id", "$response.body#/id"),
    ("delegations_create", "201", "delegations_revoke", "id", "$response.body#/id"),
    ("providers_create", "201", "providers_sync", "id", "$response.body#/id"),
    ("providers_create", "201", "providers_remove", "id", "$response.body#/id"),
    ("analysis_create", "201", "analysis_get", "id", "$response.body#/id"),
    ("research_create_study", "201", "research_review_study", "id", "$response.body#/id"),
    ("research_create_study", "201", "research_close_study", "id", "$response.body#/id"),
    ("research_create_requests", "201", "research_answer", "id", "$response.body#/requests/0/id"),
    ("research_create_requests", "201", "research_withdraw", "id", "$response.body#/requests/0/id"),
    ("peers_register", "201", "peers_remove", "name", "$response.body#/name"),
    ("inbox_create_webhook", "201", "inbox_list_webhook_deliveries", "id", "$response.body#/id"),
];

/// Adds [`LINKS`] to the answers of a finished document (operation ids already final).
pub(super) fn add(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for operation in item.values_mut() {
            let Some(id) = operation.get("operationId").and_then(Value::as_str).map(str::to_owned) else {
                continue;
            };
            for (_, status, consumer, parameter, source) in LINKS.iter().filter(|l| l.0 == id) {
                let Some(Value::Object(response)) = operation.pointer_mut(&format!("/responses/{status}")) else {
                    continue;
                };
                let links = response.entry("links").or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(links) = links {
                    links.insert(
                        (*consumer).to_owned(),
                        json!({"operationId": consumer, "parameters": {*parameter: source}}),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn operations(doc: &Value) -> Vec<&Value> {
        let paths = doc["paths"].as_object().expect("paths");
        paths.values().flat_map(|item| item.as_object().expect("item").values()).collect()
    }

    /// A link to an operation that does not exist, or through a parameter it does not take, or
    /// from a field its producer does not answer with, would send clients into the void.
    #[test]
    fn every_link_joins_a_real_answer_field_to_a_real_parameter() {
        let doc: Value = serde_json::from_str(&super::super::openapi_json()).expect("document");
        let ops = operations(&doc);
        let find = |id: &str| ops.iter().find(|op| op["operationId"] == id).copied();
        for (producer, status, consumer, parameter, source) in super::LINKS {
            let answer = &find(producer).unwrap_or_else(|| panic!("no {producer}"))["responses"][status];
            assert_eq!(answer["links"][consumer]["parameters"][parameter], *source, "{producer} {status}");
            let target = find(consumer).unwrap_or_else(|| panic!("no {consumer}"));
            let takes = target["parameters"].as_array().into_iter().flatten();
            assert!(takes.clone().any(|p| p["in"] == "path" && p["name"] == *parameter), "{consumer} {parameter}");
            // The field named after `#/` must be in the producer's schema.
            let schema_ref = answer["content"]["application/json"]["schema"]["$ref"].as_str().expect("schema");
            let schema = &doc["components"]["schemas"][schema_ref.rsplit('/').next().expect("name")];
            let field = source.trim_start_matches("$response.body#/").split('/').next().expect("field");
            assert!(schema["properties"].get(field).is_some(), "{producer} answers no {field}");
        }
    }
}
