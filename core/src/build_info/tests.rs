use super::*;

#[test]
fn tcp_and_shm_are_always_built_and_mpi_follows_the_feature() {
    let info = build_info();
    assert!(info.has("tcp") && info.has("shm"));
    assert_eq!(info.has("mpi"), hora_mpi::ENABLED);
    assert!(!info.has("nccl") && !info.has("verbs"));
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
}
