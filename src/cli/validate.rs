//! `hemostat validate`: checks policy files the way CI and people need it.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::policy::load::yaml_files;
use crate::policy::{Diagnostic, load_paths};

/// Arguments of `hemostat validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Files or directories (searched recursively for *.yaml and *.yml).
    #[arg(default_value = "policies")]
    pub paths: Vec<PathBuf>,
    /// `text` (one line per problem) or `json` (for CI tools).
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// `path:line:col: error: message`, one per line.
    Text,
    /// One JSON object with every fact.
    Json,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    valid: bool,
    files: usize,
    policies: Vec<JsonPolicy<'a>>,
    errors: &'a [Diagnostic],
}

#[derive(Serialize)]
struct JsonPolicy<'a> {
    name: &'a str,
    file: &'a str,
    line: u64,
}

/// Each path that holds no policy file is an error: validating nothing must not pass (unlike
/// `run`, where a directory without policy files means the built-in policy).
fn no_policy_files(paths: &[PathBuf], diagnostics: &mut Vec<Diagnostic>) {
    for path in paths {
        let (files, problems) = yaml_files(std::slice::from_ref(path));
        if files.is_empty() && problems.is_empty() {
            diagnostics.push(Diagnostic {
                file: path.display().to_string(),
                line: 1,
                column: 1,
                message: "no policy file here: validate reads *.yaml and *.yml files (directories are searched recursively, hidden entries skipped); name a file to read it whatever its extension".to_owned(),
                policy: None,
            });
        }
    }
}

/// Validates and prints; returns 0 when everything is valid, 1 otherwise.
pub(crate) fn run(args: ValidateArgs) -> i32 {
    let mut report = load_paths(&args.paths);
    no_policy_files(&args.paths, &mut report.diagnostics);
    let valid = report.is_clean();
    match args.output {
        Output::Text => {
            for d in &report.diagnostics {
                println!("{d}");
            }
            for w in &report.warnings {
                eprintln!("{}", w.as_warning());
            }
            let summary = format!(
                "{} file(s), {} valid polic{}, {} error(s)",
                report.files,
                report.policies.len(),
                if report.policies.len() == 1 {
                    "y"
                } else {
                    "ies"
                },
                report.diagnostics.len()
            );
            eprintln!("{summary}");
        }
        Output::Json => {
            let json = JsonReport {
                valid,
                files: report.files,
                policies: report
                    .policies
                    .iter()
                    .map(|p| JsonPolicy {
                        name: &p.policy.metadata.name,
                        file: &p.source,
                        line: p.position.line,
                    })
                    .collect(),
                errors: &report.diagnostics,
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&json).unwrap_or_else(|_| "{}".to_owned())
            );
        }
    }
    if valid { 0 } else { 1 }
}
