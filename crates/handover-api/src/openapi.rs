//! `GET /openapi.json`: the OpenAPI 3.1 description of the HTTP API, generated from the code.
//!
//! OpenAPI 3.1 uses JSON Schema 2020-12, so the request and response schemas are the ones
//! generated from the Rust types (the event schemas under `schemas/` and the read models'
//! `JsonSchema` derives); the operations below are the router's routes (a test checks that
//! every route in [`crate::app`] is described here).

use handover_events::schema::event_schema;
use handover_events::EventType;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

/// The API's version as published in the document.
pub const API_VERSION: &str = "1.0.0";

fn schema_of<T: JsonSchema>(components: &mut Map<String, Value>) -> Value {
    let mut s =
        serde_json::to_value(schemars::SchemaGenerator::default().into_root_schema_for::<T>())
            .unwrap_or(Value::Null);
    let name = T::schema_name().to_string();
    if let Some(o) = s.as_object_mut() {
        o.remove("$schema");
        if let Some(Value::Object(defs)) = o.remove("$defs") {
            for (k, v) in defs {
                components.entry(k).or_insert(v);
            }
        }
    }
    components.insert(name.clone(), s);
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn problem() -> Value {
    json!({"description": "RFC 9457 problem details",
           "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

fn ok(schema: Value, description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut components = Map::new();
    let journey = schema_of::<handover_projections::view::JourneyView<'static>>(&mut components);
    let delays = schema_of::<crate::worklists::DelayWorklist>(&mut components);
    let brokerage = schema_of::<crate::worklists::BrokerageQueue>(&mut components);
    let flow = schema_of::<handover_projections::measures::FlowMeasures>(&mut components);
    let audit = schema_of::<handover_events::AuditRecord>(&mut components);
    // Every event type, as its own schema (the same documents as schemas/<type>.json).
    let mut event_refs = Vec::new();
    for t in EventType::ALL {
        let mut s = event_schema(*t);
        if let Some(o) = s.as_object_mut() {
            o.remove("$schema");
            o.remove("$id");
            if let Some(Value::Object(defs)) = o.remove("$defs") {
                for (k, v) in defs {
                    components.entry(k).or_insert(v);
                }
            }
        }
        components.insert(t.as_str().to_string(), s);
        event_refs.push(json!({"$ref": format!("#/components/schemas/{}", t.as_str())}));
    }
    components.insert("CloudEvent".into(), json!({"oneOf": event_refs}));
    components.insert(
        "Problem".into(),
        json!({"type": "object", "required": ["type", "title", "status", "detail"],
               "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                              "detail": {"type": "string"},
                              "errors": {"type": "array", "items": {"type": "object", "properties": {
                                  "pointer": {"type": "string", "description": "JSON Pointer into the request body"},
                                  "detail": {"type": "string"}}}}}}),
    );
    components.insert(
        "Accepted".into(),
        json!({"type": "object", "required": ["accepted", "duplicates", "events"],
               "properties": {"accepted": {"type": "integer"}, "duplicates": {"type": "integer"},
                              "events": {"type": "array", "items": {"type": "object", "properties": {
                                  "id": {"type": "string"}, "source": {"type": "string"},
                                  "sequence": {"type": "integer"}, "duplicate": {"type": "boolean"},
                                  "ignored": {"type": "array", "items": {"type": "string"},
                                              "description": "JSON Pointers into the event as sent of what is not kept: extension attributes, tracestate, a malformed traceparent, data members its type does not define (for data sent as data_base64: /data_base64 (decoded: /field))"}}}}}}),
    );
    components.insert(
        "OperationOutcome".into(),
        json!({"type": "object", "required": ["resourceType", "issue"],
               "properties": {"resourceType": {"const": "OperationOutcome"},
                              "issue": {"type": "array", "items": {"type": "object", "properties": {
                                  "severity": {"type": "string"}, "code": {"type": "string"},
                                  "diagnostics": {"type": "string"}, "expression": {"type": "array", "items": {"type": "string"}}}}}}}),
    );
    components.insert(
        "AuditPage".into(),
        json!({"type": "object", "properties": {"count": {"type": "integer"}, "records": {"type": "array", "items": audit}}}),
    );
    let reason = json!({"name": "Handover-Access-Reason", "in": "header", "required": true,
        "schema": {"type": "string", "enum": crate::auth::ACCESS_REASONS}});
    let nhs = json!({"name": "nhs_number", "in": "path", "required": true,
        "schema": {"type": "string", "pattern": "^[0-9]{10}$"}, "description": "10-digit NHS number (Modulus 11)"});
    let date = json!({"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
                      "description": "1900-01-01 to 2199-12-31"});
    // Worklist reads are for direct care unless another lawful reason is stated.
    let worklist_reason = json!({"name": "Handover-Access-Reason", "in": "header", "required": false,
        "schema": {"type": "string", "enum": crate::auth::ACCESS_REASONS, "default": "direct-care"}});
    let text = json!({"type": "string"});
    let fhir_body = json!({"required": true, "content": {"application/fhir+json": {"schema": {"type": "object"}},
                                                          "application/json": {"schema": {"type": "object"}}}});
    let fhir_ok = json!({"description": "stored durably (201) or all duplicates (200)",
                         "content": {"application/fhir+json": {"schema": {"type": "object"}}}});
    let fhir_err = json!({"description": "errors as an OperationOutcome",
                          "content": {"application/fhir+json": {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}});
    // FHIR R4 http.html: `_format` overrides `Accept`; `Prefer: return=` chooses the body.
    let fhir_format = json!({"name": "_format", "in": "query", "required": false,
        "schema": {"type": "string"}, "description": "json, or a FHIR JSON media type (anything else: 406)"});
    let fhir_prefer = json!({"name": "Prefer", "in": "header", "required": false,
        "schema": {"type": "string", "enum": ["return=minimal", "return=representation", "return=OperationOutcome"]}});
    let secured = json!([{"bearer": []}]);
    let doc = json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {"title": "Handover", "version": API_VERSION,
                 "description": "Discharge, referral, care-package and person-identity events shared between NHS trusts and councils. Errors are RFC 9457 problem details (FHIR: OperationOutcome)."},
        "components": {
            "schemas": Value::Object(components),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "A Handover token, or an access token (JWT) from an organisation's configured OpenID Connect identity provider. A refused JWT is 401 with WWW-Authenticate error=\"invalid_token\"; a valid one without exactly one Handover role is 403."}}
        },
        "security": secured,
        "paths": {
            "/v1/events": {"post": {
                "operationId": "publishEvents", "summary": "Publish one CloudEvent or a batch; 202 once durably stored",
                "requestBody": {"required": true, "content": {
                    "application/cloudevents+json": {"schema": {"$ref": "#/components/schemas/CloudEvent"}},
                    "application/cloudevents-batch+json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/CloudEvent"}}},
                    "application/json": {"schema": {"oneOf": [{"$ref": "#/components/schemas/CloudEvent"}, {"type": "array", "items": {"$ref": "#/components/schemas/CloudEvent"}}]}}}},
                "responses": {"202": ok(json!({"$ref": "#/components/schemas/Accepted"}), "stored durably"),
                              "400": problem(), "401": problem(), "403": problem(), "413": problem(), "415": problem(), "503": problem()}}},
            "/v1/persons/{nhs_number}/journey": {"get": {
                "operationId": "getJourney", "summary": "One person's shared picture (audited)",
                "parameters": [nhs, reason],
                "responses": {"200": ok(journey, "the journey"), "400": problem(), "401": problem(), "403": problem(), "404": problem(), "503": problem()}}},
            "/v1/worklists/discharge-delays": {"get": {
                "operationId": "getDischargeDelays", "summary": "People past their discharge ready date, longest first (rows audited)",
                "parameters": [query("site", "ODS site code", text.clone()), query("council", "GSS code", text.clone()),
                               query("pathway", "0-3", json!({"type": "integer", "minimum": 0, "maximum": 3})),
                               query("limit", "page size, 1-5000 (default 100)", json!({"type": "integer", "minimum": 1, "maximum": 5000, "default": 100})),
                               query("offset", "rows to skip (default 0)", json!({"type": "integer", "minimum": 0, "default": 0})),
                               worklist_reason.clone()],
                "responses": {"200": ok(delays, "the worklist"), "400": problem(), "401": problem(), "403": problem(), "503": problem()}}},
            "/v1/worklists/brokerage": {"get": {
                "operationId": "getBrokerageQueue", "summary": "Care packages not yet started (rows audited)",
                "parameters": [query("council", "GSS code", text.clone()), query("service_type", "service type code", text.clone()),
                               query("limit", "page size, 1-5000 (default 100)", json!({"type": "integer", "minimum": 1, "maximum": 5000, "default": 100})),
                               query("offset", "rows to skip (default 0)", json!({"type": "integer", "minimum": 0, "default": 0})),
                               worklist_reason],
                "responses": {"200": ok(brokerage, "the queue"), "400": problem(), "401": problem(), "403": problem(), "503": problem()}}},
            "/v1/measures/flow": {"get": {
                "operationId": "getFlowMeasures", "summary": "Flow and outcome measures (docs/measures.md)",
                "description": "The period is from..=to, at most ten years; without to, today; without from, the 28 days up to to.",
                "parameters": [query("from", "first day", date.clone()), query("to", "last day", date.clone()),
                               query("site", "ODS site code", text.clone()), query("council", "GSS code", text.clone())],
                "responses": {"200": ok(flow, "the measures"), "400": problem(), "401": problem(), "403": problem()}}},
            "/v1/audit": {"get": {
                "operationId": "getAudit", "summary": "Who viewed which record (auditor role)",
                "parameters": [query("nhs_number", "the person", text.clone()), query("user", "the token holder", text.clone()),
                               query("limit", "1-10000", json!({"type": "integer", "minimum": 1, "maximum": 10000}))],
                "responses": {"200": ok(json!({"$ref": "#/components/schemas/AuditPage"}), "audit records"), "400": problem(), "401": problem(), "403": problem(), "503": problem()}}},
            "/v1/admin/persons/{nhs_number}/erasure": {"post": {
                "operationId": "erasePerson", "summary": "Erase a person from the stream and every read model (admin role; recorded in the audit)",
                "parameters": [nhs.clone()],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["reason"],
                    "properties": {"reason": {"type": "string", "minLength": 1}}}}}},
                "responses": {"200": {"description": "erased", "content": {"application/json": {"schema": {"type": "object", "properties": {
                    "events_purged": {"type": "integer"}, "read_model_entries_removed": {"type": "integer"}, "person_keys": {"type": "integer"}}}}}},
                    "400": problem(), "401": problem(), "403": problem(), "409": problem(), "503": problem()}}},
            "/v1/admin/rebuild/{projection}": {
                "post": {"operationId": "startRebuild", "summary": "Rebuild a read model into a shadow and swap it in without downtime (admin role)",
                         "parameters": [{"name": "projection", "in": "path", "required": true, "schema": {"type": "string", "enum": ["journey"]}}],
                         "responses": {"202": {"description": "started"}, "401": problem(), "403": problem(), "404": problem(), "409": problem()}},
                "get": {"operationId": "rebuildStatus", "summary": "Progress of a rebuild (admin role)",
                        "parameters": [{"name": "projection", "in": "path", "required": true, "schema": {"type": "string", "enum": ["journey"]}}],
                        "responses": {"200": {"description": "position, target and state", "content": {"application/json": {"schema": {"type": "object"}}}}, "401": problem(), "403": problem(), "404": problem()}}},
            "/fhir/r4": {"post": {
                "operationId": "postFhirBundle", "summary": "FHIR R4 transaction or message Bundle (all or nothing), or batch Bundle (entry by entry)",
                "parameters": [fhir_format.clone(), fhir_prefer.clone()],
                "requestBody": fhir_body.clone(), "responses": {"200": fhir_ok.clone(), "201": fhir_ok.clone(), "400": fhir_err.clone(), "401": fhir_err.clone(), "403": fhir_err.clone(), "406": fhir_err.clone(), "413": fhir_err.clone(), "415": fhir_err.clone(), "503": fhir_err.clone()}}},
            "/fhir/r4/": {"post": {
                "operationId": "postFhirBundleAtBase", "summary": "The same as POST /fhir/r4 (for clients whose base URL ends in /)",
                "parameters": [fhir_format.clone(), fhir_prefer.clone()],
                "requestBody": fhir_body.clone(), "responses": {"200": fhir_ok.clone(), "400": fhir_err.clone(), "401": fhir_err.clone(), "403": fhir_err.clone(), "406": fhir_err.clone(), "413": fhir_err.clone(), "415": fhir_err.clone(), "503": fhir_err.clone()}}},
            "/fhir/r4/metadata": {"get": {
                "operationId": "getFhirCapabilityStatement", "summary": "The FHIR CapabilityStatement (a token of any role)",
                "parameters": [fhir_format.clone()],
                "responses": {"200": {"description": "a CapabilityStatement", "content": {"application/fhir+json": {"schema": {"type": "object"}}}}, "401": fhir_err.clone(), "406": fhir_err.clone()}}},
            "/fhir/r4/{resource_type}/{id}": {"put": {
                "operationId": "putFhirResource", "summary": "The FHIR update interaction, taken as POST /fhir/r4/{resource_type}: the body's id must be the URL's",
                "parameters": [{"name": "resource_type", "in": "path", "required": true,
                                "schema": {"type": "string", "enum": ["Encounter", "ServiceRequest", "EpisodeOfCare", "Patient"]}},
                               {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                               fhir_format.clone(), fhir_prefer.clone()],
                "requestBody": fhir_body.clone(), "responses": {"200": fhir_ok.clone(), "201": fhir_ok.clone(), "400": fhir_err.clone(), "401": fhir_err.clone(), "403": fhir_err.clone(), "404": fhir_err.clone(), "406": fhir_err.clone(), "413": fhir_err.clone(), "415": fhir_err.clone(), "503": fhir_err.clone()}}},
            "/fhir/r4/{resource_type}": {"post": {
                "operationId": "postFhirResource", "summary": "One FHIR R4 UK Core resource",
                "parameters": [{"name": "resource_type", "in": "path", "required": true,
                                "schema": {"type": "string", "enum": ["Encounter", "ServiceRequest", "EpisodeOfCare", "Patient"]}},
                               fhir_format.clone(), fhir_prefer.clone()],
                "requestBody": fhir_body.clone(), "responses": {"200": fhir_ok.clone(), "201": fhir_ok.clone(), "400": fhir_err.clone(), "401": fhir_err.clone(), "403": fhir_err.clone(), "404": fhir_err.clone(), "406": fhir_err.clone(), "413": fhir_err.clone(), "415": fhir_err.clone(), "503": fhir_err.clone()}},
              "put": {
                "operationId": "putFhirResourceConditional", "summary": "The FHIR conditional update (?identifier=<system>|<value>), taken as POST /fhir/r4/{resource_type}; without search parameters a 400",
                "parameters": [{"name": "resource_type", "in": "path", "required": true,
                                "schema": {"type": "string", "enum": ["Encounter", "ServiceRequest", "EpisodeOfCare", "Patient"]}},
                               {"name": "identifier", "in": "query", "required": true, "schema": {"type": "string"}},
                               fhir_format, fhir_prefer],
                "requestBody": fhir_body, "responses": {"200": fhir_ok.clone(), "201": fhir_ok, "400": fhir_err.clone(), "401": fhir_err.clone(), "403": fhir_err.clone(), "404": fhir_err.clone(), "406": fhir_err.clone(), "413": fhir_err.clone(), "415": fhir_err.clone(), "503": fhir_err}}},
            "/healthz": {"get": {"operationId": "healthz", "security": [], "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"operationId": "readyz", "security": [], "responses": {"200": {"description": "ready"}, "503": {"description": "not ready, with the reason"}}}},
            "/metrics": {"get": {"operationId": "metrics", "security": [], "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"operationId": "openapi", "security": [], "responses": {"200": {"description": "this document"}}}}
        }
    });
    // The generated schemas point into their own `$defs`, now hoisted into components.
    serde_json::from_str(
        &doc.to_string()
            .replace("\"#/$defs/", "\"#/components/schemas/"),
    )
    .unwrap_or(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_route_is_described_and_every_ref_resolves() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        // The router's routes, read from its source, /ui pages aside (they are HTML for people).
        let src = include_str!("lib.rs");
        let routes: Vec<&str> = src
            .split(".route(\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .filter(|r| !r.starts_with("/ui"))
            .collect();
        assert!(routes.len() >= 10, "{routes:?}");
        for r in &routes {
            assert!(paths.contains_key(*r), "route {r} is not in /openapi.json");
        }
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for piece in text.split("\"#/components/schemas/").skip(1) {
            let name = piece.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling $ref to {name}");
        }
        assert!(
            !text.contains("\"#/$defs/"),
            "a schema still points into $defs"
        );
    }
}
