//! Integration tests: real sockets on 127.0.0.1 (port 0), real files in
//! temp dirs. One test binary, modules by subject.

mod util;

mod amplification;
mod faults;
mod forward;
mod grpc;
mod interop;
mod load;
mod metrics;
mod otlp;
mod process;
mod tcp;
