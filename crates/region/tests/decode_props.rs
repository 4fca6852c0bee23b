//! Property tests: no byte string makes a decoder panic, and mutated valid headers are either
//! refused or decode to a geometry that stays inside the claimed file.

use proptest::prelude::*;
use ttmem_region::decode::*;
use ttmem_region::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..6000), len in any::<u64>()) {
        let _ = decode_header(&bytes, len);
        let _ = decode_device(&bytes);
        let _ = decode_shard(&bytes);
        let _ = decode_cell(&bytes);
        let _ = decode_event(&bytes, len);
        let split = bytes.len().min(64);
        let _ = Strings::decode(&bytes[..split], &bytes[split..]);
    }

    #[test]
    fn random_bytes_behind_magic_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), HEADER_SIZE..HEADER_SIZE + 64), len in any::<u64>()) {
        bytes[..8].copy_from_slice(&MAGIC);
        bytes[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
        if let Ok(h) = decode_header(&bytes, len) {
            prop_assert!(h.geometry.region_size <= len);
            prop_assert!(h.num_devices <= h.geometry.max_devices);
            prop_assert!(h.shards_used <= h.geometry.max_shards);
        }
    }
}
