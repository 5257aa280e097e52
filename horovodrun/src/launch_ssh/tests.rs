use super::*;

#[test]
fn launch_descriptions_round_trip() {
    let l = Launch {
        cwd: "/work/dir with space".into(),
        nic: "eth0".into(),
        store: "10.0.0.1:4000".into(),
        env: vec![
            ("HOROVOD_RANK".into(), "3".into()),
            ("EMPTY".into(), "".into()),
            ("EQ".into(), "a=b".into()),
        ],
        command: vec!["python".into(), "-c".into(), "print('x y')".into()],
    };
    let bytes = l.encode();
    assert_eq!(Launch::read(&mut bytes.as_slice()).unwrap(), l);
    // Truncated or foreign input is an error, not a panic.
    assert!(Launch::read(&mut &bytes[..bytes.len() - 1]).is_err());
    assert!(Launch::read(&mut &b"\x03\0\0\0abc"[..]).is_err());
    assert!(Launch::read(&mut &b""[..]).is_err());
}

#[test]
fn shell_quoting_survives_quotes() {
    assert_eq!(
        shell_quote(OsStr::new("/a b/c")),
        OsString::from("'/a b/c'")
    );
    assert_eq!(
        shell_quote(OsStr::new("it's")),
        OsString::from("'it'\\''s'")
    );
}

#[test]
fn ssh_never_prompts_and_notices_dead_links() {
    let o = SshOptions {
        port: Some(2222),
        identity: Some("/k".into()),
        config: None,
        connect_timeout_secs: 7,
        control_dir: Some("/run/x".into()),
        mux_hosts: vec!["node1".into()],
    };
    let c = o.command("node1");
    let args: Vec<String> = c
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let joined = args.join(" ");
    for want in [
        "BatchMode=yes",
        "ConnectTimeout=7",
        "ServerAliveInterval=",
        "-p 2222",
        "-i /k",
        "-- node1",
        "ControlPath=/run/x/%C",
    ] {
        assert!(joined.contains(want), "{joined}");
    }
    // A host with many ranks gets its own connections.
    let other: Vec<String> = o
        .command("node2")
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert!(!other.join(" ").contains("ControlPath"), "{other:?}");
}
