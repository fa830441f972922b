//! `hemostat diff -f PATH`: what `apply` would change in Redis, or (with `--api`) what would
//! change on a running operator if its `--policies` files were these.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;

use super::inputs::read_inputs;
use super::print_invalid;
use crate::adapters::redis::config::RedisArgs;
use crate::adapters::redis::policies::DiffKind;
use crate::cli::client::{Operator, api_base, connect_redis};
use crate::http::views::PolicyView;
use crate::policy::diff::{canonical_yaml, unified_diff};
use crate::policy::{HealthPolicy, load_paths};

/// Arguments of `hemostat diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Policy files or directories (searched recursively for *.yaml, *.yml); `-` reads stdin.
    #[arg(long = "filename", short = 'f', required = true)]
    pub paths: Vec<PathBuf>,
    /// Compare with the policies in force on a running operator (URL or host:port) instead of
    /// Redis: what would change if its --policies files were these (deletions included).
    #[arg(long)]
    pub api: Option<String>,
    /// Redis connection.
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// `hemostat diff -f PATH`: 0 when nothing would change, 1 when something would, 2 on error.
pub(crate) async fn diff(args: DiffArgs) -> anyhow::Result<i32> {
    if let Some(api) = &args.api {
        return diff_api(api, &args.paths).await;
    }
    let Some((source, text)) = read_inputs(&args.paths)? else {
        return Ok(2);
    };
    let mut repo = connect_redis(&args.redis).await?;
    match repo.diff(&source, &text).await {
        Ok(diffs) => {
            let mut changed = false;
            for d in diffs {
                if d.kind != DiffKind::Unchanged {
                    changed = true;
                    print!("{}", d.diff);
                }
            }
            Ok(i32::from(changed))
        }
        Err(e) => print_invalid(e).map(|()| 2),
    }
}

/// What would change on the operator, for one policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
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
pub(crate) fn compare(
    local: &[HealthPolicy],
    live: &[PolicyView],
) -> Vec<(String, Change, String)> {
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
async fn diff_api(api: &str, paths: &[PathBuf]) -> anyhow::Result<i32> {
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
    let live = Operator::new(api)?
        .policies()
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
    use crate::fixtures::ranked as policy;

    fn live(name: &str, priority: i32, from_file: bool) -> PolicyView {
        let provenance = crate::policy::registry::Provenance {
            source: format!("{name}.yaml:1:1"),
            policy: policy(name, priority),
            problems: vec![],
        };
        PolicyView::new(&policy(name, priority), from_file.then_some(&provenance), 0)
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
