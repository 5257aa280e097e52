use super::*;

#[test]
fn round_trips_tag_and_length() {
    for (tag, len) in [
        (Tag(0), 0usize),
        (Tag::new(7, 12345), 4096),
        (Tag(u64::MAX), 1 << 30),
    ] {
        let h = Header { tag, len };
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    }
}

#[test]
fn encoding_is_little_endian_tag_then_length() {
    let bytes = Header {
        tag: Tag(0x0102),
        len: 0x0304,
    }
    .encode();
    assert_eq!(bytes[..2], [0x02, 0x01]);
    assert_eq!(bytes[8..10], [0x04, 0x03]);
    assert!(bytes[2..8].iter().chain(&bytes[10..]).all(|&b| b == 0));
}

#[test]
fn absurd_lengths_are_refused() {
    let mut bytes = [0u8; HEADER_LEN];
    bytes[8..].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
    assert!(Header::decode(&bytes).is_err());
    bytes[8..].copy_from_slice(&MAX_PAYLOAD.to_le_bytes());
    assert!(Header::decode(&bytes).is_ok());
}
