//! Property tests ("fuzz targets") for the CloudEvents decoder, the code every untrusted
//! byte that reaches Handover goes through:
//!
//! - `arbitrary_bytes_never_panic`: any bytes into [`Event::from_json_slice`] and
//!   [`Event::from_stored`];
//! - `arbitrary_json_never_panics`: any JSON value (a recursive strategy biased towards
//!   CloudEvents attribute names) into [`Event::from_json`];
//! - `mutated_examples_never_panic_and_point_into_the_input`: the valid examples in
//!   `schemas/examples/` with fields dropped, replaced, retyped or added; the decoder either
//!   decodes (and then the normalised event round-trips) or names problems whose JSON
//!   Pointers exist in the input or are missing members of an object that does.
//!
//! The default case counts keep `cargo test -p handover-events --test fuzz` to a few
//! seconds. The longer mode:
//!
//! ```text
//! PROPTEST_CASES=200000 cargo test --release -p handover-events --test fuzz
//! ```
//!
//! A failure prints the minimal input and proptest saves its seed under
//! `crates/handover-events/tests/fuzz.proptest-regressions` (commit that file).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::OnceLock;

use handover_events::Event;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// The valid examples, as JSON values.
fn examples() -> &'static [Value] {
    static EXAMPLES: OnceLock<Vec<Value>> = OnceLock::new();
    EXAMPLES.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/examples");
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        let out: Vec<Value> = paths
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect();
        assert!(!out.is_empty(), "no examples in {}", dir.display());
        out
    })
}

/// Names the decoder cares about, so generated objects often hit real code paths.
const NAMES: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "sequence",
    "traceparent",
    "data",
    "data_base64",
    "encounter_id",
    "local_id",
    "nhs_number",
    "pathway",
    "site",
    "ward",
    "admitted_at",
    "discharge_ready_date",
    "referral_id",
    "x",
    "Bad-Name",
    "a/b",
    "t~1",
    "",
];

/// Strings the decoder parses specially, plus arbitrary ones.
fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1.0".to_string()),
        Just("handover.discharge.admitted.v1".to_string()),
        Just("handover.person.linked.v1".to_string()),
        Just("9434765919".to_string()),
        Just("2026-11-20T09:14:00Z".to_string()),
        Just("2026-11-20T09:14:00".to_string()),
        Just("2026-02-30".to_string()),
        Just("application/json; charset=utf-8".to_string()),
        Just("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string()),
        "[0-9]{0,12}",
        "[0-9T:+-Z]{0,30}",
        any::<String>(),
        "\\PC{0,600}",
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(NAMES).prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        interesting_string().prop_map(Value::String),
    ]
}

/// Any JSON value, up to a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((name(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// A value of a different JSON type from `v` (index chooses which).
fn retyped(v: &Value, choice: usize) -> Value {
    let candidates = [
        Value::Null,
        Value::Bool(true),
        Value::from(7),
        Value::from(-1.5),
        Value::String(String::new()),
        Value::String("x".into()),
        Value::Array(vec![v.clone()]),
        Value::Object(Map::new()),
    ];
    let others: Vec<&Value> = candidates
        .iter()
        .filter(|c| std::mem::discriminant(*c) != std::mem::discriminant(v))
        .collect();
    others[choice % others.len()].clone()
}

#[derive(Debug, Clone)]
enum Mutation {
    Drop,
    Replace(Value),
    Retype(usize),
    Add(String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        Just(Mutation::Drop),
        json_value().prop_map(Mutation::Replace),
        leaf().prop_map(Mutation::Replace),
        any::<usize>().prop_map(Mutation::Retype),
        (name(), json_value()).prop_map(|(k, v)| Mutation::Add(k, v)),
    ]
}

/// RFC 6901 escaping of one reference token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Every pointer to a member or element in `v` (not the root).
fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{at}/{}", escape(k));
                out.push(p.clone());
                pointers(x, &p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(x, &p, out);
            }
        }
        _ => {}
    }
}

/// Applies `m` at the `choice`-th location of `v` (objects for `Add`).
fn apply(v: &mut Value, m: &Mutation, choice: usize) {
    let mut all = Vec::new();
    pointers(v, "", &mut all);
    match m {
        Mutation::Add(k, x) => {
            let mut objects = vec![String::new()];
            objects.extend(
                all.into_iter()
                    .filter(|p| v.pointer(p).is_some_and(Value::is_object)),
            );
            let at = &objects[choice % objects.len()];
            if let Some(Value::Object(o)) = v.pointer_mut(at) {
                o.insert(k.clone(), x.clone());
            }
        }
        _ if all.is_empty() => {}
        _ => {
            let p = all[choice % all.len()].clone();
            let (parent, last) = p.rsplit_once('/').unwrap();
            let last = last.replace("~1", "/").replace("~0", "~");
            match m {
                Mutation::Drop => match v.pointer_mut(parent) {
                    Some(Value::Object(o)) => {
                        o.remove(&last);
                    }
                    Some(Value::Array(a)) => {
                        a.remove(last.parse::<usize>().unwrap());
                    }
                    _ => unreachable!("the parent of a member is a container"),
                },
                Mutation::Replace(x) => *v.pointer_mut(&p).unwrap() = x.clone(),
                Mutation::Retype(c) => {
                    let target = v.pointer_mut(&p).unwrap();
                    *target = retyped(target, *c);
                }
                Mutation::Add(..) => unreachable!(),
            }
        }
    }
}

/// The parent of a JSON Pointer (`""` for a top-level member).
fn parent(pointer: &str) -> Option<&str> {
    pointer.rsplit_once('/').map(|(p, _)| p)
}

/// Decodes `input` and checks the decoder's promises about it.
fn check_decode(input: &Value) -> Result<(), TestCaseError> {
    match Event::from_json(input.clone()) {
        Ok(e) => {
            // What Handover stores decodes to the same event, both ways in.
            let normal = e.to_json();
            let again = Event::from_json(normal.clone());
            prop_assert_eq!(again.as_ref(), Ok(&e));
            let stored = Event::from_stored(&e.to_json_vec());
            prop_assert_eq!(stored.as_ref(), Ok(&e));
            prop_assert_eq!(Event::from_json(normal.clone()).unwrap().to_json(), normal);
        }
        Err(errs) => {
            prop_assert!(!errs.0.is_empty(), "an error names at least one problem");
            for fe in &errs.0 {
                let resolves = input.pointer(&fe.pointer).is_some();
                let missing_member = parent(&fe.pointer)
                    .and_then(|p| input.pointer(p))
                    .is_some_and(Value::is_object);
                prop_assert!(
                    resolves || missing_member,
                    "pointer {:?} ({}) is neither in the input nor a member of an object in it: {}",
                    fe.pointer,
                    fe.message,
                    input
                );
                prop_assert!(!fe.message.is_empty());
            }
        }
    }
    Ok(())
}

#[test]
fn every_example_decodes_and_round_trips() {
    for ex in examples() {
        check_decode(ex).unwrap();
        assert!(Event::from_json(ex.clone()).is_ok(), "{ex}");
    }
}

#[test]
fn a_member_name_with_slash_or_tilde_is_escaped_in_the_pointer() {
    // An unknown attribute named `a/b` must be reported as `/a~1b` (RFC 6901), or a client
    // following the pointer lands on the wrong member.
    let mut ex = examples()[0].clone();
    ex.as_object_mut()
        .unwrap()
        .insert("a/b".into(), Value::from(1));
    check_decode(&ex).unwrap();
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Event::from_json_slice(&bytes);
        let _ = Event::from_stored(&bytes);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = Event::from_json_slice(text.as_bytes());
    }

    #[test]
    fn arbitrary_json_never_panics(v in json_value()) {
        check_decode(&v)?;
        let bytes = v.to_string().into_bytes();
        prop_assert_eq!(
            Event::from_stored(&bytes).ok(),
            Event::from_stored_general(&bytes).ok()
        );
    }

    #[test]
    fn arbitrary_envelope_never_panics(
        attrs in prop::collection::vec((name(), json_value()), 0..14),
        data in json_value(),
    ) {
        let mut m: Map<String, Value> = attrs.into_iter().collect();
        m.insert("data".into(), data);
        check_decode(&Value::Object(m))?;
    }

    #[test]
    fn mutated_examples_never_panic_and_point_into_the_input(
        which in any::<usize>(),
        mutations in prop::collection::vec((mutation(), any::<usize>()), 1..4),
    ) {
        let ex = examples();
        let mut v = ex[which % ex.len()].clone();
        for (m, choice) in &mutations {
            apply(&mut v, m, *choice);
        }
        check_decode(&v)?;
        // The stored-event fast path accepts exactly what the general path accepts, and
        // decodes it to the same event.
        let bytes = v.to_string().into_bytes();
        prop_assert_eq!(
            Event::from_stored(&bytes).ok(),
            Event::from_stored_general(&bytes).ok()
        );
    }
}
