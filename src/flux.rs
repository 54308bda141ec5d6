//! The Flux objects homelab-flux applies, built from the configuration. Pure logic.
//!
//! The values match what `flux bootstrap` generates (`gotk-sync.yaml`), so a cluster can move
//! between the two tools; `bootstrap --export` prints them for committing to the repository.

use serde_json::{Map, Value, json};

use crate::config::{Auth, FluxConfig};

/// The namespace Flux runs in, and the name of every object homelab-flux owns.
pub const NAMESPACE: &str = "flux-system";
/// The name of the Secret, the GitRepository and the Kustomization.
pub const NAME: &str = "flux-system";
/// The branch used when the configuration names none and GitHub cannot be asked.
pub const OFFLINE_DEFAULT_BRANCH: &str = "main";

pub const GIT_REPOSITORY_API: &str = "source.toolkit.fluxcd.io/v1";
pub const KUSTOMIZATION_API: &str = "kustomize.toolkit.fluxcd.io/v1";
pub const GIT_REPOSITORY_INTERVAL: &str = "1m0s";
pub const KUSTOMIZATION_INTERVAL: &str = "10m0s";

/// The URL Flux clones: SSH for a deploy key, HTTPS for a token.
pub fn source_url(cfg: &FluxConfig) -> String {
    match cfg.auth {
        Auth::DeployKey => cfg.repo.ssh_url(),
        Auth::Token => cfg.repo.https_url(),
    }
}

/// The GitRepository `flux-system`.
pub fn git_repository(cfg: &FluxConfig, branch: &str) -> Value {
    sorted(json!({
        "apiVersion": GIT_REPOSITORY_API,
        "kind": "GitRepository",
        "metadata": { "name": NAME, "namespace": NAMESPACE },
        "spec": {
            "interval": GIT_REPOSITORY_INTERVAL,
            "ref": { "branch": branch },
            "secretRef": { "name": NAME },
            "url": source_url(cfg),
        },
    }))
}

/// The Kustomization `flux-system`.
pub fn kustomization(cfg: &FluxConfig) -> Value {
    sorted(json!({
        "apiVersion": KUSTOMIZATION_API,
        "kind": "Kustomization",
        "metadata": { "name": NAME, "namespace": NAMESPACE },
        "spec": {
            "interval": KUSTOMIZATION_INTERVAL,
            "path": cfg.path.as_str(),
            "prune": true,
            "sourceRef": { "kind": "GitRepository", "name": NAME },
        },
    }))
}

/// The objects as a YAML stream, each document starting with `---`, keys sorted.
pub fn export_yaml(objects: &[Value]) -> String {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        // Serialising a JSON value cannot fail: it has string keys and no non-finite floats.
        out.push_str(&serde_yaml::to_string(&sorted(o.clone())).unwrap_or_default());
    }
    out
}

/// Rebuilds every map with its keys in order, whatever map type serde_json was built with.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sorted(v)))
                    .collect::<Map<_, _>>(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_flux;

    #[test]
    fn export_matches_flux_bootstrap_layout() {
        let (cfg, _) = parse_flux("repo: https://github.com/o/r\npath: clusters/home\n", "f");
        let cfg = cfg.unwrap();
        let yaml = export_yaml(&[git_repository(&cfg, "main"), kustomization(&cfg)]);
        assert_eq!(
            yaml,
            "---\napiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: flux-system\n  namespace: flux-system\nspec:\n  interval: 1m0s\n  ref:\n    branch: main\n  secretRef:\n    name: flux-system\n  url: ssh://git@github.com/o/r.git\n---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: flux-system\n  namespace: flux-system\nspec:\n  interval: 10m0s\n  path: ./clusters/home\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n"
        );
    }
}
