//! The JSON Schemas under `schemas/` are generated from the Rust types; this test fails when
//! they drift (regenerate with `UPDATE_SCHEMAS=1 cargo test -p handover-events`), and checks
//! that every example validates against its schema and round-trips through the types.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use handover_events::{schema::event_schema, Event, EventType};

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

#[test]
fn schemas_on_disk_match_the_types() {
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for t in EventType::ALL {
        let path = schemas_dir().join(format!("{}.json", t.as_str()));
        let want = serde_json::to_string_pretty(&event_schema(*t)).unwrap() + "\n";
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            if update {
                std::fs::write(&path, &want).unwrap();
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    // No schema file for a type that is not in the catalogue.
    for entry in std::fs::read_dir(schemas_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(t) = name.strip_suffix(".json") {
            assert!(
                EventType::parse(t).is_some(),
                "schemas/{name} is not a catalogue type"
            );
        }
    }
    assert!(
        stale.is_empty(),
        "schemas are stale, run `UPDATE_SCHEMAS=1 cargo test -p handover-events`: {stale:?}"
    );
}

#[test]
fn every_type_has_an_example_that_validates_and_round_trips() {
    for t in EventType::ALL {
        let name = format!("{}.json", t.as_str());
        let example: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(schemas_dir().join("examples").join(&name))
                .unwrap_or_else(|_| panic!("schemas/examples/{name} is missing")),
        )
        .unwrap();
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(schemas_dir().join(&name)).unwrap())
                .unwrap();
        let validator = jsonschema::draft202012::new(&schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&example)
            .map(|e| format!("{} {e}", e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");

        let event = Event::from_json(example.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(event.event_type(), *t);
        // the normalised form is what we emit: it must equal the example (which is normalised)
        // and validate against the schema too
        let emitted = event.to_json();
        assert_eq!(emitted, example, "{name} does not round-trip");
        assert!(validator.is_valid(&emitted));
        assert_eq!(Event::from_json(emitted).unwrap(), event);
    }
}
