//! Act: the plan carried out, one write at a time, each reported as a step. The order is the
//! plan's (see the module story in `mod.rs`); every write is an idempotent server-side apply, so
//! that a run cut short anywhere is finished by the next one.

use secrecy::SecretString;
use serde_json::Value;

use super::{Args, Error, KeyLeftBehind, NotProven};
use crate::cluster::Cluster;
use crate::github::GitHub;
use crate::keys::KeyPair;
use crate::output::Steps;
use crate::plan::{self, Credentials, Plan};
use crate::settings::FluxConfig;
use crate::step::Step;
use crate::{flux, git_remote, manifests};

/// What the credentials step settled.
pub(super) struct Settled {
    /// The Secret holding a new key (`None` when the plan's Secret is known, or in a dry run).
    pub secret: Option<Value>,
    /// The branch's commit, proven over SSH or read from GitHub (`None` in a dry run that would
    /// make a new key).
    pub sha: Option<String>,
    /// How to read the branch's head over SSH when the token cannot read it from the API.
    pub ssh: Option<SshAccess>,
}

/// A deploy key and where it opens the repository.
pub(super) struct SshAccess {
    pub ssh_url: String,
    pub private: SecretString,
    pub host_keys: Vec<String>,
}

/// What a run works with: its arguments, the cluster, GitHub, the configuration.
pub(super) struct Run<'a> {
    pub args: &'a Args,
    pub cluster: &'a Cluster,
    pub gh: &'a GitHub,
    /// Deletes stale deploy keys: the token's client (with `auth: github-app`, `gh` reads with
    /// the installation token, which may not manage deploy keys).
    pub keys_gh: &'a GitHub,
    pub cfg: &'a FluxConfig,
}

/// Flux's install manifests, read and checked against the pinned SHA-256, as objects.
pub(super) struct Manifests {
    pub source: manifests::Source,
    pub sha256: String,
    pub documents: Vec<Value>,
    /// Their release, from their labels.
    pub version: flux::Version,
}

impl Run<'_> {
    /// Applies an object the plan says changes, and says so.
    pub async fn apply(&self, object: &plan::Object, steps: &mut Steps<'_>) -> Result<(), Error> {
        if object.change.is_write() {
            self.cluster.apply(object.kind, &object.desired).await?;
        }
        steps.emit(Step::applied(object));
        Ok(())
    }

    /// Reads the install manifests (`--flux-manifests`, else the `install.yaml` of the release
    /// wanted) and checks their release label: it must be there, and for the default source
    /// be the release asked for.
    pub async fn manifests(&self, wanted: flux::Version) -> Result<Manifests, Error> {
        let given = self.args.flux_manifests.clone();
        let source = given.clone().unwrap_or_else(|| default_manifests(wanted));
        let pinned = self.args.flux_manifests_sha256.as_deref();
        let fetched = manifests::fetch(&source, pinned)
            .await
            .map_err(Error::Manifests)?;
        let documents = manifests::documents(&source, &fetched.text)?;
        let version = flux::manifests_version(&documents).ok_or_else(|| {
            manifests::ContentError::NoVersion {
                source_name: source.to_string(),
            }
        })?;
        if given.is_none() && version != wanted {
            return Err(manifests::ContentError::OtherVersion {
                source_name: source.to_string(),
                found: version.to_string(),
                wanted: wanted.to_string(),
            }
            .into());
        }
        Ok(Manifests {
            source,
            sha256: fetched.sha256,
            documents,
            version,
        })
    }

    /// The steps that say the manifests were read and applied.
    pub fn installed(&self, m: &Manifests, steps: &mut Steps<'_>) {
        steps.emit(Step::ManifestsRead {
            source: m.source.to_string(),
            sha256: m.sha256.clone(),
            pinned: self.args.flux_manifests_sha256.is_some(),
        });
        steps.emit(Step::Installed {
            source: m.source.to_string(),
            objects: m.documents.len(),
        });
    }

    /// Applies Flux's install manifests (writing only the objects whose content differs); after
    /// an upgrade, deletes what the old release had and the new one dropped.
    pub async fn install(
        &self,
        plan: &Plan,
        m: &Manifests,
        steps: &mut Steps<'_>,
    ) -> Result<(), Error> {
        if !plan.install.missing.is_empty() {
            tracing::debug!(
                "Flux is not fully installed: no {}",
                plan.install.missing.join(", no ")
            );
        }
        flux_change(plan, true, steps);
        // Stored versions the new CRDs drop are migrated first (SPEC §4a).
        for p in self.cluster.pending_migrations(&m.documents).await? {
            let objects = self
                .cluster
                .migrate(&p.migration, self.args.timeout)
                .await?;
            steps.emit(Step::migrated(&p.migration, objects));
        }
        let (count, written) = self
            .cluster
            .install(&m.documents, self.args.timeout)
            .await?;
        tracing::debug!(
            "{written} of {count} objects written, {} already as wanted",
            count - written
        );
        self.installed(m, steps);
        if let Some(from) = plan.flux.replaced() {
            let pruned = self.cluster.prune_release(from, &m.documents).await?;
            if !pruned.is_empty() {
                steps.emit(Step::Pruned { names: pruned });
            }
        }
        Ok(())
    }

    /// Keeps the key in the cluster, or makes, registers and proves a new one (deleting it
    /// again if the proof fails), or takes the token; the branch's commit.
    pub async fn credentials(&self, plan: &Plan, steps: &mut Steps<'_>) -> Result<Settled, Error> {
        let Credentials::NewKey = &plan.credentials else {
            return self.known_credentials(plan, steps).await;
        };
        let (owner, name) = (self.cfg.repo.owner.as_str(), self.cfg.repo.name.as_str());
        let title = plan.title.as_str();
        let pair = KeyPair::generate(title)?;
        let key = self
            .gh
            .create_deploy_key(owner, name, title, pair.public_key_openssh(), true)
            .await
            .map_err(Error::CreateKey)?;
        steps.emit(Step::KeyCreated {
            title: title.to_string(),
            fingerprint: pair.fingerprint().to_string(),
        });
        let access = access(plan, &pair);
        let sha = self
            .prove(&access, &plan.branch, Some((title, key.id)), steps)
            .await?;
        use secrecy::ExposeSecret;
        let secret = flux::deploy_key_secret(
            pair.private_key_openssh().expose_secret(),
            pair.public_key_openssh(),
            &plan.known_hosts,
        );
        Ok(Settled {
            secret: Some(secret),
            sha: Some(sha),
            ssh: Some(access),
        })
    }

    /// The credentials the cluster has already (the token, or a key GitHub still lists), and
    /// the branch's commit: reads only, the same in a dry run. `None` for a new key.
    pub async fn known_credentials(
        &self,
        plan: &Plan,
        steps: &mut Steps<'_>,
    ) -> Result<Settled, Error> {
        let (owner, name) = (self.cfg.repo.owner.as_str(), self.cfg.repo.name.as_str());
        let branch = plan.branch.as_str();
        match &plan.credentials {
            Credentials::Token | Credentials::GitHubApp => {
                let sha = match &plan.head {
                    Some(sha) => sha.clone(),
                    None => {
                        self.gh
                            .get_branch(owner, name, branch)
                            .await
                            .map_err(Error::BranchHead)?
                            .commit_sha
                    }
                };
                steps.emit(Step::BranchHead {
                    branch: branch.to_string(),
                    commit: sha.clone(),
                    token: true,
                });
                Ok(Settled {
                    secret: None,
                    sha: Some(sha),
                    ssh: None,
                })
            }
            Credentials::Reuse(pair) => {
                steps.emit(Step::KeyKept {
                    fingerprint: pair.fingerprint().to_string(),
                });
                let access = access(plan, pair);
                // The key GitHub still lists is the one Flux already uses: the API's head is
                // enough, unless the token cannot read contents; then the SSH remote says.
                let sha = match &plan.head {
                    Some(sha) => {
                        steps.emit(Step::BranchHead {
                            branch: branch.to_string(),
                            commit: sha.clone(),
                            token: false,
                        });
                        sha.clone()
                    }
                    None => self.prove(&access, branch, None, steps).await?,
                };
                Ok(Settled {
                    secret: None,
                    sha: Some(sha),
                    ssh: Some(access),
                })
            }
            Credentials::NewKey => Ok(Settled {
                secret: None,
                sha: None,
                ssh: None,
            }),
        }
    }

    /// Proves a key over SSH: the branch's head there. A key that opens nothing is deleted
    /// again when this run created it (`created`), so that no unproven key is left behind.
    async fn prove(
        &self,
        access: &SshAccess,
        branch: &str,
        created: Option<(&str, u64)>,
        steps: &mut Steps<'_>,
    ) -> Result<String, Error> {
        match prove(access, branch).await {
            Ok(sha) => {
                steps.emit(Step::KeyProved {
                    branch: branch.to_string(),
                    commit: sha.clone(),
                });
                Ok(sha)
            }
            Err(proof) => {
                if let Some(detail) = std::error::Error::source(&proof) {
                    tracing::debug!("the SSH proof failed: {detail}");
                }
                let mut left_behind = None;
                if let Some((title, id)) = created
                    && let Err(source) = self
                        .gh
                        .delete_deploy_key(&self.cfg.repo.owner, &self.cfg.repo.name, id)
                        .await
                {
                    left_behind = Some(KeyLeftBehind {
                        title: title.to_string(),
                        id,
                        source,
                    });
                }
                Err(Box::new(NotProven { proof, left_behind }).into())
            }
        }
    }

    /// Deletes the keys of this cluster's title that the cluster no longer holds. A key GitHub
    /// does not delete is a step line and is returned: the cluster already holds its new key,
    /// so the run goes on, and the next run deletes it as stale.
    pub async fn delete_stale_keys(
        &self,
        plan: &Plan,
        steps: &mut Steps<'_>,
    ) -> Vec<(String, u64)> {
        let mut left = Vec::new();
        for key in &plan.stale_keys {
            let (title, id) = (key.title.clone(), key.id);
            match self
                .keys_gh
                .delete_deploy_key(&self.cfg.repo.owner, &self.cfg.repo.name, id)
                .await
            {
                Ok(()) => steps.emit(Step::StaleKeyDeleted { title, id }),
                Err(e) => {
                    steps.emit(Step::StaleKeyLeft {
                        title: title.clone(),
                        id,
                        reason: e.to_string(),
                    });
                    left.push((title, id));
                }
            }
        }
        left
    }
}

/// The step that says what happens to Flux itself: a new release, or a repair.
pub(super) fn flux_change(plan: &Plan, reapply: bool, steps: &mut Steps<'_>) {
    match plan.flux {
        plan::FluxStep::Repair { version } => steps.emit(Step::FluxRepair {
            version,
            names: plan.install.not_rolled_out.clone(),
            reapply,
        }),
        step => {
            if let Some(from) = step.replaced() {
                steps.emit(Step::FluxRelease {
                    from,
                    to: step.wanted(),
                });
            }
        }
    }
}

/// A Flux release's `install.yaml` on GitHub.
fn default_manifests(version: flux::Version) -> manifests::Source {
    manifests::parse_source(&flux::default_manifests_url(version))
        .expect("the release URL is https")
}

/// How a key opens the repository over SSH.
fn access(plan: &Plan, pair: &KeyPair) -> SshAccess {
    SshAccess {
        ssh_url: plan.ssh_url.clone(),
        private: pair.private_key_openssh().clone(),
        host_keys: plan.host_keys.clone(),
    }
}

/// Lists the remote's refs over SSH with the key, checking the host key; the branch's head.
/// Gives up after [`git_remote::PROOF_DEADLINE`].
pub(super) async fn prove(access: &SshAccess, branch: &str) -> Result<String, git_remote::Error> {
    git_remote::prove_key(&access.ssh_url, &access.private, &access.host_keys, branch).await
}
