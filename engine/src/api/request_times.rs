//! How long the API takes to answer: `fota_http_request_seconds`, a histogram per route
//! template, method and status class, and the middleware that measures every request routed
//! (a route's, or the problem answer of an unknown path or method). Measured from the request
//! reaching the router (the connection's limits passed, the head read) to the answer's head:
//! the body of a download or of the event stream is not counted. Owns the timing only.
//!
//! The labels are bounded: a route is named by its template (`/v1/devices/{endpoint}`, never
//! the path asked), and every request no route of the table takes (an unknown path, a method
//! the path has not) is counted under `route="unmatched"`, with its method when it is one the
//! API uses, else `other`. The histograms of every series are made up front, so a request
//! finds its own without a lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::router::{Operation, Verb};
use crate::histogram::{Histogram, HistogramSnapshot};

/// Bucket bounds: a read of the catalog takes a millisecond or less, an upload with its diff
/// or signature seconds, a synchronous device operation waits for a sleeping device up to its
/// `timeout` (ten minutes at most).
static REQUEST_TIME_BOUNDS: [Duration; 16] = [
    Duration::from_millis(1),
    Duration::from_micros(2500),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_millis(2500),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(600),
];

/// The route label of requests no route of the table takes.
const UNMATCHED: &str = "unmatched";
/// The method label of a method the API does not use.
const OTHER: &str = "other";
/// The status classes, 1xx to 5xx, as labelled.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// The methods the API uses, as labelled and as unmatched series are laid out.
const VERBS: [Verb; 5] = [Verb::Get, Verb::Post, Verb::Put, Verb::Patch, Verb::Delete];

/// The request times of every series.
pub struct RequestTimes {
    /// A route template's series, by method: where the router's [`MatchedPath`] leads.
    routes: HashMap<&'static str, Vec<(Method, usize)>>,
    /// Every series: one per route of the table, then the unmatched ones (one per method of
    /// [`VERBS`], then [`OTHER`]).
    series: Box<[Series]>,
    /// Index in `series` of the first unmatched series.
    unmatched: usize,
}

/// The histograms of one route template and method.
struct Series {
    /// Its route label.
    route: &'static str,
    /// Its method label.
    method: &'static str,
    /// One histogram per status class, as [`CLASSES`].
    classes: [Histogram; 5],
}

impl Series {
    fn new(route: &'static str, method: &'static str) -> Series {
        Series {
            route,
            method,
            classes: std::array::from_fn(|_| Histogram::new(&REQUEST_TIME_BOUNDS)),
        }
    }
}

/// One series' histogram of one status class, as exposed.
pub struct SeriesSnapshot {
    pub route: &'static str,
    pub method: &'static str,
    pub class: &'static str,
    pub times: HistogramSnapshot,
}

impl RequestTimes {
    /// Empty histograms for the routes of `operations` and for unmatched requests.
    pub fn new(operations: &[Operation]) -> RequestTimes {
        let mut routes: HashMap<&'static str, Vec<(Method, usize)>> = HashMap::new();
        let mut series = Vec::with_capacity(operations.len() + VERBS.len() + 1);
        for operation in operations {
            routes
                .entry(operation.path)
                .or_default()
                .push((operation.method.clone(), series.len()));
            series.push(Series::new(operation.path, method_label(&operation.method)));
        }
        let unmatched = series.len();
        series.extend(
            VERBS
                .iter()
                .map(|verb| Series::new(UNMATCHED, verb.label())),
        );
        series.push(Series::new(UNMATCHED, OTHER));
        RequestTimes {
            routes,
            series: series.into_boxed_slice(),
            unmatched,
        }
    }

    /// Counts a request to `route` (the template it matched, if any) with `method`, answered
    /// with `status` after `took`.
    fn observe(&self, route: Option<&str>, method: &Method, status: StatusCode, took: Duration) {
        let matched = route
            .and_then(|route| self.routes.get(route))
            .and_then(|methods| methods.iter().find(|(m, _)| m == method))
            .map(|(_, index)| *index);
        let index = matched.unwrap_or_else(|| {
            let verb = VERBS.iter().position(|verb| verb.method() == *method);
            self.unmatched + verb.unwrap_or(VERBS.len())
        });
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.series[index].classes[class].observe(took);
    }

    /// Every series and status class that counted a request.
    pub fn snapshot(&self) -> impl Iterator<Item = SeriesSnapshot> + '_ {
        self.series.iter().flat_map(|series| {
            CLASSES
                .iter()
                .zip(&series.classes)
                .map(|(class, histogram)| SeriesSnapshot {
                    route: series.route,
                    method: series.method,
                    class,
                    times: histogram.snapshot(),
                })
                .filter(|snapshot| snapshot.times.count > 0)
        })
    }
}

/// The label of a method of the route table.
fn method_label(method: &Method) -> &'static str {
    VERBS
        .iter()
        .find(|verb| verb.method() == *method)
        .map_or(OTHER, |verb| verb.label())
}

/// The middleware: times the rest of the stack and counts the answer under the route the
/// router matched.
pub(super) async fn time(
    State(times): State<Arc<RequestTimes>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let response = next.run(request).await;
    let route = route.as_ref().map(MatchedPath::as_str);
    times.observe(route, &method, response.status(), started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operation(method: Method, path: &'static str) -> Operation {
        Operation {
            method,
            path,
            needs_token: true,
        }
    }

    #[test]
    fn a_request_counts_under_its_template_or_as_unmatched_with_a_bounded_method() {
        let times = RequestTimes::new(&[
            operation(Method::GET, "/v1/devices/{endpoint}"),
            operation(Method::DELETE, "/v1/devices/{endpoint}"),
        ]);
        let ms = Duration::from_millis(3);
        let route = Some("/v1/devices/{endpoint}");
        times.observe(route, &Method::GET, StatusCode::OK, ms);
        times.observe(route, &Method::GET, StatusCode::NOT_FOUND, ms);
        times.observe(route, &Method::PUT, StatusCode::METHOD_NOT_ALLOWED, ms);
        times.observe(None, &Method::GET, StatusCode::NOT_FOUND, ms);
        let odd = Method::from_bytes(b"BREW").unwrap();
        times.observe(None, &odd, StatusCode::NOT_FOUND, ms);
        let counted: Vec<_> = times
            .snapshot()
            .map(|s| (s.route, s.method, s.class, s.times.count))
            .collect();
        assert_eq!(
            counted,
            [
                ("/v1/devices/{endpoint}", "GET", "2xx", 1),
                ("/v1/devices/{endpoint}", "GET", "4xx", 1),
                (UNMATCHED, "GET", "4xx", 1),
                (UNMATCHED, "PUT", "4xx", 1),
                (UNMATCHED, OTHER, "4xx", 1),
            ]
        );
    }
}
