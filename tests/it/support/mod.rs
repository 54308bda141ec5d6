//! Test support shared by the modules of the integration tests.

pub mod admission;
pub mod cli;
pub mod cluster;
pub mod fake_github;
pub mod git_server;
pub mod loopback;
pub mod tls;
pub mod world;
