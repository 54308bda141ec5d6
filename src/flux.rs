//! The Flux objects homelab-flux applies, built from the configuration. Pure logic.
//!
//! The values match what `flux bootstrap` generates (`gotk-sync.yaml`), so a cluster can move
//! between the two tools; `bootstrap --export` prints them for committing to the repository.

use serde_json::{Map, Value, json};

use crate::config::{Auth, Decryption, FluxConfig};

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
/// The Secret with the age identity for `decryption: sops`, and its key, as Flux's SOPS guide
/// names them (`kubectl create secret generic sops-age --from-file=age.agekey=...`).
pub const SOPS_SECRET: &str = "sops-age";
pub const SOPS_SECRET_KEY: &str = "age.agekey";

/// The URL Flux clones: SSH for a deploy key, HTTPS for a token.
pub fn source_url(cfg: &FluxConfig) -> String {
    match cfg.auth {
        Auth::DeployKey => cfg.repo.ssh_url(),
        Auth::Token => cfg.repo.https_url(),
    }
}

/// True when two repository URLs name the same repository: compared without case (GitHub's
/// owner and repository names are case-insensitive, and its `ssh_url` may spell them otherwise
/// than `flux.yaml`), with `.git` and a trailing `/` optional.
pub fn same_repo_url(a: &str, b: &str) -> bool {
    fn key(url: &str) -> String {
        let url = url.trim().trim_end_matches('/');
        let url = url.strip_suffix(".git").unwrap_or(url);
        url.to_ascii_lowercase()
    }
    key(a) == key(b)
}

/// The Namespace `flux-system`.
pub fn namespace() -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
}

/// The Secret `flux-system` with the deploy key, as `flux bootstrap` writes it.
pub fn deploy_key_secret(identity: &str, identity_pub: &str, known_hosts: &str) -> Value {
    secret(&[
        ("identity", identity),
        ("identity.pub", identity_pub),
        ("known_hosts", known_hosts),
    ])
}

/// The Secret `flux-system` for `auth: token`: HTTP Basic auth with the token as password.
pub fn token_secret(token: &str) -> Value {
    secret(&[("username", "git"), ("password", token)])
}

/// The Secret `sops-age` that kustomize-controller decrypts with.
pub fn sops_age_secret(identity: &str) -> Value {
    let mut s = secret(&[(SOPS_SECRET_KEY, identity)]);
    s["metadata"]["name"] = Value::from(SOPS_SECRET);
    s
}

fn secret(entries: &[(&str, &str)]) -> Value {
    let data: std::collections::BTreeMap<String, k8s_openapi::ByteString> = entries
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_string(),
                k8s_openapi::ByteString(v.as_bytes().to_vec()),
            )
        })
        .collect();
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(NAME.to_string()),
            namespace: Some(NAMESPACE.to_string()),
            ..Default::default()
        },
        data: Some(data),
        type_: Some("Opaque".to_string()),
        ..Default::default()
    };
    // A Secret of strings always serialises.
    sorted(serde_json::to_value(secret).unwrap_or(Value::Null))
}

/// The GitRepository `flux-system` for the repository at `url`.
pub fn git_repository(url: &str, branch: &str) -> Value {
    sorted(json!({
        "apiVersion": GIT_REPOSITORY_API,
        "kind": "GitRepository",
        "metadata": { "name": NAME, "namespace": NAMESPACE },
        "spec": {
            "interval": GIT_REPOSITORY_INTERVAL,
            "ref": { "branch": branch },
            "secretRef": { "name": NAME },
            "url": url,
        },
    }))
}

/// The Kustomization `flux-system`; with `decryption: sops` it decrypts with [`SOPS_SECRET`].
pub fn kustomization(cfg: &FluxConfig) -> Value {
    let mut k = json!({
        "apiVersion": KUSTOMIZATION_API,
        "kind": "Kustomization",
        "metadata": { "name": NAME, "namespace": NAMESPACE },
        "spec": {
            "interval": KUSTOMIZATION_INTERVAL,
            "path": cfg.path.as_str(),
            "prune": true,
            "sourceRef": { "kind": "GitRepository", "name": NAME },
        },
    });
    if cfg.decryption == Some(Decryption::Sops) {
        k["spec"]["decryption"] =
            json!({ "provider": "sops", "secretRef": { "name": SOPS_SECRET } });
    }
    sorted(k)
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
    fn repository_urls_compare_without_case_and_dot_git() {
        assert!(same_repo_url(
            "ssh://git@github.com/Username/Manifests.git",
            "ssh://git@github.com/username/manifests"
        ));
        assert!(same_repo_url(
            "https://github.com/o/r/",
            "https://github.com/o/r.git"
        ));
        assert!(!same_repo_url(
            "ssh://git@github.com/o/r.git",
            "ssh://git@github.com/o/other.git"
        ));
        assert!(!same_repo_url(
            "ssh://git@github.com/o/r.git",
            "https://github.com/o/r.git"
        ));
    }

    #[test]
    fn secrets_hold_base64_data() {
        let s = token_secret("abc");
        assert_eq!(s["data"]["password"], "YWJj");
        assert_eq!(s["data"]["username"], "Z2l0");
        assert_eq!(s["metadata"]["namespace"], NAMESPACE);
    }

    #[test]
    fn sops_decryption_names_the_sops_age_secret() {
        let (cfg, _) = parse_flux("repo: https://github.com/o/r\ndecryption: sops\n", "f");
        let k = kustomization(&cfg.unwrap());
        assert_eq!(
            k["spec"]["decryption"],
            json!({"provider": "sops", "secretRef": {"name": "sops-age"}})
        );
        let s = sops_age_secret("AGE-SECRET-KEY-1X");
        assert_eq!(s["metadata"]["name"], "sops-age");
        assert_eq!(s["data"]["age.agekey"], "QUdFLVNFQ1JFVC1LRVktMVg=");
    }

    #[test]
    fn export_matches_flux_bootstrap_layout() {
        let (cfg, _) = parse_flux("repo: https://github.com/o/r\npath: clusters/home\n", "f");
        let cfg = cfg.unwrap();
        let yaml = export_yaml(&[
            git_repository(&source_url(&cfg), "main"),
            kustomization(&cfg),
        ]);
        assert_eq!(
            yaml,
            "---\napiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: flux-system\n  namespace: flux-system\nspec:\n  interval: 1m0s\n  ref:\n    branch: main\n  secretRef:\n    name: flux-system\n  url: ssh://git@github.com/o/r.git\n---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: flux-system\n  namespace: flux-system\nspec:\n  interval: 10m0s\n  path: ./clusters/home\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n"
        );
    }
}
