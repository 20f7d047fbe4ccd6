//! Integration tests for handover-hl7: snapshots, fixtures and properties.
#![allow(clippy::unwrap_used, missing_docs)]

mod fixtures;
mod props;
mod snapshots;

use handover_hl7::Message;

/// Renders every non-empty leaf of a message as `PATH = "value"`, one per
/// line, using path syntax that [`Message::get`] accepts. Segment occurrence
/// and repetition indexes are shown only when there is more than one;
/// subcomponents only when a component has more than one.
pub fn dump(msg: &Message) -> String {
    use std::collections::HashMap;
    let mut out = String::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for seg in msg.all_segments() {
        let count = msg.segments(seg.name()).count();
        let occurrence = seen.entry(seg.name()).or_insert(0);
        *occurrence += 1;
        let seg_label = if count > 1 {
            format!("{}[{}]", seg.name(), occurrence)
        } else {
            seg.name().to_owned()
        };
        out.push_str(&seg_label);
        out.push('\n');
        for (fi, field) in seg.fields().iter().enumerate() {
            let reps = field.repetitions();
            for (ri, rep) in reps.iter().enumerate() {
                let rep_label = if reps.len() > 1 {
                    format!("[{}]", ri + 1)
                } else {
                    String::new()
                };
                for (ci, comp) in rep.components().iter().enumerate() {
                    let subs = comp.subcomponents();
                    for (si, sub) in subs.iter().enumerate() {
                        if sub.is_empty() {
                            continue;
                        }
                        let mut path = format!("{seg_label}-{}{rep_label}", fi + 1);
                        if rep.components().len() > 1 || subs.len() > 1 {
                            path.push_str(&format!(".{}", ci + 1));
                        }
                        if subs.len() > 1 {
                            path.push_str(&format!(".{}", si + 1));
                        }
                        // The dump doubles as a check of the path accessor.
                        assert_eq!(msg.get(&path), Some(sub.as_str()), "path {path}");
                        out.push_str(&format!("  {path} = {sub:?}\n"));
                    }
                }
            }
        }
    }
    out
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../tests/fixtures/hl7/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}
