//! Golden byte vectors: every message type of every version, packed by Python's `struct`
//! module from the protocol document's tables (`golden/make_vectors.py`). The codec must decode
//! each to the expected fields and encode those fields back to the same bytes.

use ttmem_legacy::{Message, MsgType, Version};

/// The fields `make_vectors.py` derives from the type byte.
fn expected(t: u8, v: Version) -> Message {
    let t64 = t as u64;
    let t32 = t as u32;
    let mut m = Message {
        msg_type: t,
        device_id: if t == 6 { -1 } else { t as i32 },
        size: 0x0102_0304_0506_0700 + t64,
        buffer_type: t % 5,
        process_id: 1000 + t as i32,
        buffer_id: 0x1111_0000_0000_0000 + t64,
        timestamp: 0x1700_0000_0000_0000 + t64,
        dram_allocated: 0x10 + t64,
        l1_allocated: 0x20 + t64,
        l1_small_allocated: 0x30 + t64,
        trace_allocated: 0x40 + t64,
        ..Message::default()
    };
    if v >= Version::P2 {
        m.total_dram_size = 0x70 + t64;
        m.total_l1_size = 0x80 + t64;
        m.arch_type = 2;
        m.num_dram_channels = 12;
        m.dram_size_per_channel = 0x4000_0000;
        m.l1_size_per_core = 1_499_136;
        m.is_available = 1;
        m.num_devices = 0x0900 + t32;
    }
    if v >= Version::P3 {
        m.cb_allocated = 0x50 + t64;
        m.kernel_allocated = 0x60 + t64;
    }
    if v == Version::P4 {
        m.ringbuffer_total_size = 0xA0 + t32;
        m.ringbuffer_used_bytes = 0xB0 + t32;
        m.ringbuffer_num_programs = 0xC0 + t32;
    }
    m
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn every_type_of_every_version_matches_its_golden_bytes() {
    let text = include_str!("golden/vectors.txt");
    let mut seen = 0;
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let mut parts = line.split_whitespace();
        let (v, name, hex) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let v: Version = v.parse().unwrap();
        let t = MsgType::ALL.iter().find(|t| t.name() == name).expect("type name");
        let bytes = unhex(hex);
        assert_eq!(bytes.len(), v.size(), "{line}");
        let want = expected(*t as u8, v);
        assert_eq!(Message::decode(&bytes, v), Some(want), "decode {v} {name}");
        assert_eq!(want.encode(v), bytes, "encode {v} {name}");
        seen += 1;
    }
    assert_eq!(seen, 48, "12 types x 4 versions");
}
