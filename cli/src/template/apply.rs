//! Putting one rendered configuration in place: unchanged output does
//! nothing; otherwise write a temporary file beside the destination, run the
//! check on it, rename it over the destination (atomic), run the reload, and
//! if the reload fails put the previous file back. A configuration that would
//! take every backend from a live service is refused unless allowed. The
//! reload runs once for all outputs (in `template`), which reverts them when
//! it fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// One `--template`/`--out` pair and what was last applied to it.
pub struct Output {
    pub template: String,
    pub path: PathBuf,
    /// The content last put in place (or found there at start).
    applied: Option<String>,
    /// The revision `applied` was rendered from (None: found on disk).
    applied_at: Option<u64>,
    /// What `applied` replaced, and its revision, for [`Output::revert`].
    previous: Option<(String, Option<u64>)>,
    /// Live instances per service in the applied configuration's view.
    applied_live: BTreeMap<String, usize>,
}

/// What applying one output did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Unchanged,
    Replaced,
}

/// How a replacement is vetted.
pub struct Commands<'a> {
    pub check: Option<&'a str>,
    pub allow_empty: bool,
}

impl Output {
    pub fn new(template: String, path: PathBuf) -> Self {
        // What is there already counts as applied: an identical render at
        // start-up is not a change.
        let applied = std::fs::read_to_string(&path).ok();
        Output {
            template,
            path,
            applied,
            applied_at: None,
            previous: None,
            applied_live: BTreeMap::new(),
        }
    }

    /// The revision the configuration in place was rendered from, if this
    /// process rendered it.
    pub fn rendered_at(&self) -> Option<u64> {
        self.applied_at
    }

    /// Whether `rendered` is exactly what is in place.
    pub fn holds(&self, rendered: &str) -> bool {
        self.applied.as_deref() == Some(rendered)
    }

    /// Keeps what is in place for a view with `live` instances per service.
    pub fn keep(&mut self, live: &BTreeMap<String, usize>) {
        self.applied_live = live.clone();
    }

    /// Applies `rendered`, made from the view at `revision` with `live`
    /// instances per service.
    pub async fn apply(
        &mut self,
        rendered: String,
        revision: u64,
        live: &BTreeMap<String, usize>,
        commands: &Commands<'_>,
    ) -> anyhow::Result<Applied> {
        if self.holds(&rendered) {
            self.keep(live);
            return Ok(Applied::Unchanged);
        }
        if !commands.allow_empty {
            let emptied: Vec<&String> = self
                .applied_live
                .iter()
                .filter(|(service, count)| {
                    **count > 0 && live.get(*service).copied().unwrap_or(0) == 0
                })
                .map(|(service, _)| service)
                .collect();
            if !emptied.is_empty() {
                anyhow::bail!(
                    "refusing to remove every backend of {}: keeping the last configuration \
                     (run with --allow-empty to allow it)",
                    emptied
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        let temporary = temporary_path(&self.path);
        std::fs::write(&temporary, &rendered)
            .with_context(|| format!("writing {}", temporary.display()))?;
        if let Some(check) = commands.check {
            let command = check.replace("{path}", &temporary.to_string_lossy());
            if let Err(error) = run(&command, Some(&temporary), 0).await {
                let _ = std::fs::remove_file(&temporary);
                return Err(error.context(
                    "the check refused the new configuration; keeping the last good one",
                ));
            }
        }
        std::fs::rename(&temporary, &self.path).with_context(|| {
            format!(
                "renaming {} over {}",
                temporary.display(),
                self.path.display()
            )
        })?;
        self.previous = self
            .applied
            .replace(rendered)
            .map(|previous| (previous, self.applied_at));
        self.applied_at = Some(revision);
        self.applied_live = live.clone();
        Ok(Applied::Replaced)
    }

    /// Puts back what the last replacement replaced (after a failed reload).
    pub fn revert(&mut self) {
        let Some((previous, previous_at)) = self.previous.take() else {
            return;
        };
        let temporary = temporary_path(&self.path);
        let restored = std::fs::write(&temporary, &previous)
            .and_then(|()| std::fs::rename(&temporary, &self.path));
        match restored {
            Ok(()) => {
                self.applied = Some(previous);
                self.applied_at = previous_at;
            }
            Err(error) => tracing::error!(
                path = %self.path.display(),
                %error,
                "could not restore the last good configuration"
            ),
        }
    }
}

/// A temporary file in the destination's folder, so the rename is atomic.
fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    path.with_file_name(format!(".{name}.switchyard-{}", std::process::id()))
}

/// Runs `sh -c command` with SWITCHYARD_REVISION (the registry revision the
/// configuration reflects, so a reload command can wait until the proxy
/// serves it) and SWITCHYARD_PATH when a file is meant; fails on a non-zero
/// exit, with the command's own last error line.
pub async fn run(command: &str, path: Option<&Path>, revision: u64) -> anyhow::Result<()> {
    let mut child = tokio::process::Command::new("sh");
    child
        .args(["-c", command])
        .env("SWITCHYARD_REVISION", revision.to_string())
        .stdin(std::process::Stdio::null());
    if let Some(path) = path {
        child.env("SWITCHYARD_PATH", path);
    }
    let output = child
        .output()
        .await
        .with_context(|| format!("running {command:?}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::bail!(
        "{command:?} failed ({}): {}",
        output.status,
        stderr.trim().lines().last().unwrap_or("no output")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
        pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect()
    }

    const NO_COMMANDS: Commands<'static> = Commands {
        check: None,
        allow_empty: false,
    };

    #[tokio::test]
    async fn unchanged_output_is_not_written_and_changes_replace_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.conf");
        let mut output = Output::new("t".into(), path.clone());
        let web = live(&[("web", 1)]);
        assert_eq!(
            output.apply("a\n".into(), 1, &web, &NO_COMMANDS).await.ok(),
            Some(Applied::Replaced)
        );
        assert_eq!(
            output.apply("a\n".into(), 1, &web, &NO_COMMANDS).await.ok(),
            Some(Applied::Unchanged)
        );
        assert_eq!(std::fs::read_to_string(&path).ok().as_deref(), Some("a\n"));
        let leftovers = std::fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
    }

    #[tokio::test]
    async fn failed_checks_and_reloads_keep_the_last_good_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.conf");
        let mut output = Output::new("t".into(), path.clone());
        let web = live(&[("web", 1)]);
        output
            .apply("good\n".into(), 1, &web, &NO_COMMANDS)
            .await
            .expect("first");
        let refuse = Commands {
            check: Some("grep -q good {path}"),
            allow_empty: false,
        };
        assert!(
            output
                .apply("bad\n".into(), 1, &web, &refuse)
                .await
                .is_err()
        );
        assert_eq!(
            std::fs::read_to_string(&path).ok().as_deref(),
            Some("good\n")
        );
        assert_eq!(
            output.rendered_at(),
            Some(1),
            "a refused check changes nothing"
        );
        // A replacement whose reload failed is reverted, with its revision.
        output
            .apply("worse\n".into(), 2, &web, &NO_COMMANDS)
            .await
            .expect("replaced");
        assert_eq!(output.rendered_at(), Some(2));
        output.revert();
        assert_eq!(output.rendered_at(), Some(1));
        assert_eq!(
            std::fs::read_to_string(&path).ok().as_deref(),
            Some("good\n")
        );
        assert_eq!(
            output
                .apply("good\n".into(), 1, &web, &NO_COMMANDS)
                .await
                .ok(),
            Some(Applied::Unchanged),
            "after a revert the good file counts as applied"
        );
    }

    #[tokio::test]
    async fn a_live_service_is_never_emptied_unless_allowed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut output = Output::new("t".into(), dir.path().join("proxy.conf"));
        output
            .apply("one\n".into(), 1, &live(&[("web", 1)]), &NO_COMMANDS)
            .await
            .expect("first");
        let error = output
            .apply("none\n".into(), 1, &live(&[("web", 0)]), &NO_COMMANDS)
            .await
            .expect_err("refused");
        assert!(error.to_string().contains("web"), "{error}");
        let allow = Commands {
            check: None,
            allow_empty: true,
        };
        assert_eq!(
            output
                .apply("none\n".into(), 1, &live(&[("web", 0)]), &allow)
                .await
                .ok(),
            Some(Applied::Replaced)
        );
    }
}
