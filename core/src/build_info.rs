//! What this build of hora was compiled with, for `horovodrun --check-build` and for tools
//! that report it. The answer comes from the code (cargo features seen through the backend
//! module, `crate::backend`), never from a hand-kept list.

/// One backend and whether this build has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    /// Short name, as `hora::api::transport_name` and `hora-bench --transport` spell it.
    pub name: &'static str,
    /// Compiled into this build.
    pub built: bool,
    /// It can carry the coordinator's control messages (a "controller" in Horovod's words).
    pub controller: bool,
    /// It runs collectives natively instead of hora's algorithms over its point-to-point ops.
    pub native_collectives: bool,
    /// What it is, or how to get it when it is not built.
    pub about: &'static str,
}

/// What [`build_info`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// The `hora` crate's version.
    pub version: &'static str,
    /// Every backend hora knows, built or not.
    pub backends: Vec<Backend>,
}

impl BuildInfo {
    /// Whether the backend called `name` is compiled in.
    pub fn has(&self, name: &str) -> bool {
        self.backends.iter().any(|b| b.name == name && b.built)
    }
}

/// The backends compiled into this build.
pub fn build_info() -> BuildInfo {
    BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        backends: vec![
            Backend {
                name: "tcp",
                built: true,
                controller: true,
                native_collectives: false,
                about: "authenticated TCP connections per pair (hora-tcp)",
            },
            Backend {
                name: "shm",
                built: true,
                controller: true,
                native_collectives: true,
                about: "shared memory between the ranks of one host (hora-shm)",
            },
            Backend {
                name: "mpi",
                built: crate::backend::MPI_BUILT,
                controller: true,
                native_collectives: true,
                about: "MPI point-to-point and MPI's collectives under mpirun (feature `mpi`)",
            },
            Backend {
                name: "nccl",
                built: false,
                controller: false,
                native_collectives: true,
                about: "NCCL for GPU tensors (not in this workspace yet)",
            },
            Backend {
                name: "verbs",
                built: false,
                controller: true,
                native_collectives: false,
                about: "RDMA verbs (not in this workspace yet)",
            },
        ],
    }
}

#[cfg(test)]
mod tests;
