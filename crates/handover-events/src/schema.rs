//! JSON Schemas (draft 2020-12) of the CloudEvents of each type, generated from the types.

use serde_json::{json, Map, Value};

use crate::catalogue::EventType;

/// The `$id` base of published schemas.
pub const SCHEMA_BASE: &str = "https://handover.example.org/schemas/";

/// The full CloudEvent schema of `t`: the envelope with `type` fixed and `data` typed.
pub fn event_schema(t: EventType) -> Value {
    let mut data = serde_json::to_value(t.data_schema()).unwrap_or(Value::Null);
    let defs = data
        .as_object_mut()
        .and_then(|o| {
            o.remove("$schema");
            o.remove("$defs")
        })
        .unwrap_or_else(|| Value::Object(Map::new()));
    if let Some(o) = data.as_object_mut() {
        o.remove("title");
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("{SCHEMA_BASE}{}.json", t.as_str()),
        "title": t.as_str(),
        "description": "A CloudEvents 1.0 event in JSON structured mode. Generated from the Rust types by `UPDATE_SCHEMAS=1 cargo test -p handover-events`; do not edit.",
        "type": "object",
        "required": ["specversion", "id", "source", "type", "time", "data"],
        "properties": {
            "specversion": { "const": "1.0" },
            "id": { "type": "string", "minLength": 1, "maxLength": 512, "description": "unique per source; derived deterministically from the source message where one exists" },
            "source": { "type": "string", "minLength": 1, "maxLength": 512, "description": "producing organisation and system, e.g. urn:ods:RX1:pas or urn:gss:E08000035:mosaic" },
            "type": { "const": t.as_str() },
            "subject": { "$ref": "#/$defs/NhsNumber" },
            "time": { "$ref": "#/$defs/Timestamp" },
            "datacontenttype": { "type": "string" },
            "dataschema": { "type": "string" },
            "sequence": { "type": "string" },
            "traceparent": { "type": "string", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}" },
            "tracestate": { "type": "string" },
            "data": data
        },
        "$defs": merge_defs(defs)
    })
}

fn merge_defs(defs: Value) -> Value {
    let mut m = match defs {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let mut gen = schemars::SchemaGenerator::default();
    for (name, schema) in [
        (
            "NhsNumber",
            <crate::nhs::NhsNumber as schemars::JsonSchema>::json_schema(&mut gen),
        ),
        (
            "Timestamp",
            <crate::time::Timestamp as schemars::JsonSchema>::json_schema(&mut gen),
        ),
    ] {
        m.entry(name.to_string())
            .or_insert_with(|| serde_json::to_value(schema).unwrap_or(Value::Null));
    }
    Value::Object(m)
}
