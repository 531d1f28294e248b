//! pgvigil's integration tests: one binary (it links once), real servers on loopback.

mod harness;

mod api_proxy;
mod architecture;
mod archive_ahead;
mod artefacts;
mod audit;
mod backup_restore;
mod cli;
mod dashboards_live;
mod disk_full;
mod drill;
mod encryption;
mod faults;
mod first_hour;
mod fuzz_corpus;
mod leases;
mod listeners;
mod pg_majors;
mod pg_tls;
mod pgbouncer;
mod pitr;
mod postgres_metrics;
mod replication;
mod restore_safety;
mod retention;
mod scrape_contract;
mod status;
mod store_s3;
mod wal_prefetch;
