//! The body of the fuzz target (`fuzz/fuzz_targets/stream.rs`) and of the property tests: any
//! byte stream, split anywhere, framed and applied, must leave a consistent book and never
//! panic.

use crate::{Book, Detection, Framer};

/// Feeds `data` to a fresh framer in pieces cut at `cuts` (offsets, any order, out-of-range
/// ones ignored), applies every framed message to a book and checks the book. Returns the
/// messages framed, or the first inconsistency found.
pub fn feed(data: &[u8], cuts: &[usize]) -> Result<u64, String> {
    let mut cuts: Vec<usize> = cuts.iter().copied().filter(|&c| c < data.len()).collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts.push(data.len());
    let mut framer = Framer::new(None);
    let mut book = Book::new(1 << 16);
    let mut from = 0;
    for (i, &to) in cuts.iter().enumerate() {
        if framer.push(&data[from..to]).is_err() {
            break;
        }
        from = to;
        let quiet = i + 1 == cuts.len();
        match framer.detect(quiet) {
            Ok(Detection::Decided(_)) => {}
            Ok(Detection::NeedMore) => continue,
            Err(_) => break, // the connection would be closed
        }
        loop {
            match framer.next_message() {
                Ok(Some(m)) => {
                    let _ = book.apply(&m);
                }
                Ok(None) => break,
                Err(_) => return book.check_consistency().map(|()| framer.messages()),
            }
        }
    }
    book.check_consistency().map(|()| framer.messages())
}
