//! A minimal HTTP/1.1 responder for `/metrics` and `/healthz`: one request
//! per connection, answered and closed. Scrapers and probes need nothing
//! more, and a daemon that governs media processes should not carry a web
//! framework for two read-only endpoints.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use super::health::{Health, HealthStatus};
use super::metrics::Metrics;

/// Longest request head accepted; ours are one line and a few headers.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// A client has this long to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A client has this long to take the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After answering, input still arriving is read and dropped for at most
/// this long before closing, so the kernel does not answer it with a reset
/// that could destroy the response before the client read it.
const LINGER: Duration = Duration::from_secs(1);
/// Connections served at once; more wait in the listen backlog, so a flood
/// costs the daemon neither memory nor file descriptors.
pub const MAX_CONNECTIONS: usize = 32;
/// Pause after an accept error such as EMFILE, which repeats at once until
/// something frees a descriptor: waiting avoids a busy loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(250);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// Listen on `addr`; the error names the address.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("listening for metrics on {addr}: {e}")))
}

/// Answer requests on `listener` forever.
pub async fn serve(listener: TcpListener, metrics: Metrics, health: Health) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A slot first, then a connection: beyond the limit, clients wait in
        // the kernel's backlog rather than as tasks here.
        let slot = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("the semaphore lives as long as this loop and is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                accept_failed(&e).await;
                continue;
            }
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &metrics, &health).await {
                tracing::debug!("metrics connection: {e}");
            }
            drop(slot);
        });
    }
}

async fn accept_failed(e: &io::Error) {
    // The client gave up between SYN and accept: its problem, not ours.
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        tracing::debug!("metrics listener: accept: {e}");
        return;
    }
    tracing::warn!("metrics listener: accept failed: {e}");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

/// One connection: read the head, answer, close.
async fn handle(mut stream: TcpStream, metrics: &Metrics, health: &Health) -> io::Result<()> {
    let response = match timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => Response::text(408, "request head not received in time\n"),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Head::Closed)) => return Ok(()),
        Ok(Ok(Head::TooLarge)) => Response::text(431, "request head larger than 8 KiB\n"),
        Ok(Ok(Head::Complete(head))) => match parse(&head) {
            Some(request) => route(&request, metrics, health).await,
            None => Response::text(400, "malformed request\n"),
        },
    };
    timeout(WRITE_TIMEOUT, async {
        stream.write_all(&response.bytes()).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client did not take the response"))??;
    linger(&mut stream).await;
    Ok(())
}

enum Head {
    Complete(Vec<u8>),
    TooLarge,
    /// The client closed before finishing its head: nothing to answer.
    Closed,
}

async fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        // Search only where the new bytes could complete the terminator.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        let end = head_end(&head[from..]).map(|end| from + end);
        if end.unwrap_or(head.len()) > MAX_HEAD_BYTES {
            return Ok(Head::TooLarge);
        }
        if let Some(end) = end {
            head.truncate(end);
            return Ok(Head::Complete(head));
        }
    }
}

/// Where the head ends: after the empty line (CRLF CRLF, or bare LF LF,
/// which RFC 9112 lets servers accept).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

struct Request<'a> {
    method: &'a str,
    path: &'a str,
}

/// The request line, `METHOD SP target SP HTTP/1.x`; `None` when malformed.
fn parse(head: &[u8]) -> Option<Request<'_>> {
    let head = std::str::from_utf8(head).ok()?;
    let line = head.lines().next()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let method_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    if parts.next().is_some() || !method_ok || !target.starts_with('/') || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return None;
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Some(Request { method, path })
}

async fn route(request: &Request<'_>, metrics: &Metrics, health: &Health) -> Response {
    let head_only = match request.method {
        "GET" => false,
        "HEAD" => true,
        _ if matches!(request.path, "/metrics" | "/healthz") => {
            return Response::text(405, "only GET and HEAD are allowed\n").allow("GET, HEAD");
        }
        _ => return Response::text(404, "not found\n"),
    };
    let response = match request.path {
        "/metrics" => scrape(metrics).await,
        "/healthz" => healthz(health),
        _ => Response::text(404, "not found\n"),
    };
    if head_only { response.without_body() } else { response }
}

/// Encoding reads cgroup files: keep it off the daemon's event loop.
async fn scrape(metrics: &Metrics) -> Response {
    let metrics = metrics.clone();
    match tokio::task::spawn_blocking(move || metrics.encode()).await {
        Ok(Ok(text)) => Response::new(200, OPENMETRICS, text.into_bytes()),
        Ok(Err(e)) => {
            tracing::warn!("encoding metrics: {e}");
            Response::text(500, "encoding metrics failed\n")
        }
        Err(e) => {
            tracing::warn!("encoding metrics: the encoding task failed: {e}");
            Response::text(500, "encoding metrics failed\n")
        }
    }
}

fn healthz(health: &Health) -> Response {
    let report = health.report();
    // Degraded still serves: a liveness probe must not restart a daemon
    // that only lost some events.
    let status = match report.status {
        HealthStatus::Healthy | HealthStatus::Degraded => 200,
        HealthStatus::Unhealthy => 503,
    };
    match serde_json::to_vec(&report) {
        Ok(mut body) => {
            body.push(b'\n');
            Response::new(status, JSON, body)
        }
        Err(e) => {
            tracing::warn!("encoding the health report: {e}");
            Response::text(500, "encoding the health report failed\n")
        }
    }
}

/// Read and drop what the client still sends, briefly, then let the caller close.
async fn linger(stream: &mut TcpStream) {
    let mut sink = [0u8; 1024];
    let _ = timeout(LINGER, async {
        // Ends at EOF or on an error: either way there is nothing to keep.
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

struct Response {
    status: u16,
    content_type: &'static str,
    allow: Option<&'static str>,
    /// The body's length, also when the body is left out (HEAD).
    length: usize,
    body: Vec<u8>,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
        Response {
            status,
            content_type,
            allow: None,
            length: body.len(),
            body,
        }
    }

    fn text(status: u16, body: &str) -> Response {
        Response::new(status, TEXT, body.as_bytes().to_vec())
    }

    fn allow(mut self, methods: &'static str) -> Response {
        self.allow = Some(methods);
        self
    }

    fn without_body(mut self) -> Response {
        self.body.clear();
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.length
        );
        if let Some(methods) = self.allow {
            head.push_str(&format!("Allow: {methods}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on an ephemeral loopback port, running on the test's runtime.
    async fn server(health: Health) -> SocketAddr {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Metrics::new();
        metrics.scan_failed();
        tokio::spawn(serve(listener, metrics, health));
        addr
    }

    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// Send `request` raw and read the whole reply (the server closes).
    async fn exchange(addr: SocketAddr, request: &[u8]) -> Reply {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut raw = Vec::new();
        timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
            .await
            .expect("the server answers and closes")
            .unwrap();
        parse_reply(&raw)
    }

    fn parse_reply(raw: &[u8]) -> Reply {
        let text = String::from_utf8(raw.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_owned(), v.to_owned())
            })
            .collect();
        Reply {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    async fn get(addr: SocketAddr, method: &str, path: &str) -> Reply {
        let request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n");
        exchange(addr, request.as_bytes()).await
    }

    #[tokio::test]
    async fn metrics_are_served_as_openmetrics() {
        let addr = server(Health::new()).await;
        let r = get(addr, "GET", "/metrics").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Type"), Some(OPENMETRICS));
        assert_eq!(r.header("Connection"), Some("close"));
        assert_eq!(r.header("Content-Length"), Some(r.body.len().to_string().as_str()));
        assert!(
            r.body.lines().any(|l| l == "ffrtmp_scan_failures_total 1"),
            "{}",
            r.body
        );
        assert!(r.body.ends_with("# EOF\n"));
        // A query string does not change the resource.
        assert_eq!(get(addr, "GET", "/metrics?x=1").await.status, 200);
    }

    #[tokio::test]
    async fn healthz_is_json_and_503_when_unhealthy() {
        let health = Health::new();
        let addr = server(health.clone()).await;
        let r = get(addr, "GET", "/healthz").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Type"), Some(JSON));
        let json: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(json["status"], "healthy");
        assert_eq!(json["reasons"], serde_json::json!([]));

        health.scan_failed("EIO");
        health.scan_failed("EIO");
        let r = get(addr, "GET", "/healthz").await;
        assert_eq!(r.status, 200, "degraded still answers 200");
        let json: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(json["status"], "degraded");

        health.source_failed("ring buffer gone");
        let r = get(addr, "GET", "/healthz").await;
        assert_eq!(r.status, 503);
        let json: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(json["status"], "unhealthy");
        assert_eq!(json["last_error"], "ring buffer gone");
    }

    #[tokio::test]
    async fn head_is_get_without_a_body() {
        let addr = server(Health::new()).await;
        let get_reply = get(addr, "GET", "/healthz").await;
        let r = get(addr, "HEAD", "/healthz").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "");
        assert_eq!(r.header("Content-Type"), Some(JSON));
        // The report's `since_seconds` moves between the two requests, so
        // the lengths may differ by a digit or two; the header is the length
        // of the body HEAD did not send.
        let head_len: usize = r.header("Content-Length").expect("a Content-Length").parse().unwrap();
        assert!(
            head_len.abs_diff(get_reply.body.len()) <= 3,
            "{head_len} vs {}",
            get_reply.body.len()
        );
        let r = get(addr, "HEAD", "/metrics").await;
        assert_eq!((r.status, r.body.as_str()), (200, ""));
    }

    #[tokio::test]
    async fn unknown_paths_methods_and_garbage_are_refused() {
        let addr = server(Health::new()).await;
        assert_eq!(get(addr, "GET", "/").await.status, 404);
        assert_eq!(get(addr, "GET", "/metricsx").await.status, 404);
        let r = get(addr, "POST", "/metrics").await;
        assert_eq!(r.status, 405);
        assert_eq!(r.header("Allow"), Some("GET, HEAD"));
        assert_eq!(get(addr, "DELETE", "/healthz").await.status, 405);
        assert_eq!(exchange(addr, b"hello\r\n\r\n").await.status, 400);
        assert_eq!(exchange(addr, b"GET /metrics HTTP/2.0\r\n\r\n").await.status, 400);
        assert_eq!(exchange(addr, b"GET metrics HTTP/1.1\r\n\r\n").await.status, 400);
        assert_eq!(exchange(addr, b"get /metrics HTTP/1.1\r\n\r\n").await.status, 400);
    }

    #[tokio::test]
    async fn an_oversize_head_is_refused() {
        let addr = server(Health::new()).await;
        let mut request = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
        request.resize(request.len() + MAX_HEAD_BYTES, b'a');
        let r = exchange(addr, &request).await;
        assert_eq!(r.status, 431);
        // Also when the terminator arrives, but too late.
        request.extend_from_slice(b"\r\n\r\n");
        assert_eq!(exchange(addr, &request).await.status, 431);
    }

    #[tokio::test]
    async fn a_stalled_client_does_not_block_others() {
        let addr = server(Health::new()).await;
        // Connected, sending nothing: its handler waits for the head.
        let _stalled = TcpStream::connect(addr).await.unwrap();
        let started = tokio::time::Instant::now();
        let r = timeout(Duration::from_secs(2), get(addr, "GET", "/healthz"))
            .await
            .expect("answered while the other client stalls");
        assert_eq!(r.status, 200);
        assert!(started.elapsed() < HEAD_TIMEOUT);
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_head_is_timed_out() {
        let addr = server(Health::new()).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
        let mut raw = Vec::new();
        timeout(HEAD_TIMEOUT + Duration::from_secs(5), stream.read_to_end(&mut raw))
            .await
            .expect("closed after the head timeout")
            .unwrap();
        assert_eq!(parse_reply(&raw).status, 408);
    }

    #[tokio::test]
    async fn bind_errors_name_the_address() {
        let taken = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = taken.local_addr().unwrap();
        let e = bind(addr).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    }

    #[test]
    fn head_end_finds_crlf_and_bare_lf() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nrest"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }
}
