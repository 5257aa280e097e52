//! The launcher's whole environment reaches ranks on other hosts, as in Horovod, minus the
//! documented deny list (horovodrun/src/env.rs `DENIED`); `-x` still works. The hosts are
//! network namespaces with their own sshd (`hora_tests::netns`); without root and sshd the
//! test prints why and skips.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use hora_tests::horovodrun;
use hora_tests::netns::Cluster;

/// A value a shell would mangle if it were ever pasted into a command line unquoted.
const AWKWARD: &str = "a b  \"c\" 'd' $HOME `id` \\ ; * end";

#[test]
fn whole_environment_reaches_remote_ranks_minus_the_deny_list() {
    let c = match Cluster::new(2) {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED: multi-host test: {why}");
            return;
        }
    };
    let script = "printf '<%s>\\n' \"$HORA_ENV_AWKWARD\"; \
                  printf 'two=<%s>\\n' \"$HORA_ENV_TWO_LINES\"; \
                  echo omp=$OMP_NUM_THREADS extra=$EXTRA x=$FROM_X; \
                  echo oldpwd=${OLDPWD-unset} cuda=${CUDA_VISIBLE_DEVICES-unset} \
                       mycuda=${MY_CUDA_VISIBLE_DEVICES-unset}; \
                  echo conn=${SSH_CONNECTION-unset}; \
                  echo funcs=$(env | grep -c '^BASH_FUNC_horatest'); \
                  echo host=$(hostname)";
    let start = Instant::now();
    let mut child = Command::new(horovodrun())
        .args(["-np", "2", "-H", &c.hosts_arg(&[1, 1]), "--ssh-config-file"])
        .arg(c.ssh_config())
        .arg("-i")
        .arg(c.identity())
        .args(["-x", "FROM_X=given with -x"])
        .args(["sh", "-c", script])
        .env_remove("HOROVOD_SECRET_KEY")
        .env("HORA_ENV_AWKWARD", AWKWARD)
        .env("HORA_ENV_TWO_LINES", "first\nsecond")
        .env("OMP_NUM_THREADS", "3")
        .env("EXTRA", "plain")
        .env("OLDPWD", "/launcher/old")
        .env("CUDA_VISIBLE_DEVICES", "7")
        .env("MY_CUDA_VISIBLE_DEVICES", "7")
        .env("SSH_CONNECTION", "launcher session")
        .env("BASH_FUNC_horatest%%", "() {  echo hi\n}")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn horovodrun");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("horovodrun did not exit within 90 s: {}", e.join().unwrap());
        }
        thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (o.join().unwrap(), e.join().unwrap());
    assert!(status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for rank in 0..2 {
        let host = &c.hosts[rank].ns;
        for want in [
            format!("[{rank}]<stdout>:<{AWKWARD}>"),
            format!("[{rank}]<stdout>:two=<first"),
            format!("[{rank}]<stdout>:second>"),
            format!("[{rank}]<stdout>:omp=3 extra=plain x=given with -x"),
            format!("[{rank}]<stdout>:oldpwd=unset cuda=unset mycuda=unset"),
            format!("[{rank}]<stdout>:funcs=0"),
            // Each rank really ran on its own namespace host.
            format!("[{rank}]<stdout>:host={host}"),
        ] {
            assert!(stdout.contains(&want), "{want}\n{stdout}");
        }
        // The remote sshd's own session, not the launcher's.
        let conn = stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("[{rank}]<stdout>:conn=")))
            .unwrap_or_else(|| panic!("no conn line: {stdout}"));
        assert!(conn != "launcher session" && conn != "unset", "{conn}");
    }
}
