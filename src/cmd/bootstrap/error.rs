//! Why `bootstrap` did not end with exit 0, each cause with its type and source kept, and the
//! exit code it means.

use crate::cluster::{self, lease::StillHeld};
use crate::cmd::{CannotAsk, CannotLoad, NoRuntime, Reported};
use crate::{flux, git_remote, github, keys, manifests, plan};

/// Why `bootstrap` did not end with exit 0.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Load(#[from] CannotLoad),
    /// The findings (configuration, hygiene, GitHub) hold an error (exit 1); nothing was changed.
    #[error(transparent)]
    Reported(#[from] Reported),
    #[error(transparent)]
    Runtime(#[from] NoRuntime),
    /// GitHub could not be asked (exit 2), after the offline findings were printed.
    #[error(transparent)]
    CannotAsk(#[from] CannotAsk),
    /// A guard of the plan (exit 1, except an unusable SSH address: 2).
    #[error(transparent)]
    Refused(#[from] plan::Refusal),
    /// The deploy key did not open the repository over SSH (exit 1).
    #[error(transparent)]
    NotProven(#[from] Box<NotProven>),
    /// Flux did not get Ready in time, or stalled (exit 1).
    #[error(transparent)]
    NotReady(#[from] NotReady),
    /// Flux's controllers did not roll out in time (exit 1).
    #[error(transparent)]
    NotRolledOut(#[from] super::rollout::NotRolledOut),
    /// Everything was applied (and synced), but GitHub did not delete stale keys (exit 1).
    #[error(transparent)]
    StaleKeysLeft(#[from] StaleKeysLeft),
    #[error("interrupted; run `homelab-flux bootstrap` again: it finishes what this run started")]
    Interrupted,
    #[error(transparent)]
    Cluster(#[from] cluster::Error),
    /// Another run held the bootstrap Lease until the deadline (exit 2).
    #[error(transparent)]
    LeaseHeld(#[from] StillHeld),
    #[error(transparent)]
    GitHub(#[from] github::Error),
    /// GitHub's answers held no repository although they held no error either.
    #[error("GitHub did not describe the repository")]
    NoRepository,
    #[error("cannot read GitHub's SSH host keys")]
    HostKeys(#[source] github::Error),
    #[error("cannot read the branch with the token")]
    BranchHead(#[source] github::Error),
    #[error("cannot create the deploy key on GitHub")]
    CreateKey(#[source] github::Error),
    #[error("cannot use the Flux manifests")]
    Manifests(#[source] manifests::Error),
    #[error(transparent)]
    ManifestsContent(#[from] manifests::ContentError),
    /// A watch stream ended, which kube-runtime's watcher never does by itself.
    #[error("the watch on {0} ended unexpectedly")]
    WatchEnded(&'static str),
    #[error(transparent)]
    Key(#[from] keys::Error),
    #[error("cannot write the output")]
    Output(#[from] std::io::Error),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Reported(_)
            | Error::NotProven(_)
            | Error::NotReady(_)
            | Error::NotRolledOut(_)
            | Error::StaleKeysLeft(_)
            | Error::Refused(
                plan::Refusal::OldKubernetes { .. }
                | plan::Refusal::Downgrade { .. }
                | plan::Refusal::ManagedElsewhere { .. }
                | plan::Refusal::TakenOver(_)
                | plan::Refusal::NoAgeIdentity,
            ) => 1,
            Error::Refused(plan::Refusal::SshUrl(_) | plan::Refusal::NoCredential(..))
            | Error::Load(_)
            | Error::Runtime(_)
            | Error::CannotAsk(_)
            | Error::Interrupted
            | Error::Cluster(_)
            | Error::LeaseHeld(_)
            | Error::GitHub(_)
            | Error::NoRepository
            | Error::HostKeys(_)
            | Error::BranchHead(_)
            | Error::CreateKey(_)
            | Error::Manifests(_)
            | Error::ManifestsContent(_)
            | Error::WatchEnded(_)
            | Error::Key(_)
            | Error::Output(_) => 2,
        }
    }

    pub fn is_reported(&self) -> bool {
        matches!(self, Error::Reported(_))
    }
}

/// The deploy key did not open the repository over SSH; the cluster was not changed. Worded as
/// the proof's own message, which says what the user can do (the SSH client's words below it are not
/// shown: the proof is a field, not the source). The source is the deletion that failed, when
/// the key this run created could not be deleted again.
#[derive(Debug, thiserror::Error)]
#[error("{proof}; the cluster was not changed")]
pub struct NotProven {
    pub proof: git_remote::Error,
    #[source]
    pub left_behind: Option<KeyLeftBehind>,
}

/// The key this run created for a proof that failed, which GitHub did not delete again.
#[derive(Debug, thiserror::Error)]
#[error(
    "the new deploy key `{title}` (id {id}) could not be deleted again; delete it under the repository's Settings → Deploy keys, or run `homelab-flux bootstrap` again, which deletes it as stale"
)]
pub struct KeyLeftBehind {
    pub title: String,
    pub id: u64,
    #[source]
    pub source: github::Error,
}

/// Stale keys of this cluster that GitHub did not delete. The cluster holds its new key and
/// the run went on; the next run deletes them as stale again.
#[derive(Debug)]
pub struct StaleKeysLeft(pub Vec<(String, u64)>);

impl std::fmt::Display for StaleKeysLeft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self
            .0
            .iter()
            .map(|(title, id)| format!("`{title}` (id {id})"))
            .collect();
        let (s, them) = match keys.len() {
            1 => ("", "it"),
            _ => ("s", "them"),
        };
        write!(
            f,
            "the cluster holds its new deploy key, but GitHub did not delete the stale key{s} {}; run `homelab-flux bootstrap` again to delete {them}, or delete {them} under the repository's Settings → Deploy keys",
            keys.join(", "),
        )
    }
}

impl std::error::Error for StaleKeysLeft {}

/// A Flux object that did not get Ready: the controller's words and a hint.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error(
        "{kind} `{}/{}` has no Ready condition yet: are the Flux controllers running? (`kubectl -n flux-system get pods`)",
        flux::NAMESPACE,
        flux::NAME
    )]
    NoCondition { kind: &'static str },
    #[error(
        "{kind} `{}/{}` is not Ready: {reason}: {message} (hint: {hint})",
        flux::NAMESPACE,
        flux::NAME
    )]
    Failing {
        kind: &'static str,
        reason: String,
        message: String,
        hint: &'static str,
    },
    #[error(
        "{kind} `{}/{}` is suspended (`spec.suspend: true`, as `flux suspend` sets it): Flux does not reconcile it, so the wait cannot end; resume it with `{resume}`, then run `homelab-flux bootstrap` again",
        flux::NAMESPACE,
        flux::NAME
    )]
    Suspended { kind: &'static str, resume: String },
    #[error(
        "{kind} `{}/{}` stalled: {reason}: {message}; the controller does not retry until its spec changes (hint: {hint})",
        flux::NAMESPACE,
        flux::NAME
    )]
    Stalled {
        kind: &'static str,
        reason: String,
        message: String,
        hint: &'static str,
    },
    #[error(
        "{kind} `{}/{}` is waiting for a dependency: {message} (hint: the Kustomizations it `dependsOn` must get Ready first: `kubectl get kustomizations -A`)",
        flux::NAMESPACE,
        flux::NAME
    )]
    Dependency { kind: &'static str, message: String },
    #[error(
        "{kind} `{}/{}` is Ready at {at}, but not yet at {wanted} (hint: Flux applies a new revision at its next reconcile; `flux reconcile {} {} -n {}` asks for it now)",
        flux::NAMESPACE,
        flux::NAME,
        if *kind == "GitRepository" { "source git" } else { "kustomization" },
        flux::NAME,
        flux::NAMESPACE
    )]
    Behind {
        kind: &'static str,
        at: String,
        wanted: String,
    },
    #[error(
        "{kind} `{}/{}` has not reconciled its new spec yet (its Ready condition is of an older generation: {reason}: {message}): are the Flux controllers running? (`kubectl -n flux-system get pods`)",
        flux::NAMESPACE,
        flux::NAME
    )]
    OlderGeneration {
        kind: &'static str,
        reason: String,
        message: String,
    },
}

impl NotReady {
    /// The failure after a timeout, or at once for a state that does not change by itself,
    /// from what the object was last seen waiting for.
    pub fn from_waiting(kind: flux::Kind, waiting: &crate::health::Waiting) -> NotReady {
        use crate::health::WaitState;
        let name = kind.name();
        let c = waiting.condition.as_ref();
        match &waiting.state {
            WaitState::Suspended => NotReady::Suspended {
                kind: name,
                resume: crate::health::resume_command(kind),
            },
            WaitState::Stalled => NotReady::Stalled {
                kind: name,
                reason: c.map(|c| c.reason.clone()).unwrap_or_default(),
                message: c.map(|c| c.message.clone()).unwrap_or_default(),
                hint: flux::not_ready_hint(c.map_or("", |c| c.message.as_str())),
            },
            WaitState::Dependency => NotReady::Dependency {
                kind: name,
                message: c.map(|c| c.message.clone()).unwrap_or_default(),
            },
            WaitState::Behind { at, wanted } => NotReady::Behind {
                kind: name,
                at: crate::step::short(at).to_string(),
                wanted: wanted.as_deref().map_or_else(
                    || "the branch's head".to_string(),
                    |w| crate::step::short(w).to_string(),
                ),
            },
            WaitState::Pending => match c {
                Some(c) => NotReady::OlderGeneration {
                    kind: name,
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                },
                None => NotReady::NoCondition { kind: name },
            },
            WaitState::NotReady => NotReady::from_condition(kind, c),
        }
    }

    /// The failure after a timeout or a stall, from the object's last Ready condition.
    pub fn from_condition(kind: flux::Kind, condition: Option<&flux::Condition>) -> NotReady {
        let kind = kind.name();
        match condition {
            None => NotReady::NoCondition { kind },
            Some(c) => NotReady::Failing {
                kind,
                reason: c.reason.clone(),
                message: c.message.clone(),
                hint: flux::not_ready_hint(&c.message),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flux::Kind;

    /// Exit 1 is for a run that found problems, 2 for one that could not run (SPEC §2), by one
    /// route: the error's variant.
    #[test]
    fn exit_codes_follow_the_variant() {
        let ssh = crate::ssh_url::InvalidSshUrl {
            url: "x".into(),
            reason: "no",
        };
        let not_ready = NotReady::from_condition(Kind::Kustomization, None);
        let taken = plan::TakenOver {
            kind: Kind::Kustomization,
            what: plan::Takeover::Path,
            live: "./a".into(),
            wanted: "./b".into(),
        };
        let cases: Vec<(Error, u8)> = vec![
            (Reported.into(), 1),
            (plan::Refusal::TakenOver(vec![taken]).into(), 1),
            (
                plan::Refusal::OldKubernetes {
                    git_version: "v1.30.0".into(),
                    flux: flux::pinned(),
                    min: flux::Version::new(1, 35, 2),
                    older: None,
                }
                .into(),
                1,
            ),
            (
                plan::Refusal::Downgrade {
                    live: flux::Version::new(2, 11, 0),
                    wanted: flux::pinned(),
                }
                .into(),
                1,
            ),
            (plan::Refusal::SshUrl(ssh).into(), 2),
            (not_ready.into(), 1),
            (Error::Interrupted, 2),
            (Error::WatchEnded("Kustomization"), 2),
        ];
        for (error, code) in cases {
            assert_eq!(error.exit_code(), code, "{error}");
        }
    }

    /// The failure after a wait reads as it did when it was a string, the controller's words
    /// and a hint kept as fields.
    #[test]
    fn not_ready_names_the_object_the_reason_and_a_hint() {
        let c = flux::Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "GitOperationFailed".into(),
            message: "ssh: handshake failed: unable to authenticate".into(),
        };
        assert_eq!(
            NotReady::from_condition(Kind::GitRepository, Some(&c)).to_string(),
            "GitRepository `flux-system/flux-system` is not Ready: GitOperationFailed: ssh: handshake failed: unable to authenticate (hint: the deploy key is missing on GitHub or was refused: run `homelab-flux bootstrap` again to replace it)"
        );
        assert_eq!(
            NotReady::from_condition(Kind::Kustomization, None).to_string(),
            "Kustomization `flux-system/flux-system` has no Ready condition yet: are the Flux controllers running? (`kubectl -n flux-system get pods`)"
        );
    }

    /// The key left behind by a failed proof is the error's source, not words inside it.
    #[test]
    fn a_key_left_behind_is_the_source_of_not_proven() {
        let e = NotProven {
            proof: git_remote::Error::NoHostKeys {
                host: "github.com".into(),
            },
            left_behind: Some(KeyLeftBehind {
                title: "t".into(),
                id: 7,
                source: github::Error::InvalidToken,
            }),
        };
        let source = std::error::Error::source(&e).expect("a source");
        assert!(
            source
                .to_string()
                .starts_with("the new deploy key `t` (id 7)")
        );
        assert_eq!(
            crate::chain::chain(&e).count(),
            3,
            "the proof, the key left behind, GitHub's answer"
        );
    }

    /// A state that does not change by itself is named with what to do, and a Ready behind
    /// its source is never called "not Ready".
    #[test]
    fn each_waiting_state_ends_in_its_own_message() {
        use crate::health::{WaitState, Waiting};
        let suspended = Waiting {
            state: WaitState::Suspended,
            condition: None,
        };
        assert_eq!(
            NotReady::from_waiting(Kind::GitRepository, &suspended).to_string(),
            "GitRepository `flux-system/flux-system` is suspended (`spec.suspend: true`, as `flux suspend` sets it): Flux does not reconcile it, so the wait cannot end; resume it with `flux resume source git flux-system -n flux-system`, then run `homelab-flux bootstrap` again"
        );
        let behind = Waiting {
            state: WaitState::Behind {
                at: "a".repeat(40),
                wanted: Some("b".repeat(40)),
            },
            condition: Some(flux::Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "ReconciliationSucceeded".into(),
                message: "Applied revision: main@sha1:aaaa".into(),
            }),
        };
        let text = NotReady::from_waiting(Kind::Kustomization, &behind).to_string();
        assert_eq!(
            text,
            "Kustomization `flux-system/flux-system` is Ready at aaaaaaaaaaaa, but not yet at bbbbbbbbbbbb (hint: Flux applies a new revision at its next reconcile; `flux reconcile kustomization flux-system -n flux-system` asks for it now)"
        );
        assert!(!text.contains("not Ready"));
        let stalled = Waiting {
            state: WaitState::Stalled,
            condition: Some(flux::Condition {
                type_: "Stalled".into(),
                status: "True".into(),
                reason: "InvalidURL".into(),
                message: "bad URL".into(),
            }),
        };
        assert!(
            NotReady::from_waiting(Kind::GitRepository, &stalled)
                .to_string()
                .starts_with(
                    "GitRepository `flux-system/flux-system` stalled: InvalidURL: bad URL;"
                )
        );
    }
}
