//! A SHOW result as a table of text cells read by column name, so that columns newer
//! PgBouncer versions add are ignored and columns older ones lack are simply absent.
//! Built from the admin console's simple-query rows, or from a pipe-separated fixture.

use tokio_postgres::SimpleQueryMessage;

/// Column names and rows of text cells (NULL = None).
#[derive(Debug, Clone, Default)]
pub struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
}

impl Table {
    /// From a `simple_query` result.
    pub fn from_messages(messages: &[SimpleQueryMessage]) -> Self {
        let mut t = Table::default();
        for m in messages {
            if let SimpleQueryMessage::Row(row) = m {
                if t.columns.is_empty() {
                    t.columns = row.columns().iter().map(|c| c.name().to_string()).collect();
                }
                t.rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                );
            }
        }
        t
    }

    /// From `psql -A -F'|'` output: a header line, rows, an optional `(N rows)` footer.
    /// Empty cells are NULL.
    pub fn from_fixture(text: &str) -> Self {
        let mut lines = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('('));
        let columns = lines
            .next()
            .map(|h| h.split('|').map(|c| c.trim().to_string()).collect())
            .unwrap_or_default();
        let rows = lines
            .map(|l| {
                l.split('|')
                    .map(|c| Some(c.to_string()).filter(|c| !c.is_empty()))
                    .collect()
            })
            .collect();
        Self { columns, rows }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn index(&self, column: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == column)
    }

    /// Whether the result has this column.
    pub fn has(&self, column: &str) -> bool {
        self.index(column).is_some()
    }

    /// A cell as text; NULL and missing columns are None.
    pub fn text(&self, row: usize, column: &str) -> Option<&str> {
        let i = self.index(column)?;
        self.rows.get(row)?.get(i)?.as_deref()
    }

    /// A cell as a label value: NULL and missing columns are "".
    pub fn label(&self, row: usize, column: &str) -> String {
        self.text(row, column).unwrap_or("").to_string()
    }

    /// A cell as a number (PgBouncer sends numerics as text).
    pub fn num(&self, row: usize, column: &str) -> Option<f64> {
        self.text(row, column)?.trim().parse().ok()
    }
}
