//! `--analysis-prometheus URL --analysis-query PROMQL`: a canary's analysis
//! asked of a real Prometheus (its HTTP API, `GET /api/v1/query`). The
//! query fails the step when it answers any sample (a query that selects
//! what is wrong, such as `rate(errors[1m]) > 0.01`), or, with
//! `--analysis-threshold`, any sample above the threshold. A Prometheus
//! that cannot be asked fails the step too: a canary is not promoted on
//! no evidence.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// How long one query may take, connection included.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A query and how to judge its answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PrometheusCheck {
    /// `http://host:port` (and any path prefix), without a trailing `/`.
    pub url: String,
    /// PromQL; `${SERVICE}`, `${COLOR}`, `${LIVE_COLOR}` and `${WEIGHT}` are
    /// replaced by the canary's.
    pub query: String,
    /// Samples above it fail; without one, any sample fails.
    pub threshold: Option<f64>,
}

/// What the query's placeholders are replaced by.
pub struct Placeholders<'a> {
    pub service: &'a str,
    pub color: &'a str,
    pub live_color: &'a str,
    pub weight: u8,
}

impl PrometheusCheck {
    /// Checks the URL is one this build can ask (plain `http://`).
    pub fn new(url: &str, query: String, threshold: Option<f64>) -> anyhow::Result<Self> {
        let url = url.trim_end_matches('/');
        anyhow::ensure!(
            url.strip_prefix("http://")
                .is_some_and(|rest| !rest.is_empty()),
            "--analysis-prometheus {url:?}: give http://HOST:PORT (https is not supported yet)"
        );
        anyhow::ensure!(!query.trim().is_empty(), "--analysis-query is empty");
        Ok(PrometheusCheck {
            url: url.to_string(),
            query,
            threshold,
        })
    }

    /// Asks the query; `Err` says why the step fails.
    pub async fn judge(&self, with: &Placeholders<'_>) -> Result<(), String> {
        let query = self
            .query
            .replace("${SERVICE}", with.service)
            .replace("${COLOR}", with.color)
            .replace("${LIVE_COLOR}", with.live_color)
            .replace("${WEIGHT}", &with.weight.to_string());
        let answer = tokio::time::timeout(QUERY_TIMEOUT, self.ask(&query))
            .await
            .map_err(|_| format!("Prometheus {} did not answer within 10s", self.url))?
            .map_err(|error| format!("asking Prometheus {}: {error:#}", self.url))?;
        let samples = samples(&answer).map_err(|why| format!("query {query:?}: {why}"))?;
        let bad: Vec<f64> = samples
            .into_iter()
            .filter(|value| self.threshold.is_none_or(|limit| *value > limit))
            .collect();
        match (bad.is_empty(), self.threshold) {
            (true, _) => Ok(()),
            (false, Some(limit)) => Err(format!("query {query:?} is above {limit}: {bad:?}")),
            (false, None) => Err(format!("query {query:?} answered {bad:?}")),
        }
    }

    async fn ask(&self, query: &str) -> anyhow::Result<serde_json::Value> {
        let rest = self.url.trim_start_matches("http://");
        let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let encoded: String = form_urlencoded::byte_serialize(query.as_bytes()).collect();
        let path = match prefix {
            "" => format!("/api/v1/query?query={encoded}"),
            prefix => format!("/{prefix}/api/v1/query?query={encoded}"),
        };
        let stream = tokio::net::TcpStream::connect(host).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, host)
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let answer: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|error| anyhow::anyhow!("HTTP {status}, not JSON: {error}"))?;
        Ok(answer)
    }
}

/// The values of a query's answer: every sample of a vector, or a scalar.
fn samples(answer: &serde_json::Value) -> Result<Vec<f64>, String> {
    if answer["status"] != "success" {
        return Err(format!(
            "Prometheus refused it: {}",
            answer["error"].as_str().unwrap_or("no reason given")
        ));
    }
    let value_of = |pair: &serde_json::Value| {
        pair[1]
            .as_str()
            .and_then(|text| text.parse::<f64>().ok())
            .ok_or_else(|| format!("a sample without a value: {pair}"))
    };
    let data = &answer["data"];
    match data["resultType"].as_str() {
        Some("vector") => data["result"].as_array().map_or(Ok(Vec::new()), |result| {
            result
                .iter()
                .map(|sample| value_of(&sample["value"]))
                .collect()
        }),
        Some("scalar") => Ok(vec![value_of(&data["result"])?]),
        other => Err(format!(
            "answers a {}, not an instant vector or a scalar",
            other.unwrap_or("nothing")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vectors_and_scalars_give_their_values_and_errors_are_said() {
        let vector = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"job": "a"}, "value": [1.0, "0.5"]},
            {"metric": {"job": "b"}, "value": [1.0, "2"]}]}});
        assert_eq!(samples(&vector), Ok(vec![0.5, 2.0]));
        let empty = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        assert_eq!(samples(&empty), Ok(vec![]));
        let scalar =
            json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "7"]}});
        assert_eq!(samples(&scalar), Ok(vec![7.0]));
        let refused = json!({"status": "error", "error": "parse error"});
        assert!(samples(&refused).is_err_and(|why| why.contains("parse error")));
        let matrix = json!({"status": "success", "data": {"resultType": "matrix", "result": []}});
        assert!(samples(&matrix).is_err());
    }

    #[test]
    fn only_plain_http_urls_are_taken() {
        assert!(PrometheusCheck::new("http://127.0.0.1:9090/", "up".into(), None).is_ok());
        assert!(PrometheusCheck::new("https://p:9090", "up".into(), None).is_err());
        assert!(PrometheusCheck::new("p:9090", "up".into(), None).is_err());
        assert!(PrometheusCheck::new("http://p:9090", " ".into(), None).is_err());
    }
}
