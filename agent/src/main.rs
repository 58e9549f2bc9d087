//! `cd-agent` is not built yet (issue: "cd-agent: keep the registry exact for
//! every container on a node"). This entry point says so instead of
//! pretending to run.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("cd-agent: not implemented yet; register instances with `cdctl register` meanwhile");
    ExitCode::from(2)
}
