//! Running a rank program without a launcher gives an error that says how to launch.

use std::process::Command;

use hora_tests::hora_rank;

#[test]
fn init_outside_a_launcher_explains_how_to_launch() {
    let out = Command::new(hora_rank())
        .arg("collectives")
        .env_remove("HOROVOD_RANK")
        .env_remove("HOROVOD_SIZE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("horovodrun -np"), "{stderr}");
}

#[test]
fn bad_environment_value_names_the_variable() {
    let out = Command::new(hora_rank())
        .arg("collectives")
        .env("HOROVOD_RANK", "0")
        .env("HOROVOD_SIZE", "1")
        .env("HOROVOD_FUSION_THRESHOLD", "lots")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("HOROVOD_FUSION_THRESHOLD") && stderr.contains("lots"),
        "{stderr}"
    );
}

#[test]
fn single_process_job_runs_without_a_launcher() {
    let out = Command::new(hora_rank())
        .arg("collectives")
        .env("HOROVOD_RANK", "0")
        .env("HOROVOD_SIZE", "1")
        .env_remove("HORA_STORE_ADDR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("rank 0: collectives OK"), "{stdout}");
}
