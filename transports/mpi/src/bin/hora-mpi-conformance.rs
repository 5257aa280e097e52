//! The transport conformance table over MPI, one rank per process: run it as
//! `mpirun -np N hora-mpi-conformance [CHECK...]` (N from 2 to 5; checks that need more ranks
//! than were started are skipped and say so). Each job a check asks for is a fresh transport
//! over the first n ranks of `MPI_COMM_WORLD`. Rank 0 prints a line per check and a
//! closing `N passed, 0 failed, K skipped` line; any failure panics, which fails the whole `mpirun`.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use hora_mpi::{Comm, MpiTransport};
use hora_transport::conformance::{CHECKS, Harness, RankFn, checks};

struct Processes {
    world: Comm,
    /// Jobs skipped because they need more ranks than were started.
    skipped: AtomicUsize,
    /// Jobs run.
    ran: AtomicUsize,
}

impl Harness<MpiTransport> for Processes {
    fn run(&self, n: usize, f: RankFn<'_, MpiTransport>) {
        if n > self.world.size() {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.ran.fetch_add(1, Ordering::Relaxed);
        let sub = self.world.first(n).expect("MPI_Comm_split");
        if let Some(comm) = sub {
            let t = MpiTransport::new(&comm).expect("MPI transport");
            f(comm.rank(), &t, &|| comm.barrier().expect("MPI_Barrier"));
        }
        // Ranks outside the job wait here, so the next job starts together.
        self.world.barrier().expect("MPI_Barrier");
    }
}

fn main() {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    for w in &wanted {
        assert!(
            CHECKS.contains(&w.as_str()),
            "unknown check {w:?}; the checks are {CHECKS:?}"
        );
    }
    let world = Comm::world().expect("MPI start-up");
    let me = world.rank();
    let size = world.size();
    let harness = Processes {
        world,
        skipped: AtomicUsize::new(0),
        ran: AtomicUsize::new(0),
    };
    let (mut passed, mut skipped) = (0, 0);
    for (name, check) in checks::<MpiTransport>() {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == name) {
            continue;
        }
        let started = std::time::Instant::now();
        let before = harness.skipped.load(Ordering::Relaxed);
        let ran_before = harness.ran.load(Ordering::Relaxed);
        check(&harness);
        let jobs_skipped = harness.skipped.load(Ordering::Relaxed) - before;
        let jobs_ran = harness.ran.load(Ordering::Relaxed) - ran_before;
        let ran = jobs_ran > 0;
        if ran {
            passed += 1;
        } else {
            skipped += 1;
        }
        if me == 0 {
            let what = match (ran, jobs_skipped) {
                (false, _) => "skipped (needs more ranks)".to_string(),
                (true, 0) => "ok".to_string(),
                (true, k) => format!("ok ({k} larger job(s) skipped)"),
            };
            println!("{what}: {name} (np {size}, {:?})", started.elapsed());
        }
    }
    if me == 0 {
        println!("{passed} passed, 0 failed, {skipped} skipped");
    }
    // A check aborted a transport on purpose; the run itself succeeded.
    hora_mpi::finalize();
}
