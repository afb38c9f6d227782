//! Prometheus metrics, kept by hand: request counts by route and status, a latency histogram,
//! and policy decisions by outcome. Labels carry route templates, never ids or content.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::state::AppState;

const BUCKETS_SECS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

type ByMethodAndStatus = HashMap<(&'static str, u16), u64>;

/// The `method` label: the standard methods by name, anything else (a client may send any
/// token as a method) as `other`, so that the label's values stay few.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

#[derive(Default)]
pub struct Metrics {
    /// Counts by route template, then (method, status): counting a request allocates only the
    /// first time its route is seen. `render` sorts.
    requests: Mutex<HashMap<String, ByMethodAndStatus>>,
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

    fn observe(&self, method: &'static str, route: &str, status: u16, seconds: f64) {
        {
            let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            let by_route = match requests.get_mut(route) {
                Some(by_route) => by_route,
                None => requests.entry(route.to_owned()).or_default(),
            };
            *by_route.entry((method, status)).or_default() += 1;
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
        let mut requests: Vec<(String, String, u16, u64)> = {
            let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            let rows = requests.iter().flat_map(|(route, by_route)| {
                by_route
                    .iter()
                    .map(move |((method, status), count)| (route.clone(), method.to_string(), *status, *count))
            });
            rows.collect()
        };
        requests.sort_unstable();
        for (route, method, status, count) in requests {
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
    let method = method_label(request.method());
    // The router's shared path, not a copy of it.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state.metrics.observe(method, route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}
