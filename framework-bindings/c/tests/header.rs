//! include/hora.h is generated from src/lib.rs; this fails when they drift apart.
//! Regenerate with `HORA_BLESS=1 cargo test -p hora-capi --test header`.

use std::path::PathBuf;

#[test]
fn checked_in_header_matches_the_code() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not read src/lib.rs")
        .write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let path = dir.join("include/hora.h");
    if std::env::var_os("HORA_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "include/hora.h is out of date with src/lib.rs; run HORA_BLESS=1 cargo test -p hora-capi --test header"
    );
}
