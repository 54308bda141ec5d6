//! Moving between `deploy-key`, `token` and `github-app` on a re-run: which keys Secret
//! `flux-system` holds in each mode (a Secret of another mode is written anew, since
//! server-side apply leaves the keys it did not set itself), the GitHub App's side of that
//! Secret, and `provider` taken off the GitRepository when leaving `github-app`. Pure logic.

use serde_json::Value;

use super::{Change, FieldChange, Object, Options};
use crate::app_key::AppKey;
use crate::flux;
use crate::settings::Auth;

/// The GitHub App's side of Secret `flux-system` (`auth: github-app`): the installation is the
/// one GitHub confirmed (configured or looked up). `Debug` hides the key.
#[derive(Debug, Clone)]
pub struct AppSecret {
    pub app_id: u64,
    pub installation_id: u64,
    pub key: AppKey,
    /// `githubAppBaseURL`: the API base, when it is not `https://api.github.com`.
    pub base_url: Option<String>,
}

/// The keys Secret `flux-system` holds for `auth`.
pub(super) fn secret_keys(auth: Auth, options: &Options) -> &'static [&'static str] {
    match auth {
        Auth::DeployKey => &flux::CREDENTIAL_KEYS[..3],
        Auth::Token => &flux::CREDENTIAL_KEYS[3..5],
        Auth::GitHubApp
            if options
                .github_app
                .as_ref()
                .is_some_and(|a| a.base_url.is_some()) =>
        {
            &flux::CREDENTIAL_KEYS[5..]
        }
        Auth::GitHubApp => &flux::CREDENTIAL_KEYS[5..8],
    }
}

/// Whether a live Secret holds a credential key that `wanted` does not (another mode's).
pub(super) fn holds_other_keys(secret: &Value, wanted: &[&str]) -> bool {
    secret["data"].as_object().is_some_and(|data| {
        data.keys()
            .any(|k| flux::CREDENTIAL_KEYS.contains(&k.as_str()) && !wanted.contains(&k.as_str()))
    })
}

/// Leaving `github-app`: `provider` is a field the desired object does not have, which a
/// comparison of what is wanted does not see; it is named as a change, and the apply (whose
/// field manager set it) drops it.
pub(super) fn drop_provider(git_repository: &mut Object, live: Option<&Value>) {
    let Some(live_provider) = live.and_then(|o| o["spec"]["provider"].as_str()) else {
        return;
    };
    if git_repository.desired["spec"].get("provider").is_some() || live_provider == "generic" {
        return;
    }
    let removed = FieldChange {
        field: "spec.provider".to_string(),
        old: Some(live_provider.to_string()),
        new: "(removed)".to_string(),
    };
    match &mut git_repository.change {
        Change::Update(fields) => fields.push(removed),
        change => *change = Change::Update(vec![removed]),
    }
}
