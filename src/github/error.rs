//! What GitHub's answers mean as errors: the error type every call returns, and how a failed
//! answer is classified (retried, or turned into an error) from its status, headers and body,
//! as GitHub documents them.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Deserialize;

/// What can go wrong talking to GitHub. Messages never contain the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API base (from the host or `HOMELAB_FLUX_GITHUB_API_URL`) is unusable.
    #[error("invalid GitHub API URL `{url}`: {reason}")]
    InvalidApiUrl {
        /// The rejected value.
        url: String,
        /// Why it was rejected, with what to do instead.
        reason: String,
    },
    /// The token cannot be sent as an HTTP header (it has characters a header cannot carry).
    #[error("the GitHub token contains characters that cannot be sent in an HTTP header")]
    InvalidToken,
    /// The GitHub App's JWT could not be signed with its key.
    #[error("the GitHub App's private key cannot sign its JWT (RS256)")]
    Signing,
    /// The HTTP client could not be built (TLS set-up).
    #[error("could not set up the HTTP client for GitHub")]
    Client {
        /// What reqwest reported.
        #[source]
        source: reqwest::Error,
    },
    /// 401: GitHub does not accept the token.
    #[error("{endpoint}: token rejected (expired, revoked or mistyped)")]
    Unauthorized {
        /// Method and path, e.g. `GET /user`.
        endpoint: String,
        /// GitHub's message, e.g. `Bad credentials` or `A JSON web token could not be decoded`.
        message: String,
    },
    /// 404: the resource does not exist, or the token may not see it (GitHub answers 404 rather
    /// than 403 for private resources a token cannot read).
    #[error("{endpoint}: not found, or the token cannot see it{}", permissions_note(.accepted_permissions))]
    NotFound {
        /// Method and path.
        endpoint: String,
        /// GitHub's message, e.g. `Branch not found`.
        message: String,
        /// `X-Accepted-GitHub-Permissions`, when GitHub sent it.
        accepted_permissions: Option<String>,
    },
    /// 403 that is not a rate limit: the token lacks a permission.
    #[error("{endpoint}: forbidden: {message}{}", permissions_note(.accepted_permissions))]
    Forbidden {
        /// Method and path.
        endpoint: String,
        /// GitHub's message, e.g. `Resource not accessible by personal access token`.
        message: String,
        /// `X-Accepted-GitHub-Permissions`, e.g. `contents=read`.
        accepted_permissions: Option<String>,
    },
    /// The primary rate limit is used up (`x-ratelimit-remaining: 0`).
    #[error("{endpoint}: GitHub API rate limit exhausted; {}", reset_note(.reset))]
    RateLimited {
        /// Method and path.
        endpoint: String,
        /// When the window resets (`x-ratelimit-reset`).
        reset: Option<jiff::Timestamp>,
    },
    /// A secondary rate limit that persisted through every retry.
    #[error(
        "{endpoint}: GitHub secondary rate limit still in force after {attempts} attempts; wait a few minutes and run again"
    )]
    SecondaryRateLimited {
        /// Method and path.
        endpoint: String,
        /// Requests made, the first one included.
        attempts: u32,
        /// The last `retry-after`, when GitHub sent one.
        retry_after: Option<Duration>,
    },
    /// GitHub could not be reached: connection refused, DNS, TLS or a timeout.
    #[error("could not reach GitHub at {url}")]
    Unreachable {
        /// The request URL (it never carries the token).
        url: String,
        /// What reqwest reported.
        #[source]
        source: reqwest::Error,
    },
    /// 5xx that persisted through every retry.
    #[error("{endpoint}: GitHub answered {status} after {attempts} attempts; try again later")]
    Server {
        /// Method and path.
        endpoint: String,
        /// The last status code.
        status: u16,
        /// Requests made, the first one included.
        attempts: u32,
    },
    /// 422: GitHub refused the request's content.
    #[error("{endpoint}: GitHub rejected the request: {}", validation_note(.message, .errors))]
    Validation {
        /// Method and path.
        endpoint: String,
        /// The top-level message, usually `Validation Failed`.
        message: String,
        /// The itemised problems.
        errors: Vec<ValidationError>,
    },
    /// Any other unexpected status.
    #[error("{endpoint}: GitHub answered {status}: {message}")]
    Unexpected {
        /// Method and path.
        endpoint: String,
        /// The status code.
        status: u16,
        /// GitHub's message, if any.
        message: String,
    },
    /// A 2xx whose body is not what the API documents.
    #[error("{endpoint}: could not read GitHub's answer")]
    Decode {
        /// Method and path.
        endpoint: String,
        /// What serde reported.
        #[source]
        source: serde_json::Error,
    },
}

impl crate::facts::Refused for Error {
    fn refusal(&self) -> crate::facts::Refusal<'_> {
        use crate::facts::Refusal;
        match self {
            Error::Unauthorized { .. } => Refusal::Unauthorized,
            Error::NotFound { .. } => Refusal::NotFound {
                accepted_permissions: self.accepted_permissions(),
            },
            Error::Forbidden { .. } => Refusal::Forbidden {
                accepted_permissions: self.accepted_permissions(),
            },
            Error::Validation { .. } => Refusal::Unprocessable,
            _ => Refusal::Other,
        }
    }

    fn github_message(&self) -> Option<&str> {
        match self {
            Error::Unauthorized { message, .. }
            | Error::NotFound { message, .. }
            | Error::Forbidden { message, .. }
            | Error::Unexpected { message, .. } => Some(message.as_str()),
            Error::Validation {
                message, errors, ..
            } => errors
                .iter()
                .find_map(|e| e.message.as_deref())
                .or(Some(message.as_str())),
            _ => None,
        }
        .filter(|m| !m.is_empty())
    }
}

impl Error {
    /// The `X-Accepted-GitHub-Permissions` GitHub sent with a 403 or 404, if any.
    pub fn accepted_permissions(&self) -> Option<&str> {
        match self {
            Error::NotFound {
                accepted_permissions,
                ..
            }
            | Error::Forbidden {
                accepted_permissions,
                ..
            } => accepted_permissions.as_deref(),
            _ => None,
        }
    }

    /// True for the 422 GitHub gives when a deploy key's public key is already registered.
    pub fn is_key_already_in_use(&self) -> bool {
        matches!(self, Error::Validation { errors, .. }
            if errors.iter().any(|e| e.message.as_deref() == Some("key is already in use")))
    }
}

fn permissions_note(accepted: &Option<String>) -> String {
    match accepted {
        Some(p) if !p.is_empty() => format!(" (GitHub says the token needs `{p}`)"),
        _ => String::new(),
    }
}

fn reset_note(reset: &Option<jiff::Timestamp>) -> String {
    match reset {
        Some(t) => format!("it resets at {}", crate::text::format_utc(*t)),
        None => "wait for the hourly window to reset".to_owned(),
    }
}

fn validation_note(message: &str, errors: &[ValidationError]) -> String {
    let details: Vec<&str> = errors.iter().filter_map(|e| e.message.as_deref()).collect();
    if details.is_empty() {
        message.to_owned()
    } else {
        details.join("; ")
    }
}

/// One item of a 422 body (`validation-error` schema).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ValidationError {
    /// e.g. `PublicKey`.
    pub resource: Option<String>,
    /// e.g. `key`.
    pub field: Option<String>,
    /// e.g. `custom`.
    pub code: Option<String>,
    /// e.g. `key is already in use`.
    pub message: Option<String>,
}

/// The `basic-error` body GitHub sends with 4xx/5xx.
#[derive(Deserialize, Default)]
pub(super) struct BasicError {
    #[serde(default)]
    pub(super) message: String,
    #[serde(default)]
    pub(super) errors: Vec<ValidationError>,
}

pub(super) enum Class {
    Retry { retry_after: Option<Duration> },
    Fail,
}

pub(super) fn classify(status: StatusCode, headers: &HeaderMap, message: &str) -> Class {
    let retry_after = header_str(headers, "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    if primary_exhausted(status, headers) {
        return Class::Fail;
    }
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || is_secondary(status, headers, message)
    {
        return Class::Retry { retry_after };
    }
    Class::Fail
}

/// GitHub's docs: a primary rate limit answers 403 or 429 with `x-ratelimit-remaining: 0`.
fn primary_exhausted(status: StatusCode, headers: &HeaderMap) -> bool {
    matches!(status.as_u16(), 403 | 429)
        && header_str(headers, "x-ratelimit-remaining").map(str::trim) == Some("0")
}

/// GitHub's docs: a secondary rate limit answers 403 or 429 with a message saying so, and
/// possibly `retry-after`.
pub(super) fn is_secondary(status: StatusCode, headers: &HeaderMap, message: &str) -> bool {
    matches!(status.as_u16(), 403 | 429)
        && (message
            .to_ascii_lowercase()
            .contains("secondary rate limit")
            || headers.contains_key("retry-after"))
}

pub(super) fn to_error(
    endpoint: String,
    status: StatusCode,
    headers: &HeaderMap,
    error: BasicError,
) -> Error {
    let accepted_permissions =
        header_str(headers, "x-accepted-github-permissions").map(str::to_owned);
    match status.as_u16() {
        401 => Error::Unauthorized {
            endpoint,
            message: error.message,
        },
        403 | 429 if primary_exhausted(status, headers) => Error::RateLimited {
            endpoint,
            reset: header_str(headers, "x-ratelimit-reset")
                .and_then(|v| v.trim().parse::<i64>().ok())
                .and_then(|s| jiff::Timestamp::from_second(s).ok()),
        },
        403 => Error::Forbidden {
            endpoint,
            message: error.message,
            accepted_permissions,
        },
        404 => Error::NotFound {
            endpoint,
            message: error.message,
            accepted_permissions,
        },
        422 => Error::Validation {
            endpoint,
            message: error.message,
            errors: error.errors,
        },
        code => Error::Unexpected {
            endpoint,
            status: code,
            message: error.message,
        },
    }
}

pub(super) fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
