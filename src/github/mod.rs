//! The one place that talks to GitHub's REST API.
//!
//! Everything homelab-flux asks GitHub goes through [`GitHub`]: the token checks of `validate`,
//! the repository and branch look-ups, deploy keys and `/meta`. Keeping it in one module keeps the
//! token's handling in one place too: it lives only inside a sensitive `Authorization` header
//! value, so it cannot reach an error message, a `Debug` print or a log line.
//!
//! The module knows nothing about the configuration types; callers pass plain strings.

use std::fmt;
use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::facts::{Branch, DeployKey, Meta, Repository, User};

pub mod app;
mod error;
use error::{BasicError, Class, classify, header_str, is_secondary, to_error};
pub use error::{Error, ValidationError};

/// The REST API version every request asks for.
pub const API_VERSION: &str = "2022-11-28";

/// The environment variable that overrides the API base (used by tests to reach a local fake).
pub const API_URL_ENV: &str = "HOMELAB_FLUX_GITHUB_API_URL";

const ACCEPT: &str = "application/vnd.github+json";
/// GitHub's page size is capped at 100; asking for the cap keeps most listings to one request.
const PER_PAGE: &str = "100";
/// A listing that needs more pages than this is not a deploy-key list we can reason about.
const MAX_PAGES: usize = 100;

/// How the client retries 5xx, 429 and secondary rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first request (so `max_retries + 1` requests at most).
    pub max_retries: u32,
    /// The first backoff; each retry doubles it.
    pub base_delay: Duration,
    /// No wait is longer than this, `retry-after` included.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(500),
            // GitHub's docs: without retry-after, wait at least a minute after a secondary limit.
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(16)).unwrap_or(u32::MAX);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Timeouts and retries of a [`GitHub`] client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one whole request, body included.
    pub timeout: Duration,
    /// Retries.
    pub retry: RetryPolicy,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

/// The API base for a repository host: `https://api.github.com` for github.com,
/// `https://HOST/api/v3` for GitHub Enterprise Server.
pub fn api_base_for_host(host: &str) -> String {
    if host.eq_ignore_ascii_case("github.com") || host.eq_ignore_ascii_case("www.github.com") {
        "https://api.github.com".to_owned()
    } else {
        format!("https://{}/api/v3", host.to_ascii_lowercase())
    }
}

/// The API base to use: the `HOMELAB_FLUX_GITHUB_API_URL` value when set and non-empty, else
/// [`api_base_for_host`]. The override must be `https://`, or `http://` on a loopback host
/// (127.0.0.0/8, `::1`, `localhost`), without credentials, query or fragment. The result has no
/// trailing `/`.
pub fn resolve_api_base(host: &str, env_value: Option<&str>) -> Result<String, Error> {
    let Some(raw) = env_value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(api_base_for_host(host));
    };
    let invalid = |reason: &str| Error::InvalidApiUrl {
        url: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(raw).map_err(|_| invalid("not a URL; use e.g. `https://HOST/api/v3`"))?;
    if !url.username().is_empty() || url.password().is_some() {
        // Do not echo a URL that carries credentials.
        return Err(Error::InvalidApiUrl {
            url: "<redacted>".to_owned(),
            reason: format!("{API_URL_ENV} must not contain credentials"),
        });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("remove the query string and fragment"));
    }
    match url.scheme() {
        "https" => {}
        "http" if crate::http::is_loopback(&url) => {}
        "http" => {
            return Err(invalid(
                "`http://` is accepted only for loopback hosts (127.0.0.1, ::1, localhost); use `https://`",
            ));
        }
        _ => return Err(invalid("use an `https://` URL")),
    }
    if url.host().is_none() {
        return Err(invalid("the URL has no host"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// A client for GitHub's REST API, authenticated with a token. Cheap to clone; clones share the
/// connection pool, so concurrent requests from clones run in parallel.
#[derive(Clone)]
pub struct GitHub {
    http: reqwest::Client,
    base: Url,
    authorization: HeaderValue,
    retry: RetryPolicy,
}

impl fmt::Debug for GitHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHub")
            .field("base", &self.base.as_str())
            .field("token", &"[redacted]")
            .field("retry", &self.retry)
            .finish()
    }
}

/// A finished response, after retries.
struct Answer {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl GitHub {
    /// A client with the default [`Options`] (10 s connect, 30 s total, 3 retries).
    pub fn new(api_base: &str, token: &SecretString) -> Result<GitHub, Error> {
        GitHub::with_options(api_base, token, Options::default())
    }

    /// A client with explicit timeouts and retries.
    pub fn with_options(
        api_base: &str,
        token: &SecretString,
        options: Options,
    ) -> Result<GitHub, Error> {
        let base =
            Url::parse(api_base.trim_end_matches('/')).map_err(|_| Error::InvalidApiUrl {
                url: api_base.to_owned(),
                reason: "not a URL".to_owned(),
            })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(Error::InvalidApiUrl {
                url: api_base.to_owned(),
                reason: "use an `https://` URL".to_owned(),
            });
        }
        let authorization = bearer(token)?;

        let mut default_headers = HeaderMap::new();
        default_headers.insert(header::ACCEPT, HeaderValue::from_static(ACCEPT));
        default_headers.insert(
            "x-github-api-version",
            HeaderValue::from_static(API_VERSION),
        );
        let builder = crate::http::client(&base, options.connect_timeout, options.timeout)
            .default_headers(default_headers);
        let http = builder.build().map_err(|source| Error::Client { source })?;
        Ok(GitHub {
            http,
            base,
            authorization,
            retry: options.retry,
        })
    }

    /// Replaces the retry policy (tests use short delays).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> GitHub {
        self.retry = retry;
        self
    }

    /// The API base this client talks to.
    pub fn api_base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `GET /user`: the token's owner, expiry and (classic tokens) scopes.
    pub async fn get_user(&self) -> Result<User, Error> {
        #[derive(Deserialize)]
        struct Raw {
            login: String,
        }
        let url = self.url(&["user"]);
        let answer = self.send(Method::GET, url, None).await?;
        let raw: Raw = decode("GET /user", &answer.body)?;
        Ok(User {
            login: raw.login,
            token_expiration: header_str(&answer.headers, "github-authentication-token-expiration")
                .and_then(parse_token_expiration),
            oauth_scopes: header_str(&answer.headers, "x-oauth-scopes").map(parse_scopes),
        })
    }

    /// `GET /repos/{owner}/{repo}`.
    pub async fn get_repo(&self, owner: &str, repo: &str) -> Result<Repository, Error> {
        let url = self.url(&["repos", owner, repo]);
        let answer = self.send(Method::GET, url, None).await?;
        decode(&format!("GET /repos/{owner}/{repo}"), &answer.body)
    }

    /// `GET /repos/{owner}/{repo}/branches/{branch}`.
    pub async fn get_branch(&self, owner: &str, repo: &str, branch: &str) -> Result<Branch, Error> {
        #[derive(Deserialize)]
        struct Raw {
            name: String,
            commit: Commit,
        }
        #[derive(Deserialize)]
        struct Commit {
            sha: String,
        }
        let url = self.url(&["repos", owner, repo, "branches", branch]);
        let answer = self.send(Method::GET, url, None).await?;
        let raw: Raw = decode(
            &format!("GET /repos/{owner}/{repo}/branches/{branch}"),
            &answer.body,
        )?;
        Ok(Branch {
            name: raw.name,
            commit_sha: raw.commit.sha,
        })
    }

    /// `GET /repos/{owner}/{repo}/keys`, every page.
    pub async fn list_deploy_keys(&self, owner: &str, repo: &str) -> Result<Vec<DeployKey>, Error> {
        let endpoint = format!("GET /repos/{owner}/{repo}/keys");
        let mut url = self.url(&["repos", owner, repo, "keys"]);
        url.query_pairs_mut().append_pair("per_page", PER_PAGE);
        let mut keys = Vec::new();
        for _ in 0..MAX_PAGES {
            let answer = self.send(Method::GET, url, None).await?;
            let page: Vec<DeployKey> = decode(&endpoint, &answer.body)?;
            keys.extend(page);
            match next_link(&answer.headers) {
                Some(next) => url = self.same_origin(&endpoint, next)?,
                None => return Ok(keys),
            }
        }
        Err(Error::Unexpected {
            endpoint,
            status: 200,
            message: format!("more than {MAX_PAGES} pages of deploy keys"),
        })
    }

    /// `POST /repos/{owner}/{repo}/keys`. A 422 whose [`Error::is_key_already_in_use`] is true
    /// means the key is registered already (here or on another repository).
    pub async fn create_deploy_key(
        &self,
        owner: &str,
        repo: &str,
        title: &str,
        public_key: &str,
        read_only: bool,
    ) -> Result<DeployKey, Error> {
        let url = self.url(&["repos", owner, repo, "keys"]);
        let body = serde_json::json!({ "title": title, "key": public_key, "read_only": read_only });
        let answer = self.send(Method::POST, url, Some(body)).await?;
        decode(&format!("POST /repos/{owner}/{repo}/keys"), &answer.body)
    }

    /// `DELETE /repos/{owner}/{repo}/keys/{id}`. A 404 is success: the key is gone already
    /// (deleted by hand, or by an earlier attempt whose answer was lost to a timeout).
    pub async fn delete_deploy_key(&self, owner: &str, repo: &str, id: u64) -> Result<(), Error> {
        let id = id.to_string();
        let url = self.url(&["repos", owner, repo, "keys", &id]);
        match self.send(Method::DELETE, url, None).await {
            Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `GET /meta`: the SSH host keys of the git endpoint.
    pub async fn meta(&self) -> Result<Meta, Error> {
        let url = self.url(&["meta"]);
        let answer = self.send(Method::GET, url, None).await?;
        decode("GET /meta", &answer.body)
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // Each segment is percent-encoded on its own, so a branch `a/b` travels as `a%2Fb`.
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A `Link` URL is followed only on the API's own origin, so the token never goes elsewhere.
    fn same_origin(&self, endpoint: &str, next: Url) -> Result<Url, Error> {
        if next.origin() == self.base.origin() {
            Ok(next)
        } else {
            Err(Error::Unexpected {
                endpoint: endpoint.to_owned(),
                status: 200,
                message: "the pagination link points at another host; not following it".to_owned(),
            })
        }
    }

    /// Sends one request with the retry policy; returns 2xx answers, maps the rest to errors.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
    ) -> Result<Answer, Error> {
        let endpoint = format!("{method} {}", endpoint_path(&self.base, &url));
        let idempotent = method != Method::POST;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let retries_left = attempt <= self.retry.max_retries;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header(header::AUTHORIZATION, self.authorization.clone());
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(source) => {
                    // A refused connection never reached GitHub, so even a POST may go again;
                    // a timeout might have, so only idempotent requests are retried then.
                    if retries_left && (source.is_connect() || idempotent) {
                        tokio::time::sleep(self.retry.backoff(attempt - 1)).await;
                        continue;
                    }
                    return Err(Error::Unreachable {
                        url: url.to_string(),
                        source,
                    });
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            let body_bytes = match response.bytes().await {
                Ok(bytes) => bytes.to_vec(),
                Err(source) => {
                    if retries_left && idempotent {
                        tokio::time::sleep(self.retry.backoff(attempt - 1)).await;
                        continue;
                    }
                    return Err(Error::Unreachable {
                        url: url.to_string(),
                        source,
                    });
                }
            };
            if status.is_success() {
                return Ok(Answer {
                    headers,
                    body: body_bytes,
                });
            }
            let error: BasicError = serde_json::from_slice(&body_bytes).unwrap_or_default();
            match classify(status, &headers, &error.message) {
                Class::Retry { retry_after } if retries_left => {
                    let wait = match retry_after {
                        Some(after) => after.min(self.retry.max_delay),
                        None => self.retry.backoff(attempt - 1),
                    };
                    tokio::time::sleep(wait).await;
                }
                Class::Retry { retry_after } if is_secondary(status, &headers, &error.message) => {
                    return Err(Error::SecondaryRateLimited {
                        endpoint,
                        attempts: attempt,
                        retry_after,
                    });
                }
                Class::Retry { .. } => {
                    return Err(Error::Server {
                        endpoint,
                        status: status.as_u16(),
                        attempts: attempt,
                    });
                }
                Class::Fail => return Err(to_error(endpoint, status, &headers, error)),
            }
        }
    }
}

/// `Bearer <token>`, marked sensitive: hyper and reqwest never log it.
fn bearer(token: &SecretString) -> Result<HeaderValue, Error> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
        .map_err(|_| Error::InvalidToken)?;
    value.set_sensitive(true);
    Ok(value)
}

fn decode<T: serde::de::DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|source| Error::Decode {
        endpoint: endpoint.to_owned(),
        source,
    })
}

/// The path relative to the API base, for messages: `/repos/o/r` rather than `/api/v3/repos/o/r`.
fn endpoint_path(base: &Url, url: &Url) -> String {
    let base_path = base.path().trim_end_matches('/');
    let path = url.path();
    let relative = path.strip_prefix(base_path).unwrap_or(path);
    percent_decode(relative)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(Ok(b)) = s.get(i + 1..i + 3).map(|hex| u8::from_str_radix(hex, 16))
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `rel="next"` URL of a `Link` header (RFC 8288, as GitHub sends it).
fn next_link(headers: &HeaderMap) -> Option<Url> {
    let link = header_str(headers, "link")?;
    link.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let target = pieces.next()?.trim();
        let is_next = pieces.any(|p| {
            let p = p.trim();
            p == "rel=\"next\"" || p == "rel=next"
        });
        if !is_next {
            return None;
        }
        let target = target.strip_prefix('<')?.strip_suffix('>')?;
        Url::parse(target).ok()
    })
}

/// `x-oauth-scopes: repo, user` → `["repo", "user"]`; an empty header is an empty list.
fn parse_scopes(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parses `github-authentication-token-expiration`: `2023-01-31 23:00:00 UTC` or
/// `2023-04-26 23:23:18 +0200` (the layouts go-github accepts; GitHub does not document it).
pub fn parse_token_expiration(value: &str) -> Option<jiff::Timestamp> {
    let value = value.trim();
    let value = match value
        .strip_suffix(" UTC")
        .or_else(|| value.strip_suffix(" GMT"))
    {
        Some(rest) => format!("{rest} +0000"),
        None => value.to_owned(),
    };
    jiff::fmt::strtime::parse("%Y-%m-%d %H:%M:%S %z", &value)
        .ok()?
        .to_timestamp()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "ghp_CanaryTokenValue0123456789abcdefABCDEF";

    #[test]
    fn debug_of_client_never_shows_the_token() {
        let client = GitHub::new("https://api.github.com", &SecretString::from(TOKEN)).unwrap();
        let debug = format!("{client:?}");
        assert!(!debug.contains(TOKEN), "{debug}");
        assert!(!debug.contains("CanaryTokenValue"), "{debug}");
        let header = format!("{:?}", client.authorization);
        assert!(!header.contains("CanaryTokenValue"), "{header}");
    }

    #[test]
    fn api_base_per_host() {
        assert_eq!(api_base_for_host("github.com"), "https://api.github.com");
        assert_eq!(
            api_base_for_host("ghe.example.com"),
            "https://ghe.example.com/api/v3"
        );
    }

    #[test]
    fn override_accepts_https_and_loopback_http_only() {
        let ok = |v: &str| resolve_api_base("github.com", Some(v)).unwrap();
        assert_eq!(
            ok("https://ghe.example.com/api/v3/"),
            "https://ghe.example.com/api/v3"
        );
        assert_eq!(ok("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(ok("http://127.1.2.3:1"), "http://127.1.2.3:1");
        assert_eq!(ok("http://[::1]:9000/"), "http://[::1]:9000");
        assert_eq!(ok("http://localhost:9000"), "http://localhost:9000");
        assert_eq!(
            resolve_api_base("github.com", None).unwrap(),
            "https://api.github.com"
        );
        assert_eq!(
            resolve_api_base("github.com", Some("")).unwrap(),
            "https://api.github.com"
        );
        for bad in [
            "http://example.com",
            "http://10.0.0.1",
            "http://localhost.example.com",
            "http://[::2]",
            "ftp://127.0.0.1",
            "https://x.example/?a=b",
            "not a url",
        ] {
            assert!(
                matches!(
                    resolve_api_base("github.com", Some(bad)),
                    Err(Error::InvalidApiUrl { .. })
                ),
                "{bad}"
            );
        }
        let err =
            resolve_api_base("github.com", Some("https://user:sekrit@x.example")).unwrap_err();
        assert!(!err.to_string().contains("sekrit"));
    }

    #[test]
    fn token_expiration_formats() {
        let utc = parse_token_expiration("2023-01-31 23:00:00 UTC").unwrap();
        assert_eq!(utc.as_second(), 1_675_206_000);
        let offset = parse_token_expiration("2023-04-26 23:23:18 +0200").unwrap();
        assert_eq!(crate::text::format_utc(offset), "2023-04-26 21:23:18 UTC");
        assert_eq!(parse_token_expiration("soon"), None);
    }

    #[test]
    fn link_header_next() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "link",
            HeaderValue::from_static(
                "<https://api.github.com/repositories/1/keys?per_page=2&page=2>; rel=\"next\", <https://api.github.com/repositories/1/keys?per_page=2&page=3>; rel=\"last\"",
            ),
        );
        assert_eq!(
            next_link(&headers).unwrap().as_str(),
            "https://api.github.com/repositories/1/keys?per_page=2&page=2"
        );
        headers.insert(
            "link",
            HeaderValue::from_static("<https://api.github.com/x?page=1>; rel=\"prev\""),
        );
        assert_eq!(next_link(&headers), None);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let policy = RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        assert_eq!(policy.backoff(0), Duration::from_millis(100));
        assert_eq!(policy.backoff(1), Duration::from_millis(200));
        assert_eq!(policy.backoff(2), Duration::from_millis(350));
        assert_eq!(policy.backoff(40), Duration::from_millis(350));
    }

    #[test]
    fn endpoint_is_relative_to_the_base_and_decoded() {
        let base = Url::parse("https://ghe.example.com/api/v3").unwrap();
        let url = Url::parse("https://ghe.example.com/api/v3/repos/o/r/branches/a%2Fb").unwrap();
        assert_eq!(endpoint_path(&base, &url), "/repos/o/r/branches/a/b");
    }

    #[test]
    fn deploy_key_matching_ignores_comments() {
        let key = DeployKey {
            id: 1,
            key: "ssh-ed25519 AAAAC3Nza".to_owned(),
            title: "t".to_owned(),
            read_only: true,
            created_at: None,
            last_used: None,
        };
        assert!(key.matches_public_key("ssh-ed25519 AAAAC3Nza homelab-flux@cluster"));
        assert!(!key.matches_public_key("ssh-ed25519 AAAAC3Nzb"));
    }
}
