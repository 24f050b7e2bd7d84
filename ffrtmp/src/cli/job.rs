//! CLI side of the job lifecycle: the job id from the flags, and printing
//! the result.

use std::io::Write;

use anyhow::Context;

use super::args::GovernArgs;
use crate::cgroup::JobId;
use crate::report::JobResult;

/// The job id to use: given, or `unnamed-<ffrtmp pid>`.
pub fn job_id(args: &GovernArgs) -> JobId {
    args.job_id
        .clone()
        .unwrap_or_else(|| JobId::unnamed(std::process::id()))
}

/// Print the result: the summary line on stderr; the JSON document or the
/// text block on stdout; the JSON document to --result-file.
pub fn emit(result: &JobResult, args: &GovernArgs) -> anyhow::Result<()> {
    eprintln!("{}", result.summary_line());
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", result.to_json())?;
    } else {
        write!(out, "{}", result.text_block())?;
    }
    out.flush()?;
    if let Some(path) = &args.result_file {
        std::fs::write(path, result.to_json() + "\n")
            .with_context(|| format!("writing the result to {}", path.display()))?;
    }
    Ok(())
}
