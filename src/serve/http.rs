//! The HTTP side: read-only endpoints over axum, served by hyper's HTTP/1
//! connection driver in our own accept loop, so that every resource a
//! client can hold is bounded: open connections (`--max-connections`: a
//! new one takes the place of the connection that has waited longest for a
//! request head, so slow or idle clients cannot lock a scraper out; only
//! when every connection is in an exchange is the new one closed at once),
//! header bytes, the time to send a request head, and the life of a
//! connection. Requests carry no body anyone reads.
//!
//! Handlers never touch the sources: they ask the collector thread for a
//! snapshot over a channel and wait at most [`Limits::snapshot_timeout`];
//! the collector only ever sends an `Arc`, so a slow or stuck client cannot
//! hold it up.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::metrics::{self, HttpStats};
use super::snapshot::{HistoryView, ProcessRow, SelfStats, Snapshot, SourceTotals};
use crate::model::Row;

/// A request for the current snapshot; the collector answers on `reply`.
pub type SnapshotRequest = oneshot::Sender<Arc<Snapshot>>;

/// What the HTTP side asks the collector for.
pub enum CollectorRequest {
    /// The current snapshot (metrics, dashboard).
    Snapshot(SnapshotRequest),
    /// Every source read now, records whole (a profile).
    Records(oneshot::Sender<Arc<Records>>),
}

/// Every source's records as read at `at` (counted since `serve` started),
/// with what a report says beside them.
pub struct Records {
    pub at: std::time::Instant,
    pub records: Vec<crate::model::Record>,
    pub report: crate::output::Report,
}

/// Bounds on what clients can make the server hold.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    /// Request line and headers, bytes (hyper's read buffer; at least 8192).
    pub max_header_bytes: usize,
    /// Time allowed to send a request head.
    pub header_timeout: Duration,
    /// Answers on a connection this old carry `Connection: close`.
    pub connection_lifetime: Duration,
    /// A connection still open this long after its lifetime (a client that
    /// does not read its answer) is closed.
    pub stuck_grace: Duration,
    /// How long a request waits for the collector.
    pub snapshot_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            connection_lifetime: Duration::from_secs(120),
            stuck_grace: Duration::from_secs(60),
            snapshot_timeout: Duration::from_secs(5),
        }
    }
}

/// The snapshot part of the exposition, encoded once per snapshot.
type ExpositionCache = Arc<std::sync::Mutex<Option<(u64, Arc<String>)>>>;

#[derive(Clone)]
struct AppState {
    requests: std::sync::mpsc::Sender<CollectorRequest>,
    exposition: ExpositionCache,
    http: Arc<HttpStats>,
    limits: Limits,
    /// Host header values accepted (`None`: any), against DNS rebinding.
    hosts: Option<Arc<Vec<String>>>,
}

impl AppState {
    async fn snapshot(&self) -> Result<Arc<Snapshot>, Response> {
        self.ask(CollectorRequest::Snapshot).await
    }

    /// Every source read now (slower than a snapshot: the whole maps).
    async fn records(&self) -> Result<Arc<Records>, Response> {
        self.ask(CollectorRequest::Records).await
    }

    /// Sends the collector the request `req` makes of a reply channel and
    /// waits for its answer, at most `snapshot_timeout`.
    async fn ask<T>(
        &self,
        req: impl FnOnce(oneshot::Sender<T>) -> CollectorRequest,
    ) -> Result<T, Response> {
        let (tx, rx) = oneshot::channel();
        if self.requests.send(req(tx)).is_err() {
            return Err(unavailable_response("lockscope is stopping\n"));
        }
        match tokio::time::timeout(self.limits.snapshot_timeout, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(unavailable_response("lockscope is stopping\n")),
            Err(_) => {
                self.http.snapshot_timeouts.fetch_add(1, Ordering::Relaxed);
                Err(unavailable_response(
                    "the collector did not answer in time\n",
                ))
            }
        }
    }
}

fn unavailable_response(msg: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        msg.to_string(),
    )
        .into_response()
}

/// The longest `?seconds=` a profile may ask for (Go's handler has no cap;
/// a connection's lifetime bounds it here).
const MAX_PROFILE_SECONDS: u64 = 60;

/// `/debug/pprof/mutex`: lock waits as a gzipped pprof profile (Go's mutex
/// profile convention: `contentions/count`, `delay/nanoseconds`), since
/// serve started, or with `?seconds=N` those of the next N seconds, as Go's
/// handler does: what Parca and Pyroscope scrape.
async fn pprof_mutex(State(st): State<AppState>, uri: axum::http::Uri) -> Response {
    let seconds = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("seconds="));
    let seconds = match seconds.map(str::parse::<u64>) {
        None => None,
        Some(Ok(n)) if (1..=MAX_PROFILE_SECONDS).contains(&n) => Some(n),
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("seconds must be 1 to {MAX_PROFILE_SECONDS}\n"),
            )
                .into_response();
        }
    };
    let first = match st.records().await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let body = match seconds {
        None => crate::pprof::encode_ending_now(&first.report),
        Some(n) => {
            tokio::time::sleep(Duration::from_secs(n)).await;
            let last = match st.records().await {
                Ok(r) => r,
                Err(r) => return r,
            };
            let records = crate::model::interval(&last.records, &first.records);
            let mut report = last.report.clone();
            report.duration_ns = last.at.duration_since(first.at).as_nanos() as u64;
            report.rows = crate::model::group(&records, crate::model::GroupBy::Lock);
            report.lost = crate::output::lost_since(&last.report.lost, &first.report.lost);
            crate::pprof::encode_ending_now(&report)
        }
    };
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"mutex.pb.gz\"",
            ),
        ],
        body,
    )
        .into_response()
}

const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const STYLE_CSS: &str = include_str!("web/style.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn json<T: Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics_handler(State(st): State<AppState>) -> Response {
    let snap = match st.snapshot().await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let seq = snap.seq;
    let cached = st.exposition.lock().ok().and_then(|c| {
        c.as_ref()
            .filter(|(s, _)| *s == seq)
            .map(|(_, t)| t.clone())
    });
    let part = match cached {
        Some(t) => t,
        None => match metrics::encode_snapshot(snap) {
            Ok(t) => {
                let t = Arc::new(t);
                if let Ok(mut c) = st.exposition.lock() {
                    *c = Some((seq, t.clone()));
                }
                t
            }
            Err(_) => {
                return (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n").into_response();
            }
        },
    };
    match metrics::finish(&part, st.http.clone()) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n").into_response(),
    }
}

/// `/api/summary`: what the dashboard's tables show.
#[derive(Serialize)]
pub struct Summary<'a> {
    pub version: &'static str,
    pub unix_ms: u64,
    pub uptime_s: f64,
    pub targets: &'a str,
    pub per_process: bool,
    pub sources: &'a [SourceTotals],
    /// Every loss counter, `source.counter`.
    pub lost: std::collections::BTreeMap<String, u64>,
    pub top_locks: &'a [Row],
    pub top_processes: &'a [ProcessRow],
    #[serde(rename = "self")]
    pub self_stats: &'a SelfStats,
    pub series: usize,
    pub max_series: usize,
    #[serde(flatten)]
    pub folds: super::snapshot::FoldCounts,
    #[serde(flatten)]
    pub collect: super::snapshot::CollectStats,
    /// Deadlocks of the target processes (`watched` false without
    /// `-p`/`-t`).
    pub deadlocks: &'a super::snapshot::Deadlocks,
}

pub fn summary_of(s: &Snapshot) -> Summary<'_> {
    let mut lost = std::collections::BTreeMap::new();
    for t in &s.sources {
        for (k, v) in &t.lost {
            lost.insert(format!("{}.{k}", t.status.name), *v);
        }
    }
    Summary {
        version: env!("CARGO_PKG_VERSION"),
        unix_ms: s.unix_ms,
        uptime_s: s.uptime_s,
        targets: &s.targets,
        per_process: s.per_process,
        sources: &s.sources,
        lost,
        top_locks: &s.top_locks,
        top_processes: &s.top_processes,
        self_stats: &s.self_stats,
        series: s.series.len(),
        max_series: s.max_series,
        folds: s.folds,
        collect: s.collect,
        deadlocks: &s.deadlocks,
    }
}

async fn summary(State(st): State<AppState>) -> Response {
    match st.snapshot().await {
        Ok(s) => json(&summary_of(&s)),
        Err(r) => r,
    }
}

async fn history(State(st): State<AppState>) -> Response {
    match st.snapshot().await {
        Ok(s) => {
            let v: HistoryView = s.history.view();
            json(&v)
        }
        Err(r) => r,
    }
}

/// Counts requests, rejects unknown Host headers (a page on another site
/// cannot reach a loopback server through DNS rebinding) and sets headers
/// that keep the browser from sniffing or framing our content.
async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    st.http.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(hosts) = &st.hosts {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return (StatusCode::MISDIRECTED_REQUEST, "unknown Host\n").into_response();
        }
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'none'",
        ),
    );
    resp
}

/// Host header values a loopback listener accepts.
pub fn loopback_hosts(addr: SocketAddr) -> Option<Vec<String>> {
    if !addr.ip().is_loopback() {
        return None;
    }
    let p = addr.port();
    Some(vec![
        format!("127.0.0.1:{p}"),
        format!("localhost:{p}"),
        format!("[::1]:{p}"),
        addr.to_string(),
    ])
}

fn router(st: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/metrics", get(metrics_handler))
        .route("/api/summary", get(summary))
        .route("/api/history", get(history))
        .route("/healthz", get(healthz))
        .route("/debug/pprof/mutex", get(pprof_mutex))
        .layer(middleware::from_fn_with_state(st.clone(), guard))
        .with_state(st)
}

/// Serves until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    requests: std::sync::mpsc::Sender<CollectorRequest>,
    http: Arc<HttpStats>,
    limits: Limits,
    stop: impl std::future::Future<Output = ()>,
) {
    let hosts = listener
        .local_addr()
        .ok()
        .and_then(loopback_hosts)
        .map(Arc::new);
    let st = AppState {
        requests,
        exposition: Default::default(),
        http: http.clone(),
        limits: limits.clone(),
        hosts,
    };
    let app = router(st);
    let conns: Arc<Mutex<Conns>> = Default::default();
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = {
            let accept = std::pin::pin!(listener.accept());
            match futures_select(accept, stop.as_mut()).await {
                Either::Left(r) => r,
                Either::Right(()) => break,
            }
        };
        let (stream, _peer) = match accepted {
            Ok(x) => x,
            Err(_) => {
                // out of file descriptors and the like: back off a little
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let id = {
            let mut c = lock(&conns);
            if c.open.len() >= limits.max_connections {
                // make room: close the connection that has waited longest
                // for a request head (a slow or idle client); refuse the
                // new one only when every connection is in an exchange
                match c.longest_idle() {
                    Some(victim) => {
                        if let Some(e) = c.open.remove(&victim) {
                            e.task.abort();
                        }
                        http.shed_connections.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        http.rejected_connections.fetch_add(1, Ordering::Relaxed);
                        drop(stream);
                        continue;
                    }
                }
            }
            c.next += 1;
            c.next
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let limits = limits.clone();
        let mine = conns.clone();
        let task = tokio::spawn(async move {
            let _gone = Gone {
                conns: mine.clone(),
                id,
            };
            let born = Instant::now();
            let inner = TowerToHyperService::new(app);
            let lifetime = limits.connection_lifetime;
            // past its lifetime, a connection's next answer says
            // `Connection: close`, so the client does not reuse it (closing
            // it between requests would race with the client's next one)
            let svc = service_fn(move |req: Request<Incoming>| {
                let close = born.elapsed() >= lifetime;
                // busy from the request head until its answer is written
                let busy = Busy::new(mine.clone(), id);
                let fut = hyper::service::Service::call(&inner, req);
                async move {
                    let mut resp = fut.await?;
                    if close {
                        resp.headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    Ok::<_, Infallible>(resp.map(|b| {
                        axum::body::Body::new(Tracked {
                            inner: b,
                            _busy: busy,
                        })
                    }))
                }
            });
            let mut b = hyper::server::conn::http1::Builder::new();
            // the header timeout also closes idle keep-alive connections
            b.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .keep_alive(true);
            let conn = b.serve_connection(TokioIo::new(stream), svc);
            let mut conn = std::pin::pin!(conn);
            // a client stuck in one exchange (not reading its answer) is cut
            if tokio::time::timeout(lifetime + limits.stuck_grace, conn.as_mut())
                .await
                .is_err()
            {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(limits.header_timeout, conn).await;
            }
        });
        let mut c = lock(&conns);
        if !task.is_finished() {
            c.open.insert(
                id,
                Conn {
                    idle_since: Some(Instant::now()),
                    busy: 0,
                    task: task.abort_handle(),
                },
            );
        }
    }
    // stopping: close every connection now rather than when the runtime
    // goes (a client in the middle of a head would otherwise hold it)
    let open: Vec<Conn> = lock(&conns).open.drain().map(|(_, c)| c).collect();
    for c in open {
        c.task.abort();
    }
}

/// The open connections, so that a new one can take the place of the one
/// that has waited longest for a request head.
#[derive(Default)]
struct Conns {
    next: u64,
    open: HashMap<u64, Conn>,
}

struct Conn {
    /// Since when it waits for a request head (`None`: in an exchange).
    idle_since: Option<Instant>,
    /// Requests between head and written answer.
    busy: u32,
    task: tokio::task::AbortHandle,
}

impl Conns {
    fn longest_idle(&self) -> Option<u64> {
        self.open
            .iter()
            .filter_map(|(id, c)| c.idle_since.map(|t| (t, *id)))
            .min()
            .map(|(_, id)| id)
    }
}

fn lock(c: &Mutex<Conns>) -> std::sync::MutexGuard<'_, Conns> {
    c.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Removes a connection from [`Conns`] when its task ends (or is aborted).
struct Gone {
    conns: Arc<Mutex<Conns>>,
    id: u64,
}

impl Drop for Gone {
    fn drop(&mut self) {
        lock(&self.conns).open.remove(&self.id);
    }
}

/// Marks a connection busy for as long as it lives: from a request's head
/// until its answer's body is written (hyper drops the body then).
struct Busy {
    conns: Arc<Mutex<Conns>>,
    id: u64,
}

impl Busy {
    fn new(conns: Arc<Mutex<Conns>>, id: u64) -> Busy {
        if let Some(c) = lock(&conns).open.get_mut(&id) {
            c.busy += 1;
            c.idle_since = None;
        }
        Busy { conns, id }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(c) = lock(&self.conns).open.get_mut(&self.id) {
            c.busy = c.busy.saturating_sub(1);
            if c.busy == 0 {
                c.idle_since = Some(Instant::now());
            }
        }
    }
}

/// A response body that keeps its connection marked busy until written.
struct Tracked {
    inner: axum::body::Body,
    _busy: Busy,
}

impl hyper::body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

pub enum Either<A, B> {
    Left(A),
    Right(B),
}

/// The first of two futures to complete.
pub async fn first_of<A: std::future::Future + Unpin, B: std::future::Future + Unpin>(
    a: A,
    b: B,
) -> Either<A::Output, B::Output> {
    futures_select(a, b).await
}

/// The first of two futures to complete (tokio's `select!` needs its
/// macros feature; this is all we need of it).
async fn futures_select<A: std::future::Future + Unpin, B: std::future::Future + Unpin>(
    mut a: A,
    mut b: B,
) -> Either<A::Output, B::Output> {
    std::future::poll_fn(|cx| {
        use std::task::Poll;
        if let Poll::Ready(x) = std::pin::Pin::new(&mut a).poll(cx) {
            return Poll::Ready(Either::Left(x));
        }
        if let Poll::Ready(x) = std::pin::Pin::new(&mut b).poll(cx) {
            return Poll::Ready(Either::Right(x));
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    //! The HTTP side alone, without root: a stand-in collector answers with
    //! an empty snapshot.
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    struct Server {
        addr: SocketAddr,
        http: Arc<HttpStats>,
        stop: Option<oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            if let Some(s) = self.stop.take() {
                let _ = s.send(());
            }
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn start(limits: Limits) -> Server {
        start_with(limits, true)
    }

    /// `answer`: whether the stand-in collector answers at all.
    fn start_with(limits: Limits, answer: bool) -> Server {
        let (req_tx, req_rx) = std::sync::mpsc::channel::<CollectorRequest>();
        std::thread::spawn(move || {
            let snap = Arc::new(Snapshot::default());
            let mut held = Vec::new();
            while let Ok(r) = req_rx.recv() {
                let CollectorRequest::Snapshot(r) = r else {
                    continue;
                };
                if answer {
                    let _ = r.send(snap.clone());
                } else {
                    held.push(r);
                }
            }
        });
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let http = Arc::new(HttpStats::default());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let h = http.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                serve(listener, req_tx, h, limits, async {
                    let _ = stop_rx.await;
                })
                .await;
            });
        });
        Server {
            addr,
            http,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Sends one request on `s` and reads one response head + body.
    fn ask(s: &mut TcpStream, addr: SocketAddr, method: &str, path: &str) -> String {
        let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
        s.write_all(req.as_bytes()).expect("send");
        let mut buf = Vec::new();
        let mut b = [0u8; 65536];
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        loop {
            let n = s.read(&mut b).unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&b[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break;
                }
            }
        }
        String::from_utf8_lossy(&buf).to_lowercase()
    }

    #[test]
    fn endpoints_answer_get_only() {
        let srv = start(Limits::default());
        let mut s = TcpStream::connect(srv.addr).expect("connect");
        for path in [
            "/",
            "/app.js",
            "/style.css",
            "/metrics",
            "/api/summary",
            "/api/history",
        ] {
            let r = ask(&mut s, srv.addr, "GET", path);
            assert!(r.starts_with("http/1.1 200"), "{path}: {r:.200}");
            assert!(r.contains("x-content-type-options: nosniff"), "{r:.400}");
            assert!(!r.contains("connection: close"), "keep-alive: {r:.400}");
            let r = ask(&mut s, srv.addr, "POST", path);
            assert!(r.starts_with("http/1.1 405"), "POST {path}: {r:.200}");
        }
        let r = ask(&mut s, srv.addr, "GET", "/metrics");
        assert!(r.contains("application/openmetrics-text"));
        assert!(r.ends_with("# eof\n"), "{r}");
        assert!(srv.http.requests.load(Ordering::Relaxed) >= 13);
    }

    #[test]
    fn old_connections_are_told_to_close() {
        let srv = start(Limits {
            connection_lifetime: Duration::ZERO,
            ..Limits::default()
        });
        let mut s = TcpStream::connect(srv.addr).expect("connect");
        let r = ask(&mut s, srv.addr, "GET", "/healthz");
        assert!(
            r.starts_with("http/1.1 200") && r.contains("connection: close"),
            "{r}"
        );
        // and the server closes it after that answer
        let mut b = [0u8; 16];
        assert_eq!(s.read(&mut b).unwrap_or(0), 0);
    }

    #[test]
    fn a_new_connection_takes_the_place_of_the_longest_idle_one() {
        let srv = start(Limits {
            max_connections: 2,
            ..Limits::default()
        });
        let mut a = TcpStream::connect(srv.addr).expect("connect");
        let mut b = TcpStream::connect(srv.addr).expect("connect");
        // both are served, then idle (a the longer)
        assert!(ask(&mut a, srv.addr, "GET", "/healthz").starts_with("http/1.1 200"));
        assert!(ask(&mut b, srv.addr, "GET", "/healthz").starts_with("http/1.1 200"));
        let mut c = TcpStream::connect(srv.addr).expect("connect");
        assert!(ask(&mut c, srv.addr, "GET", "/healthz").starts_with("http/1.1 200"));
        a.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 16];
        assert_eq!(a.read(&mut buf).unwrap_or(0), 0, "a was closed");
        assert!(ask(&mut b, srv.addr, "GET", "/healthz").starts_with("http/1.1 200"));
        assert_eq!(srv.http.shed_connections.load(Ordering::Relaxed), 1);
        assert_eq!(srv.http.rejected_connections.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn connections_all_in_an_exchange_refuse_a_new_one() {
        // a collector that never answers: requests wait (busy) for it
        let srv = start_with(
            Limits {
                max_connections: 2,
                snapshot_timeout: Duration::from_secs(3),
                ..Limits::default()
            },
            false,
        );
        let req = format!("GET /metrics HTTP/1.1\r\nHost: {}\r\n\r\n", srv.addr);
        let mut busy: Vec<TcpStream> = (0..2)
            .map(|_| {
                let mut s = TcpStream::connect(srv.addr).expect("connect");
                s.write_all(req.as_bytes()).expect("send");
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let mut c = TcpStream::connect(srv.addr).expect("connect");
        assert_eq!(ask(&mut c, srv.addr, "GET", "/healthz"), "", "refused");
        assert_eq!(srv.http.rejected_connections.load(Ordering::Relaxed), 1);
        assert_eq!(srv.http.shed_connections.load(Ordering::Relaxed), 0);
        // the busy ones get their (503) answers
        for s in &mut busy {
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut b = [0u8; 12];
            let n = s.read(&mut b).unwrap_or(0);
            assert!(String::from_utf8_lossy(&b[..n]).starts_with("HTTP/1.1 503"));
        }
    }

    #[test]
    fn slow_heads_cannot_lock_out_a_request() {
        let srv = start(Limits::default());
        // 200 clients each sending part of a head, well past the limit (64)
        let slow: Vec<TcpStream> = (0..200)
            .map(|_| {
                let mut s = TcpStream::connect(srv.addr).expect("connect");
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: a");
                s
            })
            .collect();
        let t0 = std::time::Instant::now();
        let mut s = TcpStream::connect(srv.addr).expect("connect");
        assert!(ask(&mut s, srv.addr, "GET", "/metrics").starts_with("http/1.1 200"));
        eprintln!("answered among 200 slow heads in {:?}", t0.elapsed());
        assert!(srv.http.shed_connections.load(Ordering::Relaxed) >= 200 - 64);
        drop(slow);
    }

    #[test]
    fn idle_and_unfinished_heads_are_cut_off() {
        let srv = start(Limits {
            header_timeout: Duration::from_millis(300),
            ..Limits::default()
        });
        let mut s = TcpStream::connect(srv.addr).expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHo")
            .expect("partial head");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let t0 = std::time::Instant::now();
        let mut b = Vec::new();
        let _ = s.read_to_end(&mut b);
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "closed by the server"
        );
        assert!(!String::from_utf8_lossy(&b).contains(" 200 "));
    }

    #[test]
    fn loopback_servers_accept_loopback_host_names_only() {
        let hosts = loopback_hosts("127.0.0.1:9477".parse().expect("addr")).expect("loopback");
        assert!(hosts.contains(&"localhost:9477".to_string()));
        assert!(hosts.contains(&"127.0.0.1:9477".to_string()));
        assert_eq!(loopback_hosts("0.0.0.0:9477".parse().expect("addr")), None);
        let srv = start(Limits::default());
        let mut s = TcpStream::connect(srv.addr).expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: rebind.example:80\r\n\r\n")
            .expect("send");
        let mut b = [0u8; 64];
        let n = s.read(&mut b).expect("answer");
        assert!(String::from_utf8_lossy(&b[..n]).starts_with("HTTP/1.1 421"));
    }
}
