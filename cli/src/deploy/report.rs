//! How a deploy shows its progress: one line per step with its duration
//! (rewritten in place on a terminal while the step runs), and with `-o json`
//! one summary object at the end on standard output (steps then go to
//! standard error, so standard output stays one JSON document).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_model::{Deployment, StepTiming, color_name};

use crate::args::Output;

pub struct Reporter {
    output: Output,
    terminal: bool,
    current: Option<(String, Instant)>,
    /// Redraws the running step with a spinner (terminals only).
    spinner: Option<tokio::task::JoinHandle<()>>,
    pub steps: Vec<StepTiming>,
    /// Where a deploy's progress writer hears of each step.
    pub progress: Option<tokio::sync::watch::Sender<super::run::progress::Steps>>,
}

const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

impl Reporter {
    pub fn new(output: Output) -> Self {
        let terminal = match output {
            Output::Table => std::io::stdout().is_terminal(),
            Output::Json => std::io::stderr().is_terminal(),
        };
        Reporter {
            output,
            terminal,
            current: None,
            spinner: None,
            steps: Vec::new(),
            progress: None,
        }
    }

    fn write_line(&self, text: &str, finished: bool) {
        let line = if self.terminal {
            format!("\r\x1b[2K{text}{}", if finished { "\n" } else { "" })
        } else if finished {
            format!("{text}\n")
        } else {
            return;
        };
        let _ = match self.output {
            Output::Table => std::io::stdout().write_all(line.as_bytes()),
            Output::Json => std::io::stderr().write_all(line.as_bytes()),
        };
        let _ = match self.output {
            Output::Table => std::io::stdout().flush(),
            Output::Json => std::io::stderr().flush(),
        };
    }

    /// A free-form line (a plan, a hint).
    pub fn say(&self, text: &str) {
        if let Some(spinner) = &self.spinner {
            spinner.abort();
        }
        self.write_line(text, true);
    }

    pub fn begin(&mut self, name: &str) {
        self.current = Some((name.to_string(), Instant::now()));
        self.tell_progress();
        self.write_line(&format!("… {name}"), false);
        if self.terminal {
            let (name, output, started) = (name.to_string(), self.output, Instant::now());
            self.spinner = Some(tokio::spawn(async move {
                for frame in FRAMES.iter().cycle() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let line = format!(
                        "\r\x1b[2K{frame} {name:<22} {:>7.1}s",
                        started.elapsed().as_secs_f64()
                    );
                    let _ = match output {
                        Output::Table => std::io::stdout().write_all(line.as_bytes()),
                        Output::Json => std::io::stderr().write_all(line.as_bytes()),
                    };
                    let _ = match output {
                        Output::Table => std::io::stdout().flush(),
                        Output::Json => std::io::stderr().flush(),
                    };
                }
            }));
        }
    }

    /// Ends the current step: `detail` says what it did.
    pub fn end(&mut self, detail: &str) {
        self.finish("ok", detail);
    }

    pub fn fail(&mut self, detail: &str) {
        self.finish("FAILED", detail);
    }

    fn finish(&mut self, mark: &str, detail: &str) {
        if let Some(spinner) = self.spinner.take() {
            spinner.abort();
        }
        let Some((name, started)) = self.current.take() else {
            return;
        };
        let elapsed = started.elapsed();
        tracing::info!(
            step = name.as_str(),
            result = mark,
            elapsed_ms = millis(elapsed),
            detail,
            "step finished"
        );
        self.steps.push(StepTiming {
            name: name.clone(),
            duration_ms: millis(elapsed),
        });
        self.tell_progress();
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!("  {detail}")
        };
        self.write_line(
            &format!(
                "{mark:<6} {name:<22} {:>7.2}s{detail}",
                elapsed.as_secs_f64()
            ),
            true,
        );
    }

    fn tell_progress(&self) {
        if let Some(progress) = &self.progress {
            progress.send_replace(super::run::progress::Steps {
                current: self.current.as_ref().map(|(name, _)| name.clone()),
                done: self.steps.clone(),
            });
        }
    }

    /// The step running now, if any (it is the one that failed).
    pub fn current_step(&self) -> Option<&str> {
        self.current.as_ref().map(|(name, _)| name.as_str())
    }

    /// Prints the closing summary: a line for people, an object for scripts.
    pub fn summary(&self, deployment: &Deployment, exit_code: u8) {
        match self.output {
            Output::Json => println!("{}", summary_json(deployment, exit_code)),
            Output::Table => {
                let mut line = format!(
                    "{} {}: {} ({} → {}), deployment {}",
                    deployment.service,
                    deployment.image,
                    deployment.outcome,
                    color_name(deployment.from_color),
                    color_name(deployment.to_color),
                    deployment.id
                );
                if !deployment.failed_step.is_empty() {
                    line.push_str(&format!(
                        "; failed at {}: {}",
                        deployment.failed_step, deployment.error
                    ));
                }
                println!("{line}");
            }
        }
    }
}

pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn summary_json(deployment: &Deployment, exit_code: u8) -> Value {
    json!({
        "outcome": deployment.outcome.as_str(),
        "service": deployment.service,
        "deployment_id": deployment.id,
        "image": deployment.image,
        "from_color": deployment.from_color.map(|c| c.as_str()),
        "to_color": deployment.to_color.map(|c| c.as_str()),
        "failed_step": (!deployment.failed_step.is_empty()).then_some(&deployment.failed_step),
        "error": (!deployment.error.is_empty()).then_some(&deployment.error),
        "steps": deployment.steps.iter().map(|s| json!({"name": s.name, "duration_ms": s.duration_ms})).collect::<Vec<_>>(),
        "exit_code": exit_code,
    })
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Some(spinner) = self.spinner.take() {
            spinner.abort();
        }
    }
}
