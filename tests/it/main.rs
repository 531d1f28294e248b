//! pgvigil's integration tests: one binary (it links once), real servers on loopback.

mod harness;

mod api_proxy;
mod audit;
mod backup_restore;
mod cli;
mod drill;
mod pgbouncer;
mod pitr;
mod postgres_metrics;
mod replication;
mod scrape_contract;
mod store_s3;
