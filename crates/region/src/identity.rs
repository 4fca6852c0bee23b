//! How a process is identified: writer and readers parse the same procfs text the same way,
//! so a region's identity and a reader's liveness check can never disagree. Pure parsing; the
//! callers read the files.

/// The start time (field 22, clock ticks since boot) from the text of `/proc/<pid>/stat`. The
/// command name in field 2 may hold spaces and parentheses, so fields are counted after the
/// last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// The 16 bytes of `/proc/sys/kernel/random/boot_id` (a UUID in text).
pub fn parse_boot_id(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
        assert_eq!(parse_start_time("1 (x) S 1"), None);
    }

    #[test]
    fn boot_id_parses_uuid_text() {
        let id = parse_boot_id("0123456789abcdef-0123-4567-89ab-cdef01234567\n");
        assert_eq!(id, None, "too many digits");
        let id = parse_boot_id("01234567-89ab-cdef-0123-456789abcdef\n").unwrap();
        assert_eq!(id[0], 0x01);
        assert_eq!(id[15], 0xef);
        assert_eq!(parse_boot_id("xyz"), None);
    }
}
