//! Prometheus metrics, kept by hand: request counts by route and status, a latency histogram,
//! and policy decisions by outcome. Labels carry route templates, never ids or content.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::app::AppState;

const BUCKETS_SECS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency_buckets: [AtomicU64; BUCKETS_SECS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    decisions_allowed: AtomicU64,
    decisions_denied: AtomicU64,
}

impl Metrics {
    pub fn decision(&self, allowed: bool) {
        let counter = if allowed { &self.decisions_allowed } else { &self.decisions_denied };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        {
            let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            *requests.entry((method.to_owned(), route.to_owned(), status)).or_default() += 1;
        }
        for (bucket, bound) in self.latency_buckets.iter().zip(BUCKETS_SECS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP kura_http_requests_total HTTP requests by method, route and status.\n");
        out.push_str("# TYPE kura_http_requests_total counter\n");
        for ((method, route, status), count) in self.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.push_str(&format!(
                "kura_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}\n"
            ));
        }
        out.push_str("# HELP kura_http_request_duration_seconds HTTP request latency.\n");
        out.push_str("# TYPE kura_http_request_duration_seconds histogram\n");
        for (bucket, bound) in self.latency_buckets.iter().zip(BUCKETS_SECS) {
            out.push_str(&format!(
                "kura_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {}\n",
                bucket.load(Ordering::Relaxed)
            ));
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        out.push_str(&format!("kura_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}\n"));
        out.push_str(&format!(
            "kura_http_request_duration_seconds_sum {}\n",
            self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        ));
        out.push_str(&format!("kura_http_request_duration_seconds_count {count}\n"));
        out.push_str("# HELP kura_policy_decisions_total Policy decisions on record content by outcome.\n");
        out.push_str("# TYPE kura_policy_decisions_total counter\n");
        out.push_str(&format!(
            "kura_policy_decisions_total{{outcome=\"allowed\"}} {}\n",
            self.decisions_allowed.load(Ordering::Relaxed)
        ));
        out.push_str(&format!(
            "kura_policy_decisions_total{{outcome=\"denied\"}} {}\n",
            self.decisions_denied.load(Ordering::Relaxed)
        ));
        out
    }
}

/// Middleware: times every request and counts it under its route template.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    state.metrics.observe(&method, &route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}
