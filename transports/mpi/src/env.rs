//! Whether an MPI launcher started this process; built with or without the `mpi` feature.

use std::collections::HashMap;

/// The MPI launcher that started this process, if any: `Some("Open MPI")` when
/// `OMPI_COMM_WORLD_SIZE` is set, `Some("MPICH/Hydra")` when `PMI_SIZE` is.
pub fn launcher(vars: &HashMap<String, String>) -> Option<&'static str> {
    let set = |k: &str| vars.get(k).is_some_and(|v| !v.trim().is_empty());
    if set("OMPI_COMM_WORLD_SIZE") {
        Some("Open MPI")
    } else if set("PMI_SIZE") {
        Some("MPICH/Hydra")
    } else {
        None
    }
}

/// [`launcher`] on the process environment.
pub fn launcher_from_env() -> Option<&'static str> {
    launcher(&std::env::vars().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn recognises_both_launchers() {
        assert_eq!(launcher(&vars(&[])), None);
        assert_eq!(
            launcher(&vars(&[("OMPI_COMM_WORLD_SIZE", "4")])),
            Some("Open MPI")
        );
        assert_eq!(launcher(&vars(&[("PMI_SIZE", "2")])), Some("MPICH/Hydra"));
        assert_eq!(launcher(&vars(&[("PMI_SIZE", " ")])), None);
    }
}
