//! The HTTP server's connections: an accept loop bounded by `max_connections`, and hyper's
//! HTTP/1 serving the router on each connection under deadlines, so that a client that
//! connects and then sends nothing, sends slowly, or stops reading cannot hold the server
//! open (hardening item 2).
//!
//! Each connection is in one phase at a time, tracked by [`Watch`] from what the connection
//! itself does (bytes read, a request handed to the router, its response finished):
//!
//! - *head*: from the connection's start, or from the first byte of a later request, until
//!   the request's headers are complete: at most `header_read_timeout`;
//! - *busy*: a request is with the router. Its body must have arrived within `body_timeout`
//!   of the headers, or the answer is 408 and the connection closes ([`handle`]);
//! - *idle*: a kept-alive connection waiting for the first byte of its next request: at most
//!   `idle_timeout`.
//!
//! In any phase, a write that has waited `body_timeout` for the client to read closes the
//! connection.
//!
//! At `max_connections`, a new connection makes room by closing the one that has waited
//! longest without a request (in the *head* or *idle* phase; [`Registry`]), as nginx reuses
//! idle connections: a client that opens connections and sends nothing cannot keep others
//! out. When every connection is busy, the new one waits, and the rest wait in the listen
//! queue, unread. hyper's own `header_read_timeout` is turned off because it also runs while a
//! kept-alive connection is idle, so it cannot tell the two apart.
//!
//! The deadlines are network timeouts on tokio's monotonic timer; they decide nothing about
//! requests or grants, which is why they do not go through `engine::Clock`.
//!
//! A declared body over the limit is refused by the routers themselves (`api` and `web`),
//! before reading it. This module does not parse HTTP; hyper does.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use config::HttpLimits;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// The largest request head (request line and headers) read, in bytes: hyper's smallest
/// read buffer. A longer head is answered 431.
const MAX_HEAD: usize = 16 * 1024;

/// Open files the rest of the server needs besides client connections: the store's files,
/// outgoing calls, connector processes' pipes.
const RESERVED_FILES: usize = 256;

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, lets each
/// connection finish the request it is serving (closing idle ones at once), and returns when
/// every connection has ended.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    check_open_files(limits.max_connections);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let registry = Arc::new(Registry::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors or memory: wait a little rather than spin, and
                // try again; connections ending meanwhile free what is missing.
                tracing::warn!(error = %e, "cannot accept a connection");
                if tokio::time::timeout(Duration::from_millis(200), &mut shutdown)
                    .await
                    .is_ok()
                {
                    break;
                }
                continue;
            }
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(TryAcquireError::Closed) => break,
            Err(TryAcquireError::NoPermits) => {
                // At the limit: close the connection that has waited longest without a
                // request, if there is one, and take its slot; else wait for a slot while
                // the next connections wait in the listen queue.
                if registry.evict_longest_waiting() {
                    tracing::debug!(
                        max_connections = limits.max_connections,
                        "at max_connections: closing the connection that waited longest"
                    );
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        while let Some(ended) = connections.try_join_next() {
            log_panic(ended);
        }
        let watch = Arc::new(Watch::new());
        let registered = registry.add(watch.clone());
        connections.spawn(connection(
            stream,
            peer,
            app.clone(),
            limits,
            Control {
                watch,
                stop: stop_rx.clone(),
                registered,
                _slot: slot,
            },
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while let Some(ended) = connections.join_next().await {
        log_panic(ended);
    }
}

fn log_panic(ended: Result<(), tokio::task::JoinError>) {
    if let Err(e) = ended
        && e.is_panic()
    {
        tracing::error!(error = %e, "a connection task panicked");
    }
}

/// Errors of one connection that ended before it was accepted; the listener is fine.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Warns when `max_connections` leaves too little of the process's open-file limit for the
/// rest of the server (Linux only; elsewhere nothing is checked).
fn check_open_files(max_connections: usize) {
    let Ok(text) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let soft = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(soft) = soft
        && max_connections.saturating_add(RESERVED_FILES) > soft
    {
        tracing::warn!(
            max_connections,
            open_file_limit = soft,
            "max_connections is close to the open-file limit (ulimit -n); raise the limit or \
             lower max_connections, or accepting may fail under load"
        );
    }
}

/// The connections being served, so that at the limit the one that has waited longest
/// without a request can be told to close.
#[derive(Default)]
struct Registry {
    next: AtomicU64,
    connections: Mutex<HashMap<u64, Entry>>,
}

/// A connection's phase, and how to tell it to close.
type Entry = (Arc<Watch>, oneshot::Sender<()>);

impl Registry {
    fn connections(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn add(self: &Arc<Self>, watch: Arc<Watch>) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, evicted) = oneshot::channel();
        self.connections().insert(id, (watch, tx));
        Registered {
            registry: self.clone(),
            id,
            evicted,
        }
    }

    /// Tells the connection that has waited longest without a request to close; false when
    /// every connection is busy.
    fn evict_longest_waiting(&self) -> bool {
        let mut all = self.connections();
        let oldest = all
            .iter()
            .filter_map(|(id, (watch, _))| watch.waiting_since().map(|since| (since, *id)))
            .min();
        let Some((_, id)) = oldest else {
            return false;
        };
        match all.remove(&id) {
            Some((_, tx)) => tx.send(()).is_ok(),
            None => false,
        }
    }
}

/// A connection's place in the [`Registry`], left when the connection ends.
struct Registered {
    registry: Arc<Registry>,
    id: u64,
    evicted: oneshot::Receiver<()>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.connections().remove(&self.id);
    }
}

/// What a connection's task is told and holds besides the socket: its [`Watch`], the
/// server's stop signal, its place in the [`Registry`] and its slot (given back when the
/// task ends).
struct Control {
    watch: Arc<Watch>,
    stop: watch::Receiver<bool>,
    registered: Registered,
    _slot: OwnedSemaphorePermit,
}

/// What ended the wait on a connection.
enum Event {
    /// The server stops, or the connection must make room for a new one.
    Stop,
    Done(Result<(), hyper::Error>),
    Expired(&'static str),
}

/// Serves one connection until it ends, a deadline passes, the server stops or the
/// connection is told to make room.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: HttpLimits,
    control: Control,
) {
    let Control {
        watch,
        mut stop,
        mut registered,
        _slot,
    } = control;
    let io = TokioIo::new(Watched {
        inner: stream,
        watch: watch.clone(),
    });
    let in_service = watch.clone();
    let service = hyper::service::service_fn(move |req| {
        handle(req, app.clone(), in_service.clone(), limits.body_timeout)
    });
    let mut conn = pin!(
        hyper::server::conn::http1::Builder::new()
            .header_read_timeout(None)
            .keep_alive(true)
            .max_buf_size(MAX_HEAD)
            .serve_connection(io, service)
    );
    let mut stopping = pin!(async move {
        let _ = stop.wait_for(|stop| *stop).await;
    });
    let mut timer: Pin<Box<Sleep>> = Box::pin(tokio::time::sleep_until(Instant::now()));
    let mut armed = None;
    let mut draining = false;
    loop {
        let event = poll_fn(|cx| {
            if !draining
                && (stopping.as_mut().poll(cx).is_ready()
                    || Pin::new(&mut registered.evicted).poll(cx).is_ready())
            {
                return Poll::Ready(Event::Stop);
            }
            if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                return Poll::Ready(Event::Done(r));
            }
            // Only the connection's own progress (just polled, in this task) moves the
            // deadline, so reading it here is never stale.
            let Some((at, why)) = watch.deadline(&limits) else {
                return Poll::Pending;
            };
            if armed != Some(at) {
                timer.as_mut().reset(at);
                armed = Some(at);
            }
            match timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Event::Expired(why)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match event {
            Event::Stop => {
                // A connection still sending its headers, or idle, has no request to
                // finish: it closes now. A busy one closes after its response.
                if watch.waiting_since().is_some() {
                    return;
                }
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            Event::Done(Ok(())) => return,
            Event::Done(Err(e)) => {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
                return;
            }
            Event::Expired(why) => {
                tracing::debug!(%peer, "closing the connection: {why}");
                return;
            }
        }
    }
}

/// Hands one request to the router, and answers 408 if its body has not arrived within
/// `body_timeout` of its headers (the router's work on it is then dropped).
async fn handle(
    req: Request<Incoming>,
    app: Router,
    watch: Arc<Watch>,
    body_timeout: Duration,
) -> Result<Response<Finished>, Infallible> {
    watch.request_started();
    let arrived = Arc::new(Arrived::default());
    if http_body::Body::is_end_stream(req.body()) {
        arrived.set();
    }
    let req = req.map(|inner| {
        Body::new(Tracked {
            inner,
            arrived: arrived.clone(),
        })
    });
    let mut call = pin!(app.oneshot(req));
    let res = tokio::select! {
        biased;
        res = &mut call => res,
        waited = tokio::time::timeout(body_timeout, arrived.wait()) => match waited {
            Ok(()) => call.await,
            Err(_) => Ok(body_too_slow(body_timeout)),
        },
    };
    let res = match res {
        Ok(res) => res,
        Err(never) => match never {},
    };
    Ok(res.map(|inner| Finished { inner, watch }))
}

/// The 408 answer, in the API's error shape.
fn body_too_slow(body_timeout: Duration) -> Response<Body> {
    let mut res = api::ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "timeout",
        format!(
            "the request body did not arrive within {} ms",
            body_timeout.as_millis()
        ),
    )
    .into_response();
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// The phase of one connection, and since when a write has waited for the client.
struct Watch {
    state: Mutex<State>,
}

struct State {
    phase: Phase,
    write_blocked: Option<Instant>,
}

#[derive(Clone, Copy)]
enum Phase {
    /// Reading a request head, since then.
    Head(Instant),
    /// A request is with the router, or its response is being written.
    Busy,
    /// Waiting for the next request, since then.
    Idle(Instant),
}

impl Watch {
    fn new() -> Watch {
        Watch {
            state: Mutex::new(State {
                phase: Phase::Head(Instant::now()),
                write_blocked: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes arrived: on an idle connection, a new request head has begun.
    fn read_some(&self) {
        let mut s = self.state();
        if let Phase::Idle(_) = s.phase {
            s.phase = Phase::Head(Instant::now());
        }
    }

    fn write_blocked(&self, blocked: bool) {
        let mut s = self.state();
        if !blocked {
            s.write_blocked = None;
        } else if s.write_blocked.is_none() {
            s.write_blocked = Some(Instant::now());
        }
    }

    /// Since when the connection has waited for a request (its headers, or its first
    /// byte); `None` while it is busy with one.
    fn waiting_since(&self) -> Option<Instant> {
        match self.state().phase {
            Phase::Head(since) | Phase::Idle(since) => Some(since),
            Phase::Busy => None,
        }
    }

    fn request_started(&self) {
        self.state().phase = Phase::Busy;
    }

    fn response_finished(&self) {
        self.state().phase = Phase::Idle(Instant::now());
    }

    /// When the connection must close, and why; `None` while a request is with the router
    /// and nothing waits for the client.
    fn deadline(&self, limits: &HttpLimits) -> Option<(Instant, &'static str)> {
        let s = self.state();
        let phase = match s.phase {
            Phase::Head(since) => Some((
                since + limits.header_read_timeout,
                "the request headers did not arrive within header_read_timeout",
            )),
            Phase::Idle(since) => Some((
                since + limits.idle_timeout,
                "no request within idle_timeout",
            )),
            Phase::Busy => None,
        };
        let write = s.write_blocked.map(|since| {
            (
                since + limits.body_timeout,
                "the client did not read the response within body_timeout",
            )
        });
        match (phase, write) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}

/// The connection's socket, telling its [`Watch`] about reads and blocked writes.
struct Watched {
    inner: TcpStream,
    watch: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = ready!(Pin::new(&mut self.inner).poll_read(cx, buf));
        if buf.filled().len() > before {
            self.watch.read_some();
        }
        Poll::Ready(r)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch.write_blocked(r.is_pending());
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch.write_blocked(r.is_pending());
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Whether a request's body has arrived (or nobody reads it any more).
#[derive(Default)]
struct Arrived {
    done: AtomicBool,
    notify: Notify,
}

impl Arrived {
    fn set(&self) {
        self.done.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            let mut notified = pin!(notified);
            notified.as_mut().enable();
            if self.done.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// A request body that says when it has been read to the end, failed, or been dropped.
struct Tracked {
    inner: Incoming,
    arrived: Arc<Arrived>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        let ended = match &r {
            None | Some(Err(_)) => true,
            Some(Ok(_)) => self.inner.is_end_stream(),
        };
        if ended {
            self.arrived.set();
        }
        Poll::Ready(r)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.arrived.set();
    }
}

/// A response body that tells the connection's [`Watch`] when hyper is done with it: the
/// connection is then idle until the next request begins.
struct Finished {
    inner: Body,
    watch: Arc<Watch>,
}

impl http_body::Body for Finished {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        self.watch.response_finished();
    }
}
