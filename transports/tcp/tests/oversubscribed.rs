//! More ranks than cores: busy-polling ranks must yield, or a ring of small steps crawls at the
//! pace of the scheduler's time slices.

use std::time::{Duration, Instant};

use hora_tcp::{MemoryDirectory, TcpConfig, TcpTransport};
use hora_transport::conformance::{pattern, run_ranks};
use hora_transport::{Op, Tag, Transport, deadline_after};

#[test]
fn many_small_ring_steps_with_more_ranks_than_cores() {
    let n = 2 * std::thread::available_parallelism()
        .map_or(2, |c| c.get())
        .min(4);
    let steps = 1000usize;
    let dir = MemoryDirectory::new();
    let ranks: Vec<_> = (0..n)
        .map(|r| TcpTransport::new(TcpConfig::new(r, n, b"s".to_vec()), dir.clone()).unwrap())
        .collect();
    let start = Instant::now();
    run_ranks(ranks, |rank, t| {
        let (right, left) = ((rank + 1) % n, (rank + n - 1) % n);
        let dl = deadline_after(Duration::from_secs(60));
        let mut inbox = vec![0u8; 4096];
        for step in 0..steps {
            let out = pattern(rank * steps + step, 4096);
            let tag = Tag::new(1, step as u64);
            t.wait(
                &mut [Op::send(right, tag, &out), Op::recv(left, tag, &mut inbox)],
                dl,
            )
            .unwrap();
            assert_eq!(inbox, pattern(left * steps + step, 4096), "step {step}");
        }
    });
    let per_step = start.elapsed() / steps as u32;
    eprintln!("{n} ranks: {per_step:?} per ring step");
    // A scheduler time slice is milliseconds; yielding keeps a step far below that.
    assert!(
        per_step < Duration::from_millis(2),
        "{per_step:?} per step: ranks starve each other"
    );
}
