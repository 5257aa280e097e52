use super::*;

#[test]
fn rust_log_wins_over_verbose() {
    assert_eq!(directives(None, false), "warn");
    assert_eq!(directives(None, true), "info");
    assert_eq!(
        directives(Some("hora=debug".to_owned()), false),
        "hora=debug"
    );
    assert_eq!(directives(Some("error".to_owned()), true), "error");
}
