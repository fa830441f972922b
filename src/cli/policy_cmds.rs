//! kubectl-style policy management through Redis: `apply`, `get`, `describe`, `delete`, `diff`.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, ValueEnum};

use super::operator_api::{self, DEFAULT_API, api_base};
use crate::adapters::redis::config::RedisArgs;
use crate::adapters::redis::policies::{
    DiffKind, PolicyRepo, RemoteError, StoredPolicy, canonical_yaml, printable,
};
use crate::http::api::ContainerView;
use crate::model::wire::Envelope;
use crate::policy::{HealthPolicy, load_paths};

async fn connect(args: &RedisArgs) -> anyhow::Result<PolicyRepo> {
    let (config, shown) = super::run::redis_secrets_from_files(args.clone())?.cli_config()?;
    PolicyRepo::connect(&config).await.map_err(|e| {
        anyhow!(
            "cannot reach Redis at {shown} ({e}): start Redis there, or point --redis-url / REDIS_URL (or REDIS_HOST, REDIS_PORT, REDIS_PASSWORD) at a reachable one"
        )
    })
}

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

/// What `describe` and `delete` act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// A HealthPolicy applied through Redis.
    #[value(alias = "policies", alias = "po", alias = "healthpolicy")]
    Policy,
}

/// Arguments of `hemostat apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Policy files or directories (searched recursively for *.yaml, *.yml); `-` reads stdin.
    #[arg(long = "filename", short = 'f', required = true)]
    pub paths: Vec<PathBuf>,
    /// Redis connection.
    #[command(flatten)]
    pub redis: RedisArgs,
}

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

/// Arguments of `hemostat delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// `policy`.
    pub kind: Kind,
    /// The policy's name.
    pub name: String,
    /// Redis connection.
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// Reads the given paths: one text (source name, text) per path; a directory is read as
/// one text of all its YAML files. Every problem is printed; `None` when there was any.
fn read_inputs(paths: &[PathBuf]) -> anyhow::Result<Option<(String, String)>> {
    let mut files = Vec::new();
    for path in paths {
        if path == Path::new("-") {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read stdin")?;
            files.push(("<stdin>".to_owned(), text));
            continue;
        }
        let report = load_paths(std::slice::from_ref(path));
        if !report.is_clean() {
            for d in &report.diagnostics {
                eprintln!("{d}");
            }
            return Ok(None);
        }
        // The same walk as the loader's (regular files only, loops detected); it just ran clean.
        let (paths_found, _) = crate::policy::load::yaml_files(std::slice::from_ref(path));
        for file in paths_found {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            files.push((file.display().to_string(), text));
        }
    }
    if let [(source, text)] = files.as_slice() {
        return Ok(Some((source.clone(), text.clone())));
    }
    // Several files: validate the whole set (duplicates across files) then send one text.
    let mut combined = String::new();
    for (_, text) in &files {
        combined.push_str(text);
        if !combined.ends_with('\n') {
            combined.push('\n');
        }
        combined.push_str("---\n");
    }
    Ok(Some((
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(","),
        combined,
    )))
}

fn print_invalid(e: RemoteError) -> anyhow::Result<()> {
    match e {
        RemoteError::Invalid(diagnostics) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            eprintln!("nothing applied: {} error(s)", diagnostics.len());
            Ok(())
        }
        other => Err(other.into()),
    }
}

/// `hemostat apply -f PATH`: 0 when applied, 1 on invalid input (nothing written).
pub async fn apply(args: ApplyArgs) -> anyhow::Result<i32> {
    let Some((source, text)) = read_inputs(&args.paths)? else {
        eprintln!("nothing applied");
        return Ok(1);
    };
    let mut repo = connect(&args.redis).await?;
    match repo.apply(&source, &text).await {
        Ok(outcomes) => {
            for (name, outcome) in outcomes {
                println!("healthpolicy/{name} {}", outcome.as_str());
            }
            Ok(0)
        }
        Err(e) => print_invalid(e).map(|()| 1),
    }
}

/// `hemostat diff -f PATH`: 0 when nothing would change, 1 when something would, 2 on error.
pub async fn diff(args: DiffArgs) -> anyhow::Result<i32> {
    if let Some(api) = &args.api {
        return operator_api::diff(api, &args.paths).await;
    }
    let Some((source, text)) = read_inputs(&args.paths)? else {
        return Ok(2);
    };
    let mut repo = connect(&args.redis).await?;
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

/// `hemostat delete policy NAME`: 0 when deleted, 1 when there was none.
pub async fn delete(args: DeleteArgs) -> anyhow::Result<i32> {
    let Kind::Policy = args.kind;
    let mut repo = connect(&args.redis).await?;
    if repo.delete(&args.name).await? {
        println!("healthpolicy/{} deleted", printable(&args.name));
        Ok(0)
    } else {
        eprintln!(
            "error: healthpolicy/{} not found in Redis (hemostat:policies)",
            printable(&args.name)
        );
        Ok(1)
    }
}

/// `hemostat get RESOURCE`.
pub async fn get(args: GetArgs) -> anyhow::Result<i32> {
    match args.resource {
        Resource::Policies => get_policies(args).await,
        Resource::Containers => {
            let value: serde_json::Value = fetch_api(api(&args.api), "/api/v1/containers").await?;
            print_value(args.output, &value, containers_table)?;
            Ok(0)
        }
        Resource::Decisions => {
            let value: serde_json::Value = fetch_api(api(&args.api), "/api/v1/decisions").await?;
            print_value(args.output, &value, decisions_table)?;
            Ok(0)
        }
    }
}

async fn get_policies(args: GetArgs) -> anyhow::Result<i32> {
    let mut repo = match policy_source(&args.api, &args.redis).await {
        PolicySource::Redis(repo) => repo,
        PolicySource::Api(api) => {
            return operator_api::get_policies(&api, args.name.as_deref(), args.output).await;
        }
    };
    let all = match &args.name {
        Some(name) => match repo.get(name).await? {
            Some(p) => vec![p],
            None => {
                eprintln!(
                    "error: healthpolicy/{} not found in Redis (hemostat:policies)",
                    printable(name)
                );
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
            let value = if args.name.is_some() {
                serde_json::to_value(items.first())?
            } else {
                serde_json::to_value(&items)?
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
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

fn policies_table(all: &[StoredPolicy]) -> String {
    let mut rows = vec![vec![
        "NAME".to_owned(),
        "PRIORITY".to_owned(),
        "ACTIONS".to_owned(),
        "DRY-RUN".to_owned(),
        "GENERATION".to_owned(),
        "APPLIED".to_owned(),
        "VALID".to_owned(),
    ]];
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

fn actions(policy: &HealthPolicy) -> String {
    let names: Vec<String> = policy
        .spec
        .remediation
        .actions
        .iter()
        .map(|a| {
            serde_json::to_value(a)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{a:?}"))
        })
        .collect();
    if names.is_empty() {
        "-".to_owned()
    } else {
        names.join(",")
    }
}

/// Where `get policies` and `describe policy` read policies.
enum PolicySource {
    Redis(PolicyRepo),
    /// A running operator's API (the policies in force there).
    Api(String),
}

/// Redis when it answers; else the operator's API (`--api`, or the default address): an
/// operator without Redis takes its policies from its files.
async fn policy_source(api: &Option<String>, redis: &RedisArgs) -> PolicySource {
    match connect(redis).await {
        Ok(repo) => PolicySource::Redis(repo),
        Err(e) => {
            let api = api.clone().unwrap_or_else(|| DEFAULT_API.to_owned());
            eprintln!(
                "note: {e:#}\nnote: reading the policies in force from the operator at {} instead",
                api_base(&api)
            );
            PolicySource::Api(api)
        }
    }
}

fn api(api: &Option<String>) -> &str {
    api.as_deref().unwrap_or(DEFAULT_API)
}

pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .build()?)
}

pub(crate) async fn fetch_api<T: serde::de::DeserializeOwned>(
    api: &str,
    path: &str,
) -> anyhow::Result<T> {
    let url = format!("{}{path}", api_base(api));
    let response = http_client()?
        .get(&url)
        .send()
        .await
        .map_err(|e| anyhow!("the operator is not reachable at {api} ({e}): is `hemostat run` running there? point --api / HEMOSTAT_API at its --listen address"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("{url} answered {status}: {body}");
    }
    response
        .json()
        .await
        .with_context(|| format!("{url} answered something that is not the expected JSON"))
}

fn print_value(
    format: Format,
    value: &serde_json::Value,
    tabulate: fn(&serde_json::Value) -> String,
) -> anyhow::Result<()> {
    match format {
        Format::Table => print!("{}", tabulate(value)),
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_saphyr::to_string(value)?),
    }
    Ok(())
}

fn text(value: &serde_json::Value, pointer: &str) -> String {
    match value.pointer(pointer) {
        None | Some(serde_json::Value::Null) => "-".to_owned(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.1}"),
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

fn containers_table(value: &serde_json::Value) -> String {
    let mut rows = vec![
        [
            "NAME",
            "STATE",
            "HEALTH",
            "POLICY",
            "CPU%",
            "MEM%",
            "RESTARTS",
            "PROTECTED",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for c in value.as_array().into_iter().flatten() {
        rows.push(vec![
            text(c, "/name"),
            text(c, "/state"),
            text(c, "/health"),
            text(c, "/policy"),
            text(c, "/cpu_percent"),
            text(c, "/memory_percent"),
            text(c, "/restarts_seen"),
            text(c, "/protected"),
        ]);
    }
    table(&rows)
}

fn decisions_table(value: &serde_json::Value) -> String {
    let mut rows = vec![
        [
            "TIME",
            "TYPE",
            "CONTAINER",
            "ACTION",
            "STATUS",
            "GATE",
            "DETAIL",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for e in value.as_array().into_iter().flatten() {
        let detail = ["/data/reason", "/data/result/details", "/data/issues"]
            .iter()
            .map(|p| text(e, p))
            .find(|t| t != "-")
            .unwrap_or_else(|| "-".to_owned());
        // Both timestamp forms (naive, with an offset) show as UTC with +00:00; an envelope
        // from the original's agents names its type in `event_type` only.
        let time = e["timestamp"]
            .as_str()
            .and_then(crate::model::wire::parse_wire_timestamp)
            .map_or_else(|| text(e, "/timestamp"), crate::model::wire::wire_timestamp);
        let kind = match text(e, "/type") {
            t if t == "-" => text(e, "/event_type"),
            t => t,
        };
        rows.push(vec![
            time,
            kind,
            text(e, "/data/container"),
            text(e, "/data/action"),
            text(e, "/data/result/status"),
            text(e, "/data/gate"),
            detail,
        ]);
    }
    table(&rows)
}

/// `hemostat describe policy NAME`: 0 when found, 1 when not.
pub async fn describe(args: DescribeArgs) -> anyhow::Result<i32> {
    let Kind::Policy = args.kind;
    let mut repo = match policy_source(&args.api, &args.redis).await {
        PolicySource::Redis(repo) => repo,
        PolicySource::Api(api) => {
            let Some(mut out) = operator_api::describe_head(&api, &args.name).await? else {
                eprintln!(
                    "error: healthpolicy/{} is not in force on the operator at {}",
                    args.name,
                    api_base(&api)
                );
                return Ok(1);
            };
            describe_operator(&api, &args.name, &mut out).await?;
            print!("{out}");
            return Ok(0);
        }
    };
    let Some(stored) = repo.get(&args.name).await? else {
        eprintln!(
            "error: healthpolicy/{} not found in Redis (hemostat:policies)",
            printable(&args.name)
        );
        return Ok(1);
    };
    let mut out = describe_stored(&stored)?;
    describe_operator(api(&args.api), &stored.name, &mut out).await?;
    print!("{out}");
    Ok(0)
}

/// The operator's side of `describe policy NAME`, or why it is unknown.
async fn describe_operator(api: &str, name: &str, out: &mut String) -> anyhow::Result<()> {
    out.push_str(&format!("Operator:     {}\n", api_base(api)));
    match fetch_api::<Vec<ContainerView>>(api, "/api/v1/containers").await {
        Err(e) => {
            out.push_str(&format!(
                "  not reachable: {e:#}\n  Matched containers and recent decisions are unknown.\n"
            ));
        }
        Ok(containers) => describe_live(api, name, &containers, out).await?,
    }
    Ok(())
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
            for line in canonical_yaml(policy).lines() {
                out.push_str(&format!("  {line}\n"));
            }
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

/// What the running operator says: the matched containers and the recent decisions about them.
async fn describe_live(
    api: &str,
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
        let mut rows = vec![["NAME", "STATE", "HEALTH"].map(str::to_owned).to_vec()];
        for c in &matched {
            let v = serde_json::to_value(c)?;
            rows.push(vec![
                text(&v, "/name"),
                text(&v, "/state"),
                text(&v, "/health"),
            ]);
        }
        for line in table(&rows).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    let decisions: Vec<Envelope> = fetch_api(api, "/api/v1/decisions?limit=1000").await?;
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
        for line in table.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    Ok(())
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
