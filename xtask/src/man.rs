//! `cargo xtask man [--out DIR]`: the manual pages, generated from the
//! clap definition of the command line (`ffrtmp::cli::Cli`): `ffrtmp.1` and
//! one page per subcommand (`ffrtmp-run.1`, …). Default DIR: `target/man`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::CommandFactory;

const USAGE: &str = "usage: cargo xtask man [--out DIR]

Writes ffrtmp.1 and ffrtmp-<subcommand>.1 (roff) for every visible subcommand,
generated from ffrtmp's command-line definition, into DIR (default: target/man).";

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let mut out = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => match args.next() {
                Some(dir) => out = Some(PathBuf::from(dir)),
                None => bail!("--out needs a directory\n\n{USAGE}"),
            },
            s if s.starts_with("--out=") => out = Some(PathBuf::from(&s["--out=".len()..])),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument '{other}'\n\n{USAGE}"),
        }
    }
    let out = out.unwrap_or_else(|| {
        let root = crate::bench_common::workspace_root();
        crate::bench_common::target_dir(&root).join("man")
    });
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for page in write_pages(&out)? {
        println!("{}", page.display());
    }
    Ok(())
}

/// Write every page into `dir`; the paths written.
fn write_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut cli = ffrtmp::cli::Cli::command().disable_help_subcommand(true);
    // Building names the subcommands "ffrtmp-run", … (their display names).
    cli.build();
    let source = format!("ffrtmp {}", cli.get_version().unwrap_or_default());
    let mut pages = vec![cli.clone()];
    pages.extend(cli.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    let mut written = Vec::new();
    for cmd in pages {
        let man = clap_mangen::Man::new(cmd).source(&source).manual("ffrtmp manual");
        let path = dir.join(man.get_filename());
        let mut page = Vec::new();
        man.render(&mut page)?;
        fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_subcommand() {
        let dir = std::env::temp_dir().join(format!("xtask-man-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let written = write_pages(&dir);
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let run = fs::read_to_string(dir.join("ffrtmp-run.1"));
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(written.unwrap().len(), names.len());
        for page in [
            "ffrtmp.1",
            "ffrtmp-run.1",
            "ffrtmp-attach.1",
            "ffrtmp-watch.1",
            "ffrtmp-status.1",
        ] {
            assert!(names.iter().any(|n| n == page), "{page} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n == "ffrtmp-help.1"), "{names:?}");
        let run = run.unwrap();
        assert!(run.contains(".TH ffrtmp-run 1  \"ffrtmp 0."), "{run}");
        assert!(run.contains("\\fB\\-\\-cpu\\-quota\\fR"), "{run}");
        assert!(run.contains("\\fBFFRTMP_CGROUP_ROOT\\fR environment variable"), "{run}");
    }
}
