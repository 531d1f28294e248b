//! `pg_stat_io` (PostgreSQL 16+): I/O by backend type, object and context. The view has a
//! fixed set of rows (about 30 on 16/17, more on 18, which adds WAL I/O), so the family is
//! bounded by PostgreSQL itself. Operations a combination cannot do are NULL in the view
//! and absent here. 18 reports bytes directly; on 16 and 17 bytes are operations times
//! `op_bytes` (always the block size there), so the byte families exist on every major
//! that has the view.

use crate::collectors::spec::{col, col_since, col_until, QuerySpec};
use crate::metrics::catalogue as c;

const V16: i32 = 160000;
const V18: i32 = 180000;

/// One statement for the whole view; times are milliseconds in the view.
pub static STAT_IO: QuerySpec = QuerySpec {
    name: "stat_io",
    labels: &["backend_type", "object", "context"],
    values: &[
        col(&c::PG_STAT_IO_READS_TOTAL, "reads"),
        col_since(&c::PG_STAT_IO_READ_BYTES_TOTAL, "read_bytes", V18),
        col_until(&c::PG_STAT_IO_READ_BYTES_TOTAL, "reads * op_bytes", V18),
        col(&c::PG_STAT_IO_READ_TIME_SECONDS_TOTAL, "read_time / 1000.0"),
        col(&c::PG_STAT_IO_WRITES_TOTAL, "writes"),
        col_since(&c::PG_STAT_IO_WRITE_BYTES_TOTAL, "write_bytes", V18),
        col_until(&c::PG_STAT_IO_WRITE_BYTES_TOTAL, "writes * op_bytes", V18),
        col(
            &c::PG_STAT_IO_WRITE_TIME_SECONDS_TOTAL,
            "write_time / 1000.0",
        ),
        col(&c::PG_STAT_IO_WRITEBACKS_TOTAL, "writebacks"),
        col(&c::PG_STAT_IO_EXTENDS_TOTAL, "extends"),
        col_since(&c::PG_STAT_IO_EXTEND_BYTES_TOTAL, "extend_bytes", V18),
        col_until(&c::PG_STAT_IO_EXTEND_BYTES_TOTAL, "extends * op_bytes", V18),
        col(&c::PG_STAT_IO_HITS_TOTAL, "hits"),
        col(&c::PG_STAT_IO_EVICTIONS_TOTAL, "evictions"),
        col(&c::PG_STAT_IO_REUSES_TOTAL, "reuses"),
        col(&c::PG_STAT_IO_FSYNCS_TOTAL, "fsyncs"),
    ],
    from: |_| "pg_stat_io".into(),
    since: V16,
};
