//! What happens to Flux itself (SPEC §4a): installed, current, upgraded, or refused.

use serde::Serialize;

use super::Refusal;
use crate::flux::{FluxParts, ManagedBy, Version};

/// What happens to Flux itself (SPEC §4a).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "flux")]
pub enum FluxStep {
    /// The controllers run the wanted release and every part is there: nothing is downloaded.
    Current { version: Version },
    /// Parts are missing (a fresh cluster, an install cut short) or carry no release label:
    /// the manifests are applied.
    Install { version: Version },
    /// The wanted release runs, but a controller is not rolled out (a bad image, an upgrade
    /// cut short): the manifests are applied again (what differs is written) and the rollout
    /// waited for.
    Repair { version: Version },
    /// An older release runs: the manifests of the newer one are applied.
    Upgrade { from: Version, to: Version },
    /// A newer release runs and `--force` was given.
    Downgrade { from: Version, to: Version },
}

impl FluxStep {
    /// Whether the manifests are applied.
    pub fn applies_manifests(self) -> bool {
        !matches!(self, FluxStep::Current { .. })
    }

    /// The release the cluster runs afterwards.
    pub fn wanted(self) -> Version {
        match self {
            FluxStep::Current { version }
            | FluxStep::Install { version }
            | FluxStep::Repair { version } => version,
            FluxStep::Upgrade { to, .. } | FluxStep::Downgrade { to, .. } => to,
        }
    }

    /// The release that ran before, when this run changes it.
    pub fn replaced(self) -> Option<Version> {
        match self {
            FluxStep::Upgrade { from, .. } | FluxStep::Downgrade { from, .. } => Some(from),
            _ => None,
        }
    }
}

/// Decides what happens to Flux: from the parts there and their release label, the release
/// wanted and `--force`.
pub fn flux_step(
    parts: &FluxParts,
    flux_instance: Option<&str>,
    wanted: Version,
    force: bool,
) -> Result<FluxStep, Refusal> {
    let step = match parts.version {
        Some(live) if parts.missing.is_empty() && live == wanted => {
            match parts.not_rolled_out.is_empty() {
                true => return Ok(FluxStep::Current { version: live }),
                false => FluxStep::Repair { version: live },
            }
        }
        Some(live) if live < wanted => FluxStep::Upgrade {
            from: live,
            to: wanted,
        },
        Some(live) if live > wanted && !force => {
            return Err(Refusal::Downgrade { live, wanted });
        }
        Some(live) if live > wanted => FluxStep::Downgrade {
            from: live,
            to: wanted,
        },
        _ => FluxStep::Install { version: wanted },
    };
    // Another tool applies the controllers: it would undo what this run writes.
    let managed = match (parts.managed_by, flux_instance) {
        (_, Some(instance)) => Some((ManagedBy::FluxOperator, Some(instance.to_string()))),
        (Some(by), None) => Some((by, None)),
        (None, None) => None,
    };
    if let Some((by, instance)) = managed
        && parts.version.is_some()
    {
        // The release is the one wanted: the tool that manages it repairs its own rollout.
        if let FluxStep::Repair { version } = step {
            return Ok(FluxStep::Current { version });
        }
        return Err(Refusal::ManagedElsewhere {
            by,
            instance,
            live: parts.version,
            wanted,
        });
    }
    Ok(step)
}
