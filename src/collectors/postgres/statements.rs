//! `pg_stat_statements_*`: the top `postgres.top_statements` statements by total time,
//! when the extension is installed in the DSN's database. Reads `pg_stat_statements(false)`
//! so the query texts (often megabytes) are never fetched, and sums duplicate rows
//! (toplevel / nested) per user, database and queryid so series never collide.

use tokio_postgres::Client;

use super::CollectError;
use crate::collectors::spec::{col, col_since, col_until, QuerySpec};
use crate::metrics::{catalogue as c, Family};

const V13: i32 = 130000;
const V17: i32 = 170000;

/// The statement query; `{schema}` is replaced by the extension's quoted schema.
pub(super) static STATEMENTS: QuerySpec = QuerySpec {
    name: "statements",
    labels: &["pg_get_userbyid(s.userid)", "d.datname", "s.queryid"],
    values: &[
        col(&c::PG_STAT_STATEMENTS_CALLS_TOTAL, "sum(s.calls)"),
        col_since(
            &c::PG_STAT_STATEMENTS_SECONDS_TOTAL,
            "sum(s.total_exec_time) / 1000.0",
            V13,
        ),
        col_until(
            &c::PG_STAT_STATEMENTS_SECONDS_TOTAL,
            "sum(s.total_time) / 1000.0",
            V13,
        ),
        col(&c::PG_STAT_STATEMENTS_ROWS_TOTAL, "sum(s.rows)"),
        col_until(
            &c::PG_STAT_STATEMENTS_BLOCK_READ_SECONDS_TOTAL,
            "sum(s.blk_read_time) / 1000.0",
            V17,
        ),
        col_until(
            &c::PG_STAT_STATEMENTS_BLOCK_WRITE_SECONDS_TOTAL,
            "sum(s.blk_write_time) / 1000.0",
            V17,
        ),
        col_since(
            &c::PG_STAT_STATEMENTS_BLOCK_READ_SECONDS_TOTAL,
            "sum(s.shared_blk_read_time) / 1000.0",
            V17,
        ),
        col_since(
            &c::PG_STAT_STATEMENTS_BLOCK_WRITE_SECONDS_TOTAL,
            "sum(s.shared_blk_write_time) / 1000.0",
            V17,
        ),
    ],
    from: |_| {
        "{schema}.pg_stat_statements(false) s JOIN pg_database d ON d.oid = s.dbid \
         GROUP BY 1, 2, 3 ORDER BY 5 DESC"
            .into()
    },
    since: 0,
};

/// pg_stat_statements as installed in the connected database.
#[derive(Debug, Clone)]
pub(super) struct Installed {
    /// Its schema.
    pub schema: String,
    /// The server version whose columns the installed extension version has. After a
    /// pg_upgrade the extension keeps its old version until `ALTER EXTENSION ... UPDATE`,
    /// and its functions return that version's columns: a 17 server with extension 1.10
    /// still has `blk_read_time`, not 17's `shared_blk_read_time`.
    pub columns_of: i32,
}

/// The server version an extension version's columns belong to (1.8: 13, 1.9: 14,
/// 1.10: 15 and 16, 1.11: 17, 1.12: 18; a newer major than 1: the newest known).
fn columns_of(extversion: &str) -> i32 {
    let mut parts = extversion.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if major > 1 {
        return 180000; // newer than this code knows: the newest columns it reads
    }
    match minor {
        12.. => 180000,
        11 => 170000,
        10 => 150000,
        9 => 140000,
        8 => 130000,
        _ => 120000,
    }
}

/// pg_stat_statements in the connected database, if it is installed.
pub(super) async fn installed(client: &Client) -> Result<Option<Installed>, CollectError> {
    let row = client
        .query_opt(
            "SELECT n.nspname::text, e.extversion::text FROM pg_extension e \
             JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'",
            &[],
        )
        .await?;
    Ok(row.map(|r| Installed {
        schema: r.get(0),
        columns_of: columns_of(r.get::<_, &str>(1)),
    }))
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Reads the top statements with the columns of the installed extension version; nothing
/// when the extension is absent.
pub(super) async fn collect(
    client: &Client,
    installed: Option<&Installed>,
    top: usize,
) -> Result<Vec<Family>, CollectError> {
    let mut out = Vec::new();
    let Some(ext) = installed else {
        return Ok(out);
    };
    let Some(built) = STATEMENTS.build(ext.columns_of) else {
        return Ok(out);
    };
    let sql = format!(
        "{} LIMIT {top}",
        built.sql.replace("{schema}", &quote_ident(&ext.schema))
    );
    let rows = client.query(sql.as_str(), &[]).await?;
    built.read(&rows, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_total_time() {
        for v in [120000, 150000, 170000] {
            let b = STATEMENTS.build(v).unwrap_or_else(|| panic!());
            // Column 5 (1-based) must be the seconds column for ORDER BY 5.
            assert_eq!(
                b.values[1].name, "pg_stat_statements_seconds_total",
                "version {v}"
            );
        }
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        // Columns follow the extension version, not the server's.
        assert_eq!(columns_of("1.10"), 150000);
        assert_eq!(columns_of("1.11"), 170000);
        assert_eq!(columns_of("1.12"), 180000);
        assert_eq!(columns_of("1.7"), 120000);
        assert_eq!(columns_of("2.0"), 180000);
    }
}
