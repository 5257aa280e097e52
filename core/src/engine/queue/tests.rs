//! The tensor queue's two ends, without a background thread.

use std::sync::Arc;
use std::time::Duration;

use hora_transport::{AdaptiveSpin, LocalTransport, Transport};

use super::{Submitter, TensorQueue};
use crate::coordinator::Request;
use crate::error::Error;
use crate::handle::Completion;
use crate::types::{CollectiveKind, DataType};

fn queue() -> (Submitter, TensorQueue) {
    let t = LocalTransport::create(1).pop().unwrap();
    super::new(
        0,
        t.waker(),
        Arc::new(AdaptiveSpin::new(Duration::ZERO)),
        None,
    )
}

fn req(name: &str) -> Request {
    Request::new(name, CollectiveKind::Allreduce, DataType::F32, vec![1])
}

#[test]
fn a_name_is_refused_while_in_flight_and_free_again_once_completed() {
    let (sub, mut q) = queue();
    let first = sub.push(req("w"), Some(Box::new(vec![1.0f32])));
    let again = sub.push(req("w"), Some(Box::new(vec![2.0f32])));
    let err = again.wait().unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    let mut sent = Vec::new();
    assert!(!q.take_new(|r| sent.push(r.name)));
    assert_eq!(sent, ["w"]);
    assert_eq!(q.waiting_names(), ["w"]);
    let entry = q.take("w").expect("waiting by name");
    assert!(q.take("w").is_none());
    q.complete(entry, Ok(Completion::default()));
    assert!(first.wait().is_ok());
    // Completed: the name may be used again.
    let _third = sub.push(req("w"), None);
    assert!(!q.take_new(|_| {}));
    assert!(q.take("w").is_some());
}

#[test]
fn shutdown_is_reported_once_asked_and_refuses_later_submits() {
    let (sub, mut q) = queue();
    sub.shutdown();
    assert!(q.take_new(|_| panic!("nothing was submitted")));
    let err = sub.push(req("late"), None).wait().unwrap_err();
    assert!(matches!(err, Error::ShutDown { .. }), "{err}");
}

#[test]
fn failing_everything_fails_new_and_waiting_entries_and_every_later_submit() {
    let (sub, mut q) = queue();
    let waiting = sub.push(req("a"), None);
    q.take_new(|_| {});
    let new = sub.push(req("b"), None);
    q.fail_everything(Error::Bug("stopped".into()));
    for h in [waiting, new, sub.push(req("c"), None)] {
        let err = h.wait().unwrap_err();
        assert!(err.to_string().contains("stopped"), "{err}");
    }
    assert!(q.waiting_names().is_empty());
}
