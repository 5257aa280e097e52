use std::error::Error as _;

use hora_transport::{CollectiveError, TransportError};

use super::*;

fn lost(peer: usize) -> TransportError {
    TransportError::ConnectionLost {
        peer,
        detail: "reset by peer".into(),
    }
}

#[test]
fn a_transport_failure_keeps_the_transport_error_as_its_source() {
    let e = Error::collective(1, "allreduce", "w", CollectiveError::Transport(lost(3)));
    assert_eq!(e.peer(), Some(3));
    let source = e.source().expect("a source");
    let t = source
        .downcast_ref::<Arc<TransportError>>()
        .map(|a| &**a)
        .or_else(|| source.downcast_ref::<TransportError>())
        .expect("the source is the TransportError");
    assert!(
        matches!(t, TransportError::ConnectionLost { peer: 3, .. }),
        "{t:?}"
    );
    assert_eq!(
        e.to_string(),
        "rank 1: allreduce failed (tensors: w): connection to rank 3 lost: reset by peer"
    );
}

#[test]
fn a_callers_mistake_in_a_collective_is_an_invalid_argument() {
    let e = Error::collective(
        0,
        "broadcast",
        "b",
        CollectiveError::invalid("broadcast root 5 is not a rank of 2"),
    );
    match &e {
        Error::InvalidArgument {
            rank,
            tensor,
            detail,
        } => {
            assert_eq!((*rank, tensor.as_str()), (0, "b"));
            assert!(detail.contains("root 5"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.source().is_none());
}

#[test]
fn for_tensor_renames_and_keeps_the_failure() {
    let e = Error::transport(2, "collective", "", lost(0));
    let mine = e.for_tensor("allreduce", "a, b");
    let Error::Transport {
        op, tensor, source, ..
    } = &mine
    else {
        panic!("{mine:?}")
    };
    assert_eq!((op.as_str(), tensor.as_str()), ("allreduce", "a, b"));
    assert_eq!(source.peer(), Some(0));
    let shut = Error::ShutDown {
        rank: 1,
        reason: None,
    };
    assert_eq!(
        shut.for_tensor("x", "y").to_string(),
        shut.to_string(),
        "errors naming no tensor stay as they are"
    );
}
