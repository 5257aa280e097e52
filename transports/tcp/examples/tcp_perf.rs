//! Two-rank TCP transport micro-benchmark: small-message round trip and full-duplex bulk rate.
//!
//! ```text
//! cargo run --release -p hora-tcp --example tcp_perf              # two processes
//! cargo run --release -p hora-tcp --example tcp_perf -- --threads  # two threads, one process
//! ```
//! Options: `--iters N` (round trips, default 20000), `--size BYTES` (default 4096),
//! `--bulk MIB` (per direction, default 256), `--msg MIB` (bulk message size, default 4),
//! `--window N` (bulk messages in flight per direction, default 4), `--spin-us N`,
//! `--sockbuf BYTES` (SO_SNDBUF/SO_RCVBUF; default: the kernel's autotuning), `--pin` (pin
//! rank r to CPU r, so a busy machine cannot put both ranks on one core).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hora_tcp::{MemoryDirectory, PeerDirectory, TcpConfig, TcpTransport};
use hora_transport::{Op, Rank, Tag, Transport, deadline_after};

/// Rank addresses as files in a shared directory, so separate processes can meet.
#[derive(Debug)]
struct FileDirectory(PathBuf);

impl PeerDirectory for FileDirectory {
    fn publish(&self, rank: Rank, addr: SocketAddr) -> Result<(), String> {
        let tmp = self.0.join(format!("{rank}.tmp"));
        std::fs::write(&tmp, addr.to_string()).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, self.0.join(format!("{rank}.addr"))).map_err(|e| e.to_string())
    }

    fn lookup(&self, rank: Rank, deadline: Instant) -> Result<SocketAddr, String> {
        loop {
            if let Ok(s) = std::fs::read_to_string(self.0.join(format!("{rank}.addr"))) {
                return s.parse().map_err(|e| format!("{e}"));
            }
            if Instant::now() >= deadline {
                return Err(format!("rank {rank} never published"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[derive(Debug, Clone)]
struct Args {
    iters: usize,
    size: usize,
    bulk_mib: usize,
    msg_mib: usize,
    window: usize,
    spin_us: u64,
    sockbuf: Option<usize>,
}

fn parse() -> (Args, Vec<String>) {
    let mut a = Args {
        iters: 20_000,
        size: 4096,
        bulk_mib: 256,
        msg_mib: 4,
        window: 4,
        spin_us: 50,
        sockbuf: None,
    };
    let mut rest = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--iters" => a.iters = num("--iters"),
            "--size" => a.size = num("--size"),
            "--bulk" => a.bulk_mib = num("--bulk"),
            "--msg" => a.msg_mib = num("--msg"),
            "--window" => a.window = num("--window"),
            "--spin-us" => a.spin_us = num("--spin-us") as u64,
            "--sockbuf" => a.sockbuf = Some(num("--sockbuf")),
            _ => rest.push(arg),
        }
    }
    (a, rest)
}

fn run_rank(t: &TcpTransport, a: &Args) {
    let rank = t.rank();
    let peer = 1 - rank;
    let dl = deadline_after(Duration::from_secs(120));

    // Round trips.
    let out = vec![rank as u8; a.size];
    let mut back = vec![0u8; a.size];
    let tag = Tag::new(1, 0);
    let mut lat = Vec::with_capacity(a.iters);
    for i in 0..a.iters + 1000 {
        let t0 = Instant::now();
        if rank == 0 {
            t.send(peer, tag, &out, dl).unwrap();
            t.recv(peer, tag, &mut back, dl).unwrap();
        } else {
            t.recv(peer, tag, &mut back, dl).unwrap();
            t.send(peer, tag, &out, dl).unwrap();
        }
        if i >= 1000 {
            lat.push(t0.elapsed());
        }
    }
    if rank == 0 {
        let total: Duration = lat.iter().sum();
        lat.sort();
        println!(
            "round trip {} B: mean {:.2} us, median {:.2} us, p99 {:.2} us ({} iters)",
            a.size,
            total.as_secs_f64() * 1e6 / lat.len() as f64,
            lat[lat.len() / 2].as_secs_f64() * 1e6,
            lat[lat.len() * 99 / 100].as_secs_f64() * 1e6,
            lat.len()
        );
    }

    // Full-duplex bulk: both ranks send and receive `bulk` MiB at once.
    let msg = a.msg_mib << 20;
    let count = (a.bulk_mib / a.msg_mib).max(1);
    let send_buf: Vec<u8> = (0..msg).map(|i| (i * 31 + rank) as u8).collect();
    let mut recv_buf = vec![0u8; msg * a.window];
    for round in 0..2 {
        t.wait(
            &mut [
                Op::send(peer, Tag::new(3, round), &[1]),
                Op::recv(peer, Tag::new(3, round), &mut [0]),
            ],
            dl,
        )
        .unwrap();
        let t0 = Instant::now();
        let mut next = 0;
        while next < count {
            let batch = a.window.min(count - next);
            let mut ops: Vec<Op<'_>> = Vec::with_capacity(2 * batch);
            for (k, chunk) in recv_buf.chunks_mut(msg).take(batch).enumerate() {
                let tag = Tag::new(2, (next + k) as u64);
                ops.push(Op::send(peer, tag, &send_buf));
                ops.push(Op::recv(peer, tag, chunk));
            }
            t.wait(&mut ops, dl).unwrap();
            next += batch;
        }
        let secs = t0.elapsed().as_secs_f64();
        assert_eq!(recv_buf[1], (31 + peer) as u8, "bulk data corrupted");
        if rank == 0 && round == 1 {
            let bytes = (count * msg) as f64;
            println!(
                "full duplex {} MiB each way in {} MiB messages (window {}): {:.2} GB/s per direction ({:.3} s)",
                count * a.msg_mib,
                a.msg_mib,
                a.window,
                bytes / secs / 1e9,
                secs
            );
        }
    }
}

fn config(rank: Rank, a: &Args) -> TcpConfig {
    let mut c = TcpConfig::new(rank, 2, b"tcp-perf".to_vec());
    c.spin = Duration::from_micros(a.spin_us);
    c.sockbuf = a.sockbuf;
    c
}

/// Pins the calling thread to one CPU.
fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity reads it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        eprintln!(
            "could not pin to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn main() {
    let (a, rest) = parse();
    if let Some(pos) = rest.iter().position(|r| r == "--child") {
        let rank: Rank = rest[pos + 1].parse().unwrap();
        let dir = Arc::new(FileDirectory(PathBuf::from(&rest[pos + 2])));
        if rest.iter().any(|r| r == "--pin") {
            pin(rank);
        }
        let t = TcpTransport::new(config(rank, &a), dir).unwrap();
        run_rank(&t, &a);
        return;
    }
    if rest.iter().any(|r| r == "--threads") {
        println!("two ranks as threads of one process");
        let dir = MemoryDirectory::new();
        let ranks: Vec<_> = (0..2)
            .map(|r| TcpTransport::new(config(r, &a), dir.clone()).unwrap())
            .collect();
        std::thread::scope(|s| {
            for t in &ranks {
                let a = &a;
                let pinned = rest.iter().any(|r| r == "--pin");
                s.spawn(move || {
                    if pinned {
                        pin(t.rank());
                    }
                    run_rank(t, a)
                });
            }
        });
        return;
    }
    println!("two ranks as separate processes");
    let dir = std::env::temp_dir().join(format!("hora-tcp-perf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = std::env::current_exe().unwrap();
    let fwd: Vec<String> = std::env::args().skip(1).collect();
    let children: Vec<_> = (0..2)
        .map(|r| {
            Command::new(&exe)
                .args(&fwd)
                .args(["--child", &r.to_string(), dir.to_str().unwrap()])
                .spawn()
                .unwrap()
        })
        .collect();
    let ok = children
        .into_iter()
        .all(|mut c| c.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "a rank failed");
}
