//! The shared transport test table, run over shared-memory rings.

use std::time::Duration;

use hora_shm::{ShmConfig, ShmTransport, unique_job_name};

fn shm_job(n: usize) -> Vec<ShmTransport> {
    let job = unique_job_name("hora-conformance");
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|r| {
                let job = job.clone();
                s.spawn(move || {
                    let mut c = ShmConfig::new(r, n, job);
                    c.connect_timeout = Duration::from_secs(30);
                    // A small ring, so big messages wrap around it many times.
                    c.ring_bytes = 64 << 10;
                    ShmTransport::connect(&c).expect("start a rank")
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

hora_transport::conformance_suite!(|n| shm_job(n));
