//! Reading the two files' text into the typed configuration: the YAML tree (with positions) into
//! raw fields, each field checked into a type that cannot hold a bad value, every problem of
//! both files collected as a diagnostic. Pure: [`super::load`] reads the bytes.

use super::age;
use super::app;
pub use super::names::suggest;
use super::names::{list, mark};
use super::source::Source;
use super::yaml::{self, Node, NodeKind, Resolved, Style, YamlError};
use super::{API_VERSION, Contents, KIND, MAX_FILE_SIZE, SECRETS_FILE};
use crate::app_key::AppKey;
use crate::branch::BranchName;
use crate::diag::{Code, Diagnostic, Position, Report};
use crate::repo_path::RepoPath;
use crate::repo_url::{self, RepoUrl};
use crate::settings::{Auth, Decryption, FluxConfig};
use crate::sops::AgeIdentity;
use crate::token::{self, Token};
use crate::token_host::TokenHost;

/// Parses `flux.yaml` text. Findings go to `report`; the config is returned when there were no errors.
pub fn parse_flux(text: &str, name: &str) -> (Option<FluxConfig>, Report) {
    let mut report = Report::default();
    let (cfg, _, _, _) = parse_flux_bytes(&Contents::of(text), name, &mut report);
    (cfg, report)
}

/// Parses `secrets-flux.yaml` text for the given `auth` (a `privateKeyFile` is not read).
pub fn parse_secrets(text: &str, name: &str, auth: Auth) -> (Option<Token>, Report) {
    let mut report = Report::default();
    let read = parse_secrets_bytes(&Contents::of(text), name, auth, &mut report);
    (read.token, report)
}

pub(super) const FLUX_KEYS: &[&str] = &[
    "repo",
    "branch",
    "path",
    "auth",
    "decryption",
    "apiVersion",
    "kind",
];
const SECRETS_KEYS: &[&str] = &["token", "host", "ageKey", "githubApp", "apiVersion", "kind"];

/// The age identity of the secrets file, and where it stands.
type AgeKeyAt = Option<(AgeIdentity, Position)>;
/// `decryption:` as written: unset, set, or set to an invalid value (reported).
type DecryptionSeen = Result<Option<Decryption>, ()>;

/// Also returns the repository and where its value stands whenever `repo` itself is valid (for
/// the token-host check, which needs it even when other fields have errors), and `decryption`
/// whenever it is valid (so that the age identity is still found and hidden).
pub(super) fn parse_flux_bytes(
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
                    "github-app" => Some(Auth::GitHubApp),
                    other => {
                        let d = Diagnostic::error(
                            Code::AuthInvalid,
                            format!(
                                "`auth` must be `deploy-key`, `token` or `github-app`, not `{other}`"
                            ),
                        );
                        let d = match suggest(other, &["deploy-key", "token", "github-app"]) {
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

/// What the secrets file says.
pub(super) struct SecretsRead {
    /// The token, when the file has no error.
    pub token: Option<Token>,
    pub source: Source,
    /// `Ok(None)`: no `host:`; `Err`: an invalid one (reported).
    pub host: Result<Option<TokenHost>, ()>,
    /// `ageKey` when it is a valid identity, whatever else is wrong in the file, so that it is
    /// hidden from all output from then on.
    pub age_key: AgeKeyAt,
    /// `githubApp`, when the file has no error; its key file is not read yet.
    pub app: Option<app::AppRead>,
    /// An inline `privateKey` that parsed, whatever else is wrong (hidden and searched for).
    pub app_key: Option<AppKey>,
}

pub(super) fn parse_secrets_bytes(
    bytes: &Contents,
    name: &str,
    auth: Auth,
    report: &mut Report,
) -> SecretsRead {
    let mut host = Ok(None);
    let mut age_key = None;
    let mut app = None;
    let mut app_key = None;
    let (token, source) = with_fields(bytes, name, true, SECRETS_KEYS, report, |ctx| {
        match ctx.fields.iter().find(|(k, _, _)| k == "githubApp") {
            Some((_, key, value)) => {
                let (read, key_seen) = app::read(value, key, name, ctx.report);
                app_key = key_seen;
                if auth != Auth::GitHubApp {
                    ctx.report.push(
                        Diagnostic::warning(
                            Code::AppUnused,
                            format!("`githubApp` is set, but `auth` is `{auth}`: it is not used"),
                        )
                        .at(name, mark(key.pos, 9))
                        .with_hint("set `auth: github-app` in flux.yaml to use the App, or remove `githubApp`"),
                    );
                }
                app = read;
            }
            None if auth == Auth::GitHubApp => ctx.report.push(
                Diagnostic::error(
                    Code::AppMissing,
                    "`auth: github-app` needs the App's credentials: `githubApp` is missing",
                )
                .in_file(name)
                .with_hint("add `githubApp:` with `id:` (the App ID) and `privateKeyFile:` (the `.pem` file) indented below it"),
            ),
            None => {}
        }
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
        // With `github-app` the token is optional: it then only cleans up old deploy keys.
        let token = ctx
            .string("token", auth != Auth::GitHubApp)
            .map(|(value, node)| {
                let pos = ctx.value_position(&node, &value);
                ctx.report.extend(
                    token::check(&value, auth)
                        .into_iter()
                        .map(|d| d.at(name, pos)),
                );
                Token::new(&value)
            });
        Some(token)
    });
    SecretsRead {
        token: token.flatten(),
        source,
        host,
        age_key,
        app,
        app_key,
    }
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
