//! pgvigil: a PostgreSQL operations sidecar. The modules, in the order data flows through
//! them (each imports only modules above it; `docs/design.md` has the map):
//! `config` (validated settings) → `pg`, `metrics`, `audit`, `events`, `store`,
//! `local_daemon` (the client for this host's daemon) → `collectors`, `backup` (its `ops`
//! are the operations), `proxy`, `schedule` → `status` (the operator's view, judged) →
//! `http` → `daemon` (the long-running process) → `check`, `dev`, `cli`, `commands` (the
//! command line's edge).
//! `fuzzing` (the fuzz targets, one per parser of external input) sits beside them, and
//! `disk` (free space, disk-full errors) and `errors` (an error's causes on one line) below
//! them all.

#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, rust_2018_idioms)]
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![allow(missing_debug_implementations)]

pub mod audit;
pub mod backup;
pub mod check;
pub mod cli;
pub mod collectors;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod dev;
pub mod disk;
pub mod errors;
pub mod events;
pub mod fuzzing;
pub mod http;
pub mod local_daemon;
pub mod logging;
pub mod metrics;
pub mod pg;
pub mod proxy;
pub mod schedule;
pub mod status;
pub mod store;
pub mod trust;

pub use daemon::{App, Running, StartError};

/// pgvigil's version, from Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
