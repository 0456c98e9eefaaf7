//! The HTTP side of `serve --http ADDR` (axum): the management API under `/api/v1/`
//! ([`api`]), the dashboard at `/` ([`dashboard`]) and `/metrics` in the Prometheus text
//! format. Everything but `/healthz` needs a token made by `ota-server token create`: as
//! `Authorization: Bearer TOKEN`, or (for a browser) once as `/?token=TOKEN`, which sets a
//! cookie and leaves the token out of the address bar.

pub mod api;
pub mod dashboard;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Request, State as Extract};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use ota_transport_coap::server::ServerStats;

use crate::fleet::Fleet;

/// What the handlers share.
#[derive(Clone)]
pub struct State {
    /// The fleet (and its store).
    pub fleet: Arc<Fleet>,
    /// The CoAP server's counters, if CoAP is served.
    pub coap: Option<Arc<ServerStats>>,
    /// The key uploaded images are signed with, if the server was given one.
    pub signing_key: Option<ed25519_dalek::SigningKey>,
    /// The key pre-signed manifests are checked with.
    pub public_key: Option<[u8; 32]>,
}

/// Largest request body (an image upload), bytes.
pub const MAX_BODY: usize = 64 << 20;

const COOKIE: &str = "ota_token";

/// The router, for `serve` and for tests.
pub fn router(state: State) -> Router {
    let state = Arc::new(state);
    Router::new()
        .route("/", get(dashboard::page))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api::routes())
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves `state` on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, state: State) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind {addr}"))?;
    eprintln!("ota-server: serving HTTP on {}", listener.local_addr()?);
    axum::serve(listener, router(state))
        .await
        .context("HTTP server failed")
}

/// The token a request carries: bearer header, cookie, or `?token=`.
fn token_of(headers: &HeaderMap, query: Option<&str>) -> (Option<String>, bool) {
    if let Some(t) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return (Some(t.trim().to_string()), false);
    }
    if let Some(t) = query.and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(str::to_string)
    }) {
        return (Some(t), true);
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        });
    (cookie, false)
}

async fn auth(Extract(state): Extract<Arc<State>>, req: Request, next: Next) -> Response {
    let (token, from_query) = token_of(req.headers(), req.uri().query());
    let valid = match &token {
        Some(t) => state
            .fleet
            .store()
            .check_token(t)
            .await
            .ok()
            .flatten()
            .is_some(),
        None => false,
    };
    if !valid {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({
                "error": "a token is needed: Authorization: Bearer TOKEN (ota-server token create)"
            })),
        )
            .into_response();
    }
    if from_query {
        // Into a cookie, out of the address bar and the history.
        let cookie = format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
            token.unwrap_or_default()
        );
        let mut r = Redirect::to(req.uri().path()).into_response();
        if let Ok(v) = cookie.parse() {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        return r;
    }
    next.run(req).await
}

async fn metrics(Extract(state): Extract<Arc<State>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.fleet.metrics().render(state.coap.as_deref()),
    )
}
