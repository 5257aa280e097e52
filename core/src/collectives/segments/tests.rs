//! Properties of the chunk and segment arithmetic.

use proptest::prelude::*;

use super::*;

/// Lengths that matter: empty, one element, a prime number of bytes, and huge.
fn len_strategy(elem: usize) -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(elem),
        Just(7919usize),
        Just(1_000_003usize),
        Just((1usize << 40) + 3 * elem),
        0usize..100_000,
    ]
}

proptest! {
    #[test]
    fn chunks_and_segments_cover_every_byte_once(
        elem in prop::sample::select(vec![1usize, 2, 4, 8]),
        len_pick in len_strategy(8),
        ranks in 1usize..=64,
        max_seg in prop::sample::select(vec![1usize, 3, 64, 4096, 1 << 20]),
    ) {
        // Whole elements only, as the collectives require.
        let len = len_pick / elem * elem;
        let chunks = split_chunks(len, elem, ranks);
        prop_assert_eq!(chunks.len(), ranks);
        let mut next = 0;
        let mut sizes = Vec::new();
        for c in &chunks {
            prop_assert_eq!(c.start, next);
            prop_assert_eq!(c.start % elem, 0);
            prop_assert_eq!(c.end % elem, 0);
            sizes.push(c.len());
            // Segments only for lengths small enough to enumerate.
            if len < 10_000_000 {
                let mut s_next = c.start;
                for s in split_segments(c.clone(), elem, max_seg) {
                    prop_assert_eq!(s.start, s_next);
                    prop_assert!(!s.is_empty());
                    prop_assert!(s.len() <= max_seg.max(elem));
                    prop_assert_eq!(s.len() % elem, 0);
                    s_next = s.end;
                }
                prop_assert_eq!(s_next, c.end);
            } else {
                let segs = split_segments(c.clone(), elem, max_seg.max(1 << 20));
                prop_assert_eq!(segs.len(), c.len().div_ceil(segment_bytes(elem, max_seg.max(1 << 20))));
            }
            next = c.end;
        }
        prop_assert_eq!(next, len);
        // Chunk sizes differ by at most one element, larger ones first.
        let max = *sizes.iter().max().unwrap();
        let min = *sizes.iter().min().unwrap();
        prop_assert!(max - min <= elem);
        prop_assert!(sizes.windows(2).all(|w| w[0] >= w[1]));
    }

    #[test]
    fn blocks_follow_sizes(sizes in prop::collection::vec(0usize..1000, 0..20)) {
        let blocks = blocks_from_sizes(&sizes);
        let mut next = 0;
        for (b, &n) in blocks.iter().zip(&sizes) {
            prop_assert_eq!(b.start, next);
            prop_assert_eq!(b.len(), n);
            next = b.end;
        }
        prop_assert_eq!(next, sizes.iter().sum::<usize>());
    }
}

#[test]
fn extra_elements_go_to_the_first_chunks() {
    // 10 f32 elements over 4 ranks: 3, 3, 2, 2 elements.
    assert_eq!(split_chunks(40, 4, 4), vec![0..12, 12..24, 24..32, 32..40]);
    // A trailing partial element stays with the last chunk.
    assert_eq!(split_chunks(9, 4, 2), vec![0..4, 4..9]);
    assert!(split_chunks(10, 1, 0).is_empty());
}

#[test]
fn segments_round_down_to_elements() {
    let segs: Vec<_> = split_segments(8..40, 8, 20).collect();
    assert_eq!(segs, vec![8..24, 24..40]);
    // A segment limit below one element still moves one element at a time.
    let segs: Vec<_> = split_segments(0..16, 8, 3).collect();
    assert_eq!(segs, vec![0..8, 8..16]);
    assert_eq!(split_segments(5..5, 4, 16).len(), 0);
}
