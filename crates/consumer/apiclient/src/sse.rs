//! The daemon's Server-Sent Events stream (`/api/v1/stream`), read as it comes: a blocking
//! iterator of events for scripts (the Python package's `Client.stream()`).

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use crate::{ApiError, Endpoint, Stream, connect, write_get};

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerEvent {
    /// Its `event:` name (`message` when none was given).
    pub event: String,
    /// Its `data:` lines, joined by line breaks.
    pub data: String,
}

/// An open stream.
pub struct EventStream {
    reader: BufReader<Box<dyn Stream>>,
    endpoint: Endpoint,
    chunked: bool,
    /// Decoded body bytes not yet split into lines.
    pending: Vec<u8>,
    ended: bool,
}

/// The longest line accepted (an `update` event of a large host is well under it).
const MAX_LINE: usize = 64 << 20;

/// Opens `path` (e.g. `/api/v1/stream`); each read waits at most `timeout` (the daemon sends a
/// keep-alive comment every few seconds, so a longer silence means it is gone).
pub fn open(endpoint: &Endpoint, path: &str, timeout: Duration) -> Result<EventStream, ApiError> {
    let mut s = connect(endpoint, timeout)?;
    let io = |source| ApiError::Io {
        endpoint: endpoint.clone(),
        source,
    };
    write_get(&mut s, endpoint, path, "text/event-stream", "").map_err(io)?;
    let mut reader = BufReader::new(s);
    let protocol = |why: String| ApiError::Protocol {
        endpoint: endpoint.clone(),
        why,
    };
    let mut status_line = String::new();
    reader.read_line(&mut status_line).map_err(io)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| protocol(format!("not an HTTP answer: {status_line:?}")))?;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(io)? == 0 {
            return Err(protocol("the answer ended in its headers".into()));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("transfer-encoding")
            && v.trim().eq_ignore_ascii_case("chunked")
        {
            chunked = true;
        }
    }
    let mut stream = EventStream {
        reader,
        endpoint: endpoint.clone(),
        chunked,
        pending: Vec::new(),
        ended: false,
    };
    if !(200..300).contains(&status) {
        let mut body = Vec::new();
        while stream.fill()? {
            body.append(&mut stream.pending);
            if body.len() > 1 << 20 {
                break;
            }
        }
        let reason = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(ApiError::Refused { status, reason });
    }
    Ok(stream)
}

impl EventStream {
    fn io(&self, source: std::io::Error) -> ApiError {
        ApiError::Io {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    /// Reads more of the body into `pending`; false at its end.
    fn fill(&mut self) -> Result<bool, ApiError> {
        if self.ended {
            return Ok(false);
        }
        if !self.chunked {
            let mut buf = [0u8; 8192];
            let n = self.reader.read(&mut buf).map_err(|e| self.io(e))?;
            self.pending.extend_from_slice(&buf[..n]);
            self.ended = n == 0;
            return Ok(n > 0);
        }
        let mut size_line = String::new();
        if self.reader.read_line(&mut size_line).map_err(|e| self.io(e))? == 0 {
            self.ended = true;
            return Ok(false);
        }
        let hex = size_line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(hex, 16).map_err(|_| ApiError::Protocol {
            endpoint: self.endpoint.clone(),
            why: format!("bad chunk size {size_line:?}"),
        })?;
        if size == 0 {
            self.ended = true;
            return Ok(false);
        }
        if self.pending.len() + size > MAX_LINE {
            return Err(ApiError::Protocol {
                endpoint: self.endpoint.clone(),
                why: "an event longer than 64 MiB".into(),
            });
        }
        let start = self.pending.len();
        self.pending.resize(start + size + 2, 0);
        let read = self.reader.read_exact(&mut self.pending[start..]);
        read.map_err(|e| self.io(e))?;
        self.pending.truncate(start + size);
        Ok(true)
    }

    /// The next line of the body, without its line break (None at the end).
    fn line(&mut self) -> Result<Option<String>, ApiError> {
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.pending.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// The next event (None: the daemon closed the stream). Comments are skipped.
    pub fn next_event(&mut self) -> Result<Option<ServerEvent>, ApiError> {
        let mut event = String::new();
        let mut data: Option<String> = None;
        while let Some(line) = self.line()? {
            if line.is_empty() {
                if let Some(data) = data.take() {
                    let event = if event.is_empty() { "message".to_string() } else { event };
                    return Ok(Some(ServerEvent { event, data }));
                }
                event.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event = value.to_string(),
                "data" => match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_string()),
                },
                _ => {}
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixListener;

    /// A server that answers one request with `answer`, then closes.
    fn serve(answer: &'static [u8]) -> (tempfile::TempDir, Endpoint) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // The whole request first (it may come in several writes): closing on a part of it
            // would break the client's next write, not test what it reads.
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            s.write_all(answer).unwrap();
        });
        (dir, Endpoint::Unix(path))
    }

    #[test]
    fn chunked_events_split_anywhere_are_put_back_together() {
        // The body cut in chunks across field names and line breaks.
        let parts = [
            ": hi\n\n",
            "event: upda",
            "te\ndata: {\"a\":1}\ndata: more\n",
            "\n",
            "data: plain\r\n\r\n",
        ];
        let mut answer =
            String::from("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
        for p in parts {
            answer.push_str(&format!("{:x}\r\n{p}\r\n", p.len()));
        }
        answer.push_str("0\r\n\r\n");
        let (_d, ep) = serve(Box::leak(answer.into_bytes().into_boxed_slice()));
        let mut s = open(&ep, "/api/v1/stream", Duration::from_secs(5)).unwrap();
        assert_eq!(
            s.next_event().unwrap(),
            Some(ServerEvent {
                event: "update".into(),
                data: "{\"a\":1}\nmore".into()
            })
        );
        assert_eq!(
            s.next_event().unwrap(),
            Some(ServerEvent {
                event: "message".into(),
                data: "plain".into()
            })
        );
        assert_eq!(s.next_event().unwrap(), None);
    }

    #[test]
    fn a_refusal_carries_the_daemons_reason() {
        let (_d, ep) = serve(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 17\r\n\r\n{\"error\":\"nope\"}\n");
        match open(&ep, "/api/v1/stream", Duration::from_secs(5)) {
            Err(ApiError::Refused { status: 403, reason }) => assert_eq!(reason, "nope"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened"),
        }
    }

    #[test]
    fn a_bad_chunk_size_is_an_error_not_a_panic() {
        let (_d, ep) = serve(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n");
        let mut s = open(&ep, "/api/v1/stream", Duration::from_secs(5)).unwrap();
        assert!(matches!(s.next_event(), Err(ApiError::Protocol { .. })));
    }
}
