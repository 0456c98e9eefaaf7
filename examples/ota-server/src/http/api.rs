//! The management API, JSON under `/api/v1/`:
//!
//! | method | path | what |
//! |---|---|---|
//! | `GET` | `/fleet` | the fleet at a glance (what the dashboard shows) |
//! | `GET` | `/releases` | every release |
//! | `POST` | `/releases?class=C&version=X.Y.Z[&chunk_size=N]` | body: an image; signed with the server's key |
//! | `POST` | `/releases/signed` | `{class, manifest, signature, image}` (hex): a manifest signed elsewhere |
//! | `POST` | `/releases/{id}/resume` | offer a halted release again |
//! | `GET` | `/rollouts` | every rollout |
//! | `POST` | `/rollouts` | `{class, version, steps, soak_secs, max_failure_percent, min_outcomes, devices, window}` |
//! | `POST` | `/rollouts/{class}/pause`, `/resume`, `/cancel`, `/ramp` | change a rollout (`ramp`: the next step now) |
//! | `GET` | `/devices?class=&version=&state=&limit=` | devices |
//! | `GET` | `/devices/{id}` | one device, its history and what it fetched |
//!
//! Errors are `{"error": "…"}` with 400 (bad input), 404 (no such thing) or 409 (a state that
//! does not allow it).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as Extract};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ota_core::host::OwnedManifest;
use ota_core::wire::Signature;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::State;
use crate::store::{
    vtext, DeviceFilter, DeviceRow, Release, Rollout, RolloutPlan, RolloutState, Window,
};

/// The `/api/v1` routes.
pub fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/fleet", get(fleet))
        .route("/releases", get(releases).post(upload))
        .route("/releases/signed", post(upload_signed))
        .route("/releases/{id}/resume", post(resume_release))
        .route("/rollouts", get(rollouts).post(create_rollout))
        .route("/rollouts/{class}/{action}", post(change_rollout))
        .route("/devices", get(devices))
        .route("/devices/{id}", get(device))
}

/// An error answer.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, format!("{e:#}"))
}

fn internal(e: anyhow::Error) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
}

fn not_found(what: String) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, what)
}

type ApiResult = Result<Response, ApiError>;

/// A release as the API shows it.
#[derive(Serialize)]
pub struct ReleaseView {
    id: u32,
    class: String,
    version: String,
    sequence: u32,
    size: u32,
    chunk_size: u16,
    sha256: String,
    halted: Option<String>,
    created: i64,
}

impl From<&Release> for ReleaseView {
    fn from(r: &Release) -> Self {
        let m = r.manifest.manifest();
        Self {
            id: r.id,
            class: r.class.clone(),
            version: vtext(r.version),
            sequence: r.sequence,
            size: m.image_size,
            chunk_size: m.chunk_size,
            sha256: hex::encode(m.digest.0),
            halted: r.halted.clone(),
            created: r.created,
        }
    }
}

/// A rollout as the API shows it.
#[derive(Serialize)]
pub struct RolloutView {
    class: String,
    release: ReleaseView,
    state: &'static str,
    reason: String,
    steps: Vec<u8>,
    step: usize,
    percent: u8,
    step_started: i64,
    soak_secs: u32,
    max_failure_percent: u8,
    min_outcomes: u32,
    devices: Vec<String>,
    window: Option<String>,
}

impl From<&Rollout> for RolloutView {
    fn from(r: &Rollout) -> Self {
        Self {
            class: r.class.clone(),
            release: (&r.release).into(),
            state: r.state.as_str(),
            reason: r.state_reason.clone(),
            steps: r.plan.steps.clone(),
            step: r.step,
            percent: r.percent(),
            step_started: r.step_started,
            soak_secs: r.plan.soak_secs,
            max_failure_percent: r.plan.max_failure_percent,
            min_outcomes: r.plan.min_outcomes,
            devices: r.plan.devices.clone(),
            window: r.plan.window.map(|w| w.to_text()),
        }
    }
}

/// A device as the API shows it.
#[derive(Serialize)]
pub struct DeviceView {
    id: String,
    class: String,
    running: String,
    phase: String,
    staged: Option<u32>,
    size: Option<u32>,
    result: String,
    reason: String,
    last_seen: i64,
    check_in_secs: u32,
}

impl From<&DeviceRow> for DeviceView {
    fn from(d: &DeviceRow) -> Self {
        Self {
            id: d.id.clone(),
            class: d.class.clone(),
            running: d.running.clone(),
            phase: d.phase.clone(),
            staged: d.progress.map(|p| p.0),
            size: d.progress.map(|p| p.1),
            result: d.result.clone(),
            reason: d.reason.clone(),
            last_seen: d.last_seen,
            check_in_secs: d.next_check_in,
        }
    }
}

async fn fleet(Extract(s): Extract<Arc<State>>) -> ApiResult {
    let summary = s.fleet.summary().await.map_err(internal)?;
    Ok(Json(&*summary).into_response())
}

async fn releases(Extract(s): Extract<Arc<State>>) -> ApiResult {
    let list = s.fleet.store().releases().await.map_err(internal)?;
    let views: Vec<ReleaseView> = list.iter().map(Into::into).collect();
    Ok(Json(views).into_response())
}

/// `?class=&version=&chunk_size=` of an upload.
#[derive(Deserialize)]
pub struct UploadQuery {
    class: String,
    version: String,
    chunk_size: Option<u16>,
    /// Earlier versions to make patches from (`X.Y.Z,X.Y.Z…`).
    delta_from: Option<String>,
    /// Patches larger than this share of the image (percent) are not offered.
    max_patch_percent: Option<u8>,
}

async fn upload(
    Extract(s): Extract<Arc<State>>,
    Query(q): Query<UploadQuery>,
    body: Bytes,
) -> ApiResult {
    let Some(key) = &s.signing_key else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "this server has no signing key (serve --key DIR); upload a signed manifest to /api/v1/releases/signed".into(),
        ));
    };
    let version = crate::parse_version(&q.version).map_err(bad)?;
    let store = s.fleet.store();
    let sources = crate::delta::sources(store, &q.class, q.delta_from.as_deref().unwrap_or(""))
        .await
        .map_err(bad)?;
    let r = store
        .add_release(&q.class, version, &body, key, q.chunk_size.unwrap_or(1024))
        .await
        .map_err(bad)?;
    let max = q
        .max_patch_percent
        .unwrap_or(crate::delta::DEFAULT_MAX_PERCENT);
    let made = crate::delta::make_patches(store, &r, &body, &sources, max, key)
        .await
        .map_err(internal)?;
    let mut view = serde_json::to_value(ReleaseView::from(&r)).map_err(|e| internal(e.into()))?;
    if let Some(o) = view.as_object_mut() {
        let patches: Vec<_> = made.iter().map(|m| m.view(&sources)).collect();
        o.insert(
            "patches".into(),
            serde_json::to_value(patches).map_err(|e| internal(e.into()))?,
        );
    }
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// A manifest signed elsewhere, with its image, all hex.
#[derive(Deserialize)]
pub struct SignedUpload {
    class: String,
    manifest: String,
    signature: String,
    image: String,
}

async fn upload_signed(Extract(s): Extract<Arc<State>>, Json(u): Json<SignedUpload>) -> ApiResult {
    let body = hex::decode(&u.manifest).map_err(bad)?;
    let sig: [u8; 64] = hex::decode(&u.signature)
        .map_err(bad)?
        .try_into()
        .map_err(|_| bad("the signature is not 64 bytes"))?;
    let image = hex::decode(&u.image).map_err(bad)?;
    let manifest = OwnedManifest::new(body, Signature(sig)).map_err(bad)?;
    let Some(public) = s.public_key else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "this server has no public key to check manifests with (serve --key DIR)".into(),
        ));
    };
    let r = s
        .fleet
        .store()
        .add_signed_release(&u.class, manifest, &image, Some(&public))
        .await
        .map_err(bad)?;
    Ok((StatusCode::CREATED, Json(ReleaseView::from(&r))).into_response())
}

async fn resume_release(Extract(s): Extract<Arc<State>>, Path(id): Path<u32>) -> ApiResult {
    let store = s.fleet.store();
    let Some(r) = store.release_by_id(id).await.map_err(internal)? else {
        return Err(not_found(format!("no release {id}")));
    };
    store.resume_release(r.id).await.map_err(internal)?;
    let _ = s.fleet.refresh(true).await;
    let r = store.release_by_id(id).await.map_err(internal)?;
    Ok(Json(r.as_ref().map(ReleaseView::from)).into_response())
}

async fn rollouts(Extract(s): Extract<Arc<State>>) -> ApiResult {
    let list = s.fleet.store().rollouts().await.map_err(internal)?;
    let views: Vec<RolloutView> = list.iter().map(Into::into).collect();
    Ok(Json(views).into_response())
}

/// A new rollout.
#[derive(Deserialize)]
pub struct NewRollout {
    class: String,
    version: String,
    #[serde(default = "all")]
    steps: Vec<u8>,
    #[serde(default)]
    soak_secs: u32,
    #[serde(default = "hundred")]
    max_failure_percent: u8,
    #[serde(default = "one")]
    min_outcomes: u32,
    #[serde(default)]
    devices: Vec<String>,
    window: Option<String>,
}

fn all() -> Vec<u8> {
    vec![100]
}
fn hundred() -> u8 {
    100
}
fn one() -> u32 {
    1
}

async fn create_rollout(Extract(s): Extract<Arc<State>>, Json(n): Json<NewRollout>) -> ApiResult {
    let version = crate::parse_version(&n.version).map_err(bad)?;
    let plan = RolloutPlan {
        steps: n.steps,
        soak_secs: n.soak_secs,
        max_failure_percent: n.max_failure_percent,
        min_outcomes: n.min_outcomes,
        devices: n.devices,
        window: n
            .window
            .as_deref()
            .map(Window::parse)
            .transpose()
            .map_err(bad)?,
    };
    let r = s
        .fleet
        .store()
        .set_rollout(&n.class, version, &plan)
        .await
        .map_err(bad)?;
    let _ = s.fleet.refresh(true).await;
    Ok((StatusCode::CREATED, Json(RolloutView::from(&r))).into_response())
}

async fn change_rollout(
    Extract(s): Extract<Arc<State>>,
    Path((class, action)): Path<(String, String)>,
) -> ApiResult {
    let store = s.fleet.store();
    let Some(r) = store.rollout(&class).await.map_err(internal)? else {
        return Err(not_found(format!("no rollout for class {class}")));
    };
    use RolloutState::*;
    let last = r.step + 1 >= r.plan.steps.len();
    let done = match (action.as_str(), r.state) {
        ("pause", Running | Complete) => {
            store
                .transition(&class, r.state, Paused, "paused by hand", None)
                .await
        }
        ("resume", Paused) => {
            let to = if last { Complete } else { Running };
            store.transition(&class, Paused, to, "", None).await
        }
        ("cancel", Running | Complete | Paused) => {
            store
                .transition(&class, r.state, Cancelled, "cancelled by hand", None)
                .await
        }
        ("ramp", Running | Paused) if !last => {
            let to = if r.step + 2 >= r.plan.steps.len() {
                Complete
            } else {
                Running
            };
            store
                .transition(&class, r.state, to, "ramped by hand", Some(r.step + 1))
                .await
        }
        ("pause" | "resume" | "cancel" | "ramp", state) => {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "cannot {action} a rollout that is {}{}",
                    state.as_str(),
                    if last && action == "ramp" {
                        " at its last step"
                    } else {
                        ""
                    }
                ),
            ))
        }
        _ => return Err(not_found(format!("no action {action}"))),
    }
    .map_err(internal)?;
    if !done {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "the rollout changed meanwhile; try again".into(),
        ));
    }
    let _ = s.fleet.refresh(true).await;
    let r = store.rollout(&class).await.map_err(internal)?;
    Ok(Json(r.as_ref().map(RolloutView::from)).into_response())
}

async fn devices(Extract(s): Extract<Arc<State>>, Query(f): Query<DeviceFilter>) -> ApiResult {
    let list = s.fleet.store().devices(&f).await.map_err(internal)?;
    let views: Vec<DeviceView> = list.iter().map(Into::into).collect();
    Ok(Json(views).into_response())
}

async fn device(Extract(s): Extract<Arc<State>>, Path(id): Path<String>) -> ApiResult {
    let store = s.fleet.store();
    let Some(d) = store.device(&id).await.map_err(internal)? else {
        return Err(not_found(format!("no device {id}")));
    };
    let history = store.events(&id).await.map_err(internal)?;
    let transfers = store.transfers(Some(&id), None).await.map_err(internal)?;
    Ok(Json(json!({
        "device": DeviceView::from(&d),
        "history": history,
        "transfers": transfers,
    }))
    .into_response())
}
