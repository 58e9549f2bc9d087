//! gRPC server metrics with go-grpc-prometheus's names and labels, so the
//! dashboards and alerts written for Go servers work unchanged: calls
//! handled by method and code, handling time by method, calls in flight.
//!
//! A tower layer in front of every service. The code of a call is in its
//! trailers (or, for an error before any message, in the headers), so the
//! response body is wrapped to see the trailers go by; a call whose body is
//! dropped before its trailers (the client went away) counts as `Canceled`.
//!
//! Labels come only from the methods the server serves ([`KnownMethods`]):
//! the layer runs before routing and authentication, so a path the client
//! made up is counted as `unknown`/`unknown`, never as a label of its own
//! (each new label set is a series kept forever, and a `"` in one would make
//! the whole exposition unreadable).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::methods::KnownMethods;

/// One served method's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Method {
    pub(super) grpc_type: &'static str,
    pub(super) grpc_service: Arc<String>,
    pub(super) grpc_method: Arc<String>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Handled {
    grpc_type: &'static str,
    grpc_service: Arc<String>,
    grpc_method: Arc<String>,
    grpc_code: &'static str,
}

/// The families, registered once; clones share them.
#[derive(Debug, Clone)]
pub struct GrpcMetrics {
    started: Family<Method, Counter>,
    handled: Family<Handled, Counter>,
    handling: Family<Method, Histogram>,
    in_flight: Family<Method, Gauge>,
    known: Arc<KnownMethods>,
    /// What every path the server does not serve is counted as.
    unknown: Method,
}

impl GrpcMetrics {
    pub fn register(registry: &mut Registry, known: KnownMethods) -> Self {
        let metrics = GrpcMetrics {
            known: Arc::new(known),
            unknown: Method {
                grpc_type: "unary",
                grpc_service: Arc::new("unknown".into()),
                grpc_method: Arc::new("unknown".into()),
            },
            started: Family::default(),
            handled: Family::default(),
            // 100 µs to ~3.3 s: the registry answers in well under a
            // millisecond, and a stream's whole life lands in the last.
            handling: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 16))
            }),
            in_flight: Family::default(),
        };
        registry.register(
            "grpc_server_started",
            "RPCs started on the server",
            metrics.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "RPCs completed on the server, by code",
            metrics.handled.clone(),
        );
        registry.register_with_unit(
            "grpc_server_handling",
            "Time from an RPC's start to its last message (a stream's whole life)",
            Unit::Seconds,
            metrics.handling.clone(),
        );
        registry.register(
            "grpc_server_open_streams",
            "RPCs in flight (each is an HTTP/2 stream), by method",
            metrics.in_flight.clone(),
        );
        metrics
    }

    fn begin(self: &Arc<Self>, path: &str) -> Call {
        let method = self.known.get(path).unwrap_or_else(|| self.unknown.clone());
        self.started.get_or_create(&method).inc();
        self.in_flight.get_or_create(&method).inc();
        Call {
            metrics: Arc::clone(self),
            method,
            started: Instant::now(),
            done: false,
        }
    }
}

/// One call, from its request to its trailers.
struct Call {
    metrics: Arc<GrpcMetrics>,
    method: Method,
    started: Instant,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: &'static str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let Method {
            grpc_type,
            grpc_service,
            grpc_method,
        } = self.method.clone();
        self.metrics
            .handled
            .get_or_create(&Handled {
                grpc_type,
                grpc_service,
                grpc_method,
                grpc_code: code,
            })
            .inc();
        self.metrics
            .handling
            .get_or_create(&self.method)
            .observe(self.started.elapsed().as_secs_f64());
        self.metrics.in_flight.get_or_create(&self.method).dec();
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish("Canceled");
    }
}

/// The code in a `grpc-status` header or trailer, by go-grpc-prometheus's
/// names.
fn code_name(value: Option<&http::HeaderValue>) -> &'static str {
    let code = value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u8>().ok());
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    code.and_then(|c| NAMES.get(usize::from(c)).copied())
        .unwrap_or("Unknown")
}

/// The layer to put on tonic's server.
#[derive(Debug, Clone)]
pub struct GrpcLayer {
    metrics: Arc<GrpcMetrics>,
}

impl GrpcLayer {
    pub fn new(metrics: GrpcMetrics) -> Self {
        GrpcLayer {
            metrics: Arc::new(metrics),
        }
    }
}

impl<S> tower::Layer<S> for GrpcLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Observed<S> {
    inner: S,
    metrics: Arc<GrpcMetrics>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, Request, ResponseBody> tower::Service<http::Request<Request>> for Observed<S>
where
    S: tower::Service<http::Request<Request>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    ResponseBody: Body + Send + Unpin + 'static,
{
    type Response = http::Response<ObservedBody<ResponseBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Request>) -> Self::Future {
        let mut call = self.metrics.begin(request.uri().path());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // Trailers-only: the call ended before any message.
            if response.headers().contains_key("grpc-status") {
                call.finish(code_name(response.headers().get("grpc-status")));
            }
            Ok(response.map(|inner| ObservedBody { inner, call }))
        })
    }
}

/// A response body that ends its call when the trailers pass (or when it
/// is dropped first).
pub struct ObservedBody<B> {
    inner: B,
    call: Call,
}

impl<B: Body + Unpin> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.call.finish(code_name(trailers.get("grpc-status")));
                }
            }
            Poll::Ready(Some(Err(_))) => this.call.finish("Unknown"),
            Poll::Ready(None) => this.call.finish("OK"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_go_grpc_prometheus_names() {
        let header = |text: &str| http::HeaderValue::from_str(text).ok();
        assert_eq!(code_name(header("0").as_ref()), "OK");
        assert_eq!(code_name(header("16").as_ref()), "Unauthenticated");
        assert_eq!(code_name(header("3").as_ref()), "InvalidArgument");
        assert_eq!(code_name(header("99").as_ref()), "Unknown");
        assert_eq!(code_name(None), "Unknown");
    }

    #[test]
    fn a_call_is_counted_once_with_its_labels() {
        let mut registry = Registry::default();
        let known = KnownMethods::from_descriptor_sets(&[switchyard_proto::FILE_DESCRIPTOR_SET]);
        let metrics = Arc::new(GrpcMetrics::register(&mut registry, known));
        let mut call = metrics.begin("/switchyard.v1.Registry/Watch");
        call.finish("OK");
        drop(call);
        drop(metrics.begin("/switchyard.v1.Registry/Register"));
        let text = switchyard_program::metrics::render(&registry);
        assert!(text.contains(
            "grpc_server_handled_total{grpc_type=\"server_stream\",grpc_service=\"switchyard.v1.Registry\",grpc_method=\"Watch\",grpc_code=\"OK\"} 1"
        ), "{text}");
        assert!(text.contains(
            "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"switchyard.v1.Registry\",grpc_method=\"Register\",grpc_code=\"Canceled\"} 1"
        ), "{text}");
        assert!(text.contains("grpc_server_open_streams{grpc_type=\"server_stream\",grpc_service=\"switchyard.v1.Registry\",grpc_method=\"Watch\"} 0"), "{text}");
        assert!(
            text.contains("grpc_server_handling_seconds_count{grpc_type=\"unary\""),
            "{text}"
        );
    }

    #[test]
    fn paths_the_server_does_not_serve_share_one_label_set() {
        let mut registry = Registry::default();
        let known = KnownMethods::from_descriptor_sets(&[switchyard_proto::FILE_DESCRIPTOR_SET]);
        let metrics = Arc::new(GrpcMetrics::register(&mut registry, known));
        drop(metrics.begin("/switchyard.v1.Registry/Nope"));
        let before = switchyard_program::metrics::render(&registry);
        for path in [
            "/a\"b/{c}",
            "/x/y",
            "",
            "/switchyard.v1.Registry/Watch2",
            "/rand/0.5",
        ] {
            drop(metrics.begin(path));
        }
        let after = switchyard_program::metrics::render(&registry);
        // The same series, only their values moved.
        let series = |text: &str| -> Vec<String> {
            text.lines()
                .filter_map(|line| line.rsplit_once(' ').map(|(name, _)| name.to_string()))
                .collect()
        };
        assert_eq!(series(&before), series(&after), "{after}");
        assert!(
            after.contains("grpc_method=\"unknown\",grpc_code=\"Canceled\"} 6"),
            "{after}"
        );
        assert!(
            !after.contains("rand") && !after.contains("Nope"),
            "{after}"
        );
    }
}
