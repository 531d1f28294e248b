//! Custom SQL metrics (`[[postgres.queries]]`): each query runs at most once per its
//! `interval` (results are reused in between), over the simple query protocol so any
//! column type works, with label columns as text and value columns parsed as numbers.
//! A failing query is reported by its own `pgvigil_scrape_collector_success` and never
//! affects the rest of the page.

use std::borrow::Cow;
use std::collections::HashMap;

use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_postgres::{Client, SimpleQueryMessage};

use super::CollectError;
use crate::collectors::ScrapeMetrics;
use crate::config::{CustomKind, CustomQuery};
use crate::metrics::{catalogue as c, Family, Kind};
use crate::pg::{connect, ConnectOptions};

/// The configured queries and their cached results.
pub(super) struct CustomQueries {
    queries: Vec<CustomQuery>,
    cache: Mutex<HashMap<String, (Instant, Vec<Family>)>>,
}

impl CustomQueries {
    pub(super) fn new(queries: Vec<CustomQuery>) -> Self {
        Self {
            queries,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Appends every query's families, running those whose interval has passed.
    pub(super) async fn collect(
        &self,
        client: &Client,
        opts: &ConnectOptions,
        metrics: &ScrapeMetrics,
        out: &mut Vec<Family>,
    ) {
        let mut cache = self.cache.lock().await;
        for q in &self.queries {
            if let Some((at, fams)) = cache.get(&q.name) {
                if at.elapsed() < q.interval {
                    out.extend(fams.iter().cloned());
                    continue;
                }
            }
            let collector = format!("query:{}", q.name);
            let start = Instant::now();
            let res = tokio::time::timeout(opts.statement_timeout, run(q, client, opts)).await;
            match res {
                Ok(Ok(fams)) => {
                    metrics.record(&collector, start.elapsed(), true);
                    out.extend(fams.iter().cloned());
                    cache.insert(q.name.clone(), (Instant::now(), fams));
                }
                Ok(Err(e)) => {
                    tracing::warn!(event = "collector.failed", collector = %collector, error = %e, "custom query failed");
                    metrics.record(&collector, start.elapsed(), false);
                    cache.remove(&q.name);
                }
                Err(_) => {
                    tracing::warn!(event = "collector.timeout", collector = %collector, "custom query timed out");
                    metrics.record(&collector, start.elapsed(), false);
                    cache.remove(&q.name);
                }
            }
        }
    }
}

async fn run(
    q: &CustomQuery,
    client: &Client,
    opts: &ConnectOptions,
) -> Result<Vec<Family>, CollectError> {
    let messages = match &q.database {
        None => client.simple_query(&q.sql).await?,
        Some(db) => {
            connect(opts, Some(db))
                .await?
                .client
                .simple_query(&q.sql)
                .await?
        }
    };
    to_families(q, &messages)
}

fn to_families(
    q: &CustomQuery,
    messages: &[SimpleQueryMessage],
) -> Result<Vec<Family>, CollectError> {
    let kind = match q.kind {
        CustomKind::Gauge => Kind::Gauge,
        CustomKind::Counter => Kind::Counter,
    };
    let mut families: Vec<Family> = q
        .values
        .iter()
        .map(|v| {
            let name = if q.values.len() == 1 && v == "value" {
                q.name.clone()
            } else {
                format!("{}_{v}", q.name)
            };
            Family::dynamic(&c::CUSTOM_QUERY, name, q.help.clone(), kind)
        })
        .collect();
    for m in messages {
        let SimpleQueryMessage::Row(row) = m else {
            continue;
        };
        let mut labels = Vec::with_capacity(q.labels.len());
        for l in &q.labels {
            let v = row.try_get(l.as_str()).map_err(|_| {
                CollectError::Postgres(format!(
                    "query {}: label column {l:?} is not in the result",
                    q.name
                ))
            })?;
            labels.push((Cow::Owned(l.clone()), v.unwrap_or("").to_string()));
        }
        for (v, fam) in q.values.iter().zip(families.iter_mut()) {
            let text = row.try_get(v.as_str()).map_err(|_| {
                CollectError::Postgres(format!(
                    "query {}: value column {v:?} is not in the result",
                    q.name
                ))
            })?;
            let Some(text) = text else { continue };
            let value = match text {
                "t" => 1.0,
                "f" => 0.0,
                t => t.parse::<f64>().map_err(|_| {
                    CollectError::Postgres(format!(
                        "query {}: column {v:?} value {t:?} is not a number",
                        q.name
                    ))
                })?,
            };
            fam.push_labeled(labels.clone(), value);
        }
    }
    families.retain(|f| !f.samples.is_empty());
    Ok(families)
}
