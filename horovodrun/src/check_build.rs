//! `--check-build`: what this build of hora can do, in Horovod's layout.

/// The report printed by `horovodrun --check-build`.
pub(crate) fn report() -> String {
    // The launcher links the same `hora` crate the ranks use, so what it was built with is what
    // they have. Backends that are not in the workspace yet are listed unticked.
    format!(
        "hora v{version}:\n\n\
         Available Frameworks:\n    \
         [X] PyTorch (hora.torch, Python package built from framework-bindings/python)\n    \
         [ ] TensorFlow\n    [ ] Keras\n    [ ] MXNet\n    \
         [X] Rust (the hora crate)\n    [X] C (libhora, framework-bindings/c)\n\n\
         Available Controllers:\n    [{mpi}] MPI (under mpirun; hora's `mpi` feature)\n    \
         [X] TCP (hora rendezvous store, Gloo-style)\n\n\
         Available Tensor Operations:\n    [ ] NCCL\n    [{mpi}] MPI (MPI_Allreduce and the other MPI collectives)\n    \
         [X] TCP ring (allreduce, allgather, broadcast, alltoall, reducescatter)\n    \
         [X] shared memory (ranks on one host; HOROVOD_SHM=0 turns it off)\n    \
         [X] hierarchical allreduce and allgather (shared memory in a host, TCP rings across hosts)\n    \
         [ ] RDMA verbs\n\n\
         Features:\n    [X] response cache\n    [X] tensor fusion\n    \
         [X] ssh launch (-H, --hostfile)\n    [X] torchrun / mpirun / Slurm environments\n    \
         [X] mpirun launch (--mpi)\n    \
         [ ] elastic\n",
        version = env!("CARGO_PKG_VERSION"),
        mpi = if cfg!(feature = "mpi") { "X" } else { " " },
    )
}
