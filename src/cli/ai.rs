//! The operator's model settings (`AI_MODEL`, `OPENAI_*`, `ANTHROPIC_*`) turned into the analyzer.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use tracing::{info, warn};

use crate::adapters::llm::LlmConfig;
use crate::analyze::llm::AiLimits;
use crate::app::AiModel;
use crate::policy::{AnalysisMode, HealthPolicy};

/// Flags of the LLM analyzer (the provider, model and key come from the environment).
#[derive(Debug, Args)]
pub struct AiArgs {
    /// Model requests in flight at once (`analysis.mode: ai`); beyond it the rules decide at
    /// once, so a slow model never holds up other containers.
    #[arg(long, env = "AI_MAX_CONCURRENT", default_value_t = 4)]
    pub ai_max_concurrent: usize,
}

/// `scheme://host…` without any `user:password@`.
fn without_userinfo(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// The model when one is configured; logs once what `analysis.mode: ai` will use.
pub(crate) fn model(args: &AiArgs, policies: &[HealthPolicy]) -> anyhow::Result<Option<AiModel>> {
    let wanting: Vec<&str> = policies
        .iter()
        .filter(|p| p.spec.analysis.mode == AnalysisMode::Ai)
        .map(|p| p.metadata.name.as_str())
        .collect();
    let Some(config) = LlmConfig::from_env().context("invalid model settings")? else {
        if !wanting.is_empty() {
            warn!(
                policies = %wanting.join(","),
                "analysis.mode: ai, but no model is configured (set OPENAI_API_KEY or ANTHROPIC_API_KEY, and AI_MODEL): the rules decide"
            );
        }
        return Ok(None);
    };
    if args.ai_max_concurrent == 0 {
        anyhow::bail!("--ai-max-concurrent must be at least 1");
    }
    let client = config
        .client()
        .context("cannot set up the HTTP client for the model")?;
    info!(
        provider = config.provider.as_str(),
        model = %config.model,
        base_url = %without_userinfo(&config.base_url),
        policies = %wanting.join(","),
        "AI analysis available for policies with analysis.mode: ai"
    );
    Ok(Some(AiModel {
        client: Arc::new(client),
        limits: AiLimits {
            max_concurrent: args.ai_max_concurrent,
            ..AiLimits::default()
        },
    }))
}
