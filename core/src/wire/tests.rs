//! Wire tests: round trips, version check, and total decoding of garbage.

use proptest::prelude::*;

use super::{VERSION, WireError, decode_down, decode_up, encode_down, encode_up};
use crate::coordinator::{
    CacheInsert, DownItem, DownMsg, Knobs, Request, Response, ResponseError, TensorInfo, UpItem,
    UpMsg,
};
use crate::types::{CollectiveKind, DataType, ReduceOp};

fn sample_up() -> UpMsg {
    let mut q = Request::new(
        "layer.0/w",
        CollectiveKind::Alltoall,
        DataType::Bf16,
        vec![6, 2],
    );
    q.splits = vec![1, 5];
    q.prescale = 0.25;
    UpMsg {
        epoch: 300,
        items: vec![
            UpItem::Cached(7),
            UpItem::Full(q),
            UpItem::Full(Request::join()),
            UpItem::Group {
                id: u64::MAX,
                items: vec![
                    UpItem::Cached(9),
                    UpItem::Full(Request::new(
                        "g.1",
                        CollectiveKind::Allreduce,
                        DataType::F32,
                        vec![4],
                    )),
                ],
            },
        ],
        shutdown: true,
    }
}

fn sample_down() -> DownMsg {
    let mut info = TensorInfo::new("g", vec![3, 4]);
    info.first_dims = vec![3, 0, 2];
    let ok = Response {
        kind: CollectiveKind::Allgather,
        dtype: DataType::I64,
        op: ReduceOp::Max,
        root: 2,
        prescale: 1.0,
        postscale: f64::MIN_POSITIVE,
        tensors: vec![info],
        error: None,
    };
    let bad = Response {
        error: Some(ResponseError {
            field: "shape".into(),
            message: "tensor 'g': shape differs".into(),
            ranks: vec![1, 2],
        }),
        ..ok.clone()
    };
    DownMsg {
        seq: u64::MAX,
        groups: vec![
            vec![DownItem::Cached(0), DownItem::Cached(u32::MAX)],
            vec![DownItem::Full {
                response: ok,
                cache: Some(CacheInsert {
                    id: 9,
                    evict: vec![1, 2],
                }),
            }],
            vec![DownItem::Full {
                response: bad,
                cache: None,
            }],
        ],
        shutdown: false,
        knobs: Some(Knobs {
            fusion_threshold: 1 << 20,
            segment_bytes: 4096,
            cache_enabled: false,
        }),
    }
}

#[test]
fn round_trips() {
    let up = sample_up();
    let bytes = encode_up(&up);
    assert_eq!(bytes[0], VERSION);
    assert_eq!(decode_up(&bytes), Ok(up));
    let down = sample_down();
    assert_eq!(decode_down(&encode_down(&down)), Ok(down));
    assert_eq!(
        decode_up(&encode_up(&UpMsg::default())),
        Ok(UpMsg::default())
    );
}

#[test]
fn cached_messages_are_tiny() {
    let up = UpMsg {
        epoch: 5,
        items: vec![UpItem::Cached(3)],
        shutdown: false,
    };
    assert_eq!(
        encode_up(&up).len(),
        6,
        "version, epoch, count, tag, id, flag"
    );
    let down = DownMsg {
        seq: 5,
        groups: vec![vec![DownItem::Cached(3)]],
        shutdown: false,
        knobs: None,
    };
    // version, seq, group count, item count, tag, id, shutdown, no knobs.
    assert_eq!(encode_down(&down).len(), 8);
}

#[test]
fn wrong_version_empty_and_trailing_are_errors() {
    let mut bytes = encode_up(&sample_up());
    bytes[0] = VERSION + 1;
    let err = decode_up(&bytes).unwrap_err();
    assert_eq!(
        err,
        WireError::Version {
            got: VERSION + 1,
            expected: VERSION
        }
    );
    assert!(err.to_string().contains("same hora version"));
    assert_eq!(decode_down(&[]), Err(WireError::Empty));
    let mut bytes = encode_down(&sample_down());
    bytes.push(0);
    assert_eq!(decode_down(&bytes), Err(WireError::Trailing(1)));
    let bytes = encode_down(&sample_down());
    assert!(matches!(
        decode_down(&bytes[..bytes.len() - 1]),
        Err(WireError::Malformed(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn garbage_never_panics(mut bytes in prop::collection::vec(any::<u8>(), 0..200), versioned in any::<bool>()) {
        if versioned && !bytes.is_empty() {
            bytes[0] = VERSION;
        }
        let _ = decode_up(&bytes);
        let _ = decode_down(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        for mut bytes in [encode_up(&sample_up()), encode_down(&sample_down())] {
            let i = pos.index(bytes.len());
            bytes[i] = byte;
            bytes.truncate(1 + cut.index(bytes.len()));
            let _ = decode_up(&bytes);
            let _ = decode_down(&bytes);
        }
    }
}
