use super::*;

fn hs(host: &str, slots: u32) -> HostSlots {
    HostSlots {
        host: host.into(),
        slots,
    }
}

#[test]
fn parses_hosts_and_slots() {
    assert_eq!(parse("localhost:4").unwrap(), vec![hs("localhost", 4)]);
    assert_eq!(parse("a:2, b").unwrap(), vec![hs("a", 2), hs("b", 1)]);
    assert_eq!(parse("[::1]:3").unwrap(), vec![hs("::1", 3)]);
    for bad in ["", "a:0", "a:x", "a,,b", ":2", "a:-1"] {
        assert!(
            matches!(parse(bad), Err(HostsError::Syntax(_))),
            "{bad:?} parsed"
        );
    }
}

#[test]
fn hostfiles_parse_with_comments_and_name_bad_lines() {
    let text = "# cluster\n\nnode1 slots=2\n  node2   slots=1  # gpu box\nnode3:3\nnode4\n";
    assert_eq!(
        parse_hostfile("h", text).unwrap(),
        vec![
            hs("node1", 2),
            hs("node2", 1),
            hs("node3", 3),
            hs("node4", 1)
        ]
    );
    let e = parse_hostfile("hosts.txt", "a slots=1\nb slots=zero\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "hosts.txt:2: `zero` is not a positive slot count"
    );
    let e = parse_hostfile("f", "a gpus=2\n").unwrap_err();
    assert!(
        e.to_string().starts_with("f:1: unknown field `gpus=2`"),
        "{e}"
    );
    assert!(parse_hostfile("f", "# nothing\n").is_err());
}

#[test]
fn local_names_are_local_and_others_are_not() {
    for h in [
        "localhost",
        "LOCALHOST",
        "127.0.0.1",
        "::1",
        "node7",
        "node7.cluster",
    ] {
        assert!(is_local(h, Some("node7")), "{h}");
    }
    assert!(is_local("node7", Some("node7.cluster")));
    for h in ["node8", "10.0.0.1", "example.com"] {
        assert!(!is_local(h, Some("node7")), "{h}");
    }
}

#[test]
fn local_entries_merge_and_too_few_slots_are_refused() {
    let m = merge(
        &[
            hs("localhost", 1),
            hs("b", 1),
            hs("127.0.0.1", 2),
            hs("b", 2),
        ],
        Some("me"),
    );
    assert_eq!(m, vec![hs("localhost", 3), hs("b", 3)]);
    let e = assign(&[hs("localhost", 1), hs("b", 2)], 4).unwrap_err();
    assert_eq!(e, HostsError::TooFewSlots { slots: 3, np: 4 });
}

#[test]
fn uneven_slots_get_horovod_local_and_cross_ranks() {
    // a:2, b:1, c:3 with np=5 → a gets 0,1; b gets 2; c gets 3,4.
    let s = assign(&[hs("a", 2), hs("b", 1), hs("c", 3)], 5).unwrap();
    let got: Vec<(&str, u32, u32, u32, u32)> = s
        .iter()
        .map(|s| {
            (
                s.host.as_str(),
                s.local_rank,
                s.local_size,
                s.cross_rank,
                s.cross_size,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("a", 0, 2, 0, 3),
            ("a", 1, 2, 0, 2),
            ("b", 0, 1, 1, 3),
            ("c", 0, 2, 2, 3),
            ("c", 1, 2, 1, 2),
        ]
    );
}
