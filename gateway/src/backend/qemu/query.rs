//! What QMP tells about a domain: run state, UUID, vCPUs and memory, in one short QMP
//! conversation (the caller holds the domain's QMP turn and bounds the time).

use serde_json::Value;
use virtgate_proto::DomainState;

use crate::backend::qmp::{Qmp, QmpError};
use crate::config::DomainConfig;

/// What QMP tells about a domain.
pub struct Queried {
    /// From `query-status`.
    pub state: DomainState,
    /// From `query-uuid`; `None` for the nil UUID QEMU reports when none was set.
    pub uuid: Option<String>,
    /// Number of entries of `query-cpus-fast`.
    pub vcpus: Option<u32>,
    /// `base-memory` (+ `plugged-memory`) of `query-memory-size-summary`, in MiB.
    pub memory_mib: Option<u64>,
}

/// Ask QEMU for the domain's state; only `query-status` must succeed.
pub async fn query(d: &DomainConfig) -> Result<Queried, QmpError> {
    let mut qmp = Qmp::connect(&d.qmp).await?;
    let status = qmp.execute("query-status").await?;
    let state = state_from_status(status.get("status").and_then(Value::as_str).unwrap_or(""));
    // The rest is best effort: older QEMUs lack some commands.
    let uuid = qmp
        .execute("query-uuid")
        .await
        .ok()
        .and_then(|v| v.get("UUID").and_then(Value::as_str).map(str::to_owned))
        .filter(|u| u != "00000000-0000-0000-0000-000000000000");
    let vcpus = qmp
        .execute("query-cpus-fast")
        .await
        .ok()
        .and_then(|v| v.as_array().map(|a| a.len() as u32));
    let memory_mib = qmp
        .execute("query-memory-size-summary")
        .await
        .ok()
        .and_then(|v| {
            let base = v.get("base-memory").and_then(Value::as_u64)?;
            let plugged = v.get("plugged-memory").and_then(Value::as_u64).unwrap_or(0);
            Some((base + plugged) / (1024 * 1024))
        });
    Ok(Queried {
        state,
        uuid,
        vcpus,
        memory_mib,
    })
}

/// QMP `RunState` names to API states.
pub fn state_from_status(status: &str) -> DomainState {
    match status {
        "running" => DomainState::Running,
        "paused" | "suspended" | "prelaunch" | "inmigrate" | "postmigrate" | "finish-migrate"
        | "save-vm" | "restore-vm" | "colo" | "debug" | "io-error" | "watchdog" => {
            DomainState::Paused
        }
        "shutdown" => DomainState::ShutOff,
        "guest-panicked" | "internal-error" => DomainState::Crashed,
        _ => DomainState::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_states_map() {
        assert_eq!(state_from_status("running"), DomainState::Running);
        assert_eq!(state_from_status("paused"), DomainState::Paused);
        assert_eq!(state_from_status("shutdown"), DomainState::ShutOff);
        assert_eq!(state_from_status("guest-panicked"), DomainState::Crashed);
        assert_eq!(state_from_status("whatever"), DomainState::Other);
    }
}
