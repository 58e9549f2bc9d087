//! Headless Chromium for the dashboard tests, driven over WebDriver by
//! fantoccini through Debian's `chromedriver` (the test script installs
//! `chromium` and `chromium-driver`). Also a raw HTTP/1.1 request, for what
//! a browser would refuse to send (a forged form).

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{eventually, free_port};

/// A headless Chromium session; the driver and the browser are killed
/// (their whole process group) when it is dropped.
pub struct Browser {
    pub client: Client,
    driver: Child,
}

impl Browser {
    pub async fn start() -> Self {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("starting chromedriver: {error} (apt-get install chromium-driver)")
            });
        let capabilities = serde_json::json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1280,1100",
                ],
            },
        });
        let capabilities = match capabilities {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("an object literal"),
        };
        let url = format!("http://127.0.0.1:{port}");
        let client = eventually(Duration::from_secs(60), || {
            let (url, capabilities) = (url.clone(), capabilities.clone());
            async move {
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&url)
                    .await
                    .map_err(|error| format!("chromedriver at {url}: {error}"))
            }
        })
        .await;
        Browser { client, driver }
    }

    /// The text of the first element matching `css`, or why there is none.
    pub async fn text(&self, css: &str) -> Result<String, String> {
        let element = self
            .client
            .find(Locator::Css(css))
            .await
            .map_err(|error| format!("{css}: {error}"))?;
        element
            .text()
            .await
            .map_err(|error| format!("{css}: {error}"))
    }

    /// Goes to `url` and waits until an element matches `ready`.
    pub async fn open(&self, url: &str, ready: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|error| panic!("{url}: {error}"));
        eventually(crate::patience(), || async {
            self.text(ready).await.map(|_| ())
        })
        .await;
    }

    /// Waits until the first element matching `css` says `expected`.
    pub async fn until_text(&self, css: &str, expected: &str) {
        eventually(crate::patience(), || async {
            match self.text(css).await? {
                said if said == expected => Ok(()),
                said => Err(format!("{css} says {said:?}, not {expected:?}")),
            }
        })
        .await;
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |found| found.len())
    }

    /// Saves a screenshot as `name` under [`screenshot_dir`]; answers the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("the screenshot directory");
        let path = dir.join(name);
        std::fs::write(&path, png).expect("writing the screenshot");
        path
    }

    /// Ends the session (the browser exits), then the driver.
    pub async fn close(mut self) {
        let client = self.client.clone();
        let _ = client.close().await;
        kill_group(&mut self.driver);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

fn kill_group(driver: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", driver.id())])
        .status();
    let _ = driver.wait();
}

/// Where test runs save screenshots: `$SWITCHYARD_SCREENSHOTS`, else
/// `target/screenshots` of the workspace.
pub fn screenshot_dir() -> PathBuf {
    std::env::var_os("SWITCHYARD_SCREENSHOTS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots"),
        PathBuf::from,
    )
}

/// One HTTP/1.1 request to `address`, answered as (status, body); the
/// connection is closed after it.
pub async fn http(address: SocketAddr, request_head: &str, body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connecting to the dashboard");
    let request = format!(
        "{request_head}\r\nHost: {address}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("sending the request");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .expect("reading the answer");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}
