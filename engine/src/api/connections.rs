//! The API's HTTP connections: the accept loop, the cap on connections served at once, the time
//! a client has to send a request head and the time a kept-alive connection may idle, the
//! lingering close that lets a client still sending a refused body read its answer, and the
//! counters of what these defences did (for `/metrics`). Owns connections only: what a request
//! gets is the router's business.
//!
//! Why an accept loop of our own rather than `axum::serve`: that one takes no cap and no
//! timeouts. Why a watchdog of our own rather than hyper's `header_read_timeout`: hyper 1 starts
//! that clock whenever it waits for a head, the wait between two requests of a kept-alive
//! connection included, so it cannot give a client 10 s to send a head and 60 s of keep-alive;
//! hyper has no HTTP/1 idle timeout, and tower-http's `TimeoutLayer` bounds a handler, not a
//! connection. The watchdog knows what a connection is doing (waiting for a head, receiving
//! one, answering) from the bytes it reads and the answers under way, and closes it when the
//! phase it is in has lasted too long. An answer under way is never cut: a long download or
//! the event stream takes what it takes. A handler that panics (a bug) is answered 500 and
//! logged rather than cutting the connection without an answer.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use super::problem::Problem;
use crate::sync::lock;

/// How long a connection the server ends after an answer keeps reading (and dropping) what the
/// client still sends: a client that writes a whole refused body before it reads gets the
/// answer, not a reset (closing a socket with unread bytes resets it).
const LINGER: Duration = Duration::from_secs(2);

/// What an excess connection is told before it is closed (it is closed whatever it sent).
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\
    connection: close\r\nretry-after: 1\r\n\r\n";

/// How long the accept loop waits after an error that is not one connection's (out of file
/// descriptors, most often) before it accepts again.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The limits the connections are served under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more are answered 503 and closed at once.
    pub max_connections: usize,
    /// Longest a client may take to send a request head: from its connection, or from the
    /// first byte of a later head on a kept-alive connection.
    pub header_timeout: Duration,
    /// Longest a kept-alive connection may wait for its next request after an answer.
    pub idle_timeout: Duration,
}

/// What the API's defences did, for `/metrics`.
#[derive(Debug, Default)]
pub struct HttpCounters {
    /// Connections being served now.
    pub open: AtomicU64,
    /// Requests answered 401 (no accepted token), their bodies not read.
    pub unauthenticated: AtomicU64,
    /// Requests answered 403 (a viewer's write), their bodies not read.
    pub forbidden: AtomicU64,
    /// Connections closed at accept because `max_connections` were being served.
    pub connection_limit: AtomicU64,
    /// Connections closed because a request head did not come in time.
    pub header_timeout: AtomicU64,
    /// Kept-alive connections closed after waiting `idle_timeout` for a request.
    pub idle_closed: AtomicU64,
}

impl HttpCounters {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Serves `app` on the connections `listener` accepts until `stopping` completes (and has
/// turned `stopped` true), then stops accepting and waits for the connections: idle ones close
/// at once, answers under way finish (the event streams end with `stopped`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    counters: Arc<HttpCounters>,
    stopped: watch::Receiver<bool>,
    stopping: impl Future<Output = ()>,
) -> io::Result<()> {
    // The permits a connection holds while it is served: the cap, and (all of them back) the
    // sign that every connection has ended.
    let permits = limits.max_connections.clamp(1, u32::MAX as usize);
    let slots = Arc::new(Semaphore::new(permits));
    let mut stopping = std::pin::pin!(stopping);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stopping => break,
            accepted = accept(&listener) => accepted,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            HttpCounters::count(&counters.connection_limit);
            tracing::debug!(%peer, "HTTP connection refused: too many open");
            // Best effort: a client that already sent its request may get a reset instead.
            let _ = stream.try_write(BUSY);
            continue;
        };
        let connection = Connection {
            _slot: Slot::take(permit, counters.clone()),
            app: app.clone(),
            limits,
            counters: counters.clone(),
            stopped: stopped.clone(),
        };
        tokio::spawn(connection.serve(stream));
    }
    drop(listener);
    let _every_connection_ended = slots.acquire_many(permits as u32).await;
    Ok(())
}

/// Errors of one connection that was being accepted, after which the next one can be.
/// The next connection `listener` accepts. A connection that failed before it was accepted is
/// passed over; any other error (out of file descriptors, most often) is logged and waited
/// out for [`ACCEPT_BACKOFF`] rather than tried again at once. Cancel-safe.
pub(crate) async fn accept(listener: &TcpListener) -> (TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(error) if is_connection_error(&error) => {}
            Err(error) => {
                let address = listener.local_addr().ok();
                tracing::error!(?address, %error, "cannot accept connections");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A place among the connections served at once, held while one is.
struct Slot {
    /// Returned to the cap when the connection ends.
    _permit: OwnedSemaphorePermit,
    /// Where the connection is counted as open.
    counters: Arc<HttpCounters>,
}

impl Slot {
    fn take(permit: OwnedSemaphorePermit, counters: Arc<HttpCounters>) -> Slot {
        counters.open.fetch_add(1, Ordering::Relaxed);
        Slot {
            _permit: permit,
            counters,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One accepted connection and what serving it needs.
struct Connection {
    /// Its place under the cap, given back when it ends.
    _slot: Slot,
    /// The router every request goes to.
    app: Router,
    /// Its timeouts.
    limits: Limits,
    /// Where its timeouts are counted.
    counters: Arc<HttpCounters>,
    /// Turns true when the API stops.
    stopped: watch::Receiver<bool>,
}

/// An answer being made (boxed: hyper wants an `Unpin` future to hand the stream back).
type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// A request head did not come in time.
    HeaderTimeout,
    /// A kept-alive connection waited too long for its next request.
    Idle,
}

impl Connection {
    /// Serves HTTP/1.1 requests on `stream` until the client or the server ends it.
    async fn serve(mut self, stream: TcpStream) {
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            stream,
            activity: activity.clone(),
        });
        let (app, answering) = (self.app.clone(), activity.clone());
        let service = service_fn(move |request: Request<Incoming>| {
            let busy = Answering::begin(&answering);
            let answer = AssertUnwindSafe(app.clone().oneshot(request)).catch_unwind();
            let answered: Answer = Box::pin(async move {
                let response = match answer.await {
                    Ok(answered) => answered?,
                    Err(_) => Problem::internal(&"a request handler panicked").into_response(),
                };
                // The answer is under way until hyper drops its body: after its last byte, or
                // when the connection goes (an event stream lasts until then).
                Ok(response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _under_way = &busy;
                        frame
                    }))
                }))
            });
            answered
        });
        let mut conn = http1::Builder::new().serve_connection(io, service);
        let mut stopping = false;
        let ended = loop {
            let deadline = activity.deadline(&self.limits);
            tokio::select! {
                ended = poll_fn(|cx| conn.poll_without_shutdown(cx)) => break ended,
                () = activity.changed.notified() => {}
                () = sleep_until(deadline) => {
                    if let Some((at, cut)) = activity.deadline(&self.limits)
                        && at <= Instant::now()
                    {
                        let counter = match cut {
                            Cut::HeaderTimeout => &self.counters.header_timeout,
                            Cut::Idle => &self.counters.idle_closed,
                        };
                        HttpCounters::count(counter);
                        return; // dropping the connection closes it
                    }
                }
                _ = self.stopped.wait_for(|stop| *stop), if !stopping => {
                    if !activity.answering() {
                        return;
                    }
                    // The answer under way finishes, then the connection closes.
                    stopping = true;
                    Pin::new(&mut conn).graceful_shutdown();
                }
            }
        };
        match ended {
            Ok(()) => self.linger(conn.into_parts().io.into_inner().stream).await,
            Err(error) => tracing::debug!(%error, "HTTP connection ended"),
        }
    }

    /// Closes a connection HTTP is done with: says so to the client (FIN), then reads and drops
    /// what it still sends for up to [`LINGER`], until it closes too or the API stops.
    async fn linger(&mut self, mut stream: TcpStream) {
        if stream.shutdown().await.is_err() {
            return;
        }
        let drain = async {
            let mut dropped = vec![0u8; 16 << 10];
            while let Ok(1..) = stream.read(&mut dropped).await {}
        };
        tokio::select! {
            _ = tokio::time::timeout(LINGER, drain) => {}
            _ = self.stopped.wait_for(|stop| *stop) => {}
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<(Instant, Cut)>) {
    match deadline {
        Some((at, _)) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What a connection is doing, as its watchdog sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request head since `since`: its connection (`first`)
    /// or the end of its last answer.
    Waiting { since: Instant, first: bool },
    /// Receiving a request head whose first byte came at `since`.
    Head { since: Instant },
    /// Answering `requests` requests (hyper answers one at a time; a new one may start just
    /// before the last one's body is dropped).
    Answering { requests: usize },
}

/// A connection's phase, moved by its reads and its answers, watched by its watchdog.
struct Activity {
    phase: Mutex<Phase>,
    /// Wakes the watchdog when the phase changes.
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            phase: Mutex::new(Phase::Waiting {
                since: Instant::now(),
                first: true,
            }),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        lock(&self.phase)
    }

    fn set(&self, phase: &mut Phase, new: Phase) {
        *phase = new;
        self.changed.notify_one();
    }

    /// Bytes came in: a head starts unless one is being received or answered. The first
    /// head's clock started with the connection.
    fn read(&self) {
        let mut phase = self.phase();
        if let Phase::Waiting { since, first } = *phase {
            let since = if first { since } else { Instant::now() };
            self.set(&mut phase, Phase::Head { since });
        }
    }

    /// True while an answer is under way.
    fn answering(&self) -> bool {
        matches!(*self.phase(), Phase::Answering { .. })
    }

    /// When the watchdog closes the connection if nothing changes, and why; none while an
    /// answer is under way.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, Cut)> {
        match *self.phase() {
            Phase::Waiting { since, first: true } | Phase::Head { since } => {
                Some((since + limits.header_timeout, Cut::HeaderTimeout))
            }
            Phase::Waiting {
                since,
                first: false,
            } => Some((since + limits.idle_timeout, Cut::Idle)),
            Phase::Answering { .. } => None,
        }
    }
}

/// One answer under way, from the call of the router until its body is dropped.
struct Answering {
    activity: Arc<Activity>,
}

impl Answering {
    fn begin(activity: &Arc<Activity>) -> Answering {
        let mut phase = activity.phase();
        let requests = match *phase {
            Phase::Answering { requests } => requests + 1,
            _ => 1,
        };
        activity.set(&mut phase, Phase::Answering { requests });
        Answering {
            activity: activity.clone(),
        }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        let mut phase = self.activity.phase();
        let next = match *phase {
            Phase::Answering { requests } if requests > 1 => Phase::Answering {
                requests: requests - 1,
            },
            _ => Phase::Waiting {
                since: Instant::now(),
                first: false,
            },
        };
        self.activity.set(&mut phase, next);
    }
}

/// A connection's stream, telling its activity when bytes come in.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::get;

    use super::*;

    /// Sends `request` on `stream` and reads one answer (heads only: the bodies are short).
    async fn exchange(stream: &mut TcpStream, request: &str) -> String {
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let read = stream.read(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer[..read]).into_owned()
    }

    async fn panicking() -> &'static str {
        panic!("a bug in a handler")
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_and_the_connection_goes_on() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/boom", get(panicking))
            .route("/ok", get(|| async { "fine" }));
        let limits = Limits {
            max_connections: 4,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        };
        let (stop, stopped) = watch::channel(false);
        let counters = Arc::new(HttpCounters::default());
        let stopping = async move {
            let _ = stop.closed().await;
        };
        tokio::spawn(serve(listener, app, limits, counters, stopped, stopping));

        let mut stream = TcpStream::connect(addr).await.unwrap();
        let boom = exchange(&mut stream, "GET /boom HTTP/1.1\r\nhost: a\r\n\r\n").await;
        assert!(boom.starts_with("HTTP/1.1 500"), "{boom}");
        assert!(boom.contains("application/problem+json"), "{boom}");
        let ok = exchange(&mut stream, "GET /ok HTTP/1.1\r\nhost: a\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    }
}
