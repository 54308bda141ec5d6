//! The answers of the App endpoints and of the git-server check (see `app.rs`).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hyper::StatusCode;
use ring::signature;
use serde_json::{Value, json};

use super::super::{Access, App, Reply, RepoSpec, State};
use super::{GitAuth, Installation, IssuedToken, MAX_JWT_LIFETIME, level_of};

/// Why a JWT was refused: the key of its errors.json entry.
fn verify_jwt(state: &State, jwt: &str) -> Result<u64, &'static str> {
    const UNDECODABLE: &str = "jwt-not-decoded-401";
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, payload, sig] = parts[..] else {
        return Err(UNDECODABLE);
    };
    let decode = |part: &str| -> Option<Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
    };
    let (Some(head), Some(claims), Ok(sig)) =
        (decode(header), decode(payload), URL_SAFE_NO_PAD.decode(sig))
    else {
        return Err(UNDECODABLE);
    };
    if head["alg"] != "RS256" {
        return Err(UNDECODABLE);
    }
    // GitHub accepts the App ID as a string or a number.
    let iss = match &claims["iss"] {
        Value::String(s) => s.parse::<u64>().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
    .ok_or(UNDECODABLE)?;
    let key = state
        .apps
        .apps
        .iter()
        .find(|a| a.spec.id == iss)
        .and_then(|a| a.public_key.as_ref())
        .ok_or(UNDECODABLE)?;
    signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, key)
        .verify(format!("{header}.{payload}").as_bytes(), &sig)
        .map_err(|_| UNDECODABLE)?;
    let now = jiff::Timestamp::now().as_second();
    match claims["iat"].as_i64() {
        Some(iat) if iat <= now => {}
        _ => return Err("jwt-iat-401"),
    }
    match claims["exp"].as_i64() {
        Some(exp) if exp <= now => Err("jwt-exp-401"),
        Some(exp) if exp - now > MAX_JWT_LIFETIME => Err("jwt-exp-too-far-401"),
        Some(_) => Ok(iss),
        None => Err("jwt-exp-401"),
    }
}

fn random_token() -> String {
    use ring::rand::SecureRandom as _;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 36];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("random bytes");
    let body: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!("ghs_{body}")
}

fn iso(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Whether a request is for one of the App endpoints, which take a JWT.
pub(in super::super) fn is_jwt_endpoint(method: &str, segments: &[&str]) -> bool {
    matches!(
        (method, segments),
        ("GET", ["app"])
            | ("GET", ["app", "installations", _])
            | ("POST", ["app", "installations", _, "access_tokens"])
            | ("GET", ["repos", _, _, "installation"])
            | ("GET", ["users" | "orgs", _, "installation"])
    )
}

impl App {
    /// Answers a JWT endpoint ([`is_jwt_endpoint`]); `authorization` is the raw header.
    pub(in super::super) fn app_answer(
        &self,
        state: &mut State,
        method: &str,
        segments: &[&str],
        authorization: Option<&str>,
        body: &str,
    ) -> Reply {
        let Some(authorization) = authorization else {
            // The spec's `requires_authentication` response (body as in fake_github.rs).
            return Reply::json(
                StatusCode::UNAUTHORIZED,
                json!({"message": "Requires authentication", "documentation_url": "https://docs.github.com/rest", "status": "401"}),
            );
        };
        let jwt = authorization.strip_prefix("Bearer ").unwrap_or("");
        let app_id = match verify_jwt(state, jwt) {
            Ok(id) => id,
            Err(key) => return self.refs.apps.error(key),
        };
        match (method, segments) {
                ("GET", ["app"]) => self.app_body(state, app_id),
                ("GET", ["app", "installations", id]) => {
                    match find_installation(state, app_id, id) {
                    Some(i) => Reply::json(StatusCode::OK, self.installation_body(state, i)),
                    None => self.not_found(
                        "Not Found",
                        "https://docs.github.com/rest/apps/apps#get-an-installation-for-the-authenticated-app",
                    ),
                }
                }
                ("GET", ["repos", owner, name, _]) => {
                    let found = state
                        .apps
                        .installations
                        .iter()
                        .find(|i| i.app_id == app_id && i.spec.covers(owner, name));
                    match found {
                    Some(i) => Reply::json(StatusCode::OK, self.installation_body(state, i)),
                    None => self.not_found(
                        "Not Found",
                        "https://docs.github.com/rest/apps/apps#get-a-repository-installation-for-the-authenticated-app",
                    ),
                }
                }
                // source-controller's `githubAppInstallationOwner`: the organisation, then the user.
            // The fake's accounts are users, so the organisation lookup is 404.
            ("GET", ["users", login, _]) => {
                let found = state
                    .apps
                    .installations
                    .iter()
                    .find(|i| i.app_id == app_id && i.spec.account.eq_ignore_ascii_case(login));
                match found {
                    Some(i) => Reply::json(StatusCode::OK, self.installation_body(state, i)),
                    None => self.not_found(
                        "Not Found",
                        "https://docs.github.com/rest/apps/apps#get-a-user-installation-for-the-authenticated-app",
                    ),
                }
            }
            ("GET", ["orgs", _, _]) => self.not_found(
                "Not Found",
                "https://docs.github.com/rest/apps/apps#get-an-organization-installation-for-the-authenticated-app",
            ),
            (_, [_, _, id, _]) => self.issue_token(state, app_id, id, body),
                _ => unreachable!("is_jwt_endpoint"),
            }
    }

    fn app_body(&self, state: &State, app_id: u64) -> Reply {
        let Some(entry) = state.apps.apps.iter().find(|a| a.spec.id == app_id) else {
            return self.refs.apps.error("jwt-not-decoded-401");
        };
        let spec = &entry.spec;
        let mut body = self.refs.apps.app.clone();
        body["id"] = json!(spec.id);
        body["slug"] = json!(spec.slug);
        body["name"] = json!(spec.slug);
        body["client_id"] = json!(format!("Iv23li{:014}", spec.id));
        body["node_id"] = json!(STANDARD.encode(format!("Integration{}", spec.id)));
        body["html_url"] = json!(format!("https://github.com/apps/{}", spec.slug));
        body["owner"] = self.account_body(&body["owner"], &spec.owner);
        body["permissions"] = json!({"metadata": "read", "contents": "read"});
        body["events"] = json!([]);
        body["installations_count"] = json!(
            state
                .apps
                .installations
                .iter()
                .filter(|i| i.app_id == app_id)
                .count()
        );
        Reply::json(StatusCode::OK, body)
    }

    /// The owner/account object of a reference body, moved to `login`.
    fn account_body(&self, template: &Value, login: &str) -> Value {
        let mut account = template.clone();
        let text = account.to_string().replace("octocat", login);
        account = serde_json::from_str(&text).expect("still JSON");
        account["url"] = json!(format!("{}/users/{login}", self.base));
        account
    }

    fn installation_body(&self, state: &State, i: &Installation) -> Value {
        let mut body = self.refs.apps.installation.clone();
        let slug = state
            .apps
            .apps
            .iter()
            .find(|a| a.spec.id == i.app_id)
            .map(|a| a.spec.slug.clone())
            .unwrap_or_default();
        body["id"] = json!(i.id);
        body["account"] = self.account_body(&body["account"], &i.spec.account);
        body["account"]["type"] = json!("User");
        body["access_tokens_url"] = json!(format!(
            "{}/app/installations/{}/access_tokens",
            self.base, i.id
        ));
        body["repositories_url"] = json!(format!("{}/installation/repositories", self.base));
        body["html_url"] = json!(format!(
            "https://github.com/settings/installations/{}",
            i.id
        ));
        body["app_id"] = json!(i.app_id);
        body["app_slug"] = json!(slug);
        body["target_type"] = json!("User");
        body["permissions"] = json!(i.spec.permissions());
        body["events"] = json!([]);
        body["repository_selection"] = json!(if i.spec.repositories.is_some() {
            "selected"
        } else {
            "all"
        });
        if i.spec.suspended {
            body["suspended_at"] = json!("2026-01-01T00:00:00Z");
        }
        body
    }

    fn issue_token(&self, state: &mut State, app_id: u64, id: &str, body: &str) -> Reply {
        const DOCS: &str =
            "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app";
        let Some(installation) = find_installation(state, app_id, id) else {
            return self.not_found("Not Found", DOCS);
        };
        if installation.spec.suspended {
            return self.refs.apps.error("installation-suspended-403");
        }
        let (installation_id, spec) = (installation.id, installation.spec.clone());
        // No body, `null` or `{}`: every repository and permission of the installation.
        let request: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let granted = spec.permissions();
        let permissions = match request["permissions"].as_object() {
            Some(asked) => {
                let mut chosen = BTreeMap::new();
                for (name, level) in asked {
                    let level = level.as_str().unwrap_or_default();
                    if level_of(Some(level)) == Access::None
                        || level_of(granted.get(name).map(String::as_str)) < level_of(Some(level))
                    {
                        return self.refs.apps.error("permissions-not-granted-422");
                    }
                    chosen.insert(name.clone(), level.to_owned());
                }
                chosen
            }
            None => granted,
        };
        let account_repos: Vec<(u64, RepoSpec)> = state
            .repos
            .iter()
            .filter(|(_, r)| r.owner.eq_ignore_ascii_case(&spec.account))
            .cloned()
            .collect();
        let mut names: Vec<String> = Vec::new();
        let named = request["repositories"].as_array();
        let ids = request["repository_ids"].as_array();
        for value in named.into_iter().flatten() {
            names.push(value.as_str().unwrap_or_default().to_owned());
        }
        for value in ids.into_iter().flatten() {
            match account_repos
                .iter()
                .find(|(rid, _)| Some(*rid) == value.as_u64())
            {
                Some((_, r)) => names.push(r.name.clone()),
                None => return self.refs.apps.error("repositories-not-accessible-422"),
            }
        }
        let asked = named.is_some() || ids.is_some();
        if names.iter().any(|n| !spec.covers(&spec.account, n)) {
            return self.refs.apps.error("repositories-not-accessible-422");
        }
        if !asked {
            names = match &spec.repositories {
                Some(list) => list.clone(),
                None => account_repos.iter().map(|(_, r)| r.name.clone()).collect(),
            };
        }
        let now = jiff::Timestamp::now();
        let expires_at =
            jiff::Timestamp::from_second(now.as_second() + state.apps.ttl.as_secs() as i64)
                .expect("a valid time");
        let token = random_token();
        let mut reply = self.refs.apps.token.clone();
        reply["token"] = json!(token);
        reply["expires_at"] = json!(iso(expires_at));
        reply["permissions"] = json!(permissions);
        reply["repository_selection"] = json!(if asked || spec.repositories.is_some() {
            "selected"
        } else {
            "all"
        });
        let template = reply["repositories"][0].clone();
        if asked {
            reply["repositories"] = Value::Array(
                names
                    .iter()
                    .map(|n| self.token_repository(&template, &spec.account, n, &account_repos))
                    .collect(),
            );
        } else if let Some(object) = reply.as_object_mut() {
            // "When you omit repository_ids, the response does not contain the repositories key."
            object.remove("repositories");
        }
        state.apps.tokens.push(IssuedToken {
            token,
            installation_id,
            repositories: names
                .iter()
                .map(|n| format!("{}/{n}", spec.account))
                .collect(),
            permissions,
            expires_at,
        });
        Reply::json(StatusCode::CREATED, reply)
    }

    fn token_repository(
        &self,
        template: &Value,
        owner: &str,
        name: &str,
        known: &[(u64, RepoSpec)],
    ) -> Value {
        let text = template
            .to_string()
            .replace("octocat/Hello-World", &format!("{owner}/{name}"))
            .replace("Hello-World", name)
            .replace("octocat", owner)
            .replace("https://api.github.com", &self.base);
        let mut repo: Value = serde_json::from_str(&text).expect("still JSON");
        if let Some((id, spec)) = known
            .iter()
            .find(|(_, r)| r.name.eq_ignore_ascii_case(name))
        {
            repo["id"] = json!(id);
            repo["private"] = json!(spec.private);
            repo["visibility"] = json!(if spec.private { "private" } else { "public" });
            repo["default_branch"] = json!(spec.default_branch);
        }
        repo
    }

    /// The answer to nginx's `auth_request` ([`GIT_AUTH_PATH`]).
    pub(in super::super) fn git_auth(
        &self,
        original_uri: &str,
        authorization: Option<&str>,
    ) -> Reply {
        let path = original_uri.split('?').next().unwrap_or_default();
        let mut state = self.state();
        let repo = repo_of_git_path(&state, path);
        let credentials = authorization
            .and_then(|a| a.strip_prefix("Basic "))
            .and_then(|b| STANDARD.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let (user, password) = match credentials.as_deref().and_then(|c| c.split_once(':')) {
            Some((u, p)) => (Some(u.to_owned()), Some(p.to_owned())),
            None => (None, None),
        };
        let issued = password
            .as_deref()
            .and_then(|p| state.apps.tokens.iter().find(|t| t.token == p));
        let reason = match (&user, issued) {
            (None, _) => "no credentials",
            (Some(u), _) if u != "x-access-token" => "user is not x-access-token",
            (_, None) => "unknown token",
            (_, Some(t)) if !t.is_live() => "expired",
            (_, Some(t)) if !t.repositories.iter().any(|r| r.eq_ignore_ascii_case(&repo)) => {
                "not scoped to this repository"
            }
            (_, Some(t))
                if level_of(t.permissions.get("contents").map(String::as_str)) == Access::None =>
            {
                "no contents permission"
            }
            _ => "ok",
        };
        let allowed = reason == "ok";
        state.apps.git_auth.push(GitAuth {
            repo,
            user,
            password,
            allowed,
            reason,
        });
        if allowed {
            Reply {
                status: StatusCode::OK,
                headers: Vec::new(),
                body: None,
            }
        } else {
            Reply {
                status: StatusCode::UNAUTHORIZED,
                headers: vec![(
                    "www-authenticate".to_owned(),
                    "Basic realm=\"git\"".to_owned(),
                )],
                body: None,
            }
        }
    }
}

/// The `owner/name` a git request's path is about: the fake's repository whose `clone_url` path
/// it starts with, else its first two segments (`/OWNER/NAME.git/...`).
fn repo_of_git_path(state: &State, path: &str) -> String {
    let registered = state.repos.iter().find_map(|(_, r)| {
        let url = r.clone_url.as_deref()?;
        let rest = url.split_once("://")?.1;
        let repo_path = &rest[rest.find('/')?..];
        (path == repo_path || path.starts_with(&format!("{repo_path}/")))
            .then(|| format!("{}/{}", r.owner, r.name))
    });
    registered.unwrap_or_else(|| {
        let mut parts = path.trim_start_matches('/').split('/');
        let owner = parts.next().unwrap_or_default();
        let name = parts.next().unwrap_or_default().trim_end_matches(".git");
        format!("{owner}/{name}")
    })
}

fn find_installation<'a>(state: &'a State, app_id: u64, id: &str) -> Option<&'a Installation> {
    let id = id.parse::<u64>().ok()?;
    state
        .apps
        .installations
        .iter()
        .find(|i| i.id == id && i.app_id == app_id)
}
