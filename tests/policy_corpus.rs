//! The HealthPolicy language against a corpus of invalid documents and the shipped examples.

#[path = "support/corpus.rs"]
mod corpus;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hemostat::policy::{HealthPolicy, load_bytes, load_paths, load_str};

fn corpus_dir() -> PathBuf {
    corpus::dir("invalid")
}

/// `file<TAB>line:col<TAB>message fragment` per line.
fn expectations() -> Vec<(String, u64, u64, String)> {
    corpus::expectations("invalid")
}

#[test]
fn every_invalid_document_fails_at_the_right_line_and_column_with_the_right_message() {
    let expected = expectations();
    assert!(
        expected.len() >= 40,
        "the corpus must hold at least 40 documents"
    );
    for (file, line, column, fragment) in &expected {
        let bytes = std::fs::read(corpus_dir().join(file)).unwrap();
        let started = Instant::now();
        let report = load_bytes(file, &bytes);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{file} took {:?}",
            started.elapsed()
        );
        assert!(!report.is_clean(), "{file} was accepted");
        assert!(
            report.diagnostics.iter().any(|d| d.file == *file
                && d.line == *line
                && d.column == *column
                && d.message.contains(fragment.as_str())),
            "{file}: expected {line}:{column} containing {fragment:?}, got {:#?}",
            report.diagnostics
        );
    }
}

#[test]
fn every_file_in_the_corpus_has_an_expectation() {
    let listed: Vec<String> = expectations().into_iter().map(|e| e.0).collect();
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            listed.contains(&name),
            "{name} has no line in invalid.expect"
        );
    }
}

#[test]
fn a_bad_document_never_takes_down_the_good_ones_in_the_same_file() {
    let bytes = std::fs::read(corpus_dir().join("second-document-bad.yaml")).unwrap();
    let report = load_bytes("second-document-bad.yaml", &bytes);
    let names: Vec<_> = report
        .policies
        .iter()
        .map(|p| p.policy.metadata.name.as_str())
        .collect();
    assert_eq!(names, ["bad"]);
    assert_eq!(report.diagnostics.len(), 1);
    assert_eq!(report.diagnostics[0].policy.as_deref(), Some("bad-two"));
}

fn examples() -> Vec<PathBuf> {
    vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")]
}

#[test]
fn the_shipped_examples_are_valid_and_cover_every_probe_and_action() {
    let report = load_paths(&examples());
    assert!(report.is_clean(), "{:#?}", report.diagnostics);
    assert!(report.policies.len() >= 5);
    let all: Vec<&HealthPolicy> = report.policies.iter().map(|p| &p.policy).collect();
    let probes = |f: fn(&HealthPolicy) -> bool| all.iter().any(|p| f(p));
    assert!(probes(|p| p.spec.probes.exit.is_some()));
    assert!(probes(|p| p.spec.probes.healthcheck.is_some()));
    assert!(probes(|p| p.spec.probes.oom_killed.is_some()));
    assert!(probes(|p| p.spec.probes.restart_loop.is_some()));
    assert!(probes(|p| p.spec.probes.cpu.is_some()));
    assert!(probes(|p| p.spec.probes.memory.is_some()));
    assert!(probes(|p| p.spec.probes.memory_leak.is_some()));
    for action in hemostat::model::decision::ActionKind::ALL {
        assert!(
            all.iter()
                .any(|p| p.spec.remediation.actions.contains(&action)),
            "no example allows {action}"
        );
    }
}

#[test]
fn the_original_defaults_example_equals_the_builtin_default_policy() {
    let report = load_paths(&examples());
    let original = report
        .policies
        .iter()
        .find(|p| p.policy.metadata.name == "original-defaults")
        .expect("policies/hemostat-default.yaml defines original-defaults");
    let builtin = hemostat::policy::builtin::default_policy();
    assert_eq!(original.policy.spec.probes, builtin.spec.probes);
    assert_eq!(original.policy.spec.remediation, builtin.spec.remediation);
    assert_eq!(original.policy.spec.selector, builtin.spec.selector);
}

#[test]
fn valid_policies_round_trip_through_yaml() {
    let report = load_paths(&examples());
    for loaded in &report.policies {
        let text = serde_saphyr::to_string(&loaded.policy).unwrap();
        let again = load_str("round-trip", &text);
        assert!(again.is_clean(), "{text}\n{:#?}", again.diagnostics);
        assert_eq!(again.policies[0].policy, loaded.policy, "{text}");
    }
}

#[test]
fn duplicate_names_across_files_name_both_places() {
    let dir = tempfile::tempdir().unwrap();
    let doc = std::fs::read_to_string(examples()[0].join("examples/observe-only.yaml")).unwrap();
    std::fs::write(dir.path().join("a.yaml"), &doc).unwrap();
    std::fs::write(dir.path().join("b.yml"), &doc).unwrap();
    let report = load_paths(&[dir.path()]);
    assert_eq!(report.policies.len(), 1);
    let d = &report.diagnostics[0];
    assert!(d.file.ends_with("b.yml"), "{d}");
    assert!(
        d.message
            .contains("duplicate policy name \"observe-everything\""),
        "{d}"
    );
    assert!(d.message.contains("a.yaml:6:3"), "{d}");
}

#[test]
fn a_ten_megabyte_file_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    let line = "# padding padding padding padding padding padding padding padding\n";
    std::fs::write(&big, line.repeat(10 * 1024 * 1024 / line.len() + 1)).unwrap();
    let started = Instant::now();
    let report = load_paths(&[&big]);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        report.diagnostics[0].message.contains("at most 8 MiB"),
        "{:?}",
        report.diagnostics
    );
}

#[test]
fn large_but_allowed_inputs_are_parsed_without_panic() {
    // Thousands of documents in one string: each is checked, none panics.
    let doc = std::fs::read_to_string(examples()[0].join("examples/observe-only.yaml")).unwrap();
    let mut text = String::new();
    for i in 0..2000 {
        text.push_str(&doc.replace("observe-everything", &format!("p{i}")));
        text.push_str("---\n");
    }
    let started = Instant::now();
    let report = load_str("many.yaml", &text);
    assert!(report.is_clean(), "{:?}", &report.diagnostics[..1]);
    assert_eq!(report.policies.len(), 2000);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

/// A tiny deterministic generator, so the hostile-input test is reproducible.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn hostile_inputs_never_panic() {
    let mut rng = XorShift(0x5eed_1234_abcd_ef01);
    let seed = std::fs::read(examples()[0].join("examples/web-api.yaml")).unwrap();
    let alphabet = b" \n\t:-[]{}&*!|>'\"#%@`,?0aZ\xff";
    for _ in 0..3000 {
        let mut bytes = seed.clone();
        for _ in 0..(rng.next() % 8 + 1) {
            let at = (rng.next() as usize) % bytes.len();
            match rng.next() % 3 {
                0 => bytes[at] = alphabet[(rng.next() as usize) % alphabet.len()],
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, alphabet[(rng.next() as usize) % alphabet.len()]),
            }
        }
        let _ = load_bytes("mutant.yaml", &bytes);
    }
    for len in [0usize, 1, 7, 100, 4096] {
        let noise: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let _ = load_bytes("noise.yaml", &noise);
    }
    let deep_map = format!(
        "apiVersion: hemostat.io/v1alpha1\nkind: HealthPolicy\nmetadata:\n  name: x\nspec:\n  selector: {}{}\n",
        "{a: ".repeat(10_000),
        "}".repeat(10_000)
    );
    assert!(!load_str("deep.yaml", &deep_map).is_clean());
}

#[test]
fn the_committed_json_schema_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/schema.json");
    let generated = hemostat::schema::policy_schema_json();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "policies/schema.json is out of date: run `UPDATE_GOLDEN=1 cargo test --test policy_corpus` and review the diff"
    );
}

#[test]
fn alert_channels_and_ai_analysis_load_without_a_warning_now_that_both_are_implemented() {
    let yaml = "apiVersion: hemostat.io/v1alpha1\nkind: HealthPolicy\nmetadata:\n  name: later\nspec:\n  selector:\n    matchLabels: {app: web}\n  probes:\n    exit: {}\n  analysis:\n    mode: ai\n  alerts:\n    channels:\n      - slack: {webhookUrlFrom: {env: SLACK_URL}}\n";
    let report = hemostat::policy::load_str("later.yaml", yaml);
    assert!(report.is_clean(), "{:?}", report.diagnostics);
    assert_eq!(report.policies.len(), 1, "the policy is loaded");
    let warnings: Vec<String> = report.warnings.iter().map(|w| w.as_warning()).collect();
    assert!(warnings.is_empty(), "{warnings:?}");
}
