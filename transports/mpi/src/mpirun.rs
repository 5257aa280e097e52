//! Finding `mpirun` and telling Open MPI's from MPICH's (Hydra), whose options differ; built
//! with or without the `mpi` feature. The MPI tests start every job through [`Mpirun`], so
//! one test suite runs unchanged under either MPI (`HORA_MPIRUN=mpirun.mpich`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Which MPI an `mpirun` belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Open MPI's `mpirun` (orterun / prterun).
    OpenMpi,
    /// MPICH's (or Intel MPI's) Hydra `mpiexec`.
    Hydra,
}

impl Flavor {
    /// Tells the flavour from the output of `mpirun --version`.
    pub fn from_version(text: &str) -> Option<Self> {
        if text.contains("Open MPI") || text.contains("OpenRTE") {
            Some(Self::OpenMpi)
        } else if text.contains("HYDRA") || text.contains("Hydra") || text.contains("MPICH") {
            Some(Self::Hydra)
        } else {
            None
        }
    }
}

/// An `mpirun` and its flavour.
#[derive(Debug, Clone)]
pub struct Mpirun {
    /// The executable.
    pub path: PathBuf,
    /// Whose it is.
    pub flavor: Flavor,
}

impl Mpirun {
    /// `HORA_MPIRUN` if set, else the first `mpirun` on `PATH`; `Ok(None)` when there is none.
    /// Fails when `HORA_MPIRUN` names no executable or the file is neither flavour.
    pub fn find() -> Result<Option<Self>, String> {
        Self::locate()?.map(Self::at).transpose()
    }

    /// Where [`Mpirun::find`] looks, without asking the file its flavour: `HORA_MPIRUN` if set,
    /// else the first `mpirun` on `PATH` (symlinks resolved); `Ok(None)` when there is none.
    /// Fails when `HORA_MPIRUN` names no executable.
    pub fn locate() -> Result<Option<PathBuf>, String> {
        if let Some(p) = std::env::var_os("HORA_MPIRUN").filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            if !is_executable(&p) {
                return Err(format!(
                    "HORA_MPIRUN={} is not an executable file",
                    p.display()
                ));
            }
            return Ok(Some(p));
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        Ok(std::env::split_paths(&path)
            .map(|d| d.join("mpirun"))
            .find(|p| is_executable(p))
            // Open MPI derives its install prefix from the path it was started by; Debian's
            // alternatives symlinks would give it a wrong one.
            .map(|p| std::fs::canonicalize(&p).unwrap_or(p)))
    }

    /// The `mpirun` at `path`, its flavour asked of `--version`.
    pub fn at(path: PathBuf) -> Result<Self, String> {
        let out = Command::new(&path)
            .arg("--version")
            .output()
            .map_err(|e| format!("cannot run {} --version: {e}", path.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        match Flavor::from_version(&text) {
            Some(flavor) => Ok(Self { path, flavor }),
            None => Err(format!(
                "{} is neither Open MPI's nor MPICH's mpirun (its --version says {:?})",
                path.display(),
                text.lines().next().unwrap_or("")
            )),
        }
    }

    /// `mpirun -np <np>` for a job on this host, allowed more ranks than cores and a root
    /// user, ranks unbound (a test machine has few cores); the program and its arguments
    /// follow.
    pub fn local_job(&self, np: usize) -> Command {
        let mut cmd = Command::new(&self.path);
        match self.flavor {
            Flavor::OpenMpi => {
                cmd.args(["--oversubscribe", "--bind-to", "none"])
                    .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                    .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
            }
            // Hydra starts any number of ranks, as root too.
            Flavor::Hydra => {
                cmd.args(["-bind-to", "none"]);
            }
        }
        cmd.args(["-np", &np.to_string()]);
        cmd
    }

    /// Sets `name=value` in every rank of `cmd` (a [`Mpirun::local_job`] before its program):
    /// Open MPI passes on only the variables named with `-x`; Hydra passes on its whole
    /// environment, but a `-genvlist` would narrow that, so each variable gets a `-genv`.
    pub fn forward_env(&self, cmd: &mut Command, name: &str, value: &str) {
        cmd.env(name, value);
        match self.flavor {
            Flavor::OpenMpi => cmd.args(["-x", name]),
            Flavor::Hydra => cmd.args(["-genv", name, value]),
        };
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavour_from_each_mpis_version_text() {
        let open_mpi =
            "mpirun (Open MPI) 4.1.4\n\nReport bugs to http://www.open-mpi.org/community/help/";
        let hydra = "HYDRA build details:\n    Version:                                 4.0.2";
        assert_eq!(Flavor::from_version(open_mpi), Some(Flavor::OpenMpi));
        assert_eq!(Flavor::from_version(hydra), Some(Flavor::Hydra));
        assert_eq!(Flavor::from_version("srun 22.05"), None);
    }

    #[test]
    fn each_flavour_gets_its_own_options() {
        let args = |flavor| {
            let m = Mpirun {
                path: "/bin/mpirun".into(),
                flavor,
            };
            let mut cmd = m.local_job(5);
            m.forward_env(&mut cmd, "HOROVOD_CONTROLLER", "mpi");
            let env_set = cmd
                .get_envs()
                .any(|(k, v)| k == "HOROVOD_CONTROLLER" && v == Some("mpi".as_ref()));
            assert!(env_set, "{flavor:?}");
            cmd.get_args()
                .map(|a| a.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            args(Flavor::OpenMpi),
            [
                "--oversubscribe",
                "--bind-to",
                "none",
                "-np",
                "5",
                "-x",
                "HOROVOD_CONTROLLER"
            ]
        );
        assert_eq!(
            args(Flavor::Hydra),
            [
                "-bind-to",
                "none",
                "-np",
                "5",
                "-genv",
                "HOROVOD_CONTROLLER",
                "mpi"
            ]
        );
    }
}
