//! `hemostat describe policy NAME`: one policy (from Redis, or the version in force on a
//! running operator) with its matched containers and recent decisions.

use clap::Args;

use super::get::decisions_table;
use super::{Kind, PolicySource, actions, not_in_redis, policy_source};
use crate::adapters::redis::config::RedisArgs;
use crate::adapters::redis::policies::{StoredPolicy, printable};
use crate::cli::client::{Operator, api_base, api_or_default};
use crate::cli::table::{cell, header, push_indented, table};
use crate::http::views::ContainerView;
use crate::policy::diff::canonical_yaml;

/// Arguments of `hemostat describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// `policy`.
    pub kind: Kind,
    /// The policy's name.
    pub name: String,
    /// A running operator's HTTP address (URL or host:port; default http://127.0.0.1:9090), for
    /// matched containers and recent decisions; the policy itself too (the version in force)
    /// when Redis does not answer.
    #[arg(long, env = "HEMOSTAT_API")]
    pub api: Option<String>,
    /// Redis connection.
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// `hemostat describe policy NAME`: 0 when found, 1 when not.
pub(crate) async fn describe(args: DescribeArgs) -> anyhow::Result<i32> {
    let Kind::Policy = args.kind;
    let mut repo = match policy_source(&args.api, &args.redis).await {
        PolicySource::Redis(repo) => repo,
        PolicySource::Api(api) => {
            let operator = Operator::new(&api)?;
            let Some(mut out) = describe_head(&operator, &args.name).await? else {
                eprintln!(
                    "error: healthpolicy/{} is not in force on the operator at {}",
                    args.name,
                    api_base(&api)
                );
                return Ok(1);
            };
            describe_operator(&operator, &args.name, &mut out).await?;
            print!("{out}");
            return Ok(0);
        }
    };
    let Some(stored) = repo.get(&args.name).await? else {
        not_in_redis(&args.name);
        return Ok(1);
    };
    let mut out = describe_stored(&stored)?;
    let operator = Operator::new(api_or_default(&args.api))?;
    describe_operator(&operator, &stored.name, &mut out).await?;
    print!("{out}");
    Ok(0)
}

/// The head of `describe policy NAME` from the operator's view of it; `None` when the policy
/// is not in force there.
async fn describe_head(operator: &Operator<'_>, name: &str) -> anyhow::Result<Option<String>> {
    let Some(view) = operator
        .policies()
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
        operator.base()
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
    push_indented(&mut out, &canonical_yaml(&view.document));
    Ok(Some(out))
}

/// The stored policy: name, generation, and its spec or why it is invalid.
fn describe_stored(stored: &StoredPolicy) -> anyhow::Result<String> {
    let mut out = String::new();
    out.push_str(&format!("Name:         {}\n", printable(&stored.name)));
    out.push_str("Source:       redis hemostat:policies\n");
    if let Some(meta) = &stored.meta {
        out.push_str(&format!("Generation:   {}\n", meta.generation));
        out.push_str(&format!(
            "Applied:      {}\n",
            meta.applied_at.format("%Y-%m-%dT%H:%M:%SZ")
        ));
    }
    match &stored.parsed {
        Ok(policy) => {
            out.push_str(&format!("Priority:     {}\n", policy.spec.priority));
            out.push_str(&format!(
                "Selector:     {}\n",
                serde_json::to_string(&policy.spec.selector)?
            ));
            out.push_str(&format!("Actions:      {}\n", actions(policy)));
            out.push_str(&format!(
                "Dry run:      {}\n",
                policy.spec.remediation.dry_run
            ));
            out.push_str("Spec:\n");
            push_indented(&mut out, &canonical_yaml(policy));
        }
        Err(diagnostics) => {
            out.push_str(
                "Valid:        no (the operator ignores this value and keeps the last good one)\n",
            );
            for d in diagnostics {
                out.push_str(&format!("  {d}\n"));
            }
        }
    }
    Ok(out)
}

/// The operator's side of `describe policy NAME`, or why it is unknown.
async fn describe_operator(
    operator: &Operator<'_>,
    name: &str,
    out: &mut String,
) -> anyhow::Result<()> {
    out.push_str(&format!("Operator:     {}\n", operator.base()));
    match operator.containers().await {
        Err(e) => {
            out.push_str(&format!(
                "  not reachable: {e:#}\n  Matched containers and recent decisions are unknown.\n"
            ));
        }
        Ok(containers) => describe_live(operator, name, &containers, out).await?,
    }
    Ok(())
}

/// What the running operator says: the matched containers and the recent decisions about them.
async fn describe_live(
    operator: &Operator<'_>,
    name: &str,
    containers: &[ContainerView],
    out: &mut String,
) -> anyhow::Result<()> {
    let matched: Vec<&ContainerView> = containers
        .iter()
        .filter(|c| c.policy.as_deref() == Some(name))
        .collect();
    out.push_str(&format!("Matched containers: {}\n", matched.len()));
    if !matched.is_empty() {
        let mut rows = vec![header(["NAME", "STATE", "HEALTH"])];
        for c in &matched {
            let v = serde_json::to_value(c)?;
            rows.push(vec![
                cell(&v, "/name"),
                cell(&v, "/state"),
                cell(&v, "/health"),
            ]);
        }
        push_indented(out, &table(&rows));
    }
    let decisions = operator.decisions().await?;
    let names: Vec<&str> = matched.iter().map(|c| c.name.as_str()).collect();
    let recent: Vec<serde_json::Value> = decisions
        .iter()
        .filter(|e| e.policy() == Some(name) || e.container().is_some_and(|c| names.contains(&c)))
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    let skip = recent.len().saturating_sub(10);
    out.push_str(&format!("Recent decisions: {}\n", recent.len()));
    if !recent.is_empty() {
        let table = decisions_table(&serde_json::Value::Array(recent[skip..].to_vec()));
        push_indented(out, &table);
    }
    Ok(())
}
