//! The optional active health check of each pool's backends: a `GET {path}` every
//! `interval_s`, with the pool's first key. A backend answering below 500 is healthy; one
//! that fails to connect, times out or answers 5xx is left out of rotation until it
//! recovers (while others are healthy: see `Pool::pick`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::app::App;
use crate::gateway::upstream::Pool;

pub struct HealthChecks {
    pub app: Arc<App>,
}

async fn probe(pool: &Pool, index: usize, path: &str, app: &App, connector: &Connector) -> bool {
    let attempt = async {
        let peer = pool.peer(index, &app.resolver).await.ok()?;
        let (mut session, _) = connector.get_http_session(&peer).await.ok()?;
        let backend = &pool.backends[index];
        let mut req =
            RequestHeader::build("GET", backend.upstream_path(path).as_bytes(), None).ok()?;
        req.insert_header("host", backend.authority.as_str()).ok()?;
        req.insert_header(
            "user-agent",
            concat!("tollgate/", env!("CARGO_PKG_VERSION")),
        )
        .ok()?;
        if let Some(authorization) = pool.next_authorization() {
            req.insert_header("authorization", authorization.clone())
                .ok()?;
        }
        session.write_request_header(Box::new(req)).await.ok()?;
        session.finish_request_body().await.ok()?;
        session.read_response_header().await.ok()?;
        session.response_header().map(|r| r.status.as_u16())
    };
    let limit = pool.connect_timeout + Duration::from_secs(5);
    matches!(tokio::time::timeout(limit, attempt).await, Ok(Some(status)) if status < 500)
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let checked: Vec<Arc<Pool>> = self
            .app
            .router
            .pools()
            .filter(|p| p.health_check.is_some())
            .cloned()
            .collect();
        if checked.is_empty() {
            return;
        }
        let connector = Connector::new(None);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut elapsed_s: u64 = 0;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            for pool in &checked {
                let Some(check) = &pool.health_check else {
                    continue;
                };
                if elapsed_s % check.interval_s.max(1) != 0 {
                    continue;
                }
                for index in 0..pool.backends.len() {
                    let healthy = probe(pool, index, &check.path, &self.app, &connector).await;
                    if !healthy {
                        log::warn!(
                            "health check: backend {index} of upstream {} is unhealthy",
                            pool.name
                        );
                    }
                    pool.set_health(index, healthy);
                }
            }
            elapsed_s += 1;
        }
    }
}
