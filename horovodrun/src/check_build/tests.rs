use super::*;

fn imports() -> Vec<Import> {
    vec![
        Ok(()),
        Err("ModuleNotFoundError: No module named 'tensorflow'".into()),
        Err("ImportError: keras 3 needs tensorflow".into()),
    ]
}

#[test]
fn backends_come_from_the_build() {
    let mut info = hora::build_info();
    let text = render(&info, "python3", &imports());
    assert!(text.contains("[X] TCP ring"), "{text}");
    assert_eq!(
        text.contains("[ ] MPI (MPI_Allreduce"),
        !hora::build_info().has("mpi"),
        "{text}"
    );
    assert!(
        text.contains("[ ] NCCL") && text.contains("[ ] RDMA verbs"),
        "{text}"
    );
    for b in &mut info.backends {
        b.built = true;
    }
    let text = render(&info, "python3", &imports());
    assert!(
        text.contains("[X] MPI (under mpirun") && text.contains("[X] NCCL"),
        "{text}"
    );
}

#[test]
fn faces_say_whether_they_import_and_why_not() {
    let text = render(&hora::build_info(), "/opt/py/bin/python", &imports());
    assert!(text.contains("    [X] PyTorch (hora.torch)\n"), "{text}");
    assert!(
        text.contains(
            "[ ] TensorFlow (hora.tensorflow does not import: ModuleNotFoundError: No module \
             named 'tensorflow')"
        ),
        "{text}"
    );
    assert!(
        text.contains("[ ] Keras (hora.keras does not import"),
        "{text}"
    );
    assert!(text.contains("imported with /opt/py/bin/python"), "{text}");
}

#[test]
fn an_import_reports_the_last_line_of_its_error() {
    let sh = OsStr::new("sh");
    // `sh -c "import x"` runs a command named `import`, which does not exist.
    let err = import(sh, "hora.torch", Duration::from_secs(10)).unwrap_err();
    assert!(!err.contains('\n') && !err.is_empty(), "{err}");
    let err = import(
        OsStr::new("/nonexistent/python"),
        "hora.torch",
        IMPORT_TIMEOUT,
    )
    .unwrap_err();
    assert!(err.starts_with("cannot run /nonexistent/python"), "{err}");
}
