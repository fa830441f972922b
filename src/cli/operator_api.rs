//! Policies of a running operator, over its HTTP API: `get policies`, `describe policy` and
//! `diff -f DIR` against `--api` (an operator whose policies come from files, without Redis).

use std::path::PathBuf;

use anyhow::{Context as _, bail};

use super::policy_cmds::{Format, fetch_api, table};
use crate::http::api::PolicyView;
use crate::policy::diff::{canonical_yaml, unified_diff};
use crate::policy::{HealthPolicy, load_paths};

/// The operator's address when none is given.
pub const DEFAULT_API: &str = "http://127.0.0.1:9090";

/// `api` as a base URL: `host:port` becomes `http://host:port`; a trailing `/` is dropped.
pub fn api_base(api: &str) -> String {
    let api = api.trim().trim_end_matches('/');
    if api.contains("://") {
        api.to_owned()
    } else {
        format!("http://{api}")
    }
}

/// The policies in force on the operator at `api`.
pub async fn fetch_policies(api: &str) -> anyhow::Result<Vec<PolicyView>> {
    fetch_api(api, "/api/v1/policies").await
}

fn state(view: &PolicyView) -> &'static str {
    if view.problems().is_empty() {
        "current"
    } else {
        "last-good"
    }
}

/// `hemostat get policies [NAME] --api URL`: 0, or 1 when `name` is not in force.
pub async fn get_policies(api: &str, name: Option<&str>, output: Format) -> anyhow::Result<i32> {
    let mut views = fetch_policies(api).await?;
    if let Some(name) = name {
        views.retain(|v| v.name == name);
        if views.is_empty() {
            eprintln!("error: healthpolicy/{name} is not in force on the operator at {api}");
            return Ok(1);
        }
    }
    for v in &views {
        for problem in v.problems() {
            eprintln!(
                "warning: healthpolicy/{} keeps its last good version: {problem}",
                v.name
            );
        }
    }
    let documents: Vec<HealthPolicy> = views
        .iter()
        .map(|v| {
            let mut doc = v.document.clone();
            doc.status = Some(v.status.clone());
            doc
        })
        .collect();
    match output {
        Format::Table => {
            let mut rows = vec![
                [
                    "NAME", "PRIORITY", "ACTIONS", "DRY-RUN", "MATCHED", "STATE", "SOURCE",
                ]
                .map(str::to_owned)
                .to_vec(),
            ];
            for v in &views {
                rows.push(vec![
                    v.name.clone(),
                    v.priority.to_string(),
                    actions(&v.document),
                    v.dry_run.to_string(),
                    v.status.matched_containers.to_string(),
                    state(v).to_owned(),
                    v.source.clone().unwrap_or_else(|| "-".to_owned()),
                ]);
            }
            print!("{}", table(&rows));
        }
        Format::Json => {
            let value = match name {
                Some(_) => serde_json::to_value(documents.first())?,
                None => serde_json::to_value(&documents)?,
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        Format::Yaml => {
            let texts: Vec<String> = documents
                .iter()
                .map(serde_saphyr::to_string)
                .collect::<Result<_, _>>()?;
            print!("{}", texts.join("---\n"));
        }
    }
    Ok(0)
}

fn actions(policy: &HealthPolicy) -> String {
    let names: Vec<&str> = policy
        .spec
        .remediation
        .actions
        .iter()
        .map(|a| a.as_str())
        .collect();
    if names.is_empty() {
        "-".to_owned()
    } else {
        names.join(",")
    }
}

/// The head of `describe policy NAME` from the operator's view of it; `None` when the policy
/// is not in force there.
pub async fn describe_head(api: &str, name: &str) -> anyhow::Result<Option<String>> {
    let Some(view) = fetch_policies(api)
        .await?
        .into_iter()
        .find(|v| v.name == name)
    else {
        return Ok(None);
    };
    let mut out = String::new();
    out.push_str(&format!("Name:         {}\n", view.name));
    out.push_str(&format!(
        "Source:       {} (operator at {})\n",
        view.source
            .as_deref()
            .unwrap_or("in force (not from a file)"),
        api_base(api)
    ));
    let problems = view.problems();
    if problems.is_empty() {
        out.push_str("State:        current\n");
    } else {
        out.push_str(
            "State:        last good version kept: the policy's document is invalid now\n",
        );
        for p in problems {
            out.push_str(&format!("  {p}\n"));
        }
    }
    out.push_str(&format!(
        "Matched:      {}\n",
        view.status.matched_containers
    ));
    out.push_str(&format!("Priority:     {}\n", view.priority));
    out.push_str(&format!(
        "Selector:     {}\n",
        serde_json::to_string(&view.selector)?
    ));
    out.push_str(&format!("Actions:      {}\n", actions(&view.document)));
    out.push_str(&format!("Dry run:      {}\n", view.dry_run));
    out.push_str("Spec:\n");
    for line in canonical_yaml(&view.document).lines() {
        out.push_str(&format!("  {line}\n"));
    }
    Ok(Some(out))
}

/// What would change on the operator, for one policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// In the files, not in force.
    Created,
    /// Different from the version in force.
    Changed,
    /// In force from a file, in none of the given files.
    Deleted,
}

/// Compares the policies of some files with those in force (pure): one `(name, change,
/// unified diff)` per policy that would change, in name order. Only policies read from files
/// are deleted by a file set without them; an unchanged one is left out.
pub fn compare(local: &[HealthPolicy], live: &[PolicyView]) -> Vec<(String, Change, String)> {
    let mut out = Vec::new();
    let mut names: Vec<&str> = local
        .iter()
        .map(|p| p.metadata.name.as_str())
        .chain(
            live.iter()
                .filter(|v| v.source.is_some())
                .map(|v| v.name.as_str()),
        )
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let new = local.iter().find(|p| p.metadata.name == name);
        let old = live.iter().find(|v| v.name == name).map(|v| &v.document);
        let strip = |p: &HealthPolicy| {
            let mut p = p.clone();
            p.status = None;
            p
        };
        let change = match (old, new) {
            (None, Some(_)) => Change::Created,
            (Some(_), None) => Change::Deleted,
            (Some(o), Some(n)) if strip(o) != strip(n) => Change::Changed,
            _ => continue,
        };
        let text = |p: Option<&HealthPolicy>| p.map(canonical_yaml).unwrap_or_default();
        let diff = unified_diff(
            &format!("live/{name}"),
            &format!("files/{name}"),
            &text(old),
            &text(new),
        );
        out.push((name.to_owned(), change, diff));
    }
    out
}

/// `hemostat diff -f PATH --api URL`: 0 when nothing would change, 1 when something would,
/// 2 when the files are invalid.
pub async fn diff(api: &str, paths: &[PathBuf]) -> anyhow::Result<i32> {
    if paths.iter().any(|p| p.as_os_str() == "-") {
        bail!("diff --api reads files or directories, not stdin: give the --policies paths");
    }
    let report = load_paths(paths);
    if !report.is_clean() {
        for d in &report.diagnostics {
            eprintln!("{d}");
        }
        eprintln!(
            "the operator would keep the last good version of these documents; fix them first"
        );
        return Ok(2);
    }
    let local: Vec<HealthPolicy> = report.policies.into_iter().map(|p| p.policy).collect();
    let live = fetch_policies(api)
        .await
        .with_context(|| format!("cannot read the policies in force at {}", api_base(api)))?;
    let changes = compare(&local, &live);
    for (_, _, diff) in &changes {
        print!("{diff}");
    }
    Ok(i32::from(!changes.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, priority: i32) -> HealthPolicy {
        let mut p = crate::policy::builtin::default_policy();
        p.metadata.name = name.to_owned();
        p.spec.priority = priority;
        p
    }

    fn live(name: &str, priority: i32, from_file: bool) -> PolicyView {
        let provenance = crate::policy::registry::Provenance {
            source: format!("{name}.yaml:1:1"),
            policy: policy(name, priority),
            problems: vec![],
        };
        PolicyView::new(&policy(name, priority), from_file.then_some(&provenance), 0)
    }

    #[test]
    fn host_and_port_is_taken_as_http() {
        for (given, base) in [
            ("127.0.0.1:9090", "http://127.0.0.1:9090"),
            ("localhost:9090/", "http://localhost:9090"),
            ("http://h:1", "http://h:1"),
            ("https://h:1/", "https://h:1"),
            (" [::1]:9090 ", "http://[::1]:9090"),
        ] {
            assert_eq!(api_base(given), base, "{given}");
        }
    }

    #[test]
    fn a_file_set_is_compared_with_what_is_in_force() {
        type Case = (
            &'static str,
            Vec<HealthPolicy>,
            Vec<PolicyView>,
            Vec<(&'static str, Change)>,
        );
        let cases: Vec<Case> = vec![
            (
                "same",
                vec![policy("a", 1)],
                vec![live("a", 1, true)],
                vec![],
            ),
            (
                "edited",
                vec![policy("a", 2)],
                vec![live("a", 1, true)],
                vec![("a", Change::Changed)],
            ),
            (
                "new file",
                vec![policy("a", 1), policy("b", 1)],
                vec![live("a", 1, true)],
                vec![("b", Change::Created)],
            ),
            (
                "file removed",
                vec![],
                vec![live("a", 1, true)],
                vec![("a", Change::Deleted)],
            ),
            (
                "a policy not from files is never deleted by files",
                vec![],
                vec![live("builtin", 1, false)],
                vec![],
            ),
        ];
        for (what, local, live, want) in cases {
            let got: Vec<(String, Change)> = compare(&local, &live)
                .into_iter()
                .map(|(n, c, _)| (n, c))
                .collect();
            let want: Vec<(String, Change)> =
                want.into_iter().map(|(n, c)| (n.to_owned(), c)).collect();
            assert_eq!(got, want, "{what}");
        }
        let (_, _, diff) = &compare(&[policy("a", 2)], &[live("a", 1, true)])[0];
        assert!(diff.starts_with("--- live/a\n+++ files/a\n"), "{diff}");
        assert!(diff.contains("-  priority: 1\n+  priority: 2\n"), "{diff}");
    }
}
