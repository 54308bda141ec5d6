//! Test support shared by the integration tests. Each test binary uses only part of it.
#![allow(dead_code)]

pub mod cli;
pub mod cluster;
pub mod fake_github;
pub mod git_server;
pub mod loopback;
pub mod tls;
pub mod world;
