//! Tidy: every adapter file is registered, documented and tested, so "one file plus one
//! registry line" stays true.

use std::path::PathBuf;

use handover_adapters::ADAPTERS;

/// Files in src/ that are not adapters.
const NOT_ADAPTERS: &[&str] = &["lib.rs", "conformance.rs"];

/// Adapters served by another crate's listener (FHIR is served by the HTTP API).
const HOSTED_ELSEWHERE: &[&str] = &["fhir"];

#[test]
fn every_adapter_file_is_registered_documented_and_tested() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let tests_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut all_tests = String::new();
    for dir in [
        tests_dir.join("it"),
        tests_dir.clone(),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/it"),
    ] {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.path().extension().is_some_and(|x| x == "rs") {
                    all_tests.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
    }
    let docs = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/adapters.md"),
    )
    .unwrap();
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let file = entry.file_name().into_string().unwrap();
        if !file.ends_with(".rs") || NOT_ADAPTERS.contains(&file.as_str()) {
            continue;
        }
        let name = file.trim_end_matches(".rs");
        let text = std::fs::read_to_string(entry.path()).unwrap();
        if !text.starts_with("//!") {
            problems.push(format!("src/{file} does not start with a //! doc"));
        }
        if !HOSTED_ELSEWHERE.contains(&name) && !text.contains("```toml") {
            problems.push(format!(
                "src/{file}'s doc has no TOML configuration example"
            ));
        }
        if !HOSTED_ELSEWHERE.contains(&name) && !ADAPTERS.iter().any(|a| a.name == name) {
            problems.push(format!("src/{file} is not registered in ADAPTERS (lib.rs)"));
        }
        let tested = text.contains("#[cfg(test)]") || all_tests.contains(&format!("{name}::"));
        if !tested {
            problems.push(format!(
                "src/{file} has no tests (no #[cfg(test)] and no test uses {name}::)"
            ));
        }
        if !docs.to_lowercase().contains(&format!("`{name}`"))
            && !docs.contains(&format!("{name}.rs"))
        {
            problems.push(format!("docs/adapters.md does not mention {name}"));
        }
    }
    for a in ADAPTERS {
        if !src.join(format!("{}.rs", a.name)).exists() {
            problems.push(format!(
                "ADAPTERS lists {} but src/{}.rs does not exist",
                a.name, a.name
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "adapter tidy check failed:\n{}",
        problems.join("\n")
    );
}
