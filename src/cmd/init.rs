//! `homelab-flux init`: the configuration of a homelab repository, written once: `flux.yaml`,
//! `secrets-flux.yaml` (mode 600), the `.gitignore` line, and with `--pre-commit` the hook.
//! Every value is checked before anything is written, nothing is overwritten without `--force`,
//! and what was written is validated like `validate --offline` does.

use std::io::{self, BufRead as _, IsTerminal as _};
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret as _, SecretString};

use super::{ConfigArgs, Reported};
use crate::config::{self, Secrets};
use crate::diag::Report;
use crate::output::{Format, Ui};
use crate::settings::Auth;
use crate::{git, repo_url};

/// Write the configuration of this repository: `config/flux.yaml` (the repository from the
/// `origin` remote), `config/secrets-flux.yaml` with the token (mode 600, asked for without
/// echo), the `.gitignore` line that keeps it out of git, and with `--pre-commit` the hook.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  homelab-flux init                      # asks for the token, input hidden
  homelab-flux init --pre-commit         # also adds the hook to .pre-commit-config.yaml
  pass show github/flux | homelab-flux init --token-stdin --repo https://github.com/me/homelab")]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// The GitHub repository Flux reads (default: the `origin` remote, in its `https://` form).
    #[arg(long, value_name = "URL")]
    pub repo: Option<String>,

    /// The branch Flux follows (default: the branch checked out).
    #[arg(long, value_name = "NAME")]
    pub branch: Option<String>,

    /// Read the token from standard input (its first line) instead of asking for it.
    #[arg(long)]
    pub token_stdin: bool,

    /// Add the `homelab-flux-validate` hook to `.pre-commit-config.yaml`.
    #[arg(long)]
    pub pre_commit: bool,

    /// Overwrite `flux.yaml` and `secrets-flux.yaml` when they exist.
    #[arg(long)]
    pub force: bool,
}

/// Why `init` did not end with exit 0.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value `init` cannot find or ask for (exit 2): the message names the flag.
    #[error("{what}; {hint}")]
    Missing {
        what: &'static str,
        hint: &'static str,
    },
    #[error("`{}` exists; nothing was written. Run with `--force` to overwrite it, or edit it by hand", .0.display())]
    Exists(PathBuf),
    #[error("cannot read the token")]
    ReadToken(#[source] io::Error),
    #[error("cannot write `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "`{}` has no top-level `repos:` list to add the hook to; add this entry by hand:\n{HOOK}", .0.display()
    )]
    PreCommitConfig(PathBuf),
    /// The values or the written configuration have errors (exit 1): shown above.
    #[error(transparent)]
    Reported(#[from] Reported),
    #[error(transparent)]
    Load(#[from] super::CannotLoad),
    #[error("cannot write the output")]
    Output(#[from] io::Error),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Reported(_) => 1,
            _ => 2,
        }
    }

    pub fn is_reported(&self) -> bool {
        matches!(self, Error::Reported(_))
    }
}

/// The hook entry `--pre-commit` adds (pre-commit's `repo: local` form, the installed binary).
const HOOK: &str = "  - repo: local
    hooks:
      - id: homelab-flux-validate
        name: homelab-flux validate
        entry: homelab-flux validate --offline
        language: system
        pass_filenames: false
        always_run: true
";

pub fn run(args: &Args, ui: &Ui) -> Result<(), Error> {
    let dir = &args.config.dir;
    let around = git::around(dir);
    let terminal = io::stdin().is_terminal();

    let repo = match (
        &args.repo,
        around.origin.as_deref().and_then(repo_url::from_remote),
    ) {
        (Some(repo), _) => repo.clone(),
        (None, Some(url)) => url.https_url(),
        (None, None) if terminal && !args.token_stdin => {
            prompt("GitHub repository (https://github.com/OWNER/REPO): ")?
        }
        (None, None) => {
            return Err(Error::Missing {
                what: "no repository: the `origin` remote is not a GitHub repository",
                hint: "pass `--repo https://github.com/OWNER/REPO`",
            });
        }
    };
    let branch = args.branch.clone().or(around.branch);
    let flux_path = dir.join(config::FLUX_FILE);
    let secrets_path = dir.join(config::SECRETS_FILE);
    for path in [&flux_path, &secrets_path] {
        if path.exists() && !args.force {
            return Err(Error::Exists(path.clone()));
        }
    }

    let token = match (args.token_stdin, terminal) {
        (true, _) => {
            let mut line = String::new();
            io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(Error::ReadToken)?;
            SecretString::from(line.trim_end_matches(['\n', '\r']).to_string())
        }
        (false, true) => SecretString::from(
            read_hidden("GitHub token (input hidden): ").map_err(Error::ReadToken)?,
        ),
        (false, false) => {
            return Err(Error::Missing {
                what: "no token: there is no terminal to ask for it",
                hint: "pass it on standard input with `--token-stdin` (never as an argument)",
            });
        }
    };
    crate::output::hide(&token);

    // Checked before anything is written: the same rules as every other command.
    let flux_text = flux_yaml(&repo, branch.as_deref());
    let secrets_text = format!("token: \"{}\"\n", token.expose_secret());
    let (_, mut report) = config::parse_flux(&flux_text, &flux_path.display().to_string());
    let (_, secrets_report) = config::parse_secrets(
        &secrets_text,
        &secrets_path.display().to_string(),
        Auth::DeployKey,
    );
    report.extend(secrets_report.iter().cloned());
    if report.has_errors() {
        return refuse(&report, ui);
    }

    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.clone(),
        source,
    })?;
    write(&flux_path, &flux_text, false, args.force)?;
    write(&secrets_path, &secrets_text, true, args.force)?;
    ui.step(&format!("wrote `{}`", flux_path.display()));
    ui.step(&format!("wrote `{}` (mode 600)", secrets_path.display()));
    if let Some(root) = &around.root {
        ignore_secrets(root, dir, ui)?;
        if args.pre_commit {
            add_hook(&root.join(".pre-commit-config.yaml"), ui)?;
        }
    }

    // What was written, checked as `validate --offline` checks it.
    let loaded = super::check_offline(dir, Secrets::Required)?;
    super::finish::<Error>(loaded.findings(), ui, Format::Text, "the configuration")?;
    ui.step("next: `homelab-flux validate` checks the token against GitHub; then `homelab-flux bootstrap`");
    Ok(())
}

/// The findings of values that cannot be written, printed; nothing was written.
fn refuse(report: &Report, ui: &Ui) -> Result<(), Error> {
    ui.report(report, &[], Format::Text, "the values given")?;
    Err(Reported.into())
}

/// `flux.yaml` for the repository and branch.
fn flux_yaml(repo: &str, branch: Option<&str>) -> String {
    let mut text = String::from(
        "# homelab-flux: the repository Flux reads (committed; the token is in secrets-flux.yaml)\n",
    );
    text.push_str(&format!("repo: {repo}\n"));
    match branch {
        Some(b) => text.push_str(&format!("branch: {b}\n")),
        None => text.push_str("# branch: main   (default: the repository's default branch)\n"),
    }
    text
}

fn write(path: &Path, text: &str, private: bool, overwrite: bool) -> Result<(), Error> {
    config::write_file(path, text, private, overwrite).map_err(|source| match source.kind() {
        io::ErrorKind::AlreadyExists => Error::Exists(path.to_path_buf()),
        _ => Error::Write {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Adds the line that keeps the secrets files out of git to the work tree's `.gitignore`,
/// unless git ignores them already.
fn ignore_secrets(root: &Path, dir: &Path, ui: &Ui) -> Result<(), Error> {
    let Ok(dir) = dir.canonicalize() else {
        return Ok(());
    };
    let Ok(rel_dir) = dir.strip_prefix(root) else {
        return Ok(());
    };
    if git::is_ignored(root, &rel_dir.join(config::SECRETS_FILE)) {
        return Ok(());
    }
    let line = git::ignore_line(rel_dir);
    let path = root.join(".gitignore");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("{line}\n"));
    write(&path, &text, false, true)?;
    ui.step(&format!("added `{line}` to `{}`", path.display()));
    Ok(())
}

/// Adds the hook to `.pre-commit-config.yaml`: a new file, or an entry at the end of its
/// top-level `repos:` list (the last key of the file, as pre-commit's own samples have it).
fn add_hook(path: &Path, ui: &Ui) -> Result<(), Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(Error::Write {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if text.contains("id: homelab-flux-validate") {
        ui.step(&format!("`{}` has the hook already", path.display()));
        return Ok(());
    }
    let text = if text.trim().is_empty() {
        format!("repos:\n{HOOK}")
    } else {
        let last_key = text
            .lines()
            .rfind(|l| !l.is_empty() && !l.starts_with([' ', '\t', '#', '-']));
        if last_key.map(str::trim_end) != Some("repos:") {
            return Err(Error::PreCommitConfig(path.to_path_buf()));
        }
        let mut text = text;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(HOOK);
        text
    };
    write(path, &text, false, true)?;
    ui.step(&format!(
        "added the `homelab-flux-validate` hook to `{}`",
        path.display()
    ));
    Ok(())
}

/// Asks for one line on the terminal without echoing it. Echo is turned off before the prompt
/// is shown, so that nothing typed after the prompt appears can be echoed; the terminal's
/// settings are put back whatever happens.
fn read_hidden(question: &str) -> io::Result<String> {
    use io::Write as _;
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    let saved = tcgetattr(&tty)?;
    let mut hidden = saved.clone();
    hidden.local_modes.remove(LocalModes::ECHO);
    hidden.local_modes.insert(LocalModes::ECHONL);
    tcsetattr(&tty, OptionalActions::Now, &hidden)?;
    let read = (|| {
        tty.write_all(question.as_bytes())?;
        tty.flush()?;
        let mut line = String::new();
        io::BufReader::new(&tty).read_line(&mut line)?;
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    })();
    tcsetattr(&tty, OptionalActions::Now, &saved)?;
    read
}

/// Asks for one line on the terminal.
fn prompt(question: &str) -> Result<String, Error> {
    use std::io::Write as _;
    let mut stderr = io::stderr().lock();
    let _ = write!(stderr, "{question}");
    let _ = stderr.flush();
    let mut line = String::new();
    io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(Error::ReadToken)?;
    Ok(line.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flux_yaml_names_the_repository_and_the_branch_or_says_the_default() {
        assert_eq!(
            flux_yaml("https://github.com/o/r.git", Some("main")),
            "# homelab-flux: the repository Flux reads (committed; the token is in secrets-flux.yaml)\nrepo: https://github.com/o/r.git\nbranch: main\n"
        );
        let text = flux_yaml("https://github.com/o/r.git", None);
        let (cfg, report) = config::parse_flux(&text, "flux.yaml");
        assert!(!report.has_errors(), "{report:?}");
        assert_eq!(cfg.unwrap().branch, None);
    }
}
