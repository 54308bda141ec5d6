//! The typed configuration: what `flux.yaml` says, as values that cannot be wrong. The
//! [`config`](crate::config) module reads the files into these; everything else reads these.

use std::fmt;

use crate::branch::BranchName;
use crate::repo_path::RepoPath;
use crate::repo_url::RepoUrl;

/// How the cluster reads the repository.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Auth {
    /// A read-only SSH deploy key, created with the token (the default).
    #[default]
    DeployKey,
    /// The token itself, stored in the cluster.
    Token,
    /// A GitHub App installation: the App's key in the cluster, which source-controller turns
    /// into short-lived installation tokens itself (`provider: github`).
    GitHubApp,
}

impl fmt::Display for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Auth::DeployKey => "deploy-key",
            Auth::Token => "token",
            Auth::GitHubApp => "github-app",
        })
    }
}

/// How the Kustomization decrypts the repository's secrets (`decryption:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decryption {
    /// SOPS with an age identity, in Secret `flux-system/sops-age`.
    Sops,
}

/// `flux.yaml`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FluxConfig {
    pub repo: RepoUrl,
    /// `None`: the repository's default branch (`main` when offline).
    pub branch: Option<BranchName>,
    pub path: RepoPath,
    pub auth: Auth,
    /// `None`: the Kustomization decrypts nothing.
    pub decryption: Option<Decryption>,
}
