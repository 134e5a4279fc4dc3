//! Integration tests of the `sheratan` binary: real processes on real loopback sockets.

mod attacks;
mod bench;
mod common;
mod control_auth;
mod crash;
mod credentials;
mod dashboard;
mod data;
mod data_errors;
mod flood;
mod hostile;
mod lifecycle;
mod limits;
mod mesh;
mod multihub;
mod netns;
mod ops;
mod outbound_tls;
mod ports;
mod readme;
mod registry;
mod relay;
mod rotation;
mod ssrf;
mod tls;
mod worker;
