//! Any bytes as a region file: the header decodes or is refused, and every structure its
//! geometry places inside the bytes decodes or is refused, without a panic or an allocation
//! sized by an unchecked field. The decoders also take the raw bytes directly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ttmem_region::decode;
use ttmem_region::{COUNTER_CELL_SIZE, DEVICE_ENTRY_SIZE, EVENT_SIZE, SHARD_HEADER_SIZE, STRINGS_HEADER_SIZE};

fn at(data: &[u8], offset: u64, len: usize) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    data.get(start..start.checked_add(len)?)
}

fuzz_target!(|data: &[u8]| {
    // The same bytes, each decoder on its own.
    let _ = decode::decode_device(data);
    let _ = decode::decode_shard(data);
    let _ = decode::decode_cell(data);
    let _ = decode::decode_event(data, data.len() as u64);
    let _ = decode::event_seq(data);
    let (entries, used) = decode::string_entries(data, 7);
    assert!(used <= data.len() && entries.len() <= data.len());
    let _ = decode::Strings::decode(data, data);

    // As a whole region, the file being exactly these bytes (or claiming to be longer).
    for file_len in [data.len() as u64, u64::MAX] {
        let Ok(h) = decode::decode_header(data, file_len) else { continue };
        let g = h.geometry;
        assert!(h.num_devices <= g.max_devices);
        for i in 0..g.max_devices.min(h.num_devices.saturating_add(1)) {
            if let Some(b) = at(data, g.device_offset(i), DEVICE_ENTRY_SIZE) {
                let _ = decode::decode_device(b);
            }
        }
        for s in 0..g.max_shards.min(64) {
            if let Some(b) = at(data, g.shard_offset(s), SHARD_HEADER_SIZE) {
                let _ = decode::decode_shard(b);
            }
            if let Some(b) = at(data, g.shard_counters_offset(s), COUNTER_CELL_SIZE) {
                let _ = decode::decode_cell(b);
            }
            for index in 0..4 {
                if let Some(b) = at(data, g.event_offset(s, index), EVENT_SIZE) {
                    let _ = decode::decode_event(b, index);
                }
            }
        }
        if let (Some(head), Some(strings)) = (
            at(data, g.strings_offset, STRINGS_HEADER_SIZE),
            data.get(usize::try_from(g.strings_data_offset()).unwrap_or(usize::MAX).min(data.len())..),
        ) {
            let _ = decode::Strings::decode(head, strings);
        }
    }
});
