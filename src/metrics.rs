//! Operational figures in the Prometheus text format, served at `GET /metrics`.
//!
//! Built on the `prometheus` crate with one `Registry` per server (never the
//! crate's global default registry), so that the many servers a test process
//! starts keep separate counts. Chosen over `prometheus-client`, whose
//! histograms take a mutex on every observation and which has no process
//! figures, and over `metrics-exporter-prometheus`, which wants a global
//! recorder and keeps every histogram sample until an upkeep task drains it.
//! Here an observation is a few atomic additions.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::store::PoolStats;

/// The label of requests that matched no route: one series for every
/// unknown path, so that scanning for URLs cannot blow up the metric count.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric one server keeps, in its own registry.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
    open_websockets: IntGauge,
    pool_open: IntGaugeVec,
    pool_idle: IntGaugeVec,
    pool_max: IntGaugeVec,
    queued_writes: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "mirage_http_requests_total",
                "HTTP requests answered, by route template, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "mirage_http_errors_total",
                "HTTP requests answered with an error status, by route template and class (4xx, 5xx).",
            ),
            &["route", "class"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "mirage_http_request_duration_seconds",
                "Time from a request's arrival to its response headers, by route template and method.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )?;
        let open_websockets = IntGauge::new(
            "mirage_websocket_connections",
            "WebSocket connections open now.",
        )?;
        let pool_open = IntGaugeVec::new(
            Opts::new(
                "mirage_db_pool_connections",
                "Database connections a pool holds open now.",
            ),
            &["pool"],
        )?;
        let pool_idle = IntGaugeVec::new(
            Opts::new(
                "mirage_db_pool_idle_connections",
                "Open database connections not in use now.",
            ),
            &["pool"],
        )?;
        let pool_max = IntGaugeVec::new(
            Opts::new(
                "mirage_db_pool_max_connections",
                "The most connections a pool opens.",
            ),
            &["pool"],
        )?;
        let queued_writes = IntGaugeVec::new(
            Opts::new(
                "mirage_db_writer_queue_depth",
                "Writes waiting for the single database writer.",
            ),
            &["database"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(open_websockets.clone()))?;
        registry.register(Box::new(pool_open.clone()))?;
        registry.register(Box::new(pool_idle.clone()))?;
        registry.register(Box::new(pool_max.clone()))?;
        registry.register(Box::new(queued_writes.clone()))?;
        // CPU, memory, open files and threads of this process, read from
        // /proc when scraped (Linux only).
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            requests,
            errors,
            latency,
            open_websockets,
            pool_open,
            pool_idle,
            pool_max,
            queued_writes,
        })
    }

    /// Counts one answered request. Every label is a borrowed string: the
    /// route template, a fixed method name and the status's own text.
    pub fn record_request(&self, route: &str, method: &str, status: StatusCode, elapsed: Duration) {
        self.requests
            .with_label_values(&[route, method, status.as_str()])
            .inc();
        self.latency
            .with_label_values(&[route, method])
            .observe(elapsed.as_secs_f64());
        let class = match status.as_u16() {
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => return,
        };
        self.errors.with_label_values(&[route, class]).inc();
    }

    /// Counts a WebSocket as open until the returned guard is dropped.
    pub fn websocket_opened(&self) -> OpenWebSocket {
        self.open_websockets.inc();
        OpenWebSocket(self.open_websockets.clone())
    }

    /// Everything in the Prometheus text format, with the pool figures
    /// read now.
    pub fn render(&self, pools: &PoolStats) -> String {
        for pool in &pools.pools {
            self.pool_open
                .with_label_values(&[pool.name])
                .set(pool.open.into());
            self.pool_idle
                .with_label_values(&[pool.name])
                .set(pool.idle.into());
            self.pool_max
                .with_label_values(&[pool.name])
                .set(pool.max.into());
        }
        if let Some((database, depth)) = pools.queued_writes {
            self.queued_writes
                .with_label_values(&[database])
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        if let Err(err) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut text) {
            tracing::error!(%err, "encoding the metrics failed");
        }
        text
    }
}

/// The `Content-Type` of [`Metrics::render`]'s text.
pub fn content_type() -> String {
    TextEncoder::new().format_type().to_owned() + "; charset=utf-8"
}

/// Keeps one WebSocket in the open-connections gauge while it lives.
pub struct OpenWebSocket(IntGauge);

impl Drop for OpenWebSocket {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A fixed label per method: a client can send any method name, and each
/// would otherwise become a series of its own.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PoolFigures;

    #[test]
    fn renders_requests_errors_latency_and_pools() {
        let metrics = Metrics::new().unwrap();
        metrics.record_request("/api/ping", "GET", StatusCode::OK, Duration::from_millis(3));
        metrics.record_request(
            UNMATCHED_ROUTE,
            method_label(&Method::from_bytes(b"BREW").unwrap()),
            StatusCode::NOT_FOUND,
            Duration::from_millis(1),
        );
        let text = metrics.render(&PoolStats {
            pools: vec![PoolFigures {
                name: "readers",
                open: 3,
                idle: 2,
                max: 8,
            }],
            queued_writes: Some(("sqlite", 0)),
        });
        assert!(text.contains(
            r#"mirage_http_requests_total{method="GET",route="/api/ping",status="200"} 1"#
        ));
        assert!(text.contains(
            r#"mirage_http_requests_total{method="other",route="unmatched",status="404"} 1"#
        ));
        assert!(text.contains(r#"mirage_http_errors_total{class="4xx",route="unmatched"} 1"#));
        assert!(!text.contains(r#"class="4xx",route="/api/ping""#));
        assert!(text.contains(
            r#"mirage_http_request_duration_seconds_bucket{method="GET",route="/api/ping",le="0.005"} 1"#
        ));
        assert!(text.contains(
            r#"mirage_http_request_duration_seconds_bucket{method="GET",route="/api/ping",le="0.0025"} 0"#
        ));
        assert!(text.contains(r#"mirage_db_pool_idle_connections{pool="readers"} 2"#));
        assert!(text.contains(r#"mirage_db_writer_queue_depth{database="sqlite"} 0"#));
    }

    #[test]
    fn a_websocket_counts_while_its_guard_lives() {
        let metrics = Metrics::new().unwrap();
        let first = metrics.websocket_opened();
        let second = metrics.websocket_opened();
        assert!(
            metrics
                .render(&PoolStats::default())
                .contains("mirage_websocket_connections 2")
        );
        drop(first);
        drop(second);
        assert!(
            metrics
                .render(&PoolStats::default())
                .contains("mirage_websocket_connections 0")
        );
    }
}
