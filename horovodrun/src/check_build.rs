//! `--check-build`: what this build of hora can do, in Horovod's layout.

/// The report printed by `horovodrun --check-build`.
pub(crate) fn report() -> String {
    // The launcher links the same `hora` crate the ranks use, so what it was built with is what
    // they have. Transports and frameworks that are not in the workspace yet are listed unticked.
    let tick = |on: bool| if on { "[X]" } else { "[ ]" };
    format!(
        "hora v{version}:\n\n\
         Available Frameworks:\n    {n} TensorFlow\n    {n} PyTorch\n    {n} MXNet\n    [X] Rust (hora crate)\n\n\
         Available Controllers:\n    {n} MPI\n    [X] TCP (hora store rendezvous, Gloo-style)\n\n\
         Available Tensor Operations:\n    {n} NCCL\n    {n} MPI\n    [X] TCP ring (allreduce, allgather, broadcast, alltoall, reducescatter)\n    {n} shared memory\n    {n} RDMA verbs\n\n\
         Features:\n    [X] response cache\n    [X] tensor fusion\n    [X] ssh launch (-H, --hostfile)\n    [X] torchrun / mpirun / Slurm environments\n    {n} elastic\n",
        version = env!("CARGO_PKG_VERSION"),
        n = tick(false),
    )
}
