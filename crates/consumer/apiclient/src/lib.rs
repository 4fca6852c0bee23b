//! A small blocking client for the daemon's API: one `GET`, JSON back.
//!
//! The API is local (a Unix socket or loopback TCP) and answers small JSON documents, so a
//! request is `GET path HTTP/1.1` with `Connection: close` and the answer is read to the end.
//! Chunked bodies are decoded. Every failure is an [`ApiError`] that says which end failed.

#![deny(missing_docs)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;

pub mod source;
pub mod sse;

/// Where the daemon listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket path.
    Unix(PathBuf),
    /// `host:port` over TCP.
    Tcp(String),
}

impl Endpoint {
    /// The endpoint a reader asks: `url` if given, else `socket` (a flag, or
    /// `TTMEM_API_SOCKET`), else the default socket. The flag says whether the user named it:
    /// a named daemon must answer, while the default one may be absent.
    pub fn resolve(url: Option<&str>, socket: Option<&std::path::Path>) -> Result<(Endpoint, bool), ApiError> {
        match (url, socket) {
            (Some(url), _) => Ok((Endpoint::parse(url)?, true)),
            (None, Some(p)) => Ok((Endpoint::Unix(p.into()), true)),
            (None, None) => Ok((Endpoint::Unix(Endpoint::default_socket()), false)),
        }
    }

    /// The daemon's default API socket for this user ([`ttmem_model::default_api_socket`]).
    pub fn default_socket() -> PathBuf {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        ttmem_model::default_api_socket(uid, &|k| std::env::var(k).ok())
    }

    /// From a URL: `http://HOST:PORT[/...]`, `unix:/path`, or a bare socket path.
    pub fn parse(url: &str) -> Result<Self, ApiError> {
        if let Some(rest) = url.strip_prefix("http://") {
            let host = rest.split('/').next().unwrap_or_default();
            if host.is_empty() {
                return Err(ApiError::BadUrl(url.into()));
            }
            let host = if host.contains(':') {
                host.to_string()
            } else {
                format!("{host}:80")
            };
            Ok(Endpoint::Tcp(host))
        } else if let Some(path) = url.strip_prefix("unix:") {
            Ok(Endpoint::Unix(path.into()))
        } else if url.starts_with('/') {
            Ok(Endpoint::Unix(url.into()))
        } else {
            Err(ApiError::BadUrl(url.into()))
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(h) => write!(f, "http://{h}"),
        }
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Nothing listens there (no daemon).
    #[error("no ttmem daemon at {0}")]
    NotRunning(Endpoint),
    /// The connection or transfer failed.
    #[error("talking to the daemon at {endpoint} failed: {source}")]
    Io {
        /// Where.
        endpoint: Endpoint,
        /// Cause.
        source: std::io::Error,
    },
    /// The answer is not HTTP or not the JSON expected.
    #[error("the daemon at {endpoint} answered something unexpected: {why}")]
    Protocol {
        /// Where.
        endpoint: Endpoint,
        /// What.
        why: String,
    },
    /// The daemon answered with an error.
    #[error("the daemon refused: {reason} (HTTP {status})")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its `error` text.
        reason: String,
    },
    /// The URL is not one this client speaks.
    #[error("unsupported daemon URL {0:?} (use http://HOST:PORT or unix:/path)")]
    BadUrl(String),
}

/// A connected socket of either kind.
trait Stream: Read + Write + Send + Sync {
    /// Bounds every read and write, so a stalled daemon cannot hang a monitor.
    fn set_timeouts(&self, timeout: Duration) -> std::io::Result<()>;
}

impl Stream for UnixStream {
    fn set_timeouts(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

impl Stream for std::net::TcpStream {
    fn set_timeouts(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Box<dyn Stream>, ApiError> {
    let io = |source| ApiError::Io {
        endpoint: endpoint.clone(),
        source,
    };
    let absent = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
        )
    };
    let refused = |e: std::io::Error| {
        if absent(&e) {
            ApiError::NotRunning(endpoint.clone())
        } else {
            io(e)
        }
    };
    let stream: Box<dyn Stream> = match endpoint {
        Endpoint::Unix(p) => Box::new(UnixStream::connect(p).map_err(refused)?),
        Endpoint::Tcp(h) => {
            use std::net::ToSocketAddrs;
            let addr = h
                .to_socket_addrs()
                .map_err(io)?
                .next()
                .ok_or_else(|| ApiError::BadUrl(h.clone()))?;
            Box::new(std::net::TcpStream::connect_timeout(&addr, timeout).map_err(refused)?)
        }
    };
    stream.set_timeouts(timeout).map_err(io)?;
    Ok(stream)
}

/// `GET path`; returns the status and body.
pub fn get(endpoint: &Endpoint, path: &str) -> Result<(u16, Vec<u8>), ApiError> {
    get_conditional(endpoint, path, None).map(|(status, _, body)| (status, body))
}

/// `GET path` with `If-None-Match: etag` when given; returns the status, the answer's `ETag`
/// and the body.
pub fn get_conditional(
    endpoint: &Endpoint,
    path: &str,
    etag: Option<&str>,
) -> Result<(u16, Option<String>, Vec<u8>), ApiError> {
    let mut s = connect(endpoint, Duration::from_secs(10))?;
    let io = |source| ApiError::Io {
        endpoint: endpoint.clone(),
        source,
    };
    let condition = etag.map(|e| format!("If-None-Match: {e}\r\n")).unwrap_or_default();
    write_get(&mut s, endpoint, path, "application/json", &condition).map_err(io)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(io)?;
    let (status, body) = parse_response(&raw).map_err(|why| ApiError::Protocol {
        endpoint: endpoint.clone(),
        why,
    })?;
    Ok((status, header(&raw, "etag"), body))
}

/// Writes `GET path` with the host, `Accept`, any `extra` header lines, and the API token when
/// one is set; the answer ends the connection.
fn write_get(s: &mut dyn Write, endpoint: &Endpoint, path: &str, accept: &str, extra: &str) -> std::io::Result<()> {
    let host = match endpoint {
        Endpoint::Tcp(h) => h.as_str(),
        Endpoint::Unix(_) => "localhost",
    };
    let auth = token()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: {accept}\r\n{extra}{auth}Connection: close\r\n\r\n"
    )
}

/// The variable that holds the daemon's API token, which grants a TCP reader the detail the
/// Unix socket gives each user for their own processes (see the daemon's `api_token_file`).
pub const ENV_API_TOKEN: &str = "TTMEM_API_TOKEN";

/// The API token to present, if one is set (a token with a line break is not sent).
fn token() -> Option<String> {
    std::env::var(ENV_API_TOKEN)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty() && !t.contains(['\r', '\n']))
}

/// A header's value from a raw response (first match, any case).
fn header(raw: &[u8], name: &str) -> Option<String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    std::str::from_utf8(&raw[..end])
        .ok()?
        .split("\r\n")
        .skip(1)
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
}

/// The answer to a conditional request.
#[derive(Debug)]
pub enum Conditional<T> {
    /// Unchanged since the ETag given.
    NotModified,
    /// New content, with its ETag.
    Changed(T, Option<String>),
}

/// `GET path` as JSON, unless it is unchanged since `etag`.
pub fn get_json_if_changed<T: DeserializeOwned>(
    endpoint: &Endpoint,
    path: &str,
    etag: Option<&str>,
) -> Result<Conditional<T>, ApiError> {
    let (status, tag, body) = get_conditional(endpoint, path, etag)?;
    if status == 304 {
        return Ok(Conditional::NotModified);
    }
    Ok(Conditional::Changed(decode(endpoint, status, &body)?, tag))
}

fn decode<T: DeserializeOwned>(endpoint: &Endpoint, status: u16, body: &[u8]) -> Result<T, ApiError> {
    if !(200..300).contains(&status) {
        let reason = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        return Err(ApiError::Refused { status, reason });
    }
    serde_json::from_slice(body).map_err(|e| ApiError::Protocol {
        endpoint: endpoint.clone(),
        why: e.to_string(),
    })
}

/// Splits a raw HTTP/1.1 response into status and (de-chunked) body.
pub fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "headers are not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = &raw[split + 4..];
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&rest[..eol]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size")?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok((status, out));
        }
        if rest.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// `GET path` and decode the JSON answer; an error status becomes [`ApiError::Refused`] with
/// the daemon's reason.
pub fn get_json<T: DeserializeOwned>(endpoint: &Endpoint, path: &str) -> Result<T, ApiError> {
    let (status, body) = get(endpoint, path)?;
    decode(endpoint, status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (200, b"{}".to_vec()));
        assert_eq!(
            header(b"HTTP/1.1 200 OK\r\nETag: \"7-t\"\r\n\r\n{}", "etag").as_deref(),
            Some("\"7-t\"")
        );
        assert_eq!(header(plain, "etag"), None);
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n5;x=1\r\n\":1}\n\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (404, b"{\"a\":1}\n".to_vec()));
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nff\r\nab").is_err());
    }

    #[test]
    fn endpoints_parse_and_a_missing_daemon_is_named() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:9477/x").unwrap(),
            Endpoint::Tcp("127.0.0.1:9477".into())
        );
        assert_eq!(
            Endpoint::parse("http://localhost").unwrap(),
            Endpoint::Tcp("localhost:80".into())
        );
        assert_eq!(
            Endpoint::parse("unix:/run/a.sock").unwrap(),
            Endpoint::Unix("/run/a.sock".into())
        );
        assert!(matches!(Endpoint::parse("ftp://x"), Err(ApiError::BadUrl(_))));
        let e = get(&Endpoint::Unix("/nonexistent/ttmem.sock".into()), "/").unwrap_err();
        assert!(matches!(e, ApiError::NotRunning(_)), "{e}");
        assert_eq!(e.to_string(), "no ttmem daemon at unix:/nonexistent/ttmem.sock");
    }
}
