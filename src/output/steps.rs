//! The step events of `bootstrap`, rendered as step lines or JSON lines.

use serde::Serialize;

use super::{Format, Ui};
use crate::health::WaitState;
use crate::step::{Step, short};
use crate::text::json_safe;

/// Renders the step events of `bootstrap`: step lines with timings on stderr, or one JSON
/// object per line on stdout (`--format json`). Progress (the wait's condition, a held Lease) is
/// a live line on a terminal.
pub struct Steps<'a> {
    ui: &'a Ui,
    format: Format,
    /// The steps of a plan (`--dry-run`): what would be done, not what was.
    planned: bool,
    last: std::time::Instant,
    shown: String,
}

impl<'a> Steps<'a> {
    /// Steps as they are done.
    pub fn new(ui: &'a Ui, format: Format) -> Steps<'a> {
        Steps::with(ui, format, false)
    }

    /// The steps of a plan, shown as what would be done (`--dry-run`).
    pub fn plan(ui: &'a Ui, format: Format) -> Steps<'a> {
        Steps::with(ui, format, true)
    }

    fn with(ui: &'a Ui, format: Format, planned: bool) -> Steps<'a> {
        Steps {
            ui,
            format,
            planned,
            last: std::time::Instant::now(),
            shown: String::new(),
        }
    }

    /// Shows one event. Progress that repeats the last one shown is skipped.
    pub fn emit(&mut self, step: Step) {
        let lines = step_lines(&step, self.planned);
        if step.is_progress() {
            let text = lines.concat();
            if text == self.shown {
                return;
            }
            self.shown = text;
        } else if !self.shown.is_empty() {
            self.progress_done();
        }
        let timed = !step.is_progress()
            && !matches!(
                step,
                Step::ManifestsRead { .. }
                    | Step::TakeoverNote { .. }
                    | Step::OldKeyUnlisted { .. }
            );
        let ms = self.last.elapsed().as_millis();
        if timed {
            self.last = std::time::Instant::now();
        }
        match self.format {
            Format::Json => {
                #[derive(Serialize)]
                struct Line<'s> {
                    #[serde(flatten)]
                    step: &'s Step,
                    dry_run: bool,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    ms: Option<u128>,
                }
                let line = Line {
                    step: &step,
                    dry_run: self.planned,
                    ms: timed.then_some(ms),
                };
                if let Ok(mut json) = serde_json::to_string(&line) {
                    json.push('\n');
                    let _ = self.ui.out(&json_safe(&json));
                }
            }
            Format::Text if step.is_progress() => self.ui.progress(&lines[0]),
            Format::Text => {
                let mut lines = lines.into_iter();
                if let Some(first) = lines.next() {
                    if timed {
                        self.ui.step(&format!("- {first} ({ms} ms)"));
                    } else {
                        self.ui.step(&first);
                    }
                }
                for line in lines {
                    self.ui.step(&line);
                }
            }
        }
    }

    /// Ends a live progress line.
    pub fn progress_done(&mut self) {
        if !self.shown.is_empty() {
            self.shown.clear();
            self.ui.progress_done();
        }
    }
}

/// The text of an event: its line, then (in a plan) one line per field that would change.
pub fn step_lines(step: &Step, planned: bool) -> Vec<String> {
    use crate::plan::Change;
    let prefix = if planned { "(dry run) " } else { "" };
    let would = |done: &str| {
        if planned {
            format!("would be {done}")
        } else {
            done.to_string()
        }
    };
    let one = |s: String| vec![s];
    match step {
        Step::Checked { repo } => one(format!("checked the configuration and `{repo}` on GitHub")),
        Step::Connected {
            context,
            kubernetes,
        } => one(format!(
            "connected to `{context}` (Kubernetes {kubernetes})"
        )),
        Step::ManifestsRead {
            source,
            sha256,
            pinned,
        } => one(format!(
            "- the Flux manifests `{source}` have SHA-256 {sha256}{}",
            if *pinned { " (as pinned)" } else { "" }
        )),
        Step::FluxRelease { from, to } => one(format!(
            "{prefix}Flux {from} → {to}{}",
            if to < from {
                " (a downgrade, `--force`)"
            } else {
                ""
            }
        )),
        Step::KubernetesUntested {
            kubernetes,
            flux,
            tested,
        } => one(format!(
            "warning: Kubernetes {kubernetes} is newer than Flux {flux} is tested with (up to {tested}); it may work, or choose a newer `--flux-version`"
        )),
        Step::Migrated {
            kind,
            objects,
            from,
            to,
        } => one(format!(
            "{prefix}{} {objects} {kind} {} from {} to {to}",
            if planned { "would migrate" } else { "migrated" },
            if *objects == 1 { "object" } else { "objects" },
            from.join(", "),
        )),
        Step::Pruned { names } => one(format!(
            "{prefix}{} `{}` of the old Flux release {}",
            if names.len() == 1 {
                "object"
            } else {
                "objects"
            },
            names.join("`, `"),
            would("deleted")
        )),
        Step::Installed { source, objects } => one(format!(
            "{prefix}installed Flux from `{source}` ({objects} objects)"
        )),
        Step::Applied { kind, name, change } => {
            let verb = match change {
                Change::Unchanged => "unchanged".to_string(),
                Change::Create => would("created"),
                Change::Update(_) => would("updated"),
            };
            let mut out = vec![format!("{prefix}{kind} `{name}` {verb}")];
            if let (true, Change::Update(fields)) = (planned, change) {
                for f in fields {
                    out.push(format!(
                        "    {}: {} → {}",
                        f.field,
                        f.old.as_deref().unwrap_or("(none)"),
                        f.new
                    ));
                }
            }
            out
        }
        Step::SecretWithNewKey { name } => one(format!(
            "{prefix}Secret `{name}` would be written with the new deploy key"
        )),
        Step::SecretReplaced { name } => {
            one(format!("{prefix}Secret `{name}` deleted, to be replaced"))
        }
        Step::TakeoverNote { name, what } => one(format!(
            "note: the Kustomization `{name}` has `prune: true`: Flux deletes what it applied from the old {} that the new one does not hold",
            match what {
                crate::plan::Takeover::Repository => "repository",
                crate::plan::Takeover::Path => "path",
            }
        )),
        Step::LeaseHeld { name, holder } => one(format!(
            "  waiting for another bootstrap of this cluster to finish (Lease `{name}` held by `{holder}`)"
        )),
        Step::LeaseFree => one("another bootstrap of this cluster finished; going on".to_string()),
        Step::KeyKept { fingerprint } => one(format!(
            "the deploy key in the cluster is still registered on GitHub ({fingerprint})"
        )),
        Step::KeyToCreate { title } => one(format!(
            "{prefix}would create the read-only deploy key `{title}` on GitHub"
        )),
        Step::KeyCreated { title, fingerprint } => one(format!(
            "created the read-only deploy key `{title}` ({fingerprint})"
        )),
        Step::KeyProved { branch, commit } => one(format!(
            "proved the deploy key over SSH: `{branch}` is at {}",
            short(commit)
        )),
        Step::BranchHead {
            branch,
            commit,
            token,
        } => one(format!(
            "{}`{branch}` is at {}",
            if *token { "branch " } else { "" },
            short(commit)
        )),
        Step::StaleKeyDeleted { title, id } => {
            one(format!("deleted the stale deploy key `{title}` (id {id})"))
        }
        Step::StaleKeyLeft { title, id, reason } => one(format!(
            "could not delete the stale deploy key `{title}` (id {id}): {reason}; the run goes on"
        )),
        Step::OldKeyUnlisted { title, repo } => one(format!(
            "note: the cluster no longer uses its deploy key `{title}`, which may still be registered on `{repo}` (without a token its id cannot be looked up): delete it under the repository's Settings, Deploy keys, or add `token:` to the secrets file and run again to have it deleted"
        )),
        Step::StaleKeyToDelete { title, id } => one(format!(
            "{prefix}would delete the stale deploy key `{title}` (id {id})"
        )),
        Step::ToRemove { what } => {
            let mut lines = vec![format!("{prefix}uninstall removes:")];
            lines.extend(what.iter().map(|w| format!("    {w}")));
            lines
        }
        Step::NothingToRemove => one(
            "nothing to remove: no Flux in the cluster, and no deploy key of this cluster on GitHub"
                .to_string(),
        ),
        Step::FinalizersRemoved { names } => one(format!(
            "{prefix}{} the finalizers of {} Flux resource(s), so that no controller prunes what it applied: {}",
            if planned { "would remove" } else { "removed" },
            names.len(),
            names.join(", ")
        )),
        Step::Deleted { what, names } => one(format!(
            "{prefix}{} {what}: {}",
            if planned { "would delete" } else { "deleted" },
            names.join(", ")
        )),
        Step::KeyDeleted {
            title,
            id,
            fingerprint,
        } => one(format!(
            "{prefix}{} this cluster's deploy key `{title}` (id {id}, {fingerprint}) on GitHub",
            if planned { "would delete" } else { "deleted" }
        )),
        Step::KeyNotRegistered { fingerprint } => one(format!(
            "the deploy key in the cluster ({fingerprint}) is not registered on GitHub: nothing to delete there"
        )),
        Step::KeyByHand {
            fingerprint,
            reason,
        } => {
            use crate::plan::uninstall::NoGitHub;
            let why = match reason {
                NoGitHub::NoConfig => "no configuration was found",
                NoGitHub::NoToken => "no token is configured",
                NoGitHub::TokenAuth => "`auth: token` reads the repository with the token",
                NoGitHub::AppAuth => {
                    "`auth: github-app` has no token to delete a deploy key with (the App may only read)"
                }
            };
            one(format!(
                "delete the deploy key {fingerprint} of this cluster by hand (the repository's Settings → Deploy keys): {why}"
            ))
        }
        Step::Synced { commit } => one(format!("Flux is synced at {}", short(commit))),
        Step::Waiting {
            kind,
            name,
            condition,
            state,
        } => one(waiting_line(kind, name, condition.as_ref(), state)),
        Step::FluxRepair {
            version,
            names,
            reapply,
        } => one(format!(
            "{prefix}Flux {version} runs, but {} not rolled out: {}",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
                + if names.len() == 1 { " is" } else { " are" },
            match (reapply, planned) {
                (true, false) => "its manifests are applied again",
                (true, true) => "its manifests would be applied again",
                (false, false) => "waiting for the rollout",
                (false, true) => "the rollout would be waited for",
            }
        )),
        Step::RollingOut { name, rollout } => one(match rollout {
            None => format!("  Deployment `{name}`: waiting for it to be created"),
            Some(r) => format!(
                "  Deployment `{name}`: {} of {} replicas available, {} updated{}",
                r.available,
                r.replicas,
                r.updated,
                r.reason
                    .as_deref()
                    .map_or_else(String::new, |why| format!(" ({why})"))
            ),
        }),
        Step::RolledOut { names } => one(format!(
            "Flux's controllers are rolled out: {}",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Step::Ready {
            kind,
            name,
            branch,
            commit,
            moved_from,
        } => one(format!(
            "{kind} `{name}` is Ready at {}{}",
            short(commit),
            match moved_from {
                Some(proven) => format!(
                    " (`{branch}` moved on from {} while bootstrap waited)",
                    short(proven)
                ),
                None => String::new(),
            }
        )),
    }
}

/// The live line of an object waited for: what it waits for, in words that never call it "not
/// Ready" while quoting a condition that says it succeeded.
fn waiting_line(
    kind: &str,
    name: &str,
    condition: Option<&crate::flux::Condition>,
    state: &WaitState,
) -> String {
    let quoted = |c: &crate::flux::Condition| format!("{} {}: {}", c.status, c.reason, c.message);
    match (state, condition) {
        (WaitState::Pending, None) => format!("  {kind} `{name}`: waiting for the controller"),
        (WaitState::Pending, Some(c)) => format!(
            "  {kind} `{name}`: waiting for the controller to reconcile the new spec (last: {})",
            quoted(c)
        ),
        (WaitState::NotReady, Some(c)) => format!("  {kind} `{name}`: {}", quoted(c)),
        (WaitState::NotReady, None) => format!("  {kind} `{name}`: not Ready"),
        (WaitState::Suspended, _) => {
            format!("  {kind} `{name}`: suspended (`spec.suspend: true`)")
        }
        (WaitState::Stalled, c) => format!(
            "  {kind} `{name}`: stalled{}",
            c.map_or_else(String::new, |c| format!(": {}: {}", c.reason, c.message))
        ),
        (WaitState::Dependency, c) => format!(
            "  {kind} `{name}`: waiting for a dependency{}",
            c.map_or_else(String::new, |c| format!(": {}", c.message))
        ),
        (WaitState::Behind { at, wanted }, _) => format!(
            "  {kind} `{name}`: Ready at {}, waiting for {}",
            short(at),
            wanted
                .as_deref()
                .map_or_else(|| "the branch's head".to_string(), |w| short(w).to_string())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_step_in_json_names_the_condition_fields() {
        let step = Step::Waiting {
            kind: "GitRepository",
            name: "flux-system".to_string(),
            condition: Some(crate::flux::Condition {
                type_: "Ready".to_string(),
                status: "False".to_string(),
                reason: "GitOperationFailed".to_string(),
                message: "auth failed".to_string(),
            }),
            state: WaitState::NotReady,
        };
        assert_eq!(
            serde_json::to_value(&step).unwrap(),
            serde_json::json!({
                "step": "waiting", "kind": "GitRepository", "name": "flux-system",
                "condition": {"type": "Ready", "status": "False", "reason": "GitOperationFailed", "message": "auth failed"},
                "state": "not_ready",
            })
        );
        assert_eq!(
            step_lines(&step, false),
            ["  GitRepository `flux-system`: False GitOperationFailed: auth failed"]
        );
    }

    #[test]
    fn a_migration_says_how_many_objects_of_which_kind_from_which_version() {
        let migrated = |objects| Step::Migrated {
            kind: "GitRepository".to_string(),
            objects,
            from: vec!["v1beta1".to_string(), "v1beta2".to_string()],
            to: "v1".to_string(),
        };
        assert_eq!(
            step_lines(&migrated(3), false),
            ["migrated 3 GitRepository objects from v1beta1, v1beta2 to v1"]
        );
        assert_eq!(
            step_lines(&migrated(1), true),
            ["(dry run) would migrate 1 GitRepository object from v1beta1, v1beta2 to v1"]
        );
        assert_eq!(
            serde_json::to_value(migrated(0)).unwrap(),
            serde_json::json!({"step": "migrated", "kind": "GitRepository", "objects": 0, "from": ["v1beta1", "v1beta2"], "to": "v1"})
        );
    }

    #[test]
    fn steps_read_as_before_and_a_dry_run_shows_each_field() {
        use crate::plan::{Change, FieldChange};
        let applied = |change| Step::Applied {
            kind: "GitRepository",
            name: "flux-system/flux-system".to_string(),
            change,
        };
        assert_eq!(
            step_lines(&applied(Change::Unchanged), false),
            ["GitRepository `flux-system/flux-system` unchanged"]
        );
        assert_eq!(
            step_lines(&applied(Change::Create), true),
            ["(dry run) GitRepository `flux-system/flux-system` would be created"]
        );
        let branch = Change::Update(vec![FieldChange {
            field: "spec.ref.branch".to_string(),
            old: Some("main".to_string()),
            new: "dev".to_string(),
        }]);
        assert_eq!(
            step_lines(&applied(branch.clone()), true),
            [
                "(dry run) GitRepository `flux-system/flux-system` would be updated",
                "    spec.ref.branch: main → dev",
            ]
        );
        assert_eq!(
            step_lines(&applied(branch), false),
            ["GitRepository `flux-system/flux-system` updated"]
        );
        let ready = Step::Ready {
            kind: "Kustomization",
            name: "flux-system/flux-system".to_string(),
            branch: "main".to_string(),
            commit: "bbbbbbbbbbbbbbbb".to_string(),
            moved_from: Some("aaaaaaaaaaaaaaaa".to_string()),
        };
        assert_eq!(
            step_lines(&ready, false),
            [
                "Kustomization `flux-system/flux-system` is Ready at bbbbbbbbbbbb (`main` moved on from aaaaaaaaaaaa while bootstrap waited)"
            ]
        );
        let json = serde_json::to_value(applied(Change::Unchanged)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"step": "applied", "kind": "GitRepository", "name": "flux-system/flux-system", "change": "unchanged"})
        );
    }

    #[test]
    fn each_waiting_state_has_its_own_words() {
        use crate::flux::Condition;
        let c = |status: &str, reason: &str, message: &str| Condition {
            type_: "Ready".to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
        };
        let line = |state: WaitState, cond: Option<Condition>| {
            waiting_line("Kustomization", "flux-system", cond.as_ref(), &state)
        };
        assert_eq!(
            line(
                WaitState::Suspended,
                Some(c("True", "ReconciliationSucceeded", "Applied"))
            ),
            "  Kustomization `flux-system`: suspended (`spec.suspend: true`)"
        );
        assert_eq!(
            line(
                WaitState::Stalled,
                Some(c("True", "InvalidPath", "no such path"))
            ),
            "  Kustomization `flux-system`: stalled: InvalidPath: no such path"
        );
        assert_eq!(
            line(
                WaitState::Dependency,
                Some(c(
                    "False",
                    "DependencyNotReady",
                    "dependency 'flux-system/infra' is not ready"
                ))
            ),
            "  Kustomization `flux-system`: waiting for a dependency: dependency 'flux-system/infra' is not ready"
        );
        // Ready at an older revision: never "not Ready" beside a condition that succeeded.
        let behind = line(
            WaitState::Behind {
                at: "aaaaaaaaaaaaaaaa".to_string(),
                wanted: Some("bbbbbbbbbbbbbbbb".to_string()),
            },
            Some(c(
                "True",
                "ReconciliationSucceeded",
                "Applied revision: main@sha1:aaaa",
            )),
        );
        assert_eq!(
            behind,
            "  Kustomization `flux-system`: Ready at aaaaaaaaaaaa, waiting for bbbbbbbbbbbb"
        );
        assert_eq!(
            line(WaitState::Pending, Some(c("True", "Succeeded", "stored"))),
            "  Kustomization `flux-system`: waiting for the controller to reconcile the new spec (last: True Succeeded: stored)"
        );
        assert_eq!(
            line(WaitState::Pending, None),
            "  Kustomization `flux-system`: waiting for the controller"
        );
    }

    #[test]
    fn the_steps_of_uninstall() {
        let deleted = Step::Deleted {
            what: "the CRDs",
            names: vec!["CustomResourceDefinition a".to_string()],
        };
        assert_eq!(
            step_lines(&deleted, false),
            ["deleted the CRDs: CustomResourceDefinition a"]
        );
        assert_eq!(
            step_lines(&deleted, true),
            ["(dry run) would delete the CRDs: CustomResourceDefinition a"]
        );
        let plan = Step::ToRemove {
            what: vec!["Namespace flux-system".to_string()],
        };
        assert_eq!(
            step_lines(&plan, true),
            ["(dry run) uninstall removes:", "    Namespace flux-system"]
        );
        let by_hand = Step::KeyByHand {
            fingerprint: "SHA256:x".to_string(),
            reason: crate::plan::uninstall::NoGitHub::NoToken,
        };
        assert_eq!(
            serde_json::to_value(&by_hand).unwrap(),
            serde_json::json!({"step": "key_by_hand", "fingerprint": "SHA256:x", "reason": "no_token"})
        );
        assert!(step_lines(&by_hand, false)[0].contains("by hand"));
    }
}
