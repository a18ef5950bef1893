//! The OpenAPI 3.1 description of the HTTP API, served at `/v1/openapi.json`.
//! Kept next to the routes and checked against them by a test.

use axum::Json;
use serde_json::{json, Value};

fn error_responses() -> Value {
    json!({
        "400": {"description": "Body not JSON, over a limit, or not the endpoint's shape", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "401": {"description": "Missing or unknown credentials", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "429": {"description": "Ingest queue full; retry after Retry-After seconds", "headers": {"Retry-After": {"schema": {"type": "integer"}}}, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "503": {"description": "Storage failure; nothing was acknowledged", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    })
}

fn ingest_op(summary: &str, body_schema: &str) -> Value {
    json!({
        "post": {
            "summary": summary,
            "security": [{"writeKey": []}],
            "requestBody": {"required": true, "content": {
                "application/json": {"schema": {"$ref": body_schema}},
                "text/plain": {"schema": {"$ref": body_schema}}
            }},
            "parameters": [{"name": "Content-Encoding", "in": "header", "schema": {"type": "string", "enum": ["gzip", "identity"]}}],
            "responses": {
                "200": {"description": "Durable (fsync'd) before this answer", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/IngestResult"}}}},
            }
        }
    })
}

fn admin_get(summary: &str, params: Value) -> Value {
    json!({"get": {"summary": summary, "security": [{"adminToken": []}], "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
                      "404": {"description": "Not found", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}}})
}

pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    paths.insert(
        "/v1/batch".into(),
        ingest_op(
            "Send a batch of Segment events",
            "#/components/schemas/Batch",
        ),
    );
    paths.insert(
        "/v1/import".into(),
        ingest_op("Alias of /v1/batch", "#/components/schemas/Batch"),
    );
    paths.insert(
        "/v1/b".into(),
        ingest_op(
            "Browser alias of /v1/batch (accepts text/plain)",
            "#/components/schemas/Batch",
        ),
    );
    for (long, short) in [
        ("track", "t"),
        ("identify", "i"),
        ("page", "p"),
        ("screen", "s"),
        ("group", "g"),
        ("alias", "a"),
    ] {
        paths.insert(
            format!("/v1/{long}"),
            ingest_op(
                &format!("Send one {long} call; an invalid event is a 400 naming the field"),
                "#/components/schemas/Event",
            ),
        );
        paths.insert(
            format!("/v1/{short}"),
            ingest_op(
                &format!("Browser alias of /v1/{long}"),
                "#/components/schemas/Event",
            ),
        );
    }
    let id_param = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "Kairos id (p_…) or a userId"}]);
    let page = json!([{"name": "after", "in": "query", "schema": {"type": "string"}}, {"name": "limit", "in": "query", "schema": {"type": "integer"}}]);
    paths.insert(
        "/v1/profiles".into(),
        admin_get(
            "Find a profile by userId, anonymousId or email; without them, list profiles",
            json!([
                {"name": "userId", "in": "query", "schema": {"type": "string"}},
                {"name": "anonymousId", "in": "query", "schema": {"type": "string"}},
                {"name": "email", "in": "query", "schema": {"type": "string"}},
                {"name": "after", "in": "query", "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer"}}
            ]),
        ),
    );
    let mut profile = admin_get(
        "A profile: identifiers, traits and computed state",
        id_param.clone(),
    );
    profile["delete"] = json!({"summary": "Erase the person: profile, events, identifiers, dedupe keys, dead letters; purges files",
        "security": [{"adminToken": []}],
        "parameters": [id_param[0].clone(), {"name": "suppress", "in": "query", "schema": {"type": "boolean"}, "description": "keep hashed identifiers so late events are dropped"}],
        "responses": {"200": {"description": "Erased"}, "404": {"description": "Not found"}}});
    paths.insert("/v1/profiles/{id}".into(), profile);
    let mut with_page = id_param.as_array().cloned().unwrap_or_default();
    with_page.extend(page.as_array().cloned().unwrap_or_default());
    paths.insert(
        "/v1/profiles/{id}/events".into(),
        admin_get(
            "The profile's events in event-time order, paged",
            Value::Array(with_page),
        ),
    );
    paths.insert(
        "/v1/profiles/{id}/export".into(),
        admin_get("Everything held about the person (GDPR access)", id_param),
    );
    paths.insert(
        "/v1/dead-letters".into(),
        admin_get("Rejected events with their reasons", page.clone()),
    );
    paths.insert(
        "/v1/events".into(),
        admin_get("The event log in arrival order", page),
    );
    paths.insert(
        "/v1/stats".into(),
        admin_get("Approximate counts and queue depth", json!([])),
    );
    paths.insert("/health".into(), json!({"get": {"summary": "Ready: the store is open and events are accepted", "responses": {"200": {"description": "OK"}}}}));
    paths.insert("/metrics".into(), json!({"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition format"}}}}));
    for v in paths.values_mut() {
        if let Some(post) = v.get_mut("post") {
            if let Some(r) = post.get_mut("responses").and_then(Value::as_object_mut) {
                if let Value::Object(errs) = error_responses() {
                    r.extend(errs);
                }
            }
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Kairos", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Real-time engagement scoring and personalization. Ingest is Segment-compatible."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "writeKey": {"type": "http", "scheme": "basic", "description": "write key as the user name, empty password (or writeKey in the body)"},
                "adminToken": {"type": "http", "scheme": "bearer"}
            },
            "schemas": {
                "Event": {"type": "object", "required": ["type"], "properties": {
                    "type": {"type": "string", "enum": ["identify", "track", "page", "screen", "group", "alias"]},
                    "messageId": {"type": "string"}, "userId": {"type": ["string", "number", "null"]},
                    "anonymousId": {"type": ["string", "number", "null"]}, "event": {"type": "string"},
                    "name": {"type": "string"}, "previousId": {"type": "string"}, "groupId": {"type": "string"},
                    "timestamp": {"type": "string", "format": "date-time"}, "sentAt": {"type": "string", "format": "date-time"},
                    "properties": {"type": "object"}, "traits": {"type": "object"}, "context": {"type": "object"}}},
                "Batch": {"type": "object", "required": ["batch"], "properties": {
                    "batch": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                    "sentAt": {"type": "string", "format": "date-time"}, "writeKey": {"type": "string"}, "context": {"type": "object"}}},
                "IngestResult": {"type": "object", "properties": {
                    "success": {"type": "boolean"}, "accepted": {"type": "integer"}, "duplicates": {"type": "integer"},
                    "suppressed": {"type": "integer"},
                    "rejected": {"type": "array", "items": {"type": "object", "properties": {
                        "index": {"type": "integer"}, "messageId": {"type": ["string", "null"]}, "error": {"type": "string", "description": "field: reason"}}}}}},
                "Error": {"type": "object", "properties": {"success": {"const": false}, "error": {"type": "object", "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}}}}}
            }
        }
    })
}

pub async fn handler() -> Json<Value> {
    Json(document())
}
