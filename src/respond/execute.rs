//! Carrying out one action through the engine: restart, start, stop or an allow-listed exec.

use std::time::Duration;

use crate::engine::{ContainerEngine, EngineError};
use crate::model::decision::ActionKind;
use crate::policy::HealthPolicy;

/// Why an action failed; the message is what `remediation_complete` reports.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ActionError {
    /// The engine refused or failed the call.
    #[error("{op} failed: {source}")]
    Engine {
        /// `restart`, `start`, `stop` or `exec`.
        op: &'static str,
        /// The engine's error.
        #[source]
        source: EngineError,
    },
    /// An exec was decided, but the policy allow-lists no command.
    #[error("no exec command is allow-listed")]
    NoCommand,
    /// The command ran and exited non-zero (or without a code).
    #[error("exec {command:?} exited {code:?}: {output}")]
    ExecExit {
        /// The command.
        command: Vec<String>,
        /// Its exit code.
        code: Option<i64>,
        /// Its output, trimmed.
        output: String,
    },
    /// The container did not come back (see [`super::verify`]).
    #[error("{0}")]
    NotBack(String),
}

/// What to do when the call itself succeeded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Done {
    /// Verify that the container came back (restart, start).
    Verify,
    /// Nothing to verify; this is the outcome.
    Finished(String),
}

/// Makes the engine call of `action` on `id`.
pub(crate) async fn execute(
    docker: &dyn ContainerEngine,
    policy: &HealthPolicy,
    id: &str,
    action: ActionKind,
    command: Option<&[String]>,
) -> Result<Done, ActionError> {
    let r = &policy.spec.remediation;
    let engine = |op| move |source| ActionError::Engine { op, source };
    match action {
        ActionKind::Restart => {
            docker
                .restart(id, r.stop_timeout.get())
                .await
                .map_err(engine("restart"))?;
            Ok(Done::Verify)
        }
        ActionKind::Start => {
            docker.start(id).await.map_err(engine("start"))?;
            Ok(Done::Verify)
        }
        ActionKind::Stop => {
            docker
                .stop(id, r.stop_timeout.get())
                .await
                .map_err(engine("stop"))?;
            Ok(Done::Finished("container stopped".to_owned()))
        }
        ActionKind::Exec => {
            let command = command.ok_or(ActionError::NoCommand)?;
            let timeout = r
                .exec
                .as_ref()
                .map_or(Duration::from_secs(30), |e| e.timeout.get());
            let out = docker
                .exec(id, command, timeout)
                .await
                .map_err(engine("exec"))?;
            match out.exit_code {
                Some(0) => Ok(Done::Finished(format!("exec {command:?} exited 0"))),
                code => Err(ActionError::ExecExit {
                    command: command.to_vec(),
                    code,
                    output: out.output.trim().to_owned(),
                }),
            }
        }
    }
}
