//! The shared transport test table, run over real loopback TCP connections.

use std::sync::Arc;

use hora_tcp::{MemoryDirectory, TcpConfig, TcpTransport};

fn tcp_job(n: usize) -> Vec<TcpTransport> {
    let dir = MemoryDirectory::new();
    (0..n)
        .map(|rank| {
            TcpTransport::new(
                TcpConfig::new(rank, n, b"conformance-secret".to_vec()),
                dir.clone() as Arc<_>,
            )
            .expect("start a rank")
        })
        .collect()
}

hora_transport::conformance_suite!(|n| tcp_job(n));
