//! The configuration files: `flux.yaml` (committed) and `secrets-flux.yaml` (never committed).
//!
//! [`load`] does the file I/O; [`parse_flux`] and [`parse_secrets`] do the work on text, so tests
//! feed literals. Reading happens in two steps: the YAML tree (with positions) is read into raw
//! fields, then each field is checked into a type that cannot hold a bad value. Every problem in
//! both files is collected before anything is returned.

pub mod age;
mod app;
mod names;
mod parse;
pub mod source;
pub mod yaml;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::app_key::{AppKey, GitHubApp};
use crate::diag::{Code, Diagnostic, Report, Severity};
use crate::settings::{Auth, Decryption, FluxConfig};
use crate::sops::AgeIdentity;
use crate::token::{self, Token};
use crate::token_host::TokenHost;
pub use parse::{parse_flux, parse_secrets, suggest};
use parse::{parse_flux_bytes, parse_secrets_bytes};
pub use source::Source;

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
    /// `githubApp`, with its key read: `Some` whenever `auth: github-app` (and the secrets are
    /// read), else `None`.
    pub app: Option<GitHubApp>,
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
    /// The App's private key when one parsed, for the hygiene scan.
    pub app_key: Option<AppKey>,
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

    /// The GitHub App's private key, when one parsed.
    pub fn app_key(&self) -> Option<&AppKey> {
        match self {
            Loaded::Valid(v) => v.app.as_ref().map(|a| &a.key),
            Loaded::Invalid(i) => i.app_key.as_ref(),
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
                        app_key: v.app.map(|a| a.key),
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
        "`{path}` not found (looked in `{looked_in}`); run `homelab-flux init` to write it, or pass `--config-dir` if the configuration is elsewhere"
    )]
    Missing { path: String, looked_in: String },
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
        looked_in: std::path::absolute(dir)
            .unwrap_or_else(|_| dir.to_path_buf())
            .display()
            .to_string(),
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
    let mut app = None;
    let mut app_key = None;
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
        }
        // With `github-app` the App's credentials are in the file, whatever holds the token.
        if env.token.is_none() || auth == Auth::GitHubApp {
            match read(&secrets_path)? {
                Some(contents) => {
                    let name = secrets_path.display().to_string();
                    let mut read = parse_secrets_bytes(&contents, &name, auth, &mut report);
                    if env.token.is_none() {
                        token = read.token;
                        token_origin = Some(TokenOrigin::File(secrets_path.clone()));
                        file_host = Some(read.host);
                    }
                    age_key = read.age_key;
                    app_key = read.app_key.take();
                    if let Some(found) = read.app.take()
                        && auth == Auth::GitHubApp
                    {
                        app = app::resolve(found, dir, &name, &mut report);
                        app_key = app.as_ref().map(|a| a.key.clone()).or(app_key);
                    }
                    sources.push(read.source);
                }
                None if env.token.is_some() => {
                    report.push(
                        Diagnostic::new(
                            if secrets == Secrets::Required {
                                Severity::Error
                            } else {
                                Severity::Warning
                            },
                            Code::SecretsMissing,
                            format!(
                                "`{}` not found, so the GitHub App's credentials are not checked",
                                secrets_path.display()
                            ),
                        )
                        .in_file(secrets_path.display().to_string())
                        .with_hint("create it (mode 600) with `githubApp:` and `id:`, `privateKeyFile:` indented below it"),
                    );
                }
                None => {
                    let what = if auth == Auth::GitHubApp {
                        "the GitHub App's credentials are"
                    } else {
                        "the token is"
                    };
                    let d = Diagnostic::new(
                        if secrets == Secrets::Required {
                            Severity::Error
                        } else {
                            Severity::Warning
                        },
                        Code::SecretsMissing,
                        format!("`{}` not found, so {what} not checked", secrets_path.display()),
                    )
                    .in_file(secrets_path.display().to_string())
                    .with_hint(if auth == Auth::GitHubApp {
                        "run `homelab-flux init`, or create it (mode 600) with `githubApp:` and `id:`, `privateKeyFile:` indented below it".to_string()
                    } else {
                        format!(
                            "run `homelab-flux init`, or create it with the line `token: <your token>` (mode 600), or set `{TOKEN_ENV}`"
                        )
                    });
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
            app,
            findings,
        }),
        _ => Loaded::Invalid(Invalid {
            token,
            decryption: decryption.ok().flatten(),
            age_identities,
            app_key,
            findings,
        }),
    })
}

/// Files of the config directory that look like a secrets file but are not `read_name`: named
/// `secrets*.yaml` (or `.yml`), or holding a top-level `token:` or `ageKey:` key. A token saved
/// under the wrong name is read by nothing and protected by nothing. Only regular files of at
/// most [`MAX_FILE_SIZE`] are looked into.
pub fn stray_secrets_files(dir: &Path, read_name: &std::ffi::OsStr) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name() != read_name)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_ascii_lowercase();
            if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
                return false;
            }
            if name.starts_with("secrets") {
                return true;
            }
            let small = e.metadata().is_ok_and(|m| m.len() <= MAX_FILE_SIZE as u64);
            small
                && std::fs::read(e.path()).is_ok_and(|bytes| {
                    bytes
                        .split(|&b| b == b'\n')
                        .any(|line| line.starts_with(b"token:") || line.starts_with(b"ageKey:"))
                })
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// Writes a new file: refused when it exists unless `overwrite`; `private` files get mode 600
/// from the start (never readable by others, not even for a moment).
pub fn write_file(path: &Path, text: &str, private: bool, overwrite: bool) -> io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    if private {
        // An existing file keeps its mode on open: make it private too.
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// A file's first bytes (at most one more than [`MAX_FILE_SIZE`]) and its whole size.
pub(super) struct Contents {
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

impl Contents {
    pub(super) fn of(text: &str) -> Contents {
        Contents {
            bytes: text.as_bytes().to_vec(),
            size: text.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse::FLUX_KEYS;
    use super::*;
    use crate::settings::Auth;

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

    /// `auth: github-app`: the App's key, inline or in a file of mode 600, loads without a
    /// token; `Debug` of what was loaded never shows it; a key file others may read is refused.
    #[test]
    fn a_github_app_loads_and_debug_never_shows_its_key() {
        use std::os::unix::fs::PermissionsExt as _;
        let pem = crate::app_key::tests::TEST_KEY_PKCS1;
        let body_line = pem.lines().nth(10).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let flux = "repo: https://github.com/o/r\nauth: github-app\n";
        std::fs::write(dir.path().join(FLUX_FILE), flux).unwrap();
        let inline: String = pem.lines().map(|l| format!("    {l}\n")).collect();
        std::fs::write(
            dir.path().join(SECRETS_FILE),
            format!("githubApp:\n  id: 42\n  privateKey: |\n{inline}"),
        )
        .unwrap();
        let loaded = load(dir.path(), Secrets::Required, &Env::default()).unwrap();
        let Loaded::Valid(v) = &loaded else {
            panic!("{loaded:?}")
        };
        let app = v.app.as_ref().unwrap();
        assert_eq!((app.id, app.installation_id), (42, None));
        assert!(v.credential.is_none(), "no token needed");
        let shown = format!("{loaded:?}");
        assert!(!shown.contains(body_line), "{shown}");

        let key_file = dir.path().join("keys/app.pem");
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        std::fs::write(&key_file, pem).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(
            dir.path().join(SECRETS_FILE),
            "githubApp:\n  id: 42\n  installationId: 7\n  privateKeyFile: keys/app.pem\n",
        )
        .unwrap();
        let loaded = load(dir.path(), Secrets::Required, &Env::default()).unwrap();
        let Loaded::Valid(v) = &loaded else {
            panic!("{loaded:?}")
        };
        assert_eq!(v.app.as_ref().unwrap().installation_id, Some(7));
        assert!(!format!("{loaded:?}").contains(body_line));

        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let loaded = load(dir.path(), Secrets::Required, &Env::default()).unwrap();
        let codes: Vec<Code> = loaded.findings().report.iter().map(|d| d.code).collect();
        assert_eq!(codes, [Code::AppKeyFilePermissions]);
        assert!(matches!(loaded, Loaded::Invalid(_)));
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
