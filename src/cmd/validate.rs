//! `homelab-flux validate`: check the configuration, offline and against GitHub.

use super::Global;
use crate::app_key::GitHubApp;
use crate::config::{Credential, Findings, Loaded, Secrets, Valid};
use crate::diag::{Code, Diagnostic};
use crate::output::{Format, Ui};
use crate::settings::{Auth, FluxConfig};

/// Check the configuration files, the secrets hygiene of the git work tree, and GitHub.
///
/// Offline it checks both files (every problem at once, with file:line:col and a hint) and, when
/// the config directory is in a git work tree, that the secrets file is not tracked, staged or
/// unignored, that it is not readable by others, and that the token is in no tracked file.
/// Online it also asks GitHub whether the token works, the repository and branch exist, and the
/// token may manage deploy keys; with `auth: github-app`, whether the App's key works, the App
/// is installed on the repository and may read its contents. Built for pre-commit: use `--offline` there.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  homelab-flux validate                  # the files, the work tree's hygiene, and GitHub
  homelab-flux validate --offline        # no network: what the pre-commit hook runs
  homelab-flux validate --format json    # one JSON document on stdout, for CI")]
pub struct Args {
    #[command(flatten)]
    pub config: crate::cmd::ConfigArgs,

    /// Skip the GitHub checks (repository, branch, token permissions).
    #[arg(long)]
    pub offline: bool,

    /// Treat warnings as errors.
    #[arg(long)]
    pub strict: bool,

    /// Output format: `text` (compiler-style, on stderr) or `json` (one document, on stdout).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Why `validate` did not end with exit 0.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Load(#[from] super::CannotLoad),
    /// The findings hold an error (exit 1).
    #[error(transparent)]
    Reported(#[from] super::Reported),
    #[error(transparent)]
    Runtime(#[from] super::NoRuntime),
    /// GitHub could not be asked (exit 2), after the offline findings were printed.
    #[error(transparent)]
    CannotAsk(#[from] super::CannotAsk),
    /// The GitHub client could not be set up (exit 2).
    #[error(transparent)]
    GitHub(#[from] crate::github::Error),
    #[error("cannot write the findings")]
    Output(#[from] std::io::Error),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Reported(_) => 1,
            Error::Load(_)
            | Error::Runtime(_)
            | Error::CannotAsk(_)
            | Error::GitHub(_)
            | Error::Output(_) => 2,
        }
    }

    pub fn is_reported(&self) -> bool {
        matches!(self, Error::Reported(_))
    }
}

pub fn run(args: &Args, global: &Global, ui: &Ui) -> Result<(), Error> {
    let loaded = super::check_offline(&global.config_dir, Secrets::Optional)?;

    let mut unreachable = None;
    let mut found = Vec::new();
    if !args.offline {
        found = match &loaded {
            Loaded::Valid(Valid {
                flux,
                app: Some(app),
                findings,
                ..
            }) if flux.auth == Auth::GitHubApp => {
                let runtime = super::current_thread_runtime()?;
                runtime
                    .block_on(check_app(flux, app, findings, ui))
                    .unwrap_or_else(|e| {
                        unreachable = Some(e);
                        Vec::new()
                    })
            }
            Loaded::Valid(Valid {
                flux,
                credential: Some(credential),
                findings,
                ..
            }) => {
                let runtime = super::current_thread_runtime()?;
                runtime
                    .block_on(check_github(flux, credential, findings, ui))
                    .unwrap_or_else(|e| {
                        unreachable = Some(e);
                        Vec::new()
                    })
            }
            Loaded::Valid(Valid { findings, .. }) => vec![
                Diagnostic::note(
                    Code::OnlineSkipped,
                    "the GitHub checks were skipped: there is no token",
                )
                .with_hint(format!(
                    "create `{}` or set `HOMELAB_FLUX_TOKEN`",
                    findings.secrets_path.display()
                )),
            ],
            Loaded::Invalid(_) => vec![
                Diagnostic::note(
                    Code::OnlineSkipped,
                    "the GitHub checks were skipped because of the errors above",
                )
                .with_hint("fix them and run again"),
            ],
        };
    }
    let mut findings = loaded.into_findings();
    findings.report.extend(found);
    if args.strict {
        findings.report.make_strict();
    }
    match unreachable {
        // Not "valid": GitHub's half of the checks did not run.
        Some(e) => {
            ui.report_unfinished(
                &findings.report,
                &findings.sources,
                args.format,
                "the configuration",
            )?;
            match findings.report.has_errors() {
                true => Err(super::Reported.into()),
                false => Err(e),
            }
        }
        None => super::finish::<Error>(&findings, ui, args.format, "the configuration"),
    }
}

/// `auth: github-app`: the App's key, its installation, an installation token, then the
/// repository and branch with it (the token is not asked about: it only deletes old keys).
async fn check_app(
    cfg: &FluxConfig,
    app: &GitHubApp,
    findings: &Findings,
    ui: &Ui,
) -> Result<Vec<Diagnostic>, Error> {
    let base = super::api_base(cfg)?;
    tracing::debug!(
        "checking `{}` as GitHub App {} against the GitHub API at {base}",
        cfg.repo,
        app.id
    );
    let (answers, _) = super::ask_app(&base, app, cfg, false, ui).await?;
    Ok(super::app_findings(cfg, app, findings, answers)?)
}

/// Asks GitHub the independent questions at once and turns the answers into findings.
async fn check_github(
    cfg: &FluxConfig,
    credential: &Credential,
    findings: &Findings,
    ui: &Ui,
) -> Result<Vec<Diagnostic>, Error> {
    let token = &credential.token;
    let client = super::github_client(cfg, token, ui)?;
    tracing::debug!(
        "checking `{}` against the GitHub API at {}",
        cfg.repo,
        client.api_base()
    );
    let answers = super::ask(&client, cfg, false).await;
    Ok(super::github_findings(
        cfg,
        token,
        &credential.origin,
        findings,
        answers,
    )?)
}
