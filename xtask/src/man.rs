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
        let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
        let man = clap_mangen::Man::new(man_command(cmd.clone()))
            .source(&source)
            .manual("ffrtmp manual");
        let path = dir.join(man.get_filename());
        let mut page = Vec::new();
        man.render_title(&mut page)?;
        man.render_name_section(&mut page)?;
        man.render_synopsis_section(&mut page)?;
        man.render_description_section(&mut page)?;
        man.render_options_section(&mut page)?;
        if cmd.get_subcommands().next().is_some() {
            man.render_subcommands_section(&mut page)?;
        }
        page.extend(sections(&name, &cmd).render().into_bytes());
        if cmd.get_version().is_some() {
            man.render_version_section(&mut page)?;
        }
        fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The command as the page shows it: clap's default heading "Options" is
/// the page's OPTIONS section, not a second one.
fn man_command(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| {
        if a.get_help_heading() == Some("Options") {
            a.help_heading(None)
        } else {
            a
        }
    })
}

/// NOTES (the help's closing text), EXAMPLES, EXIT STATUS, ENVIRONMENT,
/// FILES and SEE ALSO of the page for `name`.
fn sections(name: &str, cmd: &clap::Command) -> roff::Roff {
    use roff::bold;
    let mut page = roff::Roff::new();
    fn section(page: &mut roff::Roff, title: &str, paragraphs: &[&str]) {
        page.control("SH", [title]);
        for p in paragraphs {
            page.control("PP", []).text([roff::roman(*p)]);
        }
    }
    // The help's closing text: the lines before "Example(s):" are notes,
    // the command lines after it examples.
    if let Some(after) = cmd.get_after_help().map(|h| h.to_string()) {
        let (notes, examples) = match after.split_once("Example") {
            Some((notes, rest)) => (notes, rest.split_once(':').map_or("", |(_, e)| e)),
            None => (after.as_str(), ""),
        };
        let notes: Vec<&str> = notes.split("\n\n").map(str::trim).filter(|n| !n.is_empty()).collect();
        if !notes.is_empty() {
            section(&mut page, "NOTES", &notes);
        }
        let examples: Vec<&str> = examples.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        if !examples.is_empty() {
            page.control("SH", ["EXAMPLES"]);
            for example in examples {
                page.control("PP", []).text([bold(example)]);
            }
        }
    }
    let exit: &[&str] = match name {
        "ffrtmp-run" => &[
            "The command's own exit status; 128+N when it died of signal N.",
            "125: ffrtmp itself failed (a bad option or value, or with --strict a limit that could not be applied); nothing is left behind.",
            "126: the command was found but cannot be executed. 127: the command was not found.",
        ],
        "ffrtmp-attach" => &[
            "0: the process exited (its result reported), or ffrtmp detached on SIGINT/SIGTERM (the process keeps its limits).",
            "125: ffrtmp failed or refused (the process does not exist, is init, a thread, a zombie, a kernel thread, another job's without --force, …); nothing was changed.",
        ],
        "ffrtmp-watch" => &[
            "0: stopped by SIGINT or SIGTERM (governed processes keep their cgroups and limits).",
            "125: it could not start (not root, another daemon on the same cgroup root, a bad configuration, no event source, the metrics address in use) or its event source failed.",
        ],
        "ffrtmp" => &[
            "0: success. 125: ffrtmp failed, or a usage error (one line on stderr names the option, the value and what is accepted).",
            "ffrtmp run exits with its command's status; see ffrtmp-run(1).",
        ],
        _ => &["0: success. 125: ffrtmp failed, or a usage error."],
    };
    section(&mut page, "EXIT STATUS", exit);
    let mut environment = vec![
        "FFRTMP_LOG: the log level (off, error, warn, info, debug, trace) or module=level list; default info. Summary lines (JOB …) are written whatever the level.",
        "FFRTMP_LOG_FORMAT: go (the old tool's lines, default), json or text; the same as --log-format.",
        "JOURNAL_STREAM: set by systemd; when it names stderr and no --log-format is given, the log goes to the journal with the job's fields.",
    ];
    if name != "ffrtmp-completions" {
        environment.insert(
            0,
            "FFRTMP_CGROUP_ROOT: the default of --cgroup-root (where job cgroups live; /ffrtmp).",
        );
    }
    if name == "ffrtmp-top" {
        environment.push("NO_COLOR: set to anything but the empty string, the view has no colors (no-color.org).");
    }
    section(&mut page, "ENVIRONMENT", &environment);
    let files: &[&str] = match name {
        "ffrtmp-watch" | "ffrtmp" => &[
            "/etc/ffrtmp/watch-config.yaml: the daemon's configuration (--watch-config; YAML, or TOML when the name ends in .toml).",
            "/var/lib/ffrtmp/watch-state.json: the state file (--enable-state, --state-path).",
            "/run/ffrtmp/watch.<root>.lock: held by the daemon governing a cgroup root; it holds its pid.",
            "/sys/fs/cgroup/…/<cgroup-root>/<job>: the job cgroups, marked with the extended attribute user.ffrtmp.job.",
        ],
        "ffrtmp-completions" => &[],
        _ => &[
            "/sys/fs/cgroup/…/<cgroup-root>/<job>: the job cgroups, marked with the extended attribute user.ffrtmp.job.",
        ],
    };
    if !files.is_empty() {
        section(&mut page, "FILES", files);
    }
    let see_also: Vec<String> = [
        "ffrtmp",
        "ffrtmp-run",
        "ffrtmp-attach",
        "ffrtmp-watch",
        "ffrtmp-status",
        "ffrtmp-top",
    ]
    .iter()
    .filter(|p| **p != name)
    .map(|p| format!("{p}(1)"))
    .chain(["systemd.resource-control(5)".to_string(), "cgroups(7)".to_string()])
    .collect();
    section(&mut page, "SEE ALSO", &[see_also.join(", ").as_str()]);
    page
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
            "ffrtmp-top.1",
        ] {
            assert!(names.iter().any(|n| n == page), "{page} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n == "ffrtmp-help.1"), "{names:?}");
        let run = run.unwrap();
        assert!(run.contains(".TH ffrtmp-run 1  \"ffrtmp 0."), "{run}");
        assert!(run.contains("\\fB\\-\\-cpu\\-quota\\fR"), "{run}");
        assert!(run.contains("\\fBFFRTMP_CGROUP_ROOT\\fR environment variable"), "{run}");
        for section in ["EXIT STATUS", "ENVIRONMENT", "FILES", "SEE ALSO", "EXAMPLES"] {
            assert!(
                run.contains(&format!(".SH \"{section}\"")) || run.contains(&format!(".SH {section}\n")),
                "{section}: {run}"
            );
        }
        assert!(!run.contains(".SH EXTRA"), "{run}");
        assert_eq!(run.matches(".SH OPTIONS").count(), 1, "{run}");
        assert!(run.contains("num\\-buffers=300"), "the example ends: {run}");
        assert!(
            run.contains("126: the command was found"),
            "run's own exit statuses: {run}"
        );
        assert!(!run.contains("ffrtmp\\-run(1)"), "SEE ALSO names the others: {run}");
    }
}
