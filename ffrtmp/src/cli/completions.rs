//! `ffrtmp completions SHELL`: a shell completion script on stdout.

use std::io::Write;

use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write the completion script for
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn execute(args: CompletionsArgs) -> anyhow::Result<i32> {
    let script = script(args.shell);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .context("writing the completion script to stdout")?;
    Ok(0)
}

/// The script, generated in memory: clap_complete panics on a write error,
/// and stdout may be a closed pipe.
fn script(shell: Shell) -> Vec<u8> {
    let mut cmd = super::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "ffrtmp", &mut script);
    script
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    #[test]
    fn every_shell_completes_every_subcommand() {
        let subcommands: Vec<String> = super::super::Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| s.get_name().to_owned())
            .collect();
        assert!(subcommands.iter().any(|s| s == "status"), "{subcommands:?}");
        for shell in Shell::value_variants() {
            let script = String::from_utf8(script(*shell)).unwrap();
            for sub in &subcommands {
                assert!(script.contains(sub.as_str()), "{shell}: no {sub} in the script");
            }
            assert!(
                // fish spells long options `-l cgroup-root`.
                script.contains("cgroup-root"),
                "{shell}: no --cgroup-root in the script"
            );
        }
    }
}
