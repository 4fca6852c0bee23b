//! Property tests: whatever bytes a client sends, split however the stream splits them, the
//! framer and the book never panic and the book's counters equal its live keys.

use proptest::prelude::*;
use ttmem_legacy::fuzzing::feed;
use ttmem_legacy::{Message, MsgType, Version};

/// A plausible message: mostly valid, sometimes out of range.
fn message() -> impl Strategy<Value = Message> {
    (
        prop::sample::select(vec![1u8, 1, 1, 2, 2, 2, 3, 5, 6, 8, 9, 10, 11, 12, 4, 7]),
        prop_oneof![8 => 0i32..4, 1 => -2i32..2000],
        prop_oneof![8 => 0u64..1 << 30, 1 => any::<u64>()],
        0u8..7,
        0u64..24,
    )
        .prop_map(|(t, device_id, size, buffer_type, buffer_id)| Message {
            msg_type: t,
            device_id,
            size,
            buffer_type,
            buffer_id,
            ..Message::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_break_the_book(data in prop::collection::vec(any::<u8>(), 0..2048),
                                          cuts in prop::collection::vec(0usize..2048, 0..8)) {
        prop_assert!(feed(&data, &cuts).is_ok());
    }

    #[test]
    fn valid_streams_stay_consistent_under_any_split(
        v in prop::sample::select(Version::ALL.to_vec()),
        msgs in prop::collection::vec(message(), 1..200),
        cuts in prop::collection::vec(0usize..30_000, 0..8),
    ) {
        let mut data = Vec::new();
        for m in &msgs {
            m.encode_into(v, &mut data);
        }
        let framed = feed(&data, &cuts);
        prop_assert!(framed.is_ok(), "{framed:?}");
    }

    #[test]
    fn corrupted_streams_stay_consistent(
        v in prop::sample::select(Version::ALL.to_vec()),
        msgs in prop::collection::vec(message(), 1..100),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cuts in prop::collection::vec(0usize..20_000, 0..4),
    ) {
        let mut data = Vec::new();
        for m in &msgs {
            m.encode_into(v, &mut data);
        }
        for (i, b) in flips {
            let at = i.index(data.len());
            data[at] = b;
        }
        prop_assert!(feed(&data, &cuts).is_ok());
    }
}

/// Every message of a clean stream of requests is framed, whatever its version.
#[test]
fn clean_request_streams_frame_completely() {
    for v in Version::ALL {
        let mut data = Vec::new();
        for id in 0..50u64 {
            Message {
                msg_type: MsgType::Alloc as u8,
                device_id: 0,
                size: 4096,
                buffer_type: 0,
                buffer_id: id,
                ..Message::default()
            }
            .encode_into(v, &mut data);
        }
        Message::request(MsgType::Query, 0).encode_into(v, &mut data);
        assert_eq!(feed(&data, &[]), Ok(51), "{v}");
    }
}
