//! PostgREST's admin server: `/metrics` is passed through (the `pgrst_*` families, with
//! their own types and help), `/ready` becomes `pgvigil_postgrest_ready`. Both requests run
//! concurrently under `postgrest.timeout`, so a hung PostgREST costs one timeout, not two.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::PostgrestSettings;
use crate::metrics::{catalogue as cat, parse::parse_text, Family};

/// Scrapes one PostgREST admin server.
pub struct PostgrestCollector {
    settings: PostgrestSettings,
    client: Client<HttpConnector, Empty<Bytes>>,
}

/// Bodies larger than this are not PostgREST's metrics page.
const MAX_BODY: usize = 4 << 20;

impl PostgrestCollector {
    /// A collector for the configured admin server.
    pub fn new(settings: PostgrestSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.timeout));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            settings,
        }
    }

    fn url(&self, path: &str) -> Option<Uri> {
        let base = &self.settings.admin_url;
        let prefix = base.path().trim_end_matches('/');
        Uri::builder()
            .scheme(base.scheme_str()?)
            .authority(base.authority()?.as_str())
            .path_and_query(format!("{prefix}{path}"))
            .build()
            .ok()
    }

    async fn get(&self, path: &str) -> Result<(u16, Bytes), String> {
        let uri = self.url(path).ok_or("bad admin URL")?;
        let fetch = async {
            let resp = self.client.get(uri).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.settings.timeout, fetch)
            .await
            .map_err(|_| format!("timed out after {:?}", self.settings.timeout))?
    }

    /// For `check-config`: whether /metrics and /ready answer, in words.
    pub async fn probe(&self) -> Result<String, String> {
        let (metrics, ready) = tokio::join!(self.get("/metrics"), self.get("/ready"));
        match metrics {
            Ok((200, body)) => {
                let families =
                    parse_text(&String::from_utf8_lossy(&body), |n| n.starts_with("pgrst_")).len();
                let ready = match ready {
                    Ok((200, _)) => "ready".to_string(),
                    Ok((status, _)) => format!("NOT ready (/ready answered {status})"),
                    Err(e) => format!("/ready failed: {e}"),
                };
                Ok(format!(
                    "admin /metrics: {families} pgrst_* families; {ready}"
                ))
            }
            Ok((status, _)) => Err(format!("admin /metrics answered {status}")),
            Err(e) => Err(format!("admin /metrics: {e}")),
        }
    }
}

#[async_trait::async_trait]
impl super::Collector for PostgrestCollector {
    /// Appends the pass-through families and pgvigil's up/ready gauges.
    async fn collect(&self, scrape: &super::ScrapeMetrics, out: &mut Vec<Family>) -> bool {
        let start = tokio::time::Instant::now();
        let (metrics, ready) = tokio::join!(self.get("/metrics"), self.get("/ready"));
        let up = match metrics {
            Ok((200, body)) => {
                out.extend(parse_text(&String::from_utf8_lossy(&body), |n| {
                    n.starts_with("pgrst_")
                }));
                true
            }
            Ok((status, _)) => {
                tracing::warn!(
                    event = "collector.failed",
                    collector = "postgrest",
                    status,
                    "PostgREST admin /metrics answered with an error status"
                );
                false
            }
            Err(e) => {
                tracing::warn!(event = "collector.failed", collector = "postgrest", error = %e, "PostgREST admin /metrics failed");
                false
            }
        };
        let ready = matches!(ready, Ok((200, _)));
        for (def, v) in [
            (&cat::PGVIGIL_POSTGREST_UP, up),
            (&cat::PGVIGIL_POSTGREST_READY, ready),
        ] {
            let mut f = Family::new(def);
            f.push(Vec::<String>::new(), if v { 1.0 } else { 0.0 });
            out.push(f);
        }
        scrape.record("postgrest", start.elapsed(), up);
        up
    }
}
