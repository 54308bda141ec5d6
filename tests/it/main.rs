//! The integration tests, in one test binary: the real `homelab-flux` binary and library against
//! the fake GitHub, real git servers, sops/age tools and a real Kubernetes control plane with the
//! Flux controllers (`support`). One crate rather than one binary per file: the support code is
//! compiled and linked once, and the test cluster is started once for every module that uses it.
//!
//! A module per subject. Tests that use the cluster hold [`support::cluster::Cluster::shared`]
//! or [`support::cluster::Cluster::exclusive`] and set up the state they need, whichever module
//! ran before them.

/// `insta::assert_snapshot!` with the snapshot of `NAME`, asserted in module `MODULE`, in
/// `tests/snapshots/MODULE__NAME.snap`: where it was when each module was a test binary of its
/// own (insta would otherwise prefix the crate's name and look beside `tests/it/MODULE.rs`).
macro_rules! assert_snapshot {
    ($name:expr, $value:expr $(,)?) => {{
        let module = module_path!().rsplit("::").next().unwrap_or_default();
        insta::with_settings!(
            {
                snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots"),
                prepend_module_to_snapshot => false,
            },
            { insta::assert_snapshot!(format!("{module}__{}", $name), $value) }
        );
    }};
}

mod support;

mod age_pq;
mod bootstrap_app;
mod bootstrap_e2e;
mod bootstrap_promises;
mod cli;
mod config_corpus;
mod environment;
mod first_hour;
mod flux_lifecycle;
mod flux_migrate;
mod git_remote;
mod github_app_e2e;
mod github_app_fake;
mod github_client;
mod hostile;
mod hostile_e2e;
mod hygiene;
mod layers;
mod sops;
mod sops_e2e;
mod uninstall;
mod validate_app;
mod validate_online;
