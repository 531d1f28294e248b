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

/// Schema where pg_stat_statements is installed in the connected database, if it is.
pub(super) async fn installed_schema(client: &Client) -> Result<Option<String>, CollectError> {
    let row = client
        .query_opt(
            "SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace \
             WHERE e.extname = 'pg_stat_statements'",
            &[],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Reads the top statements; nothing when the extension is absent.
pub(super) async fn collect(
    client: &Client,
    version: i32,
    schema: Option<&str>,
    top: usize,
) -> Result<Vec<Family>, CollectError> {
    let mut out = Vec::new();
    let (Some(schema), Some(built)) = (schema, STATEMENTS.build(version)) else {
        return Ok(out);
    };
    let sql = format!(
        "{} LIMIT {top}",
        built.sql.replace("{schema}", &quote_ident(schema))
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
    }
}
