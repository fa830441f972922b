//! What the analyzer decides: the actions, severities, findings and the decision itself.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Something the responder may do to a container.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// `docker restart` with the policy's stop timeout.
    Restart,
    /// `docker stop`.
    Stop,
    /// `docker start`.
    Start,
    /// `docker exec` of one of the policy's allow-listed commands.
    Exec,
}

impl ActionKind {
    /// The name used in documents and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Restart => "restart",
            Self::Stop => "stop",
            Self::Start => "start",
            Self::Exec => "exec",
        }
    }

    /// Every action, in the order of the documentation.
    pub const ALL: [ActionKind; 4] = [Self::Restart, Self::Stop, Self::Start, Self::Exec];
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Severity of a finding or alert.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational.
    Low,
    /// Worth a look (default threshold).
    #[default]
    Medium,
    /// Needs attention.
    High,
    /// Needs attention now.
    Critical,
}

/// What a probe found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FindingKind {
    /// The container exited.
    Exited {
        /// Its exit code.
        exit_code: i64,
    },
    /// The kernel OOM-killed it.
    OomKilled,
    /// Its healthcheck has been unhealthy for this many seconds.
    Unhealthy {
        /// Seconds unhealthy.
        for_secs: u64,
    },
    /// It restarted this often within the window.
    RestartLoop {
        /// Restarts seen in the window.
        restarts: u32,
        /// The window, in seconds.
        within_secs: u64,
    },
    /// CPU above the threshold for the whole window.
    HighCpu {
        /// Latest CPU percent of the limit.
        percent: f64,
        /// Seconds above.
        for_secs: u64,
    },
    /// Memory above the threshold for the whole window.
    HighMemory {
        /// Latest memory percent of the limit.
        percent: f64,
        /// Seconds above.
        for_secs: u64,
    },
    /// Memory grows steadily.
    MemoryLeak {
        /// Growth per hour in percent of the limit.
        growth_percent_per_hour: f64,
    },
    /// A resource is above its threshold, but not for long enough yet.
    TransientSpike {
        /// `cpu` or `memory`.
        resource: String,
        /// Latest percent.
        percent: f64,
    },
}

impl FindingKind {
    /// A short stable name, used to recognise "the same failure" for the circuit breaker.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Exited { .. } => "exited",
            Self::OomKilled => "oom_killed",
            Self::Unhealthy { .. } => "unhealthy",
            Self::RestartLoop { .. } => "restart_loop",
            Self::HighCpu { .. } => "high_cpu",
            Self::HighMemory { .. } => "high_memory",
            Self::MemoryLeak { .. } => "memory_leak",
            Self::TransientSpike { .. } => "transient_spike",
        }
    }
}

/// A finding with its severity and a line for people (the original's `issues` entries).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// What was found.
    #[serde(flatten)]
    pub kind: FindingKind,
    /// How bad it is.
    pub severity: Severity,
    /// For people: `High CPU: 92.5% of limit for 2m`.
    pub message: String,
}

/// How a decision was reached: `data.analysis_method` on the wire, in the original's
/// vocabulary (`rule_based`, `ai`) plus HemoStat's own values; `docs/PROTOCOL.md` lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnalysisMethod {
    /// The deterministic rules (`rule_based`; HemoStat wrote `rules` before and still reads it).
    #[serde(rename = "rule_based", alias = "rules")]
    Rules,
    /// An LLM, its answer validated (`ai`).
    #[serde(rename = "ai")]
    Ai,
    /// The policy asked for AI analysis but the model's answer was not used (unavailable,
    /// invalid, or outside the policy), so the rules decided (`rule_based_fallback`).
    #[serde(rename = "rule_based_fallback")]
    RuleBasedFallback,
    /// A request published by another tool on `hemostat:remediation_needed`, validated
    /// (`external`).
    #[serde(rename = "external")]
    External,
}

impl AnalysisMethod {
    /// Every method.
    pub const ALL: [AnalysisMethod; 4] = [
        Self::Rules,
        Self::Ai,
        Self::RuleBasedFallback,
        Self::External,
    ];

    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rules => "rule_based",
            Self::Ai => "ai",
            Self::RuleBasedFallback => "rule_based_fallback",
            Self::External => "external",
        }
    }
}

/// The analyzer's verdict on one container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The action to take, when one should be taken.
    pub action: Option<ActionKind>,
    /// Why, for people.
    pub reason: String,
    /// 0..=1.
    pub confidence: f64,
    /// How it was reached.
    pub method: AnalysisMethod,
    /// Every finding behind it.
    pub findings: Vec<Finding>,
    /// The finding the action answers (its name), for the circuit breaker.
    pub primary: Option<String>,
    /// `analysis.mode: ai` only: what the model answered beside the rules' verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai: Option<AiReview>,
}

impl Decision {
    /// The model's root cause, when its answer was used.
    pub fn root_cause(&self) -> Option<&str> {
        let ai = self.ai.as_ref()?;
        (self.method == AnalysisMethod::Ai)
            .then(|| ai.answer.as_ref().map(|a| a.root_cause.as_str()))
            .flatten()
    }

    /// Why the rules decided although `analysis.mode` is `ai`.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.ai.as_ref()?.fallback_reason.as_deref()
    }

    /// The exec command the model chose (an index into the policy's allow-list), when its
    /// answer was used.
    pub(crate) fn exec_command_index(&self) -> Option<usize> {
        if self.method != AnalysisMethod::Ai {
            return None;
        }
        self.ai.as_ref()?.answer.as_ref()?.command
    }
}

/// A verdict on its own: what one analyzer would do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The action, or `None` for "do nothing".
    pub action: Option<ActionKind>,
    /// Why, for people.
    pub reason: String,
    /// 0..=1.
    pub confidence: f64,
}

/// A model's answer that parsed and named only known things (it may still be refused by the
/// policy: see [`AiReview::fallback_reason`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelAnswer {
    /// `restart`, `stop`, `start`, `exec`, or `none`.
    pub action: String,
    /// 0..=1.
    pub confidence: f64,
    /// Why, for people.
    pub reason: String,
    /// What the model thinks is wrong underneath.
    pub root_cause: String,
    /// For `exec`: the index of the allow-listed command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<usize>,
}

/// What the LLM was asked about one decision and what came of it, beside the rules' verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AiReview {
    /// `openai` or `anthropic`.
    pub provider: String,
    /// The model asked.
    pub model: String,
    /// What the rules alone decided (the floor).
    pub rules: Verdict,
    /// The model's answer, when it gave a well-formed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<ModelAnswer>,
    /// Why the rules decided instead of the model; `None` when the model's answer was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// The answer came from the cache (the same failure was asked about before).
    #[serde(default)]
    pub cached: bool,
    /// How long the model took, in milliseconds (0 when cached or not asked).
    #[serde(default)]
    pub latency_ms: u64,
}
