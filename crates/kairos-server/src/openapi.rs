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
    let name_param =
        json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}});
    let definition = |what: &str, schema: &str| {
        let mut v = admin_get(
            &format!("The {what} definition"),
            json!([name_param.clone()]),
        );
        v["put"] = json!({"summary": format!("Create or replace a {what}; checked when saved (400 invalid_definition with line:column and the field path); profiles are backfilled in the background"),
            "security": [{"adminToken": []}], "parameters": [name_param.clone()],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": schema}}}},
            "responses": {"200": {"description": "Saved; warnings and backfill progress"}, "400": {"description": "Invalid definition", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}});
        v["delete"] = json!({"summary": format!("Delete a {what}"), "security": [{"adminToken": []}], "parameters": [name_param.clone()],
            "responses": {"200": {"description": "Deleted"}, "404": {"description": "Not found"}}});
        v
    };
    paths.insert(
        "/v1/scores".into(),
        admin_get("Every score definition", json!([])),
    );
    paths.insert(
        "/v1/scores/{name}".into(),
        definition("score", "#/components/schemas/ScoreDef"),
    );
    paths.insert(
        "/v1/segments".into(),
        admin_get(
            "Every segment with its size, and backfill progress",
            json!([]),
        ),
    );
    paths.insert(
        "/v1/segments/{name}".into(),
        definition("segment", "#/components/schemas/SegmentDef"),
    );
    paths.insert(
        "/v1/segments/{name}/members".into(),
        admin_get("Members of a segment in profile id order, paged", json!([name_param.clone(),
            {"name": "after", "in": "query", "schema": {"type": "string"}}, {"name": "limit", "in": "query", "schema": {"type": "integer"}}])),
    );
    paths.insert(
        "/v1/segments/{name}/changes".into(),
        admin_get("Enter and exit records of a segment after a cursor (poll with `next`)", json!([name_param.clone(),
            {"name": "since", "in": "query", "schema": {"type": "integer"}, "description": "seq of the last change seen"},
            {"name": "limit", "in": "query", "schema": {"type": "integer"}}])),
    );
    paths.insert(
        "/v1/backfill".into(),
        admin_get(
            "Progress of bringing profiles up to new definitions",
            json!([]),
        ),
    );
    paths.insert(
        "/v1/profiles/{id}/scores".into(),
        admin_get(
            "Every score, tier and membership of a profile, and its recent changes",
            id_param_for_scores(),
        ),
    );
    let mut with_name = id_param_for_scores();
    if let Some(a) = with_name.as_array_mut() {
        a.push(name_param.clone());
    }
    paths.insert(
        "/v1/profiles/{id}/scores/{name}".into(),
        admin_get("A score explained: value, tier, each rule's decayed contribution (biggest first) and the trend 1, 7 and 30 days ago", with_name),
    );
    paths.insert(
        "/v1/campaigns".into(),
        admin_get("Every campaign with its definition", json!([])),
    );
    paths.insert(
        "/v1/campaigns/{name}".into(),
        definition("campaign", "#/components/schemas/CampaignDef"),
    );
    paths.insert(
        "/v1/campaigns/{name}/report".into(),
        admin_get("Per variant: sends, deliveries, opens, clicks, conversions and revenue with 95% intervals; each variant against the control and the holdout (two-proportion z-test, probability to beat), and the winner once significant", json!([name_param.clone()])),
    );
    paths.insert(
        "/v1/campaigns/{name}/changes".into(),
        admin_get("Every decision (entered, queued, deferred, suppressed with reason, exited, holdout) and engagement of a campaign after a cursor", json!([name_param.clone(),
            {"name": "since", "in": "query", "schema": {"type": "integer"}}, {"name": "limit", "in": "query", "schema": {"type": "integer"}}])),
    );
    let mut messaging = admin_get(
        "Caps per channel and quiet hours for every campaign",
        json!([]),
    );
    messaging["put"] = json!({"summary": "Replace the messaging rules; checked when saved", "security": [{"adminToken": []}],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MessagingDef"}}}},
        "responses": {"200": {"description": "Saved"}, "400": {"description": "Invalid", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}});
    paths.insert("/v1/messaging".into(), messaging);
    paths.insert(
        "/v1/templates".into(),
        admin_get("Every message template", json!([])),
    );
    let mut template = admin_get("A message template", json!([name_param.clone()]));
    template["put"] = json!({"summary": "Create or replace a template (Liquid); one that does not parse is refused (400 invalid_template naming the part, with line and column)",
        "security": [{"adminToken": []}], "parameters": [name_param.clone()],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Template"}}}},
        "responses": {"200": {"description": "Saved"}, "400": {"description": "Does not parse", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}});
    template["delete"] = json!({"summary": "Delete a template", "security": [{"adminToken": []}], "parameters": [name_param.clone()],
        "responses": {"200": {"description": "Deleted"}, "404": {"description": "Not found"}}});
    paths.insert("/v1/templates/{name}".into(), template);
    paths.insert(
        "/v1/templates/{name}/preview".into(),
        json!({"post": {"summary": "Render a template for a profile (`profile`: id or userId) or sample `data`, with the trigger `event`; lists the variables that were missing",
            "security": [{"adminToken": []}], "parameters": [name_param.clone()],
            "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
                "profile": {"type": "string"}, "data": {"type": "object"}, "event": {"type": "object"}}}}}},
            "responses": {"200": {"description": "subject, html, text and missing"}}}}),
    );
    paths.insert(
        "/v1/outbox".into(),
        admin_get(
            "Messages waiting to be delivered or retried",
            json!([{"name": "limit", "in": "query", "schema": {"type": "integer"}}]),
        ),
    );
    paths.insert(
        "/v1/outbox/dead".into(),
        admin_get("Messages that ran out of attempts or failed permanently, with the last error", json!([
            {"name": "after", "in": "query", "schema": {"type": "string"}}, {"name": "limit", "in": "query", "schema": {"type": "integer"}}])),
    );
    paths.insert(
        "/v1/outbox/dead/{id}/redrive".into(),
        json!({"post": {"summary": "Put a dead message back in the outbox, due now", "security": [{"adminToken": []}],
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "Re-driven"}, "404": {"description": "No such dead message"}}}}),
    );
    paths.insert(
        "/v1/messages/{id}".into(),
        admin_get(
            "Where one message is: scheduled, failed (retrying), sent or dead",
            json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]),
        ),
    );
    paths.insert(
        "/v1/unsubscribe".into(),
        json!({"get": {"summary": "The signed link in every marketing message: a confirmation page (a GET changes nothing: mail scanners fetch links) whose button POSTs", "parameters": [{"name": "token", "in": "query", "required": true, "schema": {"type": "string"}}], "responses": {"200": {"description": "An HTML confirmation"}}},
               "post": {"summary": "Unsubscribe from that list at once; also RFC 8058 one-click (List-Unsubscribe-Post)", "parameters": [{"name": "token", "in": "query", "required": true, "schema": {"type": "string"}}], "responses": {"200": {"description": "An HTML confirmation"}}}}),
    );
    let name =
        json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}});
    let post = |summary: &str, body: Option<Value>, ok: &str| {
        let mut op = json!({"summary": summary, "security": [{"adminToken": []}], "parameters": [name.clone()],
            "responses": {"200": {"description": ok}, "404": {"description": "No such model or version"}}});
        if let Some(b) = body {
            op["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": b}}});
        }
        json!({"post": op})
    };
    paths.insert(
        "/v1/models".into(),
        admin_get(
            "Every model: versions, the active one, headline metrics",
            json!([]),
        ),
    );
    paths.insert(
        "/v1/models/{name}".into(),
        admin_get("A model's versions (label, learner, metrics against the rule scores) and its monitoring status", json!([name.clone()])),
    );
    for (path, what) in [
        ("/v1/models/{name}/versions/{version}/report", "The evaluation report of a version (JSON: metrics, deciles, calibration, curves, importance, folds)"),
        ("/v1/models/{name}/versions/{version}/report.html", "The same report as a page with ROC, precision-recall, calibration and gains plots"),
    ] {
        paths.insert(
            path.into(),
            admin_get(what, json!([name.clone(), {"name": "version", "in": "path", "required": true, "schema": {"type": "integer"}}])),
        );
    }
    paths.insert(
        "/v1/models/{name}/activate".into(),
        post("Serve this version from the next event on, without a restart", Some(json!({"type": "object", "required": ["version"], "properties": {"version": {"type": "integer"}}})), "Active"),
    );
    paths.insert(
        "/v1/models/{name}/rollback".into(),
        post(
            "Serve the version before the active one",
            None,
            "Rolled back",
        ),
    );
    paths.insert(
        "/v1/models/{name}/deactivate".into(),
        post("Stop serving the model", None, "Not served"),
    );
    let mut train = post(
        "Train a new version on the stored history in the background (the body is a model spec: label, horizon, every, learner, calibration, tiers, hybrid, test_share, cv_folds, gbdt, logistic, ftrl; empty = the configured one)",
        Some(json!({"$ref": "#/components/schemas/ModelSpec"})),
        "",
    );
    train["post"]["parameters"] =
        json!([name.clone(), {"name": "activate", "in": "query", "schema": {"type": "boolean"}}]);
    train["post"]["responses"] =
        json!({"202": {"description": "Started; follow /v1/models/{name}/training"}});
    paths.insert("/v1/models/{name}/train".into(), train);
    paths.insert(
        "/v1/models/{name}/training".into(),
        admin_get("Progress of the training this server runs: running (people replayed of total), done (version, metrics) or failed (why)", json!([name.clone()])),
    );
    paths.insert(
        "/v1/models/{name}/monitoring".into(),
        admin_get("Drift of the served version (population stability of each feature and of the score) and its AUC on labels that matured since activation", json!([name.clone()])),
    );
    paths.insert(
        "/v1/models/monitor".into(),
        json!({"post": {"summary": "Run a monitoring round now: collect matured labels, update online learners, measure drift", "security": [{"adminToken": []}], "responses": {"200": {"description": "Each served model's status"}}}}),
    );
    paths.insert(
        "/v1/profiles/{id}/predictions".into(),
        admin_get(
            "Each served model's probability for this person now, tier, hybrid score, and the top feature contributions (TreeSHAP, or coefficient x value)",
            json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}, {"name": "top", "in": "query", "schema": {"type": "integer", "description": "contributions to list; 0 = all"}}]),
        ),
    );
    paths.insert(
        "/v1/profiles/{id}/send-time".into(),
        admin_get(
            "The best moment to reach this person within the window (and the runner-up), with the expected engagement probability and how much of the estimate is their own history vs the prior",
            json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}, {"name": "within", "in": "query", "schema": {"type": "string", "description": "1h to 30d; default 24h"}}]),
        ),
    );
    let mut priors = admin_get(
        "The population's and each segment's engagement hours (the priors)",
        json!([]),
    );
    priors["post"] = json!({"summary": "Recompute the priors now (they refresh every 10 minutes)", "security": [{"adminToken": []}], "responses": {"200": {"description": "The new priors"}}});
    paths.insert("/v1/send-time/priors".into(), priors);
    paths.insert(
        "/v1/send-time/receptive".into(),
        admin_get(
            "The micro-audience receptive now: people (in a segment, or anyone) whose current local hour is at least min_lift times an average hour for them; paged",
            json!([{"name": "segment", "in": "query", "schema": {"type": "string"}}, {"name": "min_lift", "in": "query", "schema": {"type": "number"}},
                   {"name": "limit", "in": "query", "schema": {"type": "integer"}}, {"name": "after", "in": "query", "schema": {"type": "string"}}]),
        ),
    );
    let recs_params = |id: &str| {
        json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": id},
               {"name": "n", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 50, "default": 6}},
               {"name": "context", "in": "query", "schema": {"type": "string", "enum": ["cart", "browse"]},
                "description": "cart: complements of the cart's products (abandoned-cart emails; browse when the cart is empty); browse: more like the person's recent products"},
               {"name": "method", "in": "query", "schema": {"type": "string", "enum": ["hybrid", "item_knn", "content", "popularity"], "default": "hybrid"}}])
    };
    paths.insert(
        "/v1/profiles/{id}/recommendations".into(),
        json!({"get": {"summary": "Products to recommend to this person, best first, each with its score and reason (co-purchase, co-cart or co-view of one of their products, similar attributes, popular in a category, popular, trending); never out of stock, in the cart or just bought",
            "security": [{"adminToken": []}], "parameters": recs_params("Kairos id (p_…) or a userId"),
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Recommendations"}}}},
                          "400": {"description": "A parameter is invalid (the error names it)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                          "404": {"description": "No such profile", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}}}),
    );
    paths.insert(
        "/v1/catalog/items/{id}/recommendations".into(),
        json!({"get": {"summary": "Products to show with this product (context=cart: bought and carted with it; browse: viewed with it and like it)",
            "security": [{"adminToken": []}], "parameters": recs_params("product id"),
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Recommendations"}}}},
                          "404": {"description": "The model does not know the product", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}}}),
    );
    let item_id = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 200}}]);
    let mut item = admin_get("One catalog item", item_id.clone());
    item["put"] = json!({"summary": "Create or replace a catalog item (validated; errors name the field)", "security": [{"adminToken": []}], "parameters": item_id.clone(),
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CatalogItem"}}}},
        "responses": {"200": {"description": "Stored durably; `created` says whether it is new"}}});
    item["delete"] = json!({"summary": "Remove a catalog item", "security": [{"adminToken": []}], "parameters": item_id,
        "responses": {"200": {"description": "Removed"}, "404": {"description": "No such item"}}});
    paths.insert("/v1/catalog/items/{id}".into(), item);
    let mut items = admin_get(
        "Catalog items in id order, paged (`next` is the `after` of the next page)",
        json!([{"name": "after", "in": "query", "schema": {"type": "string"}}, {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}]),
    );
    items["post"] = json!({"summary": "Bulk import: a JSON array of items, {\"items\": [...]}, or JSON lines (up to 100,000 items, 32 MB); invalid items are rejected one by one with their index and reason, the rest stored in one fsync",
        "security": [{"adminToken": []}],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/CatalogItem"}}}, "application/x-ndjson": {"schema": {"type": "string"}}}},
        "responses": {"200": {"description": "`stored` and `rejected` ([{index, id, field, error}])"}}});
    paths.insert("/v1/catalog/items".into(), items);
    paths.insert(
        "/v1/recommendations/status".into(),
        admin_get("The recommendation model: log cursor, events read (of which events_fed came from the writer's durable groups, not the log), feed_gaps (times the log was read for events the feed missed), interactions folded, the last build and its duration, the settings", json!([])),
    );
    paths.insert(
        "/v1/recommendations/rebuild".into(),
        json!({"post": {"summary": "Read the event log to its end and rebuild the similarities now (they rebuild in the background every rebuild_interval_secs)", "security": [{"adminToken": []}],
            "responses": {"200": {"description": "The status after the rebuild"}}}}),
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
    let mut doc = json!({
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
                "ScoreDef": {"type": "object", "required": ["rules"], "additionalProperties": false, "properties": {
                    "description": {"type": "string"},
                    "rules": {"type": "array", "items": {"type": "string"}, "description": "when <condition> then +<points> [at most <n> times per <duration>]"},
                    "min": {"type": "number"}, "max": {"type": "number"},
                    "half_life": {"type": "string", "examples": ["14d"]},
                    "tiers": {"type": "string", "examples": ["cold < 30 <= warm < 70 <= hot"]}}},
                "SegmentDef": {"type": "object", "required": ["rule"], "additionalProperties": false, "properties": {
                    "description": {"type": "string"},
                    "rule": {"type": "string", "examples": ["did(\"Added to Cart\", within: 2h) and not did(\"Order Completed\", since: \"Added to Cart\")"]},
                    "priority": {"type": "integer", "description": "1 is the highest; decides the primary segment"}}},
                "CampaignDef": {"type": "object", "required": ["trigger"], "additionalProperties": false, "description": "See docs/campaigns.md", "properties": {
                    "description": {"type": "string"}, "enabled": {"type": "boolean"},
                    "trigger": {"type": "object", "properties": {"event": {"type": "string"}, "segment": {"type": "string"}, "score": {"type": "string"}, "tier": {"type": "string"}, "schedule": {"type": "string"}, "timezone": {"type": "string"}}},
                    "wait": {"type": "string", "examples": ["30m"]}, "wait_until": {"type": "string"}, "exit": {"type": "string", "examples": ["did(\"Order Completed\", since: trigger)"]},
                    "template": {"type": "string"}, "variants": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "template": {"type": "string"}, "weight": {"type": "number"}}}},
                    "steps": {"type": "array", "items": {"type": "object"}},
                    "channel": {"type": "string", "examples": ["email", "webhook:shop"]}, "purpose": {"type": "string", "enum": ["marketing", "product", "transactional"]},
                    "priority": {"type": "integer"}, "caps": {"type": "array", "items": {"type": "string"}, "examples": [["1 per 1d"]]},
                    "holdout": {"type": "number"}, "reentry": {"type": "string"}, "quiet_hours": {"type": "boolean"},
                    "conversion": {"type": "object", "properties": {"event": {"type": "string"}, "within": {"type": "string"}}}}},
                "MessagingDef": {"type": "object", "additionalProperties": false, "properties": {
                    "caps": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}, "examples": [{"email": ["1 per 4h", "3 per 1d", "10 per 7d"]}]},
                    "quiet_hours": {"type": "string", "examples": ["21:00-08:00"]}, "default_timezone": {"type": "string"}}},
                "Template": {"type": "object", "required": ["subject"], "additionalProperties": false, "properties": {
                    "subject": {"type": "string"}, "html": {"type": "string"}, "text": {"type": "string"}, "description": {"type": "string"}}},
                "ModelSpec": {"type": "object", "properties": {
                    "label": {"type": "string", "description": "rule true when the outcome happened within the horizon, e.g. did(\"Order Completed\", within: 7d)"},
                    "horizon": {"type": "string", "description": "duration, e.g. 7d"},
                    "every": {"type": "string", "description": "cut-off spacing, e.g. 3d"},
                    "learner": {"type": "string", "enum": ["gbdt", "logistic", "ftrl"]},
                    "calibration": {"type": "string", "enum": ["platt", "isotonic", "none"]},
                    "tiers": {"type": "object", "properties": {"medium": {"type": "number"}, "high": {"type": "number"}}},
                    "hybrid": {"type": "object", "properties": {"score": {"type": "string"}, "score_weight": {"type": "number"}, "model_weight": {"type": "number"}}},
                    "test_share": {"type": "number"}, "cv_folds": {"type": "integer"},
                    "gbdt": {"type": "object"}, "logistic": {"type": "object"}, "ftrl": {"type": "object"}}},
                "Error": {"type": "object", "properties": {"success": {"const": false}, "error": {"type": "object", "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}}}}}
            }
        }
    });
    if let (Some(Value::Object(schemas)), Value::Object(more)) =
        (doc.pointer_mut("/components/schemas"), recs_schemas())
    {
        schemas.extend(more);
    }
    doc
}

fn id_param_for_scores() -> Value {
    json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "Kairos id (p_…) or a userId"}])
}

/// Schemas of the catalog and recommendation endpoints (kept apart: one `json!` of the
/// whole document would pass the macro's recursion limit).
fn recs_schemas() -> Value {
    json!({
                "CatalogItem": {"type": "object", "required": ["title"], "additionalProperties": false, "properties": {
                    "id": {"type": "string", "maxLength": 200, "description": "optional in PUT (the path's id); required in bulk (or product_id)"},
                    "product_id": {"type": "string"}, "title": {"type": "string"}, "name": {"type": "string", "description": "alias of title (Segment's name)"},
                    "category": {"type": "string"}, "brand": {"type": "string"}, "price": {"type": "number", "minimum": 0},
                    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 64}, "in_stock": {"type": "boolean", "default": true},
                    "image_url": {"type": "string", "format": "uri"}, "url": {"type": "string", "format": "uri"}}},
                "Recommendations": {"type": "object", "properties": {
                    "context": {"type": "string", "enum": ["cart", "browse"]},
                    "items": {"type": "array", "items": {"type": "object", "properties": {
                        "id": {"type": "string"}, "product_id": {"type": "string"}, "title": {"type": "string"}, "name": {"type": "string"},
                        "category": {"type": "string"}, "brand": {"type": "string"}, "price": {"type": "number"}, "image_url": {"type": "string"}, "url": {"type": "string"},
                        "score": {"type": "number"},
                        "reason": {"type": "object", "properties": {"source": {"type": "string", "enum": ["co_purchase", "co_cart", "co_view", "similar", "popular_in_category", "popular", "trending"]},
                            "with": {"type": "string"}, "to": {"type": "string"}, "category": {"type": "string"}}},
                        "reason_text": {"type": "string"}}}},
                    "model": {"type": "object", "properties": {"built_at": {"type": ["string", "null"]}, "products": {"type": "integer"}, "people": {"type": "integer"}, "caught_up": {"type": "boolean"}}}}}
    })
}

pub async fn handler() -> Json<Value> {
    Json(document())
}
