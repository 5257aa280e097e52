//! `horovodrun --check-build` asks the Python it would run whether each face imports.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_horovodrun");

/// A stand-in Python where only `hora.torch` imports.
fn fake_python(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("python");
    std::fs::write(
        &path,
        "#!/bin/sh\ncase \"$2\" in\n  'import hora.torch') exit 0 ;;\n  *) echo 'Traceback (most recent call last):' >&2\n     echo \"ModuleNotFoundError: no face for $2\" >&2; exit 1 ;;\nesac\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn faces_are_reported_from_importing_them() {
    let dir = std::env::temp_dir().join(format!("horovodrun-check-build-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let python = fake_python(&dir);
    let out = Command::new(BIN)
        .arg("--check-build")
        .env("PYTHON", &python)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("[X] PyTorch (hora.torch)"), "{text}");
    assert!(
        text.contains(
            "[ ] TensorFlow (hora.tensorflow does not import: ModuleNotFoundError: no face for \
             import hora.tensorflow)"
        ),
        "{text}"
    );
    assert!(
        text.contains("[ ] Keras (hora.keras does not import"),
        "{text}"
    );
    assert!(text.contains("Available Tensor Operations:"), "{text}");
}
