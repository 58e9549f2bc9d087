//! What a deploy runs besides containers: the pre- and post-test commands
//! (steps 6 and 10) and the environment every hook (tests, a canary's
//! analysis) is told, and which tests passed, kept in the record for
//! `--require`.

use switchyard_model::labels::record;

use super::{Deploy, Failure};

impl Deploy<'_> {
    /// Notes in the record that `test` ran and passed (what `--require`
    /// asks of an environment).
    fn test_passed(&mut self, test: &str) {
        let tests = self
            .record
            .metadata
            .entry(record::TESTS_PASSED.into())
            .or_default();
        if !tests.split(',').any(|t| t == test) {
            if !tests.is_empty() {
                tests.push(',');
            }
            tests.push_str(test);
        }
    }

    /// 6 and 10: a test command with the targets in its environment.
    async fn run_test(
        &mut self,
        phase: &str,
        command: &str,
        targets: &[String],
    ) -> Result<(), String> {
        let status = self
            .hook(command, phase)
            .env("SWITCHYARD_TARGETS", targets.join(","))
            .status()
            .await
            .map_err(|error| format!("cannot run {command:?}: {error}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{phase}-test {command:?} failed ({status})"))
        }
    }

    /// `sh -c command` with what every hook (tests, analyses) is told in
    /// its environment.
    pub(super) fn hook(&self, command: &str, phase: &str) -> tokio::process::Command {
        let mut child = tokio::process::Command::new("sh");
        child
            .args(["-c", command])
            .env("SWITCHYARD_SERVICE", &self.settings.service)
            .env("SWITCHYARD_COLOR", self.next.as_str())
            .env("SWITCHYARD_PHASE", phase)
            .env("SWITCHYARD_DEPLOY_ID", &self.record.id)
            .env(
                "SWITCHYARD_PROXY_URL",
                self.settings.proxy_url.clone().unwrap_or_default(),
            )
            .stdin(std::process::Stdio::null())
            // Standard output carries cdctl's own result (one JSON object
            // with -o json), so the hook's output goes to standard error.
            .stdout(stderr_for_child())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true);
        child
    }

    pub(super) async fn pre_test(&mut self, targets: &[String]) -> Result<(), Failure> {
        self.reporter.begin("pre-test");
        if let Some(command) = self.settings.pre_test.clone() {
            self.run_test("pre", &command, targets)
                .await
                .map_err(Failure::PreTest)?;
            self.test_passed(record::PRE_TEST);
        }
        self.reporter.end("");
        Ok(())
    }

    pub(super) async fn post_test(&mut self) -> Result<(), Failure> {
        self.reporter.begin("post-test");
        if let Some(command) = self.settings.post_test.clone() {
            let targets = self.new_targets_when_healthy().await?;
            self.run_test("post", &command, &targets)
                .await
                .map_err(Failure::PostTest)?;
            self.test_passed(record::POST_TEST);
        }
        self.reporter.end("");
        Ok(())
    }
}

fn stderr_for_child() -> std::process::Stdio {
    use std::os::fd::AsFd;
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => std::process::Stdio::from(fd),
        Err(_) => std::process::Stdio::inherit(),
    }
}
