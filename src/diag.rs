//! Diagnostics: the findings of `validate` (and of the checks `bootstrap` runs first).
//!
//! A finding is data, not a Rust error: every check pushes [`Diagnostic`]s into a [`Report`],
//! the report is rendered once (text like a compiler, or one JSON document), and its counts decide
//! the exit code. Each diagnostic carries a stable [`Code`] that the README lists.

use std::fmt;

use serde::Serialize;

/// How bad a finding is. Ordered so that `Error` is the largest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Information the user may want (for example "treated as GitHub Enterprise Server").
    Note,
    /// Works, but probably not what the user wants; an error under `--strict`.
    Warning,
    /// The configuration cannot be used as it is.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

macro_rules! codes {
    ($($variant:ident = $code:literal, $name:literal;)*) => {
        /// Stable diagnostic codes. The numbers never change meaning; the README lists them all.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Code { $($variant,)* }

        impl Code {
            /// Every code, in README order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The stable code, for example `HF007`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code,)* }
            }

            /// A short kebab-case name, for example `unknown-key`.
            pub fn name(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }
        }
    };
}

codes! {
    YamlSyntax = "HF001", "yaml-syntax";
    NotUtf8 = "HF002", "not-utf8";
    TooLarge = "HF003", "file-too-large";
    EmptyFile = "HF004", "empty-file";
    MultipleDocuments = "HF005", "multiple-documents";
    NotAMapping = "HF006", "not-a-mapping";
    UnknownKey = "HF007", "unknown-key";
    DuplicateKey = "HF008", "duplicate-key";
    WrongType = "HF009", "wrong-type";
    MissingKey = "HF010", "missing-key";
    AliasNotAllowed = "HF011", "alias-not-allowed";
    BadHeader = "HF012", "bad-header";
    TooDeep = "HF013", "nesting-too-deep";
    RepoScheme = "HF020", "repo-scheme";
    RepoCredentials = "HF021", "repo-credentials";
    RepoQuery = "HF022", "repo-query-or-fragment";
    RepoPort = "HF023", "repo-port";
    RepoPath = "HF024", "repo-path";
    RepoOwner = "HF025", "repo-owner";
    RepoName = "HF026", "repo-name";
    RepoHost = "HF027", "repo-host";
    EnterpriseHost = "HF028", "enterprise-host";
    RepoHostNotTokenHost = "HF029", "repo-host-not-token-host";
    BranchInvalid = "HF030", "branch-invalid";
    BranchFullRef = "HF031", "branch-full-ref";
    BranchInvisible = "HF032", "branch-invisible";
    PathAbsolute = "HF035", "path-absolute";
    PathEscapes = "HF036", "path-escapes";
    PathInvalid = "HF037", "path-invalid";
    AuthInvalid = "HF038", "auth-invalid";
    DecryptionInvalid = "HF039", "decryption-invalid";
    TokenNotString = "HF040", "token-not-string";
    TokenWhitespace = "HF041", "token-whitespace";
    TokenCharacters = "HF042", "token-characters";
    TokenTooLong = "HF043", "token-too-long";
    TokenPlaceholder = "HF044", "token-placeholder";
    TokenRefresh = "HF045", "token-refresh";
    TokenInstallation = "HF046", "token-installation";
    TokenOAuth = "HF047", "token-oauth";
    TokenLength = "HF048", "token-length";
    TokenUnknownFormat = "HF049", "token-unknown-format";
    SecretsMissing = "HF050", "secrets-missing";
    TokenEmpty = "HF051", "token-empty";
    TokenHostInvalid = "HF052", "token-host-invalid";
    SecretsTracked = "HF060", "secrets-tracked";
    SecretsNotIgnored = "HF061", "secrets-not-ignored";
    SecretsPermissions = "HF062", "secrets-permissions";
    TokenInTrackedFile = "HF063", "token-in-tracked-file";
    PlaintextSecret = "HF064", "plaintext-secret-manifest";
    SecretsStray = "HF065", "secrets-file-not-read";
    AgeKeyInvalid = "HF070", "age-key-invalid";
    AgeKeyMissing = "HF071", "age-key-missing";
    SopsConfigInvalid = "HF072", "sops-config-invalid";
    SopsRuleRecipient = "HF073", "sops-rule-recipient";
    SopsFileRecipient = "HF074", "sops-file-recipient";
    AgeKeyInTrackedFile = "HF075", "age-key-in-tracked-file";
    AgeKeyUnused = "HF076", "age-key-unused";
    AgePluginSkipped = "HF077", "age-plugin-skipped";
    AppMissing = "HF080", "github-app-missing";
    AppIdInvalid = "HF081", "github-app-id-invalid";
    AppKeySource = "HF082", "github-app-key-source";
    AppKeyInvalid = "HF083", "github-app-key-invalid";
    AppKeyFile = "HF084", "github-app-key-file";
    AppKeyFilePermissions = "HF085", "github-app-key-file-permissions";
    AppKeyInTrackedFile = "HF086", "github-app-key-in-tracked-file";
    AppUnused = "HF087", "github-app-unused";
    TokenRejected = "HF101", "token-rejected";
    TokenExpiring = "HF102", "token-expiring";
    TokenExpired = "HF103", "token-expired";
    TokenScopes = "HF104", "token-scopes";
    RepoNotFound = "HF105", "repo-not-found";
    RepoArchived = "HF106", "repo-archived";
    RepoPublic = "HF107", "repo-public";
    BranchNotFound = "HF108", "branch-not-found";
    BranchUnchecked = "HF109", "branch-unchecked";
    DeployKeysForbidden = "HF110", "deploy-keys-forbidden";
    ContentsForbidden = "HF111", "contents-forbidden";
    DefaultBranch = "HF112", "default-branch";
    OnlineSkipped = "HF113", "online-checks-skipped";
    AppKeyRejected = "HF114", "github-app-key-rejected";
    AppNotInstalled = "HF115", "github-app-not-installed";
    AppContentsForbidden = "HF116", "github-app-contents-forbidden";
    AppSuspended = "HF117", "github-app-suspended";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Where a finding points: a file, and optionally a position and the width to underline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file as the user named it (for example `config/flux.yaml`), or a variable such as
    /// `$HOMELAB_FLUX_TOKEN`.
    pub file: String,
    /// 1-based line and column (in characters), when the finding has a position.
    pub position: Option<Position>,
}

/// A 1-based position with the number of characters to mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
    pub width: usize,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: Code,
    pub message: String,
    pub location: Option<Location>,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(severity: Severity, code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            code,
            message: message.into(),
            location: None,
            hint: None,
        }
    }

    pub fn error(code: Code, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, message)
    }

    pub fn warning(code: Code, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, code, message)
    }

    pub fn note(code: Code, message: impl Into<String>) -> Self {
        Self::new(Severity::Note, code, message)
    }

    /// Points the finding at a file without a position.
    pub fn in_file(mut self, file: impl Into<String>) -> Self {
        self.location = Some(Location {
            file: file.into(),
            position: None,
        });
        self
    }

    /// Points the finding at a position in a file.
    pub fn at(mut self, file: impl Into<String>, position: Position) -> Self {
        self.location = Some(Location {
            file: file.into(),
            position: Some(position),
        });
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Counts of findings by severity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub errors: usize,
    pub warnings: usize,
    pub notes: usize,
}

/// All findings of one run, in the order they were found (sorted by file and position on output).
#[derive(Clone, Debug, Default)]
pub struct Report {
    diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    pub fn extend(&mut self, diagnostics: impl IntoIterator<Item = Diagnostic>) {
        self.diagnostics.extend(diagnostics);
    }

    /// Drops every finding with this code (a note made moot by an error about the same value).
    pub fn remove(&mut self, code: Code) {
        self.diagnostics.retain(|d| d.code != code);
    }

    /// `--strict`: every warning becomes an error.
    pub fn make_strict(&mut self) {
        for d in &mut self.diagnostics {
            if d.severity == Severity::Warning {
                d.severity = Severity::Error;
            }
        }
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for d in &self.diagnostics {
            match d.severity {
                Severity::Error => s.errors += 1,
                Severity::Warning => s.warnings += 1,
                Severity::Note => s.notes += 1,
            }
        }
        s
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// The findings in a stable order: by file, then position, then the order found.
    pub fn sorted(&self) -> Vec<&Diagnostic> {
        let mut all: Vec<&Diagnostic> = self.diagnostics.iter().collect();
        all.sort_by_key(|d| {
            let loc = d.location.as_ref();
            (
                loc.map(|l| l.file.clone()),
                loc.and_then(|l| l.position).map(|p| (p.line, p.column)),
            )
        });
        all
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.diagnostics.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            assert!(seen.insert(code.as_str()), "duplicate code {code}");
            assert!(code.as_str().starts_with("HF") && code.as_str().len() == 5);
        }
    }

    #[test]
    fn strict_turns_warnings_into_errors_only() {
        let mut r = Report::default();
        r.push(Diagnostic::warning(Code::TokenOAuth, "w"));
        r.push(Diagnostic::note(Code::EnterpriseHost, "n"));
        r.make_strict();
        assert_eq!(
            r.summary(),
            Summary {
                errors: 1,
                warnings: 0,
                notes: 1
            }
        );
    }
}
