//! Fuzzing the FHIR mapper with proptest: arbitrary JSON and mutated UK Core fixtures through
//! `translate` and `translate_bundle` never panic; whatever is emitted is a valid event, and
//! every issue names a FHIRPath expression or none.
//! `PROPTEST_CASES=100000 cargo test -p handover-adapters --release fhir_props` searches longer.

use handover_adapters::fhir::{translate, translate_bundle, FhirContext};
use handover_events::{Event, Timestamp};
use proptest::prelude::*;
use serde_json::Value;

fn fixtures() -> Vec<Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/fhir");
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect()
}

fn ctx() -> FhirContext {
    FhirContext::new("RX1", Timestamp::parse("2026-11-22T09:00:00Z").unwrap())
}

fn check(v: &Value) {
    let outcome = if v.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
        translate_bundle(v, &ctx()).map(|entries| {
            entries
                .into_iter()
                .flat_map(|e| e.events)
                .collect::<Vec<_>>()
        })
    } else {
        translate(v, &ctx())
    };
    match outcome {
        Ok(events) => {
            for e in events {
                // what the mapper emits must pass the same validation as any ingest
                Event::from_json(e.to_json()).unwrap();
            }
        }
        Err(issues) => assert!(!issues.is_empty(), "an error names at least one issue"),
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-zA-Z0-9 :/.#|-]{0,24}".prop_map(Value::String),
        prop::sample::select(vec![
            "Patient",
            "Encounter",
            "ServiceRequest",
            "EpisodeOfCare",
            "Bundle",
            "https://fhir.nhs.uk/Id/nhs-number",
            "9434765919",
            "in-progress",
            "finished",
            "2026-11-20T09:00:00Z"
        ])
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "resourceType",
                    "id",
                    "status",
                    "subject",
                    "identifier",
                    "system",
                    "value",
                    "period",
                    "start",
                    "end",
                    "entry",
                    "resource",
                    "fullUrl",
                    "meta",
                    "versionId",
                    "type",
                    "location",
                    "hospitalization",
                    "dischargeDisposition",
                    "coding",
                    "code",
                    "requester",
                    "performer"
                ]),
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

/// Replaces the value at a path of `v` (indices taken modulo each level's size) with `with`.
fn mutate(v: &mut Value, path: &[usize], with: Value) {
    match (path.split_first(), v) {
        (Some((i, rest)), Value::Object(m)) if !m.is_empty() => {
            let k = m.keys().nth(i % m.len()).cloned().unwrap();
            mutate(m.get_mut(&k).unwrap(), rest, with)
        }
        (Some((i, rest)), Value::Array(a)) if !a.is_empty() => {
            let n = a.len();
            mutate(&mut a[i % n], rest, with)
        }
        (_, v) => *v = with,
    }
}

proptest! {
    #[test]
    fn arbitrary_json_never_panics(v in json_value()) {
        check(&v);
    }

    #[test]
    fn mutated_fixtures_never_panic(which in 0usize..16, path in prop::collection::vec(0usize..8, 1..6), with in json_value()) {
        let all = fixtures();
        let mut v = all[which % all.len()].clone();
        mutate(&mut v, &path, with);
        check(&v);
    }
}
