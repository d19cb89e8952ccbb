//! The server's metrics, named in one place, and the Prometheus exporter
//! that renders them (with the engine's, when it runs in this process) at
//! `/metrics`.

use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const REQUEST_DURATION: &str = "braid_http_request_duration_seconds";
pub const OPEN_CONNECTIONS: &str = "braid_open_connections";
pub const STREAMS: &str = "braid_open_streams";
pub const EVENTS_PUBLISHED: &str = "braid_events_published_total";
pub const EVENTS_DELIVERED: &str = "braid_events_delivered_total";
pub const SLOW_CONSUMERS: &str = "braid_slow_consumer_disconnects_total";
pub const REFUSED: &str = "braid_refused_connections_total";
pub const SYNC_APPLIED: &str = "braid_sync_files_applied_total";
pub const SYNC_REJECTED: &str = "braid_sync_files_rejected_total";

/// Installs the process-wide Prometheus recorder (once; later calls get
/// the same handle) and describes the server's metrics. Histograms are
/// buckets, so they aggregate across nodes.
pub fn install() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0, 300.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .expect("non-empty buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests in one
            // process); then this handle renders only what it was given.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            // Histogram samples gather in the recorder until upkeep folds
            // them into buckets; without a scrape they would only grow.
            let h = handle.clone();
            // Without the thread, samples wait for the next scrape.
            let _ = std::thread::Builder::new()
                .name("braid-metrics".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        h.run_upkeep();
                    }
                });
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency by route, method and status"
    );
    metrics::describe_gauge!(OPEN_CONNECTIONS, "Open TCP connections");
    metrics::describe_gauge!(STREAMS, "Open event streams (kind=ws|sse)");
    metrics::describe_counter!(EVENTS_PUBLISHED, "Events read from the log and fanned out");
    metrics::describe_counter!(EVENTS_DELIVERED, "Event messages sent to stream clients");
    metrics::describe_counter!(
        SLOW_CONSUMERS,
        "Stream clients disconnected for falling behind"
    );
    metrics::describe_counter!(REFUSED, "Connections refused (reason=per_ip|global)");
    metrics::describe_counter!(SYNC_APPLIED, "Task files applied to the store");
    metrics::describe_counter!(SYNC_REJECTED, "Task files rejected");
}

pub fn request(route: &str, method: &str, status: u16, took: Duration) {
    metrics::histogram!(REQUEST_DURATION, "route" => route.to_owned(), "method" => method.to_owned(), "status" => status.to_string())
        .record(took.as_secs_f64());
}

pub fn connections(n: usize) {
    metrics::gauge!(OPEN_CONNECTIONS).set(n as f64);
}

pub fn stream_opened(kind: &'static str) {
    metrics::gauge!(STREAMS, "kind" => kind).increment(1.0);
}

pub fn stream_closed(kind: &'static str) {
    metrics::gauge!(STREAMS, "kind" => kind).decrement(1.0);
}

pub fn events_published(n: usize) {
    metrics::counter!(EVENTS_PUBLISHED).increment(n as u64);
}

/// A stream holds its delivery counter, so a send costs one atomic add.
pub fn delivered(kind: &'static str) -> metrics::Counter {
    metrics::counter!(EVENTS_DELIVERED, "kind" => kind)
}

pub fn slow_consumer(kind: &'static str) {
    metrics::counter!(SLOW_CONSUMERS, "kind" => kind).increment(1);
}

pub fn refused(reason: &'static str) {
    metrics::counter!(REFUSED, "reason" => reason).increment(1);
}

pub fn sync_applied() {
    metrics::counter!(SYNC_APPLIED).increment(1);
}

pub fn sync_rejected() {
    metrics::counter!(SYNC_REJECTED).increment(1);
}
