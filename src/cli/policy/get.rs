//! `hemostat get RESOURCE`: policies (Redis, or a running operator's), containers, decisions.

use clap::{Args, ValueEnum};
use serde_json::Value;

use super::{PolicySource, actions, not_in_redis, policy_source};
use crate::adapters::redis::config::RedisArgs;
use crate::adapters::redis::policies::{StoredPolicy, printable};
use crate::cli::client::{Operator, api_or_default};
use crate::cli::table::{cell, header, table};
use crate::http::views::PolicyView;
use crate::model::wire::{parse_wire_timestamp, wire_timestamp};
use crate::policy::HealthPolicy;

/// Output formats of `get`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// What `get` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Resource {
    /// HealthPolicies applied through Redis.
    #[value(
        alias = "policy",
        alias = "po",
        alias = "healthpolicy",
        alias = "healthpolicies"
    )]
    Policies,
    /// Containers a running operator observes (its HTTP API).
    #[value(alias = "container")]
    Containers,
    /// Recent decisions of a running operator (its HTTP API).
    #[value(alias = "decision")]
    Decisions,
}

/// Arguments of `hemostat get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// policies (from Redis), containers or decisions (from a running operator).
    pub resource: Resource,
    /// Only this policy (policies only).
    pub name: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// A running operator's HTTP address (URL or host:port; default http://127.0.0.1:9090).
    /// Policies come from Redis, or from this operator (those in force) when Redis does not
    /// answer.
    #[arg(long, env = "HEMOSTAT_API")]
    pub api: Option<String>,
    /// Redis connection (policies).
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// `hemostat get RESOURCE`.
pub(crate) async fn get(args: GetArgs) -> anyhow::Result<i32> {
    let (path, tabulate): (&str, fn(&Value) -> String) = match args.resource {
        Resource::Policies => return get_policies(args).await,
        Resource::Containers => ("/api/v1/containers", containers_table),
        Resource::Decisions => ("/api/v1/decisions", decisions_table),
    };
    let value: Value = Operator::new(api_or_default(&args.api))?.get(path).await?;
    match args.output {
        Format::Table => print!("{}", tabulate(&value)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&value)?),
        Format::Yaml => print!("{}", serde_saphyr::to_string(&value)?),
    }
    Ok(0)
}

async fn get_policies(args: GetArgs) -> anyhow::Result<i32> {
    let mut repo = match policy_source(&args.api, &args.redis).await {
        PolicySource::Redis(repo) => repo,
        PolicySource::Api(api) => {
            return get_policies_api(&api, args.name.as_deref(), args.output).await;
        }
    };
    let all = match &args.name {
        Some(name) => match repo.get(name).await? {
            Some(p) => vec![p],
            None => {
                not_in_redis(name);
                return Ok(1);
            }
        },
        None => repo.list().await?,
    };
    for p in &all {
        if let Err(diagnostics) = &p.parsed {
            eprintln!(
                "warning: the stored value of healthpolicy/{} is not a valid policy (the operator ignores it):",
                printable(&p.name)
            );
            for d in diagnostics {
                eprintln!("  {d}");
            }
        }
    }
    match args.output {
        Format::Table => print!("{}", policies_table(&all)),
        Format::Json => {
            let items: Vec<&HealthPolicy> =
                all.iter().filter_map(|p| p.parsed.as_ref().ok()).collect();
            print_json(&items, args.name.is_some())?;
        }
        Format::Yaml => {
            let texts: Vec<String> = all
                .iter()
                .filter(|p| p.parsed.is_ok())
                .map(|p| {
                    let mut t = p.text.clone();
                    if !t.ends_with('\n') {
                        t.push('\n');
                    }
                    t
                })
                .collect();
            print!("{}", texts.join("---\n"));
        }
    }
    Ok(0)
}

/// The items as a pretty JSON list, or the first alone (`null` if none) when one was named.
fn print_json<T: serde::Serialize>(items: &[T], one: bool) -> anyhow::Result<()> {
    let value = if one {
        serde_json::to_value(items.first())?
    } else {
        serde_json::to_value(items)?
    };
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// `hemostat get policies [NAME]` from the operator at `api`: 0, or 1 when `name` is not in
/// force there.
async fn get_policies_api(api: &str, name: Option<&str>, output: Format) -> anyhow::Result<i32> {
    let mut views = Operator::new(api)?.policies().await?;
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
        Format::Table => print!("{}", views_table(&views)),
        Format::Json => print_json(&documents, name.is_some())?,
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

fn views_table(views: &[PolicyView]) -> String {
    let mut rows = vec![header([
        "NAME", "PRIORITY", "ACTIONS", "DRY-RUN", "MATCHED", "STATE", "SOURCE",
    ])];
    for v in views {
        let state = if v.problems().is_empty() {
            "current"
        } else {
            "last-good"
        };
        rows.push(vec![
            v.name.clone(),
            v.priority.to_string(),
            actions(&v.document),
            v.dry_run.to_string(),
            v.status.matched_containers.to_string(),
            state.to_owned(),
            v.source.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    table(&rows)
}

fn policies_table(all: &[StoredPolicy]) -> String {
    let mut rows = vec![header([
        "NAME",
        "PRIORITY",
        "ACTIONS",
        "DRY-RUN",
        "GENERATION",
        "APPLIED",
        "VALID",
    ])];
    for p in all {
        let (generation, applied) = p.meta.as_ref().map_or(("-".into(), "-".into()), |m| {
            (
                m.generation.to_string(),
                m.applied_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            )
        });
        let row = match &p.parsed {
            Ok(policy) => vec![
                printable(&p.name).into_owned(),
                policy.spec.priority.to_string(),
                actions(policy),
                policy.spec.remediation.dry_run.to_string(),
                generation,
                applied,
                "yes".to_owned(),
            ],
            Err(_) => vec![
                printable(&p.name).into_owned(),
                "-".into(),
                "-".into(),
                "-".into(),
                generation,
                applied,
                "no".to_owned(),
            ],
        };
        rows.push(row);
    }
    table(&rows)
}

fn containers_table(value: &Value) -> String {
    let mut rows = vec![header([
        "NAME",
        "STATE",
        "HEALTH",
        "POLICY",
        "CPU%",
        "MEM%",
        "RESTARTS",
        "PROTECTED",
    ])];
    for c in value.as_array().into_iter().flatten() {
        rows.push(vec![
            cell(c, "/name"),
            cell(c, "/state"),
            cell(c, "/health"),
            cell(c, "/policy"),
            cell(c, "/cpu_percent"),
            cell(c, "/memory_percent"),
            cell(c, "/restarts_seen"),
            cell(c, "/protected"),
        ]);
    }
    table(&rows)
}

/// The table of some envelopes (a JSON list), oldest first.
pub(super) fn decisions_table(value: &Value) -> String {
    let mut rows = vec![header([
        "TIME",
        "TYPE",
        "CONTAINER",
        "ACTION",
        "STATUS",
        "GATE",
        "DETAIL",
    ])];
    for e in value.as_array().into_iter().flatten() {
        let detail = ["/data/reason", "/data/result/details", "/data/issues"]
            .iter()
            .map(|p| cell(e, p))
            .find(|t| t != "-")
            .unwrap_or_else(|| "-".to_owned());
        // Both timestamp forms (naive, with an offset) show as UTC with +00:00; an envelope
        // from the original's agents names its type in `event_type` only.
        let time = e["timestamp"]
            .as_str()
            .and_then(parse_wire_timestamp)
            .map_or_else(|| cell(e, "/timestamp"), wire_timestamp);
        let kind = match cell(e, "/type") {
            t if t == "-" => cell(e, "/event_type"),
            t => t,
        };
        rows.push(vec![
            time,
            kind,
            cell(e, "/data/container"),
            cell(e, "/data/action"),
            cell(e, "/data/result/status"),
            cell(e, "/data/gate"),
            detail,
        ]);
    }
    table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decisions_table_shows_the_status_and_the_gate() {
        let envelopes = serde_json::json!([{
            "timestamp": "2026-01-01T00:00:00.000000",
            "type": "remediation_complete",
            "data": {
                "container": "web",
                "action": "restart",
                "gate": "cooldown",
                "result": {"status": "rejected", "details": "in cooldown until 01:00"},
            },
        }]);
        let table = decisions_table(&envelopes);
        let header = table.lines().next().unwrap();
        assert!(
            header.contains("STATUS") && header.contains("GATE"),
            "{table}"
        );
        let row = table.lines().nth(1).unwrap();
        for want in ["web", "restart", "rejected", "cooldown"] {
            assert!(row.contains(want), "{want} in {row}");
        }
    }
}
