//! `[audit]`: where audit lines go and which table is forwarded. Owns `AuditSettings`,
//! `AuditTable` (a schema-qualified name checked to be safe to quote into SQL) and the
//! validator.

use std::path::PathBuf;

use super::{Ctx, Error};
use crate::config::raw::AuditConfig;

/// `[audit]`, validated.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Write audit lines to stdout (the daemon only; CLI commands never do).
    pub stdout: bool,
    /// Also append them to this file (the daemon and CLI commands; hash chain continued).
    pub file: Option<PathBuf>,
    /// Forward rows of this table as `data` lines.
    pub table: Option<AuditTable>,
    /// Keys of row data replaced by `"[redacted]"` before rows leave PostgreSQL.
    pub redact_columns: Vec<String>,
}

/// A schema-qualified table name, both parts plain lowercase identifiers
/// (`[a-z_][a-z0-9_]*`), so they can be quoted into SQL safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditTable {
    pub schema: String,
    pub table: String,
}

impl AuditTable {
    /// `"schema"."table"`, quoted for SQL.
    pub fn quoted(&self) -> String {
        format!("\"{}\".\"{}\"", self.schema, self.table)
    }
}

fn is_plain_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && s.len() <= 63
}

pub(super) fn validate(ctx: &Ctx<'_>, raw: &AuditConfig) -> Result<AuditSettings, Error> {
    let file = match &raw.file {
        None => None,
        Some(f) => {
            let f = ctx.expand(&["audit", "file"], f)?;
            if !f.starts_with('/') {
                return Err(ctx.invalid(
                    &["audit", "file"],
                    format!(
                        "{f:?} must be an absolute path, e.g. \"/var/log/pgvigil/audit.jsonl\""
                    ),
                ));
            }
            Some(PathBuf::from(f))
        }
    };
    let table = match &raw.table {
        None => None,
        Some(t) => match t.split_once('.') {
            Some((schema, table)) if is_plain_identifier(schema) && is_plain_identifier(table) => {
                Some(AuditTable {
                    schema: schema.into(),
                    table: table.into(),
                })
            }
            _ => {
                return Err(ctx.invalid(
                    &["audit", "table"],
                    format!("{t:?} must be schema.table in lowercase identifiers, e.g. \"audit.logged_actions\""),
                ))
            }
        },
    };
    for (i, c) in raw.redact_columns.iter().enumerate() {
        if c.is_empty() {
            return Err(ctx.invalid(
                &["audit", "redact_columns", &i.to_string()],
                "is empty; name a column, e.g. \"password\"",
            ));
        }
    }
    Ok(AuditSettings {
        stdout: raw.stdout,
        file,
        table,
        redact_columns: raw.redact_columns.clone(),
    })
}
