//! `[isolation]`: whether process functions' environments run as users of their own, decided
//! once at start and said out loud when they cannot.

use std::sync::Arc;

use anyhow::Context as _;
use impulse_config::{Config, IsolationMode, TargetConfig};
use impulse_invoker::process::Isolation;

/// Sets up isolation as `[isolation]` asks: `None` when it is off, cannot be had in `auto`
/// mode (with a warning saying what that exposes), or no function runs processes. An error
/// when `required` and this process cannot switch users.
pub(crate) fn start(config: &Config) -> anyhow::Result<Option<Arc<Isolation>>> {
    let settings = &config.isolation;
    let runs_processes = config
        .functions
        .values()
        .any(|f| matches!(f.target, TargetConfig::Process(_)));
    if !runs_processes {
        return Ok(None);
    }
    if settings.mode == IsolationMode::Off {
        tracing::warn!(
            "Function isolation is off (isolation.mode = \"off\"): {}",
            EXPOSED
        );
        return Ok(None);
    }
    // Named after the range, so a restarted broker finds (and empties) its predecessor's.
    let scratch = std::env::temp_dir().join(format!("impulse-environments-{}", settings.first_uid));
    match Isolation::start(settings.first_uid, settings.uid_count, scratch) {
        Ok(isolation) => {
            let uids = isolation.uids();
            tracing::info!(
                first_uid = uids.start,
                last_uid = uids.end - 1,
                "Function isolation: each execution environment runs as a user of its own."
            );
            if let Err(reason) = isolation.memory_limits() {
                tracing::warn!(
                    reason,
                    "memory_size is not enforced: execution environments get no memory cgroup."
                );
            }
            Ok(Some(Arc::new(isolation)))
        }
        Err(err) if settings.mode == IsolationMode::Required => Err(err).context(
            "isolation.mode = \"required\", but execution environments cannot be isolated",
        ),
        Err(err) => {
            tracing::warn!(
                error = %err,
                "Function isolation is unavailable: {} Run the broker as root (or with \
                 CAP_SETUID, CAP_SETGID, CAP_KILL, CAP_CHOWN and CAP_DAC_OVERRIDE) to isolate \
                 them; set isolation.mode = \
                 \"required\" to refuse to start without it.",
                EXPOSED
            );
            Ok(None)
        }
    }
}

/// What running every environment as the broker's user exposes.
const EXPOSED: &str = "process functions run as the broker's user, so each can read the others' \
                       and the broker's environment and memory, take the others' invocations \
                       from their Runtime API, and leave processes running after it ends.";
