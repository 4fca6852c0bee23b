//! Any byte stream, split at the offsets the first bytes choose, framed and applied: no panic,
//! and the book's counters equal its live keys.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first four bytes choose up to four split points; the rest is the stream.
    let (cuts, stream) = data.split_at(data.len().min(4));
    let cuts: Vec<usize> = cuts.iter().map(|&c| c as usize * 7).collect();
    if let Err(e) = ttmem_legacy::fuzzing::feed(stream, &cuts) {
        panic!("inconsistent book: {e}");
    }
});
