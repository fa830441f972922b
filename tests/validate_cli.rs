//! `hemostat validate` and `hemostat schema` as a user runs them.

use std::path::Path;
use std::process::Command;

fn hemostat(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hemostat"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/examples")
}

#[test]
fn validate_reports_only_the_bad_file_and_exits_1_and_json_gives_the_same_facts() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(examples()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let bad = "apiVersion: hemostat.io/v1alpha1\nkind: HealthPolicy\nmetadata:\n  name: broken\nspec:\n  selector: {matchNames: [\"x-*\"]}\n  probes:\n    cpu: {abovePercent: 250}\n";
    std::fs::create_dir(dir.path().join("nested")).unwrap();
    let bad_path = dir.path().join("nested/broken.yaml");
    std::fs::write(&bad_path, bad).unwrap();
    let dir_arg = dir.path().to_str().unwrap();

    let (code, stdout, _) = hemostat(&["validate", dir_arg]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let expected = format!(
        "{}:8:11: error: percentage 250 is out of range",
        bad_path.display()
    );
    assert!(lines[0].starts_with(&expected), "{stdout}");

    let (code, stdout, _) = hemostat(&["validate", "--output", "json", dir_arg]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["valid"], false);
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["file"], bad_path.display().to_string());
    assert_eq!(errors[0]["line"], 8);
    assert_eq!(errors[0]["column"], 11);
    assert_eq!(errors[0]["policy"], "broken");
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("out of range")
    );
    assert_eq!(json["policies"].as_array().unwrap().len(), 4);
}

#[test]
fn validate_exits_0_on_the_shipped_policies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let (code, stdout, stderr) = hemostat(&["validate", root.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.is_empty());
}

#[test]
fn validate_survives_binary_garbage_and_missing_paths() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.yaml");
    std::fs::write(&junk, (0..=255u8).cycle().take(50_000).collect::<Vec<u8>>()).unwrap();
    let (code, stdout, stderr) =
        hemostat(&["validate", junk.to_str().unwrap(), "/nonexistent/policies"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.contains("not UTF-8"), "{stdout}");
    assert!(
        stdout.contains("/nonexistent/policies:1:1: error: cannot read"),
        "{stdout}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn schema_prints_the_committed_schema() {
    let (code, stdout, _) = hemostat(&["schema"]);
    assert_eq!(code, 0);
    let committed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/schema.json"))
            .unwrap();
    assert_eq!(stdout.trim_end(), committed.trim_end());
    let schema: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
}

#[test]
fn validate_reports_every_unknown_field_at_once_with_where_it_is_and_what_was_meant() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typos.yaml");
    std::fs::write(
        &file,
        "apiVersion: hemostat.io/v1alpha1\nkind: HealthPolicy\nmetadata:\n  name: typos\n  lables: {team: web}\nspec:\n  selector:\n    matchLabel: {app: web}\n  probes:\n    cpu: {abovePercnt: 90}\n  replicas: 3\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let (code, stdout, stderr) = hemostat(&["validate", path]);
    assert_eq!(code, 1, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let expected = [
        format!("{path}:5:3: error: unknown field `lables` in metadata: did you mean `labels`?"),
        format!(
            "{path}:8:5: error: unknown field `matchLabel` in spec.selector: did you mean `matchLabels`?"
        ),
        format!(
            "{path}:10:11: error: unknown field `abovePercnt` in spec.probes.cpu: did you mean `abovePercent`?"
        ),
        format!("{path}:11:3: error: unknown field `replicas` in spec, expected one of alerts,"),
    ];
    assert_eq!(lines.len(), expected.len(), "{stdout}");
    for (line, want) in lines.iter().zip(&expected) {
        assert!(line.starts_with(want.as_str()), "{line}\nwanted {want}");
    }
    assert!(stderr.contains("4 error(s)"), "{stderr}");

    let (code, stdout, _) = hemostat(&["validate", "-o", "json", path]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let at: Vec<(u64, u64)> = json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["column"].as_u64().unwrap()))
        .collect();
    assert_eq!(at, [(5, 3), (8, 5), (10, 11), (11, 3)]);
}

#[test]
fn validate_refuses_a_path_without_policy_files() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    let docs = dir.path().join("docs");
    std::fs::create_dir(&empty).unwrap();
    std::fs::create_dir(&docs).unwrap();
    std::fs::write(docs.join("README.md"), "not a policy").unwrap();
    std::fs::write(docs.join(".hidden.yaml"), "not read").unwrap();
    for path in [&empty, &docs] {
        let path = path.to_str().unwrap();
        let (code, stdout, stderr) = hemostat(&["validate", path]);
        assert_eq!(code, 1, "{path}: {stdout}{stderr}");
        assert!(
            stdout.starts_with(&format!("{path}:1:1: error: no policy file here")),
            "{stdout}"
        );
        let (code, stdout, _) = hemostat(&["validate", "-o", "json", path]);
        assert_eq!(code, 1);
        let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(json["valid"], false);
        assert_eq!(json["files"], 0);
    }
    // Next to a valid file, the empty directory is still named.
    let good = examples().join("web-api.yaml");
    let (code, stdout, _) =
        hemostat(&["validate", good.to_str().unwrap(), empty.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("no policy file here"), "{stdout}");
}
