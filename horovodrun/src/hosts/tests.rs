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
fn remote_hosts_and_missing_slots_are_refused() {
    let e = local_slots(&[hs("localhost", 2), hs("gpu-box", 2)], 2, Some("me")).unwrap_err();
    assert_eq!(e, HostsError::Remote("gpu-box".into()));
    assert!(
        e.to_string()
            .contains("remote hosts need ssh support, coming in the next release")
    );
    let e = local_slots(&[hs("localhost", 1), hs("127.0.0.1", 2)], 4, None).unwrap_err();
    assert_eq!(e, HostsError::TooFewSlots { slots: 3, np: 4 });
    assert_eq!(
        local_slots(&[hs("localhost", 1), hs("127.0.0.1", 2)], 3, None).unwrap(),
        3
    );
}
