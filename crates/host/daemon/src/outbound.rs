//! The HTTP requests the daemon itself makes: the notifiers' POSTs to Alertmanager and
//! webhooks, and the dashboard's reads of other hosts' daemons. Plain `http://` over hyper's
//! one-connection client; every request is bounded by a timeout its caller gives.

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Incoming;

/// An `http://host:port/path` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `host:port` (port 80 when the URL names none).
    pub authority: String,
    /// The URL's path without its trailing `/` (empty for the root).
    pub path: String,
}

impl Target {
    /// Parses `url`, refusing anything but `http://` (TLS belongs to a proxy in front).
    pub fn parse(url: &str) -> Result<Target, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("url {url:?}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "url {url:?}: only http:// is supported (put a TLS proxy in front of a remote https endpoint)"
            ));
        }
        let authority = uri.authority().ok_or_else(|| format!("url {url:?} names no host"))?;
        if uri.query().is_some() {
            return Err(format!("url {url:?}: a query string has no place here"));
        }
        let authority = if authority.port().is_some() {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Target {
            authority,
            path: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// Sends `request` (its path is relative to the target's) and returns the answer's head
    /// with its body still to read; `timeout` bounds connecting and the head.
    async fn send(
        &self,
        request: hyper::http::request::Builder,
        suffix: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<hyper::Response<Incoming>, String> {
        let path = match format!("{}{suffix}", self.path) {
            p if p.is_empty() => "/".to_string(),
            p => p,
        };
        let attempt = async {
            let stream = tokio::net::TcpStream::connect(&self.authority)
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", self.authority))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("{}: {e}", self.authority))?;
            // The connection runs until the answer's body is read or dropped.
            tokio::spawn(conn);
            let request = request
                .uri(path.as_str())
                .header(hyper::header::HOST, self.authority.as_str())
                .header(hyper::header::USER_AGENT, concat!("ttmem/", env!("CARGO_PKG_VERSION")))
                .body(Full::new(bytes::Bytes::from(body)))
                .map_err(|e| e.to_string())?;
            sender
                .send_request(request)
                .await
                .map_err(|e| format!("{}: {e}", self.authority))
        };
        tokio::time::timeout(timeout, attempt).await.unwrap_or_else(|_| {
            Err(format!(
                "{} did not answer within {} s",
                self.authority,
                timeout.as_secs()
            ))
        })
    }

    /// POSTs JSON to the target's path followed by `suffix`; a 2xx is success, a 4xx is
    /// `refused:` (not worth retrying), anything else an error worth retrying.
    pub async fn post(&self, suffix: &str, body: Vec<u8>, timeout: Duration) -> Result<(), String> {
        let request = hyper::Request::post("/").header(hyper::header::CONTENT_TYPE, "application/json");
        let response = self.send(request, suffix, body, timeout).await?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_client_error() {
            Err(format!("refused: {} answered {status}", self.authority))
        } else {
            Err(format!("{} answered {status}", self.authority))
        }
    }

    /// GETs the target's path followed by `suffix` (which may carry a query), asking for
    /// `accept`; the answer comes back whatever its status, its body still to read.
    pub async fn get(
        &self,
        suffix: &str,
        accept: &str,
        timeout: Duration,
    ) -> Result<hyper::Response<Incoming>, String> {
        let request = hyper::Request::get("/").header(hyper::header::ACCEPT, accept);
        self.send(request, suffix, Vec::new(), timeout).await
    }
}

/// Checks that an answer is of the media type `expected` (parameters such as `charset`
/// aside); the error says what it was instead ("answered \"text/html\", not ...").
pub fn expect_type<B>(answer: &hyper::Response<B>, expected: &str) -> Result<(), String> {
    let content_type = answer
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.split(';').next().map(str::trim) == Some(expected) {
        Ok(())
    } else {
        Err(format!("answered {content_type:?}, not {expected}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_plain_http_with_a_port() {
        let t = Target::parse("http://localhost:9093/").unwrap();
        assert_eq!((t.authority.as_str(), t.path.as_str()), ("localhost:9093", ""));
        assert_eq!(Target::parse("http://am").unwrap().authority, "am:80");
        assert_eq!(Target::parse("http://10.0.0.2:9477/ttmem/").unwrap().path, "/ttmem");
        for bad in [
            "https://am:9093",
            "am:9093",
            "",
            "http://",
            "http://am/x?y=1",
            "ftp://am",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn an_answer_is_of_its_type_whatever_its_parameters() {
        let answer = |t: Option<&str>| {
            let mut r = hyper::Response::builder();
            if let Some(t) = t {
                r = r.header(hyper::header::CONTENT_TYPE, t);
            }
            r.body(()).unwrap()
        };
        assert!(expect_type(&answer(Some("application/json")), "application/json").is_ok());
        assert!(expect_type(&answer(Some("application/json; charset=utf-8")), "application/json").is_ok());
        let e = expect_type(&answer(Some("text/html")), "application/json").unwrap_err();
        assert_eq!(e, "answered \"text/html\", not application/json");
        assert!(expect_type(&answer(Some("text/event-streamer")), "text/event-stream").is_err());
        assert!(expect_type(&answer(None), "application/json").is_err());
    }
}
