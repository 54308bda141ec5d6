//! Flux's install manifests (`--flux-manifests FILE|URL`): where they may come from, reading
//! them within bounds, and the SHA-256 of exactly what is applied.
//!
//! What is applied to the cluster runs with cluster-admin rights, so the source is held to
//! more than "some text that parses": `https://` only (plain `http://` on a loopback address
//! aside, for tests), redirects followed only to `https://`, a size cap on the body (and on a
//! file), and the SHA-256 printed and, with `--flux-manifests-sha256`, pinned. The source is
//! checked while the command line is parsed, before any network call; the download is the only
//! I/O here and carries no credentials.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use reqwest::Url;
use sha2::{Digest, Sha256};

/// The largest manifest accepted. Flux's `install.yaml` is well under 2 MiB.
pub const MAX_SIZE: usize = 16 * 1024 * 1024;
/// Redirects followed at most (GitHub's release downloads use one).
const MAX_REDIRECTS: usize = 5;

/// Where the manifests come from, as checked on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A URL: `https://`, or `http://` on a loopback host.
    Url(Url),
    /// A local file.
    File(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Url(u) => f.write_str(u.as_str()),
            Source::File(p) => f.write_str(p),
        }
    }
}

/// `--flux-manifests`: a URL (`https://`, or `http://` on a loopback host) or a file. A value with
/// `://` is always read as a URL, so `http://` cannot slip through as a file name.
pub fn parse_source(value: &str) -> Result<Source, String> {
    if !value.contains("://") {
        if value.is_empty() {
            return Err("give a file or an `https://` URL".to_owned());
        }
        return Ok(Source::File(value.to_owned()));
    }
    let url = Url::parse(value).map_err(|_| format!("`{value}` is not a valid URL"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL must not contain credentials".to_owned());
    }
    match url.scheme() {
        "https" => Ok(Source::Url(url)),
        "http" if crate::http::is_loopback(&url) => Ok(Source::Url(url)),
        "http" => Err(format!(
            "`{value}` is plain `http://`, which anyone on the way can change; use `https://` (or a file)"
        )),
        other => Err(format!(
            "the scheme `{other}://` is not supported; use `https://` or a file"
        )),
    }
}

/// `--flux-manifests-sha256`: 64 hexadecimal digits, compared case-insensitively.
pub fn parse_sha256(value: &str) -> Result<String, String> {
    let v = value.trim().to_ascii_lowercase();
    if v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(v)
    } else {
        Err(format!(
            "`{value}` is not a SHA-256 (64 hexadecimal digits, as `sha256sum` prints)"
        ))
    }
}

/// Whether a redirect to `to` may be followed: only to `https://`, whatever the first URL was.
pub fn redirect_allowed(to: &Url) -> bool {
    to.scheme() == "https"
}

/// What can go wrong; the messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not set up the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("could not download `{url}`")]
    Download {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("`{url}` answered {status}")]
    Status { url: String, status: u16 },
    #[error("`{source_name}` is over {} MiB; Flux's install manifests are far smaller", MAX_SIZE / 1024 / 1024)]
    TooLarge { source_name: String },
    #[error("`{path}` is not a regular file")]
    NotAFile { path: String },
    #[error("cannot read `{path}`")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{source_name}` is not UTF-8 text")]
    NotText { source_name: String },
    #[error(
        "the SHA-256 of `{source_name}` is {actual}, not the pinned {expected}; nothing was applied. Check the source, or pin the new value with `--flux-manifests-sha256`"
    )]
    Mismatch {
        source_name: String,
        actual: String,
        expected: String,
    },
}

/// The manifests' text does not hold Kubernetes objects.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("`{source_name}` is not valid YAML")]
    NotYaml {
        source_name: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("`{source_name}` holds no Kubernetes objects")]
    NoObjects { source_name: String },
    #[error(
        "`{source_name}` carries no `app.kubernetes.io/version` label, so its Flux release is unknown; use Flux's own `install.yaml` (or `flux install --export`), which labels every object"
    )]
    NoVersion { source_name: String },
    #[error(
        "`{source_name}` is Flux {found}, not the {wanted} asked for; check the source, or pass `--flux-version {found}`"
    )]
    OtherVersion {
        source_name: String,
        found: String,
        wanted: String,
    },
}

/// The objects of multi-document YAML (Flux's `install.yaml`), as JSON values; documents that
/// are not mappings (empty ones, comments) are left out.
pub fn documents(source: &Source, text: &str) -> Result<Vec<serde_json::Value>, ContentError> {
    let mut documents = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value: serde_json::Value =
            serde::Deserialize::deserialize(doc).map_err(|e| ContentError::NotYaml {
                source_name: source.to_string(),
                source: e,
            })?;
        if value.is_object() {
            documents.push(value);
        }
    }
    if documents.is_empty() {
        return Err(ContentError::NoObjects {
            source_name: source.to_string(),
        });
    }
    Ok(documents)
}

/// The manifests' text and its SHA-256 (lower-case hex).
#[derive(Debug)]
pub struct Fetched {
    pub text: String,
    pub sha256: String,
}

/// Reads the manifests and checks them against `pinned`, if given.
pub async fn fetch(source: &Source, pinned: Option<&str>) -> Result<Fetched, Error> {
    let bytes = match source {
        Source::Url(url) => download(url).await?,
        Source::File(path) => read_file(Path::new(path))?,
    };
    let sha256 = hex(&Sha256::digest(&bytes));
    let source_name = source.to_string();
    if let Some(expected) = pinned
        && expected != sha256
    {
        return Err(Error::Mismatch {
            source_name,
            actual: sha256,
            expected: expected.to_owned(),
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| Error::NotText { source_name })?;
    Ok(Fetched { text, sha256 })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn download(url: &Url) -> Result<Vec<u8>, Error> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if redirect_allowed(attempt.url()) {
            attempt.follow()
        } else {
            attempt.error("a redirect to a URL that is not `https://` was refused")
        }
    });
    let builder = crate::http::client(url, Duration::from_secs(10), Duration::from_secs(120))
        .redirect(policy);
    let client = builder.build().map_err(Error::Client)?;
    let failed = |source| Error::Download {
        url: url.to_string(),
        source,
    };
    let mut response = client.get(url.clone()).send().await.map_err(failed)?;
    let status = response.status();
    if !status.is_success() {
        return Err(Error::Status {
            url: url.to_string(),
            status: status.as_u16(),
        });
    }
    let too_large = || Error::TooLarge {
        source_name: url.to_string(),
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_SIZE as u64)
    {
        return Err(too_large());
    }
    // Chunk by chunk: a body without a length (or with a false one) stops at the cap.
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > MAX_SIZE {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Checks, before anything goes over the network, that a manifests file is there and is a
/// regular file; a URL is not checked here (it is fetched only when Flux is installed).
pub fn check_local(source: &Source) -> Result<(), Error> {
    let Source::File(path) = source else {
        return Ok(());
    };
    let meta = std::fs::metadata(path).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(Error::NotAFile { path: path.clone() });
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    let shown = path.display().to_string();
    let read_failed = |source| Error::Read {
        path: shown.clone(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_failed)?;
    if !meta.is_file() {
        return Err(Error::NotAFile { path: shown });
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(read_failed)?
        .take(MAX_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_failed)?;
    if bytes.len() > MAX_SIZE {
        return Err(Error::TooLarge { source_name: shown });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_https_files_or_loopback_http() {
        assert!(matches!(
            parse_source("https://github.com/x/install.yaml"),
            Ok(Source::Url(_))
        ));
        assert_eq!(
            parse_source("install.yaml"),
            Ok(Source::File("install.yaml".into()))
        );
        for ok in [
            "http://127.0.0.1:8080/i.yaml",
            "http://[::1]/i",
            "http://localhost/i",
        ] {
            assert!(parse_source(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/i.yaml",
            "http://127.0.0.1.example.com/i",
            "ftp://x/i",
            "https://u:p@x/i",
            "",
        ] {
            assert!(parse_source(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirects_only_to_https() {
        assert!(redirect_allowed(
            &Url::parse("https://objects.example/x").unwrap()
        ));
        assert!(!redirect_allowed(
            &Url::parse("http://127.0.0.1/x").unwrap()
        ));
        assert!(!redirect_allowed(
            &Url::parse("file:///etc/passwd").unwrap()
        ));
    }

    #[test]
    fn sha256_pins_are_64_hex_digits() {
        let h = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        assert_eq!(parse_sha256(h).unwrap(), h.to_ascii_lowercase());
        assert!(parse_sha256("abc").is_err());
        assert!(parse_sha256(&"g".repeat(64)).is_err());
        assert_eq!(
            hex(&Sha256::digest(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
