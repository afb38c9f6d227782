//! `kura completions <shell>`: a completion script for bash, zsh, fish, elvish or PowerShell,
//! generated from the same clap definition the binary parses with, so it never drifts.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use clap_complete::Shell;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  kura completions bash > ~/.local/share/bash-completion/completions/kura\n  \
    kura completions zsh > \"${fpath[1]}/_kura\"\n  kura completions fish > ~/.config/fish/completions/kura.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

pub fn run(args: CompletionsArgs, cli: &mut clap::Command) -> Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, cli, "kura", &mut script);
    std::io::stdout().write_all(&script).context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}
