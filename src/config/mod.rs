//! The configuration files: `flux.yaml` (committed) and `secrets-flux.yaml` (never committed).
//!
//! [`load`] does the file I/O; [`parse_flux`] and [`parse_secrets`] do the work on text, so tests
//! feed literals. Reading happens in two steps: the YAML tree (with positions) is read into raw
//! fields, then each field is checked into a type that cannot hold a bad value. Every problem in
//! both files is collected before anything is returned.

pub mod age;
pub mod source;
pub mod yaml;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::branch::BranchName;
use crate::diag::{Code, Diagnostic, Position, Report, Severity};
use crate::repo_path::RepoPath;
use crate::repo_url::{self, RepoUrl};
use crate::sops::AgeIdentity;
use crate::token::{self, Token};
use crate::token_host::TokenHost;
pub use source::Source;
use yaml::{Node, NodeKind, Resolved, Style, YamlError};

/// The committed configuration file's name inside the config directory.
pub const FLUX_FILE: &str = "flux.yaml";
/// The secrets file's name inside the config directory.
pub const SECRETS_FILE: &str = "secrets-flux.yaml";
/// The environment variable that replaces the secrets file.
pub const TOKEN_ENV: &str = "HOMELAB_FLUX_TOKEN";
/// The host of the token in `HOMELAB_FLUX_TOKEN` (the secrets file's `host:`).
pub const HOST_ENV: &str = "HOMELAB_FLUX_GITHUB_HOST";
/// Files larger than this are refused before parsing.
pub const MAX_FILE_SIZE: usize = 64 * 1024;

const API_VERSION: &str = "v1alpha1";
const KIND: &str = "HomelabFluxConfig";

/// How the cluster reads the repository.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Auth {
    /// A read-only SSH deploy key, created with the token (the default).
    #[default]
    DeployKey,
    /// The token itself, stored in the cluster.
    Token,
}

impl fmt::Display for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Auth::DeployKey => "deploy-key",
            Auth::Token => "token",
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

/// Where the token came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenOrigin {
    File(PathBuf),
    Env,
}

/// What [`load`] found: a configuration with no errors, or the findings that keep it from
/// being one.
#[derive(Debug)]
pub enum Loaded {
    Valid(Valid),
    Invalid(Invalid),
}

/// Both files without errors (warnings and notes may be in [`Findings::report`]).
#[derive(Debug)]
pub struct Valid {
    pub flux: FluxConfig,
    /// The token; `None` only when it was not asked for ([`Secrets::Ignored`]) or the secrets
    /// file is missing where that is a warning ([`Secrets::Optional`]).
    pub credential: Option<Credential>,
    /// The age identities found (see [`age`]): `ageKey` alone when it is set, else every one in
    /// the places sops reads. Which one the cluster gets is decided against the repository.
    pub age_identities: Vec<AgeIdentity>,
    pub findings: Findings,
}

/// At least one error.
#[derive(Debug)]
pub struct Invalid {
    /// A token without errors beside a broken `flux.yaml`, so that the hygiene scan can still
    /// look for it in tracked files.
    pub token: Option<Token>,
    /// `decryption:` as `flux.yaml` sets it, also when the file has other errors.
    pub decryption: Option<Decryption>,
    /// As in [`Valid`], for the hygiene scan.
    pub age_identities: Vec<AgeIdentity>,
    pub findings: Findings,
}

/// A token and where it came from.
#[derive(Clone, Debug)]
pub struct Credential {
    pub token: Token,
    pub origin: TokenOrigin,
}

/// Every finding, and what it points into.
#[derive(Debug)]
pub struct Findings {
    pub report: Report,
    /// The texts the findings point into, for rendering.
    pub sources: Vec<Source>,
    /// The secrets file's path (whether or not it exists).
    pub secrets_path: PathBuf,
}

impl Loaded {
    pub fn findings(&self) -> &Findings {
        match self {
            Loaded::Valid(v) => &v.findings,
            Loaded::Invalid(i) => &i.findings,
        }
    }

    pub fn into_findings(self) -> Findings {
        match self {
            Loaded::Valid(v) => v.findings,
            Loaded::Invalid(i) => i.findings,
        }
    }

    /// The token, when one without errors was read.
    pub fn token(&self) -> Option<&Token> {
        match self {
            Loaded::Valid(v) => v.credential.as_ref().map(|c| &c.token),
            Loaded::Invalid(i) => i.token.as_ref(),
        }
    }

    /// `decryption:` as `flux.yaml` sets it.
    pub fn decryption(&self) -> Option<Decryption> {
        match self {
            Loaded::Valid(v) => v.flux.decryption,
            Loaded::Invalid(i) => i.decryption,
        }
    }

    /// The age identities found (see [`Valid::age_identities`]).
    pub fn age_identities(&self) -> &[AgeIdentity] {
        match self {
            Loaded::Valid(v) => &v.age_identities,
            Loaded::Invalid(i) => &i.age_identities,
        }
    }

    /// Keeps only the identity the cluster gets.
    pub fn keep_age_identity(&mut self, identity: AgeIdentity) {
        match self {
            Loaded::Valid(v) => v.age_identities = vec![identity],
            Loaded::Invalid(i) => i.age_identities = vec![identity],
        }
    }

    /// Adds findings made after loading (hygiene, GitHub); an error among them makes the
    /// configuration invalid.
    pub fn extend(self, found: impl IntoIterator<Item = Diagnostic>) -> Loaded {
        match self {
            Loaded::Valid(mut v) => {
                v.findings.report.extend(found);
                if v.findings.report.has_errors() {
                    Loaded::Invalid(Invalid {
                        token: v.credential.map(|c| c.token),
                        decryption: v.flux.decryption,
                        age_identities: v.age_identities,
                        findings: v.findings,
                    })
                } else {
                    Loaded::Valid(v)
                }
            }
            Loaded::Invalid(mut i) => {
                i.findings.report.extend(found);
                Loaded::Invalid(i)
            }
        }
    }
}

/// Problems that stop a command before it can check anything (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "`{path}` not found; create it (see `config/flux.yaml` in the homelab-flux README) or pass `--config-dir`"
    )]
    Missing { path: String },
    #[error(
        "`{path}` is {what}, not a regular file; configuration files are read only from regular files (or symlinks to them)"
    )]
    NotAFile { path: String, what: &'static str },
    #[error("failed to read `{path}`")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// What the caller needs from the secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Secrets {
    /// `validate`: a missing secrets file is a warning.
    Optional,
    /// `bootstrap`: a missing secrets file is an error.
    Required,
    /// `bootstrap --export`: the token is not read at all.
    Ignored,
    /// `status`: the token when there is one (as `Optional`), and no age identity looked for:
    /// `status` has no use for it, so a broken `keys.txt` must not cost it the deploy-key check.
    TokenOnly,
}

/// What the environment holds for the configuration (`HOMELAB_FLUX_TOKEN`,
/// `HOMELAB_FLUX_GITHUB_HOST`, and where sops finds age identities), read by the caller so that
/// tests pass literals.
#[derive(Clone, Default)]
pub struct Env {
    pub token: Option<String>,
    pub host: Option<String>,
    /// `SOPS_AGE_KEY`: identities themselves.
    pub sops_age_key: Option<String>,
    /// `SOPS_AGE_KEY_FILE`: a file of identities.
    pub sops_age_key_file: Option<PathBuf>,
    /// The user config directory as Go's `os.UserConfigDir` finds it on Linux, which is where
    /// sops looks for `sops/age/keys.txt`: `$XDG_CONFIG_HOME`, else `$HOME/.config`.
    pub config_home: Option<PathBuf>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("host", &self.host)
            .field(
                "sops_age_key",
                &self.sops_age_key.as_ref().map(|_| "<redacted>"),
            )
            .field("sops_age_key_file", &self.sops_age_key_file)
            .field("config_home", &self.config_home)
            .finish()
    }
}

impl Env {
    /// The variables of this process; empty values count as unset.
    pub fn from_process() -> Env {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        // Go takes `XDG_CONFIG_HOME` only when it is an absolute path.
        let config_home = var("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| var("HOME").map(|h| Path::new(&h).join(".config")));
        Env {
            token: var(TOKEN_ENV),
            host: var(HOST_ENV),
            sops_age_key: var(age::KEY_ENV),
            sops_age_key_file: var(age::KEY_FILE_ENV).map(PathBuf::from),
            config_home,
        }
    }
}

/// Reads both files from `dir` (and the environment), collecting every finding.
pub fn load(dir: &Path, secrets: Secrets, env: &Env) -> Result<Loaded, LoadError> {
    let flux_path = dir.join(FLUX_FILE);
    let secrets_path = dir.join(SECRETS_FILE);
    let mut report = Report::default();
    let mut sources = Vec::new();

    let flux_file = read(&flux_path)?.ok_or_else(|| LoadError::Missing {
        path: flux_path.display().to_string(),
    })?;
    let flux_name = flux_path.display().to_string();
    let (mut flux, flux_source, repo_at, decryption) =
        parse_flux_bytes(&flux_file, &flux_name, &mut report);
    sources.push(flux_source);
    let auth = flux.as_ref().map(|f| f.auth).unwrap_or_default();

    let mut token = None;
    let mut token_origin = None;
    // From the secrets file, when it is read; else from the environment.
    let mut file_host = None;
    let mut age_key = None;
    if secrets != Secrets::Ignored {
        if let Some(value) = &env.token {
            let found = token::check(value, auth);
            let ok = !found.iter().any(|d| d.severity == Severity::Error);
            report.extend(
                found
                    .into_iter()
                    .map(|d| d.in_file(format!("${TOKEN_ENV}"))),
            );
            token_origin = Some(TokenOrigin::Env);
            token = ok.then(|| Token::new(value));
        } else {
            match read(&secrets_path)? {
                Some(contents) => {
                    let name = secrets_path.display().to_string();
                    let (t, source, host, key) =
                        parse_secrets_bytes(&contents, &name, auth, &mut report);
                    sources.push(source);
                    token = t;
                    age_key = key;
                    token_origin = Some(TokenOrigin::File(secrets_path.clone()));
                    file_host = Some(host);
                }
                None => {
                    let d = Diagnostic::new(
                        if secrets == Secrets::Required {
                            Severity::Error
                        } else {
                            Severity::Warning
                        },
                        Code::SecretsMissing,
                        format!(
                            "`{}` not found, so the token is not checked",
                            secrets_path.display()
                        ),
                    )
                    .in_file(secrets_path.display().to_string())
                    .with_hint(format!(
                        "copy `{}.example` to it and paste a token, or set `{TOKEN_ENV}`",
                        secrets_path.display()
                    ));
                    report.push(d);
                }
            }
        }
    }

    // The token's host, and `repo` checked against it (no request is made before this).
    // An invalid host was reported already; `repo` is not checked against a stand-in.
    let mut host_ok = true;
    let mut token_host = TokenHost::default();
    let setting = match file_host {
        Some(host) => {
            host_ok = host.is_ok();
            token_host = host.ok().flatten().unwrap_or_default();
            format!("`host:` in `{}`", secrets_path.display())
        }
        None => {
            if let Some(value) = &env.host {
                match TokenHost::parse(value) {
                    Ok(h) => token_host = h,
                    Err(d) => {
                        host_ok = false;
                        report.push(d.in_file(format!("${HOST_ENV}")));
                    }
                }
            }
            format!("`{HOST_ENV}` (beside `{TOKEN_ENV}`)")
        }
    };
    if secrets != Secrets::Ignored
        && host_ok
        && let Some((repo, pos)) = &repo_at
        && let Some(d) = token_host.check_repo(repo, &setting)
    {
        // Not "treated as GitHub Enterprise Server" any more: the host is refused.
        report.remove(Code::EnterpriseHost);
        report.push(d.at(&flux_name, *pos));
        flux = None;
    }

    let age_identities = age::find(
        age_key,
        decryption,
        secrets,
        &secrets_path,
        env,
        &mut report,
    )?;

    let findings = Findings {
        report,
        sources,
        secrets_path,
    };
    Ok(match flux {
        Some(flux) if !findings.report.has_errors() => Loaded::Valid(Valid {
            flux,
            credential: token
                .zip(token_origin)
                .map(|(token, origin)| Credential { token, origin }),
            age_identities,
            findings,
        }),
        _ => Loaded::Invalid(Invalid {
            token,
            decryption: decryption.ok().flatten(),
            age_identities,
            findings,
        }),
    })
}

/// A file's first bytes (at most one more than [`MAX_FILE_SIZE`]) and its whole size.
struct Contents {
    bytes: Vec<u8>,
    size: u64,
}

/// Reads a configuration file; `Ok(None)` when it does not exist. Only a regular file is read (a
/// symlink to one is fine: dotfile managers do that), and never more than the size limit, so a
/// FIFO or a symlink to `/dev/zero` is an error at once instead of a read that never ends.
fn read(path: &Path) -> Result<Option<Contents>, LoadError> {
    use std::io::Read;
    let failed = |source| LoadError::Read {
        path: path.display().to_string(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(failed(e)),
    };
    let not_regular = |meta: &std::fs::Metadata| LoadError::NotAFile {
        path: path.display().to_string(),
        what: file_kind(meta),
    };
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    let file = std::fs::File::open(path).map_err(failed)?;
    // Checked again on the open file: the path may have been swapped in between.
    let meta = file.metadata().map_err(failed)?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    let size = meta.len().max(bytes.len() as u64);
    Ok(Some(Contents { bytes, size }))
}

/// What a path that is not a regular file is, for the message.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Parses `flux.yaml` text. Findings go to `report`; the config is returned when there were no errors.
pub fn parse_flux(text: &str, name: &str) -> (Option<FluxConfig>, Report) {
    let mut report = Report::default();
    let (cfg, _, _, _) = parse_flux_bytes(&Contents::of(text), name, &mut report);
    (cfg, report)
}

/// Parses `secrets-flux.yaml` text for the given `auth`.
pub fn parse_secrets(text: &str, name: &str, auth: Auth) -> (Option<Token>, Report) {
    let mut report = Report::default();
    let (token, _, _, _) = parse_secrets_bytes(&Contents::of(text), name, auth, &mut report);
    (token, report)
}

impl Contents {
    fn of(text: &str) -> Contents {
        Contents {
            bytes: text.as_bytes().to_vec(),
            size: text.len() as u64,
        }
    }
}

const FLUX_KEYS: &[&str] = &[
    "repo",
    "branch",
    "path",
    "auth",
    "decryption",
    "apiVersion",
    "kind",
];
const SECRETS_KEYS: &[&str] = &["token", "host", "ageKey", "apiVersion", "kind"];

/// The age identity of the secrets file, and where it stands.
type AgeKeyAt = Option<(AgeIdentity, Position)>;
/// `decryption:` as written: unset, set, or set to an invalid value (reported).
type DecryptionSeen = Result<Option<Decryption>, ()>;

/// Also returns the repository and where its value stands whenever `repo` itself is valid (for
/// the token-host check, which needs it even when other fields have errors), and `decryption`
/// whenever it is valid (so that the age identity is still found and hidden).
fn parse_flux_bytes(
    bytes: &Contents,
    name: &str,
    report: &mut Report,
) -> (
    Option<FluxConfig>,
    Source,
    Option<(RepoUrl, Position)>,
    DecryptionSeen,
) {
    let mut repo_at = None;
    let mut decryption_seen = Ok(None);
    let (cfg, source) = with_fields(bytes, name, false, FLUX_KEYS, report, |ctx| {
        let repo = ctx.string("repo", true).and_then(|(value, node)| {
            let parsed = repo_url::parse(&value);
            let pos = ctx.value_position(&node, &value);
            if let Some(secret) = parsed.secret {
                let start = ctx.source.offset(pos.line, pos.column) + quote_len(&node);
                ctx.source
                    .add_mask(start + secret.start..start + secret.end);
            }
            ctx.report
                .extend(parsed.findings.into_iter().map(|d| d.at(name, pos)));
            repo_at = parsed.url.clone().map(|u| (u, pos));
            parsed.url
        });
        let branch = ctx.string("branch", false).and_then(|(value, node)| {
            let pos = ctx.value_position(&node, &value);
            let branch = BranchName::parse(&value)
                .map_err(|d| ctx.report.push(d.at(name, pos)))
                .ok()?;
            if let Some(d) = branch.invisible_character() {
                ctx.report.push(d.at(name, pos));
            }
            Some(branch)
        });
        let path = match ctx.string("path", false) {
            None => Some(RepoPath::default()),
            Some((value, node)) => {
                let pos = ctx.value_position(&node, &value);
                RepoPath::parse(&value)
                    .map_err(|d| ctx.report.push(d.at(name, pos)))
                    .ok()
            }
        };
        let auth = match ctx.string("auth", false) {
            None => Some(Auth::DeployKey),
            Some((value, node)) => {
                let pos = ctx.value_position(&node, &value);
                match value.as_str() {
                    "deploy-key" => Some(Auth::DeployKey),
                    "token" => Some(Auth::Token),
                    other => {
                        let d = Diagnostic::error(
                            Code::AuthInvalid,
                            format!("`auth` must be `deploy-key` or `token`, not `{other}`"),
                        );
                        let d = match suggest(other, &["deploy-key", "token"]) {
                            Some(s) => d.with_hint(format!("did you mean `{s}`?")),
                            None => d.with_hint(
                                "`deploy-key` (the default) keeps the token off the cluster",
                            ),
                        };
                        ctx.report.push(d.at(name, pos));
                        None
                    }
                }
            }
        };
        let decryption = match ctx.string("decryption", false) {
            None => Some(None),
            Some((value, node)) => {
                let pos = ctx.value_position(&node, &value);
                if value == "sops" {
                    Some(Some(Decryption::Sops))
                } else {
                    // A pasted identity is a secret in a committed file: never echoed.
                    let d = if value
                        .to_ascii_uppercase()
                        .contains(crate::sops::IDENTITY_STEM)
                    {
                        Diagnostic::error(
                            Code::DecryptionInvalid,
                            "`decryption` holds an age identity, a secret, in a committed file",
                        )
                        .with_hint(format!(
                            "write `decryption: sops` here and put the identity into `{SECRETS_FILE}` as `ageKey:`"
                        ))
                    } else {
                        Diagnostic::error(
                            Code::DecryptionInvalid,
                            format!("`decryption` must be `sops`, not `{value}`"),
                        )
                        .with_hint("write `decryption: sops` (SOPS with age), or remove the line")
                    };
                    ctx.report.push(d.at(name, pos));
                    None
                }
            }
        };
        decryption_seen = decryption.ok_or(());
        Some(FluxConfig {
            repo: repo?,
            branch,
            path: path?,
            auth: auth?,
            decryption: decryption?,
        })
    });
    (cfg, source, repo_at, decryption_seen)
}

/// Also returns `ageKey` when it is a valid identity, whatever else is wrong in the file, so
/// that it is hidden from all output from then on.
fn parse_secrets_bytes(
    bytes: &Contents,
    name: &str,
    auth: Auth,
    report: &mut Report,
) -> (
    Option<Token>,
    Source,
    Result<Option<TokenHost>, ()>,
    AgeKeyAt,
) {
    // `Ok(None)`: no `host:`; `Err`: an invalid one (reported).
    let mut host = Ok(None);
    let mut age_key = None;
    let (token, source) = with_fields(bytes, name, true, SECRETS_KEYS, report, |ctx| {
        if let Some((value, node)) = ctx.string("host", false) {
            let pos = ctx.value_position(&node, &value);
            host = TokenHost::parse(&value)
                .map(Some)
                .map_err(|d| ctx.report.push(d.at(name, pos)));
        }
        if let Some((value, node)) = ctx.string("ageKey", false) {
            let pos = ctx.value_position(&node, &value);
            match AgeIdentity::parse(&value) {
                Ok(identity) => age_key = Some((identity, pos)),
                Err(e) => ctx.report.push(
                    Diagnostic::error(Code::AgeKeyInvalid, format!("`ageKey` {e}"))
                        .at(name, pos)
                        .with_hint(age::IDENTITY_HINT),
                ),
            }
        }
        ctx.string("token", true).map(|(value, node)| {
            let pos = ctx.value_position(&node, &value);
            ctx.report.extend(
                token::check(&value, auth)
                    .into_iter()
                    .map(|d| d.at(name, pos)),
            );
            Token::new(&value)
        })
    });
    (token, source, host, age_key)
}

/// Reads a file's document, checks its header, and hands its fields to `read`; the value is
/// kept only when reading the file found no error.
fn with_fields<T>(
    bytes: &Contents,
    name: &str,
    secret: bool,
    known: &[&str],
    report: &mut Report,
    read: impl FnOnce(&mut Fields<'_>) -> Option<T>,
) -> (Option<T>, Source) {
    // Counted before the document is read: its own findings (duplicate or unknown keys) count.
    let before = report.summary().errors;
    let (fields, mut source) = match read_document(bytes, name, secret, known, report) {
        Ok(x) => x,
        Err(source) => return (None, source),
    };
    let mut ctx = Fields {
        source: &mut source,
        report,
        fields,
    };
    ctx.check_header();
    let value = read(&mut ctx);
    let ok = report.summary().errors == before;
    (value.filter(|_| ok), source)
}

/// A top-level entry: its name, the key node and the value node.
type Field = (String, Node, Node);

/// Decodes and parses one file into its top-level entries, after every document-level check.
/// On a document-level problem the finding is pushed and only the source is returned.
fn read_document(
    contents: &Contents,
    name: &str,
    secret: bool,
    known: &[&str],
    report: &mut Report,
) -> Result<(Vec<Field>, Source), Source> {
    let make_source = |text: &str| {
        if secret {
            Source::secret(name, text)
        } else {
            Source::new(name, text)
        }
    };
    let bytes = contents.bytes.as_slice();
    if contents.size > MAX_FILE_SIZE as u64 || bytes.len() > MAX_FILE_SIZE {
        report.push(
            Diagnostic::error(
                Code::TooLarge,
                format!(
                    "the file is {} bytes; configuration files are at most {} KiB",
                    contents.size,
                    MAX_FILE_SIZE / 1024
                ),
            )
            .in_file(name)
            .with_hint("this file holds a few lines; check that the right file is in place"),
        );
        return Err(make_source(""));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned();
            let source = make_source(&valid);
            let pos = source.position_of(valid.len(), 1);
            report.push(
                Diagnostic::error(Code::NotUtf8, "the file is not valid UTF-8")
                    .at(name, pos)
                    .with_hint("save the file as UTF-8"),
            );
            return Err(source);
        }
    };
    let source = make_source(text);
    // The parser reports an indentation tab at the scalar before it; point at the tab itself.
    if let Some((i, line)) = text.lines().enumerate().find(|(_, l)| {
        let indent = &l[..l.len() - l.trim_start().len()];
        indent.contains('\t') && !l.trim().is_empty()
    }) {
        let column = line.find('\t').unwrap_or(0) + 1;
        report.push(
            Diagnostic::error(
                Code::YamlSyntax,
                "invalid YAML: a tab is used for indentation",
            )
            .at(
                name,
                Position {
                    line: i + 1,
                    column,
                    width: 1,
                },
            )
            .with_hint("indent with spaces; YAML does not allow tabs there"),
        );
        return Err(source);
    }
    let doc = match yaml::parse(text) {
        Ok(Some(doc)) => doc,
        Ok(None) => {
            report.push(
                Diagnostic::error(Code::EmptyFile, "the file is empty")
                    .in_file(name)
                    .with_hint(if secret {
                        "add `token: \"github_pat_...\"`"
                    } else {
                        "add `repo: https://github.com/owner/repo.git`"
                    }),
            );
            return Err(source);
        }
        Err(e) => {
            let d = match e {
                YamlError::Syntax { message, pos } => {
                    Diagnostic::error(Code::YamlSyntax, format!("invalid YAML: {message}"))
                        .at(name, mark(pos, 1))
                        .with_hint(
                            "check the indentation and quoting on this line and the one before",
                        )
                }
                YamlError::MultipleDocuments { pos } => Diagnostic::error(
                    Code::MultipleDocuments,
                    "the file holds more than one YAML document",
                )
                .at(name, mark(pos, 3))
                .with_hint("keep one document: remove this `---` and what follows, or merge it"),
                YamlError::Alias { pos } => Diagnostic::error(
                    Code::AliasNotAllowed,
                    "YAML aliases (`*name`) are not allowed in configuration files",
                )
                .at(name, mark(pos, 1))
                .with_hint("write the value out"),
                YamlError::TooDeep { pos } => Diagnostic::error(
                    Code::TooDeep,
                    format!(
                        "the values are nested more than {} levels deep",
                        yaml::MAX_DEPTH
                    ),
                )
                .at(name, mark(pos, 1))
                .with_hint("every value of this file is one line: `key: value`"),
            };
            report.push(d);
            return Err(source);
        }
    };
    let entries = match doc.kind {
        NodeKind::Mapping(entries) => entries,
        _ => {
            let what = doc.describe();
            let null = doc.resolved() == Some(Resolved::Null);
            let d = if null {
                Diagnostic::error(Code::EmptyFile, "the file is empty")
            } else {
                Diagnostic::error(
                    Code::NotAMapping,
                    format!("the file holds {what}, not a mapping of keys to values"),
                )
            };
            report.push(d.at(name, mark(doc.pos, 1)).with_hint(if secret {
                "the file is `token: \"github_pat_...\"`"
            } else {
                "the file is `key: value` lines, like `repo: https://github.com/owner/repo.git`"
            }));
            return Err(source);
        }
    };

    let mut fields: Vec<Field> = Vec::new();
    for (key, value) in entries {
        let key_name = match &key.kind {
            NodeKind::Scalar { value: k, .. } if key.resolved() == Some(Resolved::Str) => k.clone(),
            _ => {
                report.push(
                    Diagnostic::error(
                        Code::WrongType,
                        format!("a key is {}, not a name", key.describe()),
                    )
                    .at(name, mark(key.pos, 1))
                    .with_hint(format!("keys are names: {}", list(known))),
                );
                continue;
            }
        };
        let shown = if secret && (key_name.len() > 16 || token::looks_like_token(&key_name)) {
            "(hidden: it looks like a token)".to_string()
        } else {
            format!("`{key_name}`")
        };
        let key_pos = mark(key.pos, key_name.chars().count().max(1));
        if let Some((_, first, _)) = fields.iter().find(|(k, _, _)| *k == key_name) {
            report.push(
                Diagnostic::error(Code::DuplicateKey, format!("duplicate key {shown}"))
                    .at(name, key_pos)
                    .with_hint(format!(
                        "it is already set on line {}; keep one",
                        first.pos.line
                    )),
            );
            continue;
        }
        if !known.contains(&key_name.as_str()) {
            let hint = match suggest(&key_name, known) {
                Some(s) if !shown.starts_with("(hidden") => format!("did you mean `{s}`?"),
                _ => format!("the keys of this file are {}", list(known)),
            };
            report.push(
                Diagnostic::error(Code::UnknownKey, format!("unknown key {shown}"))
                    .at(name, key_pos)
                    .with_hint(hint),
            );
            continue;
        }
        fields.push((key_name, key, value));
    }
    Ok((fields, source))
}

/// Typed access to a file's top-level fields, pushing a finding for each problem.
struct Fields<'a> {
    source: &'a mut Source,
    report: &'a mut Report,
    fields: Vec<Field>,
}

impl Fields<'_> {
    fn name(&self) -> String {
        self.source.name().to_string()
    }

    /// The value of a string field, or a finding if it is missing (when required) or not a string.
    fn string(&mut self, key: &str, required: bool) -> Option<(String, Node)> {
        let Some((_, key_node, value)) = self.fields.iter().find(|(k, _, _)| k == key) else {
            if required {
                let hint = match key {
                    "repo" => "add `repo: https://github.com/owner/repo.git`",
                    "token" => "add `token: \"github_pat_...\"`",
                    _ => "add it",
                };
                self.report.push(
                    Diagnostic::error(Code::MissingKey, format!("missing required key `{key}`"))
                        .in_file(self.name())
                        .with_hint(hint),
                );
            }
            return None;
        };
        let value = value.clone();
        let key_line = key_node.pos.line;
        let secret = self.source.is_secret();
        match (&value.kind, value.resolved()) {
            (NodeKind::Scalar { value: v, .. }, Some(Resolved::Str)) => {
                Some((v.clone(), value.clone()))
            }
            (NodeKind::Scalar { .. }, Some(Resolved::Null)) => {
                let pos = Position {
                    line: key_line,
                    column: key_node.pos.column,
                    width: key.len(),
                };
                self.report.push(
                    Diagnostic::error(Code::WrongType, format!("`{key}` has no value"))
                        .at(self.name(), pos)
                        .with_hint(if required {
                            "set a value".to_string()
                        } else {
                            format!("set a value or remove the `{key}` line")
                        }),
                );
                None
            }
            (NodeKind::Scalar { value: v, .. }, _) => {
                let what = value.describe();
                let pos = self.value_position(&value, v);
                let (code, hint) = if secret {
                    (
                        if key == "token" {
                            Code::TokenNotString
                        } else {
                            Code::WrongType
                        },
                        format!("quote the value: `{key}: \"...\"`"),
                    )
                } else {
                    (Code::WrongType, format!("quote it: `{key}: \"{v}\"`"))
                };
                self.report.push(
                    Diagnostic::error(
                        code,
                        format!("`{key}` is read by YAML as {what}, not a string"),
                    )
                    .at(self.name(), pos)
                    .with_hint(hint),
                );
                None
            }
            _ => {
                let pos = mark(value.pos, 1);
                self.report.push(
                    Diagnostic::error(
                        Code::WrongType,
                        format!("`{key}` must be a string, not {}", value.describe()),
                    )
                    .at(self.name(), pos)
                    .with_hint(format!("write `{key}: VALUE` on one line")),
                );
                None
            }
        }
    }

    /// Where a scalar value stands, marking its written width.
    fn value_position(&self, node: &Node, value: &str) -> Position {
        let first_line = value.lines().next().unwrap_or("");
        let width = first_line.chars().count() + 2 * quote_len(node);
        mark(node.pos, width.max(1))
    }

    /// `apiVersion` / `kind`: optional, but only with the one accepted value.
    fn check_header(&mut self) {
        for (key, want) in [("apiVersion", API_VERSION), ("kind", KIND)] {
            if let Some((value, node)) = self.string(key, false)
                && value != want
            {
                let pos = self.value_position(&node, &value);
                self.report.push(
                    Diagnostic::error(
                        Code::BadHeader,
                        format!("`{key}` is `{value}`; homelab-flux reads `{want}`"),
                    )
                    .at(self.name(), pos)
                    .with_hint(format!("write `{key}: {want}`, or remove the line")),
                );
            }
        }
    }
}

/// A finding's position at a YAML node's position, marking `width` characters.
fn mark(pos: yaml::Pos, width: usize) -> Position {
    Position {
        line: pos.line,
        column: pos.column,
        width,
    }
}

/// 1 for a quoted scalar (the quote before the value), 0 otherwise.
fn quote_len(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Scalar {
            style: Style::Quoted,
            ..
        } => 1,
        _ => 0,
    }
}

fn list(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The closest known word, if it is close enough to be a typo.
pub fn suggest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase().replace('_', "-");
    known
        .iter()
        .map(|k| (k, strsim::levenshtein(&lower, &k.to_ascii_lowercase())))
        .filter(|(k, d)| *d <= (k.len() / 3).max(1))
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| *k)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "ghp_R8vK2mQ9xLp4Tz7Wn3Bc6Hd1Jf5Gs0YaEuVi";

    #[test]
    fn the_two_field_example_loads() {
        let (cfg, report) = parse_flux(
            "repo: https://github.com/username/manifests.git\nbranch: main\n",
            "flux.yaml",
        );
        assert!(report.is_empty(), "{report:?}");
        let cfg = cfg.unwrap();
        assert_eq!(cfg.branch.unwrap().as_str(), "main");
        assert_eq!(cfg.path.as_str(), "./");
        assert_eq!(cfg.auth, Auth::DeployKey);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let (cfg, report) = parse_flux(
            "repo: http://github.com/o/r\nbrnch: main\npath: /x\nauth: tokn\n",
            "f",
        );
        assert!(cfg.is_none());
        let codes: Vec<Code> = report.sorted().iter().map(|d| d.code).collect();
        assert_eq!(
            codes,
            vec![
                Code::RepoScheme,
                Code::UnknownKey,
                Code::PathAbsolute,
                Code::AuthInvalid
            ]
        );
    }

    #[test]
    fn unquoted_numbers_are_refused_with_a_quote_hint() {
        let (_, report) = parse_secrets("token: 12345678\n", "s", Auth::DeployKey);
        let d = report.iter().next().unwrap();
        assert_eq!(d.code, Code::TokenNotString);
        assert!(!d.hint.as_ref().unwrap().contains("12345678"));
    }

    #[test]
    fn debug_of_loaded_config_never_shows_the_token() {
        let (token, report) = parse_secrets(&format!("token: {TOKEN}\n"), "s", Auth::DeployKey);
        assert!(report.is_empty(), "{report:?}");
        let shown = format!("{token:?} {:?}", Source::secret("s", TOKEN));
        assert!(!shown.contains(&TOKEN[4..]), "{shown}");
    }

    #[test]
    fn debug_of_the_environment_never_shows_the_token_or_the_age_key() {
        const AGE_KEY: &str =
            "AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQS0D4QXM";
        let env = Env {
            token: Some(TOKEN.to_string()),
            host: Some("github.com".into()),
            sops_age_key: Some(AGE_KEY.to_string()),
            ..Env::default()
        };
        let shown = format!("{env:?}");
        assert!(
            !shown.contains(&TOKEN[4..]) && shown.contains("github.com"),
            "{shown}"
        );
        assert!(!shown.contains(&AGE_KEY[16..]), "{shown}");
    }

    #[test]
    fn decryption_and_age_key_load_and_debug_hides_the_key() {
        let identity = ::age::x25519::Identity::generate();
        let value = secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_string();
        let (cfg, report) = parse_flux("repo: https://github.com/o/r\ndecryption: sops\n", "f");
        assert!(report.is_empty(), "{report:?}");
        assert_eq!(cfg.unwrap().decryption, Some(Decryption::Sops));
        let env = Env::default();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FLUX_FILE),
            "repo: https://github.com/o/r\ndecryption: sops\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join(SECRETS_FILE),
            format!("token: {TOKEN}\nageKey: {value}\n"),
        )
        .unwrap();
        let loaded = load(dir.path(), Secrets::Required, &env).unwrap();
        let report = &loaded.findings().report;
        assert!(report.is_empty(), "{report:?}");
        assert!(matches!(loaded, Loaded::Valid(_)));
        assert_eq!(loaded.decryption(), Some(Decryption::Sops));
        assert_eq!(
            loaded.age_identities()[0].recipient(),
            identity.to_public().to_string()
        );
        let shown = format!("{loaded:?}");
        assert!(!shown.contains(&value[16..]), "{shown}");
    }

    /// `status` asks for the token only: an age identity that sops would not find (here a
    /// `SOPS_AGE_KEY_FILE` that does not exist, an error for `validate`) is not looked for.
    #[test]
    fn the_token_alone_is_loaded_without_looking_for_an_age_identity() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FLUX_FILE),
            "repo: https://github.com/o/r\ndecryption: sops\n",
        )
        .unwrap();
        let env = Env {
            token: Some(TOKEN.to_string()),
            sops_age_key_file: Some(dir.path().join("missing-keys.txt")),
            ..Env::default()
        };
        let loaded = load(dir.path(), Secrets::Optional, &env).unwrap();
        assert!(matches!(loaded, Loaded::Invalid(_)), "{loaded:?}");
        let loaded = load(dir.path(), Secrets::TokenOnly, &env).unwrap();
        let Loaded::Valid(v) = &loaded else {
            panic!("{loaded:?}")
        };
        assert!(v.credential.is_some());
        assert!(v.age_identities.is_empty());
    }

    /// Found by the fuzzer: a duplicate or unknown key was reported, yet the value came back.
    #[test]
    fn a_file_with_any_error_returns_no_value() {
        let (cfg, report) = parse_flux(
            "repo: https://github.com/o/r\nbranch: main\nbranch: dev\n",
            "f",
        );
        assert!(report.has_errors());
        assert!(cfg.is_none());
        let (token, report) = parse_secrets(
            &format!("token: \"{TOKEN}\"\noken: x\n"),
            "s",
            Auth::DeployKey,
        );
        assert!(report.has_errors());
        assert!(token.is_none());
    }

    /// A finding made after loading (hygiene, GitHub) that is an error makes the configuration
    /// invalid: no command goes on with it.
    #[test]
    fn an_error_found_after_loading_makes_the_configuration_invalid() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FLUX_FILE), "repo: https://github.com/o/r\n").unwrap();
        let env = Env {
            token: Some(TOKEN.to_string()),
            ..Env::default()
        };
        let loaded = load(dir.path(), Secrets::Required, &env).unwrap();
        let Loaded::Valid(v) = &loaded else {
            panic!("{loaded:?}")
        };
        assert_eq!(v.credential.as_ref().unwrap().origin, TokenOrigin::Env);
        let warned = loaded.extend([Diagnostic::warning(Code::SecretsMissing, "w")]);
        assert!(matches!(warned, Loaded::Valid(_)));
        let failed = warned.extend([Diagnostic::error(Code::SecretsMissing, "e")]);
        let Loaded::Invalid(i) = &failed else {
            panic!("{failed:?}")
        };
        assert!(i.token.is_some(), "the token stays for the hygiene scan");
        assert_eq!(failed.findings().report.iter().count(), 2);
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("brnch", FLUX_KEYS), Some("branch"));
        assert_eq!(suggest("Repo", FLUX_KEYS), Some("repo"));
        assert_eq!(
            suggest("deploy_key", &["deploy-key", "token"]),
            Some("deploy-key")
        );
        assert_eq!(suggest("zzzz", FLUX_KEYS), None);
    }
}
