//! Reading keys from the terminal ourselves.
//!
//! crossterm's reader spins forever once its terminal is hung up (a read that returns end of
//! file never leaves its loop), and a hang-up can happen while it waits, so `ttmem top` polls
//! standard input itself: a hang-up, end of file or read error means the terminal is gone and
//! the program ends. The few keys `top` uses are decoded here.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What waiting for input brought.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// Keys (possibly none: the wait timed out).
    Keys(Vec<KeyEvent>),
    /// The terminal is gone.
    Gone,
}

/// Waits up to `timeout_ms` for keys on standard input.
pub fn wait(timeout_ms: i32) -> Input {
    let mut p = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if n < 0 {
        // Interrupted by a signal: the caller checks its flags and comes back.
        return Input::Keys(Vec::new());
    }
    if n == 0 {
        return Input::Keys(Vec::new());
    }
    if p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 && p.revents & libc::POLLIN == 0 {
        return Input::Gone;
    }
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length.
    let r = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
    if r <= 0 {
        return Input::Gone; // end of file or an error: the terminal went away
    }
    Input::Keys(decode(&buf[..r as usize]))
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

/// Decodes terminal input bytes into keys (arrows, PgUp/PgDn, F1, Enter, Esc, Backspace,
/// Ctrl-C, text); unknown sequences are dropped.
pub fn decode(bytes: &[u8]) -> Vec<KeyEvent> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let rest = &bytes[i..];
        let (k, used) = match b {
            0x1b => {
                const SEQS: [(&[u8], KeyCode); 10] = [
                    (b"\x1b[A", KeyCode::Up),
                    (b"\x1b[B", KeyCode::Down),
                    (b"\x1b[C", KeyCode::Right),
                    (b"\x1b[D", KeyCode::Left),
                    (b"\x1bOA", KeyCode::Up),
                    (b"\x1bOB", KeyCode::Down),
                    (b"\x1b[5~", KeyCode::PageUp),
                    (b"\x1b[6~", KeyCode::PageDown),
                    (b"\x1bOP", KeyCode::F(1)),
                    (b"\x1b[11~", KeyCode::F(1)),
                ];
                match SEQS.iter().find(|(s, _)| rest.starts_with(s)) {
                    Some((s, code)) => (Some(key(*code)), s.len()),
                    None if rest.len() >= 2 && (rest[1] == b'[' || rest[1] == b'O') => {
                        // An unknown sequence: skip to its final byte.
                        let end = rest[2..]
                            .iter()
                            .position(|c| (0x40..=0x7e).contains(c))
                            .map(|p| p + 3)
                            .unwrap_or(rest.len());
                        (None, end)
                    }
                    None => (Some(key(KeyCode::Esc)), 1),
                }
            }
            b'\r' | b'\n' => (Some(key(KeyCode::Enter)), 1),
            0x7f | 0x08 => (Some(key(KeyCode::Backspace)), 1),
            0x03 => (Some(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), 1),
            0x00..=0x1f => (None, 1),
            _ => {
                let len = match b {
                    0xc0..=0xdf => 2,
                    0xe0..=0xef => 3,
                    0xf0..=0xf7 => 4,
                    _ => 1,
                };
                match std::str::from_utf8(&rest[..len.min(rest.len())])
                    .ok()
                    .and_then(|s| s.chars().next())
                {
                    Some(c) => (Some(key(KeyCode::Char(c))), c.len_utf8()),
                    None => (None, 1),
                }
            }
        };
        if let Some(k) = k {
            out.push(k);
        }
        i += used.max(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_bytes_decode_to_keys() {
        let codes = |b: &[u8]| decode(b).into_iter().map(|k| k.code).collect::<Vec<_>>();
        assert_eq!(codes(b"q"), [KeyCode::Char('q')]);
        assert_eq!(
            codes(b"\x1b[A\x1b[B\x1bOB"),
            [KeyCode::Up, KeyCode::Down, KeyCode::Down]
        );
        assert_eq!(
            codes(b"\x1b[5~\x1b[6~\r\x7f"),
            [KeyCode::PageUp, KeyCode::PageDown, KeyCode::Enter, KeyCode::Backspace]
        );
        assert_eq!(codes(b"\x1b"), [KeyCode::Esc]);
        assert_eq!(codes(b"\x1bOP"), [KeyCode::F(1)]);
        assert_eq!(
            codes(b"\x1b[1;5Cx"),
            [KeyCode::Char('x')],
            "unknown sequences are skipped whole"
        );
        assert_eq!(codes("é/".as_bytes()), [KeyCode::Char('é'), KeyCode::Char('/')]);
        assert_eq!(decode(b"\x03")[0].modifiers, KeyModifiers::CONTROL);
        assert!(decode(b"\x01\xff").iter().all(|k| k.code != KeyCode::Enter));
    }
}
