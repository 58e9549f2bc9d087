//! HAProxy's Runtime API over its UNIX socket: one command per connection
//! (HAProxy's non-interactive mode answers and closes), the stats CSV read
//! into backends and servers, and each answer judged by what HAProxy says.
//!
//! The socket may be a stats socket (`stats socket … level admin`) or the
//! master CLI of master-worker mode (`-S`); the master is told apart by its
//! answer to `show proc`, and every command to it goes to the current
//! worker (`@1`), so a reload's new worker is the one addressed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// How long one command may take, connection to last byte.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Administrative state of a server, as `set server … state` sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Ready,
    Drain,
    Maint,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Ready => "ready",
            ServerState::Drain => "drain",
            ServerState::Maint => "maint",
        }
    }

    /// From the `status` column of `show stat`: `MAINT…`, `DRAIN…`, and
    /// everything else (`UP`, `no check`, `DOWN`) is in rotation.
    fn from_status(status: &str) -> Self {
        if status.starts_with("MAINT") {
            ServerState::Maint
        } else if status.starts_with("DRAIN") {
            ServerState::Drain
        } else {
            ServerState::Ready
        }
    }
}

/// One server as the running HAProxy has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStat {
    /// `address:port` (`[v6]:port` is normalised by HAProxy to `v6:port`).
    pub addr: String,
    pub state: ServerState,
    /// Current sessions using the server (`scur`): requests in flight.
    pub sessions: u64,
    /// The server's weight (`weight`; 0 while it drains).
    pub weight: u16,
}

/// What the running HAProxy has: its backends, each with its servers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub backends: BTreeMap<String, BTreeMap<String, ServerStat>>,
}

/// Reads `show stat` CSV: rows of type 1 (backend) and 2 (server).
pub fn parse_stats(csv: &str) -> anyhow::Result<Stats> {
    let mut lines = csv.lines();
    let header = lines
        .next()
        .and_then(|line| line.strip_prefix("# "))
        .ok_or_else(|| anyhow::anyhow!("`show stat` answered without its header: {csv:.200}"))?;
    let columns: Vec<&str> = header.split(',').collect();
    let at = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| anyhow::anyhow!("`show stat` has no {name} column"))
    };
    let (px, sv, typ) = (at("pxname")?, at("svname")?, at("type")?);
    let (status, scur, addr) = (at("status")?, at("scur")?, at("addr")?);
    let weight = at("weight")?;
    let mut stats = Stats::default();
    for line in lines.filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        let field = |index: usize| fields.get(index).copied().unwrap_or("");
        match field(typ) {
            "1" => {
                stats.backends.entry(field(px).to_string()).or_default();
            }
            "2" => {
                let server = ServerStat {
                    addr: field(addr).to_string(),
                    state: ServerState::from_status(field(status)),
                    sessions: field(scur).parse().unwrap_or(0),
                    weight: field(weight).parse().unwrap_or(0),
                };
                stats
                    .backends
                    .entry(field(px).to_string())
                    .or_default()
                    .insert(field(sv).to_string(), server);
            }
            _ => {}
        }
    }
    Ok(stats)
}

/// A Runtime API socket.
#[derive(Debug, Clone)]
pub struct RuntimeSocket {
    path: PathBuf,
    /// `None` until the first command finds out.
    master: Option<bool>,
}

impl RuntimeSocket {
    pub fn new(path: PathBuf) -> Self {
        RuntimeSocket { path, master: None }
    }

    /// Sends one command and answers HAProxy's whole reply.
    async fn raw(&self, command: &str) -> anyhow::Result<String> {
        let exchange = async {
            let mut stream = connect(&self.path).await?;
            stream.write_all(format!("{command}\n").as_bytes()).await?;
            // The master CLI answers once the client's side is closed.
            stream.shutdown().await?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply).await?;
            Ok::<_, std::io::Error>(reply)
        };
        tokio::time::timeout(COMMAND_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow::anyhow!("HAProxy did not answer {command:?} within 5 s"))?
            .with_context(|| {
                format!(
                    "HAProxy's runtime socket {}: is HAProxy running with `stats socket {} level \
                     admin` (or `-S {}` for its master)?",
                    self.path.display(),
                    self.path.display(),
                    self.path.display()
                )
            })
    }

    /// Sends `command` to the serving process (through the master when the
    /// socket is the master's).
    pub async fn send(&mut self, command: &str) -> anyhow::Result<String> {
        let master = match self.master {
            Some(master) => master,
            None => {
                let answer = self.raw("show proc").await?;
                let master = answer.starts_with("#<PID>");
                self.master = Some(master);
                master
            }
        };
        if master {
            self.raw(&format!("@1 {command}")).await
        } else {
            self.raw(command).await
        }
    }

    /// Sends a command that changes state; fails unless HAProxy's answer is
    /// one of its success messages.
    pub async fn change(&mut self, command: &str) -> anyhow::Result<()> {
        let answer = self.send(command).await?;
        if succeeded(&answer) {
            Ok(())
        } else {
            anyhow::bail!("HAProxy refused `{command}`: {}", answer.trim())
        }
    }

    pub async fn stats(&mut self) -> anyhow::Result<Stats> {
        parse_stats(&self.send("show stat").await?)
    }

    /// Forgets whether the socket is a master's (after an error, the socket
    /// may have been replaced by another kind).
    pub fn forget(&mut self) {
        self.master = None;
    }
}

/// Connects to `path`; a refused connection is tried again for up to a
/// second, as HAProxy's master refuses for a moment while it re-executes
/// itself (at start and on every reload).
async fn connect(path: &std::path::Path) -> std::io::Result<UnixStream> {
    let mut tries = 0;
    loop {
        match UnixStream::connect(path).await {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused && tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// HAProxy's answers to `add server`, `del server`, `set server … addr`,
/// `set server … state` and `set weight` when they worked: empty, or one of
/// these messages. Anything else is an error message.
fn succeeded(answer: &str) -> bool {
    let answer = answer.trim();
    answer.is_empty()
        || answer.starts_with("New server registered")
        || answer.starts_with("Server deleted")
        || answer.contains("changed from")
        || answer.contains("no need to change")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "# pxname,svname,qcur,scur,status,weight,type,addr\n\
        fe,FRONTEND,,3,OPEN,,0,\n\
        web,b1,0,2,no check,100,2,10.0.0.1:80\n\
        web,g1,0,0,DRAIN,100,2,10.0.0.2:80\n\
        web,g2,0,0,MAINT (resolution),100,2,10.0.0.3:80\n\
        web,BACKEND,0,2,UP,200,1,\n\
        empty,BACKEND,0,0,UP,0,1,\n";

    #[test]
    fn the_stats_csv_gives_backends_servers_states_and_sessions() {
        let stats = parse_stats(CSV).expect("parses");
        assert_eq!(stats.backends.keys().collect::<Vec<_>>(), ["empty", "web"]);
        let web = &stats.backends["web"];
        assert_eq!(web.len(), 3);
        assert_eq!(
            web["b1"],
            ServerStat {
                addr: "10.0.0.1:80".into(),
                state: ServerState::Ready,
                sessions: 2,
                weight: 100,
            }
        );
        assert_eq!(web["g1"].state, ServerState::Drain);
        assert_eq!(web["g2"].state, ServerState::Maint);
        assert!(stats.backends["empty"].is_empty());
        assert!(parse_stats("Unknown command.\n").is_err());
    }

    #[test]
    fn only_haproxys_success_messages_count_as_success() {
        assert!(succeeded("\n"));
        assert!(succeeded("New server registered.\n"));
        assert!(succeeded("Server deleted."));
        assert!(succeeded(
            "no need to change the addr, port changed from '1' to '2' by 'stats socket command'"
        ));
        assert!(!succeeded("No such server.\n"));
        assert!(!succeeded(
            "Already exists a server with the same name in backend.\n"
        ));
        assert!(!succeeded("Permission denied\n"));
    }
}
