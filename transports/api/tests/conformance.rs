//! The in-process transport runs the shared table first: it defines the reference behaviour.

hora_transport::conformance_suite!(hora_transport::LocalTransport::create);
