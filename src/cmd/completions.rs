//! `homelab-flux completions <shell>` and `homelab-flux man [COMMAND]`, generated from the clap
//! definitions.

use std::io;

use crate::output::Ui;

/// Print a shell completion script to stdout.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  homelab-flux completions bash > ~/.local/share/bash-completion/completions/homelab-flux
  homelab-flux completions zsh > \"${fpath[1]}/_homelab-flux\"
  homelab-flux completions fish > ~/.config/fish/completions/homelab-flux.fish")]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Print a man page (roff) to stdout: `homelab-flux(1)`, or with a command its own page,
/// `homelab-flux-COMMAND(1)`, which `homelab-flux(1)` refers to.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  homelab-flux man | man -l -
  homelab-flux man bootstrap > /usr/local/share/man/man1/homelab-flux-bootstrap.1")]
pub struct ManArgs {
    /// The command whose page to print (default: the main page).
    #[arg(value_name = "COMMAND", value_parser = ["init", "validate", "bootstrap", "status", "uninstall", "completions", "man", "help"])]
    pub command: Option<String>,
}

/// Writes the completion script for `command`, the whole command line's definition.
pub fn run(args: &Args, mut command: clap::Command, ui: &Ui) -> io::Result<()> {
    let name = command.get_name().to_string();
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut command, &name, &mut buf);
    let mut script = String::from_utf8_lossy(&buf).into_owned();
    if args.shell == clap_complete::Shell::Bash {
        script = fix_bash_case_labels(&script, &name);
    }
    ui.out(&script)
}

/// clap_complete's bash script names a subcommand's case `homelab__subcmd__flux__subcmd__x`
/// while its dispatch sets `homelab__flux__subcmd__x` (a hyphen in the binary's name is turned
/// into `__subcmd__` in one place and into `__` in the other; clap-rs/clap#6421), so no option
/// of a subcommand completes. The labels are renamed to what the dispatch sets; once clap
/// spells them alike, there is nothing to rename.
fn fix_bash_case_labels(script: &str, bin: &str) -> String {
    let dispatch = bin.replace('-', "__");
    let broken = bin.replace('-', "__subcmd__");
    if dispatch == broken {
        return script.to_string();
    }
    script.replace(
        &format!("{broken}__subcmd__"),
        &format!("{dispatch}__subcmd__"),
    )
}

/// Writes the man page of `command`, or of one of its subcommands (named `homelab-flux-NAME`,
/// as the main page's list of commands names it).
pub fn man(args: &ManArgs, mut command: clap::Command, ui: &Ui) -> io::Result<()> {
    // Built, so that clap's own `help` subcommand, which the main page lists, is there too.
    command.build();
    let page = match &args.command {
        None => command,
        Some(name) => {
            let full = format!("{}-{name}", command.get_name());
            let sub = command
                .find_subcommand(name)
                .cloned()
                .ok_or_else(|| io::Error::other(format!("no command `{name}`")))?;
            sub.name(full)
                .version(command.get_version().unwrap_or_default().to_string())
        }
    };
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).render(&mut buf)?;
    ui.out(&String::from_utf8_lossy(&buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bash_labels_are_renamed_to_what_the_dispatch_sets() {
        let broken = "cmd=\"homelab__flux__subcmd__status\"\n        homelab__subcmd__flux__subcmd__status)\n";
        assert_eq!(
            fix_bash_case_labels(broken, "homelab-flux"),
            "cmd=\"homelab__flux__subcmd__status\"\n        homelab__flux__subcmd__status)\n"
        );
        assert_eq!(
            fix_bash_case_labels("x__subcmd__y", "plain"),
            "x__subcmd__y"
        );
    }
}
