//! The fleet: what every check-in is answered ([`ota_core::host::Application`]), the images
//! devices fetch (checked against their manifest when loaded, kept in a bounded cache), the
//! credentials the CoAP server authenticates requests with ([`DeviceKeys`]), and the rollouts
//! that ramp and pause themselves ([`rollout`]).
//!
//! The serving path reads nothing from the store that it can hold: classes, rollouts and
//! releases are a snapshot reloaded when the store's configuration counter moves (within
//! [`REFRESH`]), images are cached, and with SQLite (one `serve` per data directory) devices'
//! rows and classes are kept in memory too, loaded when it starts. With PostgreSQL a device's
//! row is read from the database at each check-in, since another instance may have answered
//! its last one. Writes go behind the request ([`crate::store::Backend::record`]), except
//! where the device forgets what it sent once answered: the replay floor, and an update's
//! outcome (a device reports "confirmed" or "rolled back" until a check-in carrying it is
//! answered, so the answer waits for the commit; an instance killed after answering would
//! otherwise lose it for good).
//!
//! | module | what it holds |
//! |---|---|
//! | [`glance`] | the fleet summary, read once for every viewer for a while |
//! | [`plan`] | a check-in's or report's decision, row and history, worked out in memory |
//! | [`rollout`] | staged ramps and automatic pauses |

pub mod glance;
pub mod plan;
pub mod rollout;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ota_core::host::{Application, Decision, HandlerError, Image, ImageError, Peer};
use ota_core::wire::{CheckIn, DeferReason, ImageId, Report, ResultCode};
use ota_transport_coap::server::{DeviceKey, DeviceKeys, KeyFuture};
use sha2::{Digest as _, Sha256};

use crate::cache::ImageCache;
use crate::metrics::Metrics;
use crate::store::summary::Summary;
use crate::store::{
    unix_now, Credentials, DeviceRow, Patch, Release, Rollout, Store, Write, PATCH_IMAGE_BIT,
};

pub use plan::reason_text;

/// Devices reporting a release's image failing its integrity check before it is halted.
pub const INTEGRITY_FAILURES_TO_HALT: u32 = 3;

/// How often a serving instance looks for configuration changes and evaluates rollouts.
pub const REFRESH: Duration = Duration::from_millis(500);

/// How long a "may this device fetch this image" answer is reused.
const FETCH_DECISION_TTL: Duration = Duration::from_secs(10);

/// How long credentials read at start may answer a device's first look-up. A server started
/// under load (a restart, a deploy) is asked for every device's credentials within seconds;
/// read one by one, each read its pages from the file again. The CoAP server asks again
/// every minute, so a device removed from the store meanwhile is noticed within a minute and
/// this long after a start, and a replay floor read at start is still the device's own: this
/// process is its only writer (`serve` holds [`crate::store::sqlite::ServeLock`] on the data
/// directory), and it advances a floor only once the device's context exists.
pub const FIRST_KEYS_VALID: Duration = Duration::from_secs(10);

/// Credentials read at start (see [`FIRST_KEYS_VALID`]): when, and by kid.
type FirstKeys = (Instant, HashMap<Vec<u8>, Credentials>);

/// Bytes sent are counted per (device, release, whether as a patch).
type SentKey = (String, u32, bool);

/// Releases, rollouts and class names as of one configuration version.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The store's configuration counter it was read at.
    pub version: i64,
    /// Class names by numeric id.
    pub classes: HashMap<u32, String>,
    /// Rollouts by class.
    pub rollouts: HashMap<String, Rollout>,
}

/// Answers check-ins from the store and records what devices say.
pub struct Fleet {
    store: Store,
    snapshot: RwLock<Arc<Snapshot>>,
    images: Mutex<ImageCache>,
    /// Device id → provisioned class (credentials do not change).
    classes: Mutex<HashMap<String, String>>,
    /// Credentials by kid as read at start and when, when this process is the only writer:
    /// each handed out once, within [`FIRST_KEYS_VALID`] of the read.
    first_keys: Mutex<Option<FirstKeys>>,
    /// Device rows, when this process is their only writer.
    devices: Option<Mutex<HashMap<String, DeviceRow>>>,
    fetch: Mutex<HashMap<(String, ImageId), (bool, Instant)>>,
    /// Image bytes sent per (device, release, as a patch) since the last flush, and when the
    /// first was.
    sent: Mutex<HashMap<SentKey, (u64, i64)>>,
    next_check_in: u32,
    metrics: Arc<Metrics>,
    /// The last summary, for the dashboard and the API.
    glance: glance::Glance,
    /// Seconds since midnight UTC, for maintenance windows.
    clock: Box<dyn Fn() -> u32 + Send + Sync>,
}

impl Fleet {
    /// Over `store`, telling devices to check in every `next_check_in` seconds, keeping at
    /// most `cache_bytes` of images in memory.
    pub async fn new(store: Store, next_check_in: u32, cache_bytes: usize) -> anyhow::Result<Self> {
        // The only writer holds every device's row in memory, and every device's class: read
        // once here. Looked up one by one as devices first spoke, they made a server just
        // started answer at half its later rate, as each batched commit empties a reading
        // connection's page cache and every lookup read its pages from the file again. So
        // are the credentials, for the first look-ups after the start ([`FIRST_KEYS_VALID`]).
        let (devices, classes, first_keys) = if store.backend().sole_writer() {
            let read_at = Instant::now();
            let creds = store.all_credentials().await?;
            let rows = store.all_devices().await?;
            let classes = creds
                .iter()
                .map(|c| (c.id.clone(), c.class.clone()))
                .collect();
            let by_kid = creds.into_iter().map(|c| (c.kid.clone(), c)).collect();
            (
                Some(Mutex::new(
                    rows.into_iter().map(|r| (r.id.clone(), r)).collect(),
                )),
                classes,
                Some((read_at, by_kid)),
            )
        } else {
            (None, HashMap::new(), None)
        };
        let fleet = Self {
            store,
            snapshot: RwLock::new(Arc::new(Snapshot {
                version: -1,
                ..Snapshot::default()
            })),
            images: Mutex::new(ImageCache::new(cache_bytes)),
            classes: Mutex::new(classes),
            first_keys: Mutex::new(first_keys),
            devices,
            fetch: Mutex::new(HashMap::new()),
            sent: Mutex::new(HashMap::new()),
            next_check_in,
            metrics: Arc::new(Metrics::default()),
            glance: glance::Glance::default(),
            clock: Box::new(|| (unix_now() % 86_400) as u32),
        };
        fleet.refresh(true).await?;
        // Starts the store's batched writer now rather than under the first check-ins.
        fleet.store.flush().await?;
        Ok(fleet)
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The fleet at a glance, as the dashboard and the API show it: read from the store once
    /// for every viewer for a while ([`glance`]).
    pub async fn summary(&self) -> anyhow::Result<Arc<Summary>> {
        // The store's counter, not this instance's snapshot of it: a change from the CLI or
        // another instance shows at once, not at the next refresh.
        let config = self.store.config_version().await?;
        self.glance.get(&self.store, config).await
    }

    /// The counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Bytes of images held in memory now.
    pub fn cached_image_bytes(&self) -> usize {
        self.images.lock().map(|c| c.bytes()).unwrap_or(0)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Reloads the snapshot if the configuration changed (or `force`); `true` if it did.
    pub async fn refresh(&self, force: bool) -> anyhow::Result<bool> {
        let version = self.store.config_version().await?;
        if !force && version == self.snapshot().version {
            return Ok(false);
        }
        let classes = self.store.classes().await?.into_iter().collect();
        let rollouts = self
            .store
            .rollouts()
            .await?
            .into_iter()
            .map(|r| (r.class.clone(), r))
            .collect();
        if let Ok(mut s) = self.snapshot.write() {
            *s = Arc::new(Snapshot {
                version,
                classes,
                rollouts,
            });
        }
        if let Ok(mut f) = self.fetch.lock() {
            f.clear();
        }
        Ok(true)
    }

    /// Runs until dropped: every [`REFRESH`], reloads the snapshot if the store changed,
    /// writes the byte counts gathered, and ramps or pauses rollouts ([`rollout::evaluate`]).
    pub async fn maintain(self: Arc<Self>) {
        loop {
            tokio::time::sleep(REFRESH).await;
            if let Err(e) = self.tick().await {
                eprintln!("ota-server: {e:#}");
            }
        }
    }

    /// `kid`'s credentials as read at start, once, within [`FIRST_KEYS_VALID`] of the read;
    /// `None` for a later or second look-up (the store answers those).
    fn first_key(&self, kid: &[u8]) -> Option<Credentials> {
        let mut first = self.first_keys.lock().ok()?;
        let (read_at, by_kid) = first.as_mut()?;
        if read_at.elapsed() >= FIRST_KEYS_VALID {
            *first = None;
            return None;
        }
        by_kid.remove(kid)
    }

    /// Lets go of the credentials read at start once they may no longer answer.
    fn expire_first_keys(&self) {
        if let Ok(mut first) = self.first_keys.lock() {
            if first
                .as_ref()
                .is_some_and(|(read_at, _)| read_at.elapsed() >= FIRST_KEYS_VALID)
            {
                *first = None;
            }
        }
    }

    /// One round of [`Fleet::maintain`].
    pub async fn tick(&self) -> anyhow::Result<()> {
        self.expire_first_keys();
        self.flush_sent();
        self.refresh(false).await?;
        let snapshot = self.snapshot();
        let mut changed = false;
        for r in snapshot.rollouts.values() {
            if let Some(action) = rollout::evaluate(&self.store, r, unix_now()).await? {
                if rollout::apply(&self.store, r, &action).await? {
                    eprintln!("ota-server: rollout of {}: {}", r.class, action.describe());
                    if matches!(action, rollout::Action::Pause(_)) {
                        self.metrics
                            .auto_pauses
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    changed = true;
                }
            }
        }
        if changed {
            self.refresh(true).await?;
        }
        Ok(())
    }

    fn flush_sent(&self) {
        let drained: Vec<_> = match self.sent.lock() {
            Ok(mut m) => m.drain().collect(),
            Err(_) => return,
        };
        for ((device, release, patch), (bytes, at)) in drained {
            self.store.record(Write::Bytes {
                device,
                release,
                bytes,
                patch,
                at,
            });
        }
    }

    /// Writes everything gathered and queued (byte counts, rows) and waits for it.
    pub async fn flush(&self) -> anyhow::Result<()> {
        self.flush_sent();
        Ok(self.store.flush().await?)
    }

    /// The class `device` was provisioned with, if it was.
    async fn provisioned_class(&self, device: &str) -> anyhow::Result<Option<String>> {
        if let Some(c) = self
            .classes
            .lock()
            .ok()
            .and_then(|m| m.get(device).cloned())
        {
            return Ok(Some(c));
        }
        let class = self.store.credentials(device).await?.map(|c| c.class);
        if let (Some(c), Ok(mut m)) = (&class, self.classes.lock()) {
            m.insert(device.to_string(), c.clone());
        }
        Ok(class)
    }

    /// `device`'s row as last written.
    async fn device_row(&self, device: &str) -> anyhow::Result<Option<DeviceRow>> {
        if let Some(cache) = &self.devices {
            if let Some(r) = cache.lock().ok().and_then(|m| m.get(device).cloned()) {
                return Ok(Some(r));
            }
        }
        let row = self.store.device(device).await?;
        if let (Some(cache), Some(r)) = (&self.devices, &row) {
            if let Ok(mut m) = cache.lock() {
                m.insert(device.to_string(), r.clone());
            }
        }
        Ok(row)
    }

    /// Writes `row` (behind the request) and keeps it in memory if this process owns rows.
    fn put_row(&self, row: DeviceRow) {
        if let Some(cache) = &self.devices {
            if let Ok(mut m) = cache.lock() {
                m.insert(row.id.clone(), row.clone());
            }
        }
        self.store.record(Write::Device(row));
    }

    fn history(&self, device: &str, events: Vec<(String, String)>) {
        let at = unix_now();
        for (kind, detail) in events {
            self.store.record(Write::Event {
                device: device.to_string(),
                at,
                kind,
                detail,
            });
        }
    }

    /// Image `id` from the cache, or from the store if it matches its release's manifest
    /// (size and SHA-256); a mismatch halts the release.
    async fn verified_image(&self, release: &Release) -> Result<Image, String> {
        let id = ImageId(release.id);
        if let Some(b) = self.images.lock().ok().and_then(|mut c| c.get(id)) {
            return Ok(Image {
                info: ota_core::host::ImageInfo {
                    size: release.manifest.manifest().image_size,
                    digest: release.manifest.manifest().digest,
                },
                bytes: b,
            });
        }
        let bytes = self
            .store
            .image(id)
            .await
            .map_err(|e| format!("stored image unreadable: {e:#}"))?
            .ok_or_else(|| "stored image missing".to_string())?;
        let m = release.manifest.manifest();
        let why = if bytes.len() != m.image_size as usize {
            Some(format!(
                "stored image is {} bytes, its manifest says {}",
                bytes.len(),
                m.image_size
            ))
        } else if Sha256::digest(&bytes).as_slice() != m.digest.0 {
            Some("stored image does not match its manifest's SHA-256".to_string())
        } else {
            None
        };
        if let Some(why) = why {
            eprintln!("ota-server: release {} halted: {why}", release.id);
            if let Err(e) = self.store.halt_release(release.id, &why).await {
                eprintln!("ota-server: cannot halt release {}: {e:#}", release.id);
            }
            let _ = self.refresh(true).await;
            return Err(why);
        }
        let bytes: Arc<[u8]> = bytes.into();
        if let Ok(mut c) = self.images.lock() {
            c.insert(id, bytes.clone());
        }
        Ok(Image {
            info: ota_core::host::ImageInfo {
                size: m.image_size,
                digest: m.digest,
            },
            bytes,
        })
    }

    /// Patch `p`'s bytes from the cache, or from the store if they match its manifest (size
    /// and SHA-256). A mismatch is logged and the patch is not offered (devices get the whole
    /// image).
    async fn verified_patch(&self, p: &Patch) -> Result<Image, String> {
        let id = ImageId(p.id);
        let info = ota_core::host::ImageInfo {
            size: p.info.size,
            digest: p.info.digest,
        };
        if let Some(bytes) = self.images.lock().ok().and_then(|mut c| c.get(id)) {
            return Ok(Image { info, bytes });
        }
        let bytes = self
            .store
            .bytes_by_digest(&p.info.digest)
            .await
            .map_err(|e| format!("stored patch unreadable: {e:#}"))?
            .ok_or_else(|| "stored patch missing".to_string())?;
        if bytes.len() != p.info.size as usize
            || Sha256::digest(&bytes).as_slice() != p.info.digest.0
        {
            let why = format!(
                "stored patch {} does not match its manifest",
                p.id & !PATCH_IMAGE_BIT
            );
            eprintln!("ota-server: {why}; offering the whole image instead");
            return Err(why);
        }
        let bytes: Arc<[u8]> = bytes.into();
        if let Ok(mut c) = self.images.lock() {
            c.insert(id, bytes.clone());
        }
        Ok(Image { info, bytes })
    }

    /// Counts `device`'s integrity failure of release `id`; halts the release at
    /// [`INTEGRITY_FAILURES_TO_HALT`] devices.
    async fn integrity_failed(&self, id: u32, device: &str) -> anyhow::Result<()> {
        let n = self.store.integrity_failure(id, device).await?;
        eprintln!("ota-server: {device} reports release {id} failing its integrity check ({n} devices so far)");
        if n >= INTEGRITY_FAILURES_TO_HALT {
            let why = format!("{n} devices reported integrity failures");
            if self.store.halted(id).await?.is_none() {
                eprintln!("ota-server: release {id} halted: {why}");
            }
            self.store.halt_release(id, &why).await?;
            self.refresh(true).await?;
        }
        Ok(())
    }

    /// The release a device's outcome names: by image id, or by its class and sequence.
    async fn release_of(
        &self,
        class: &str,
        outcome: &plan::Outcome,
    ) -> anyhow::Result<Option<Release>> {
        if let Some(id) = outcome.image {
            return self.store.release_by_id(id).await;
        }
        let Some(seq) = outcome.sequence else {
            return Ok(None);
        };
        if let Some(r) = self
            .snapshot()
            .rollouts
            .get(class)
            .filter(|r| r.release.sequence == seq)
        {
            return Ok(Some(r.release.clone()));
        }
        self.store.release_by_sequence(class, seq).await
    }

    /// Records the end of an update: its transfer's outcome, the counters, integrity reports.
    async fn settle(&self, device: &str, class: &str, o: &plan::Outcome) -> anyhow::Result<()> {
        let result = match o.outcome {
            "success" => "confirmed",
            "rollback" => "rolled back",
            _ if plan::patch_failed(o.code) => "patch failed",
            _ => "failed",
        };
        self.metrics.result(result, &reason_text(o.code));
        if plan::patch_failed(o.code) {
            // Not the update's end: the device is offered the whole image next.
            return Ok(());
        }
        let Some(release) = self.release_of(class, o).await? else {
            return Ok(());
        };
        self.store.record(Write::Outcome {
            device: device.to_string(),
            release: release.id,
            outcome: o.outcome.to_string(),
            at: unix_now(),
        });
        if o.code == ResultCode::INTEGRITY_FAILURE && o.outcome == "failure" {
            self.integrity_failed(release.id, device).await?;
        }
        Ok(())
    }

    /// The decision for `c` from `id` and the plan it comes from.
    async fn plan(&self, id: &str, c: &CheckIn<'_>) -> anyhow::Result<plan::Plan> {
        let snapshot = self.snapshot();
        let class = snapshot
            .classes
            .get(&c.class)
            .cloned()
            .unwrap_or_else(|| format!("#{}", c.class));
        let provisioned = self.provisioned_class(id).await?;
        let prev = self.device_row(id).await?;
        let rollout = snapshot.rollouts.get(&class);
        let inputs = |release_ok, patches| plan::Inputs {
            id,
            class: class.clone(),
            provisioned_class: provisioned.as_deref(),
            prev: prev.clone(),
            rollout,
            release_ok,
            patches,
            secs_of_day: (self.clock)(),
            now: unix_now(),
            next_check_in: self.next_check_in,
        };
        let mut p = plan::check_in(c, inputs(true, true));
        if let (Decision::Offer { image, .. }, Some(r)) = (&p.decision, rollout) {
            let ok = r.release.halted.is_none() && self.verified_image(&r.release).await.is_ok();
            let patch = r.release.patches.iter().find(|x| x.id == image.0);
            if !ok {
                p = plan::check_in(c, inputs(false, false));
            } else if let Some(patch) = patch {
                if self.verified_patch(patch).await.is_err() {
                    p = plan::check_in(c, inputs(true, false));
                }
            }
        }
        Ok(p)
    }

    /// What a check-in of `c` would be answered now, recording nothing (to republish a
    /// sleeping device's desired state when a rollout changes).
    pub async fn peek(&self, c: &CheckIn<'_>) -> Decision {
        let id = String::from_utf8_lossy(c.device_id).into_owned();
        match self.plan(&id, c).await {
            Ok(p) => p.decision,
            Err(_) => Decision::Defer {
                retry_after: 300,
                reason: DeferReason::ServerBusy,
            },
        }
    }

    async fn check_in_inner(&self, id: &str, c: &CheckIn<'_>) -> anyhow::Result<Decision> {
        let p = self.plan(id, c).await?;
        if let Some(o) = &p.outcome {
            self.settle(id, &p.row.class, o).await?;
        }
        let settled = p.outcome.is_some();
        self.history(id, p.events);
        self.put_row(p.row);
        if settled {
            self.store.flush().await?;
        }
        use std::sync::atomic::Ordering::Relaxed;
        self.metrics.checkins.fetch_add(1, Relaxed);
        match &p.decision {
            Decision::Offer { .. } => self.metrics.offers.fetch_add(1, Relaxed),
            Decision::Defer { .. } => self.metrics.deferrals.fetch_add(1, Relaxed),
            _ => 0,
        };
        Ok(p.decision)
    }

    async fn report_inner(&self, id: &str, r: &Report<'_>) -> anyhow::Result<()> {
        self.metrics
            .reports
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(prev) = self.device_row(id).await? else {
            if r.phase == ota_core::wire::Phase::Failed && r.result == ResultCode::INTEGRITY_FAILURE
            {
                self.integrity_failed(r.image.0, id).await?;
            }
            return Ok(());
        };
        let class = prev.class.clone();
        let p = plan::report(r, prev, unix_now());
        if let Some(o) = &p.outcome {
            self.settle(id, &class, o).await?;
        }
        let settled = p.outcome.is_some();
        self.history(id, p.events);
        self.put_row(p.row);
        if settled {
            self.store.flush().await?;
        }
        Ok(())
    }

    /// May `device` fetch `image`: the release rolled out to its class, reaching it, not
    /// halted or cancelled.
    async fn may_fetch(&self, device: &str, image: ImageId) -> bool {
        let key = (device.to_string(), image);
        if let Some((ok, at)) = self.fetch.lock().ok().and_then(|c| c.get(&key).copied()) {
            if at.elapsed() < FETCH_DECISION_TTL {
                return ok;
            }
        }
        let class = match self.provisioned_class(device).await {
            Ok(Some(c)) => Some(c),
            Ok(None) => self
                .device_row(device)
                .await
                .ok()
                .flatten()
                .map(|d| d.class),
            Err(_) => None,
        };
        let snapshot = self.snapshot();
        let ok = class
            .and_then(|c| snapshot.rollouts.get(&c))
            .is_some_and(|r| {
                r.release.serves(image)
                    && r.release.halted.is_none()
                    && !r.cancelled()
                    && r.reaches(device)
            });
        if let Ok(mut c) = self.fetch.lock() {
            if c.len() > 100_000 {
                c.clear();
            }
            c.insert(key, (ok, Instant::now()));
        }
        ok
    }

    /// Image `image` for `peer` (see [`Application::image`]).
    async fn image_for(
        &self,
        peer: Peer<'_>,
        image: ImageId,
        offset: u32,
        len: u32,
    ) -> Result<Image, HandlerError> {
        if let Peer::Device(d) = peer {
            if !self.may_fetch(d, image).await {
                return Err(HandlerError::Forbidden {
                    device: d.to_string(),
                    image,
                });
            }
        }
        if image.0 & PATCH_IMAGE_BIT != 0 {
            return self.patch_for(peer, image, offset, len).await;
        }
        let snapshot = self.snapshot();
        let found = snapshot
            .rollouts
            .values()
            .find(|r| r.release.id == image.0)
            .map(|r| r.release.clone());
        let release = or_stored(found, image, self.store.release_by_id(image.0)).await?;
        let img = self
            .verified_image(&release)
            .await
            .map_err(ImageError::Io)?;
        self.count_sent(peer, release.id, false, &img, offset, len);
        Ok(img)
    }

    /// Patch `image` for `peer` (already allowed to fetch it).
    async fn patch_for(
        &self,
        peer: Peer<'_>,
        image: ImageId,
        offset: u32,
        len: u32,
    ) -> Result<Image, HandlerError> {
        let snapshot = self.snapshot();
        let found = snapshot
            .rollouts
            .values()
            .flat_map(|r| r.release.patches.iter())
            .find(|p| p.id == image.0)
            .cloned();
        let patch = or_stored(found, image, self.store.patch_by_id(image)).await?;
        let img = self.verified_patch(&patch).await.map_err(ImageError::Io)?;
        self.count_sent(peer, patch.release, true, &img, offset, len);
        Ok(img)
    }

    /// Counts the bytes of a block of `img` sent to `peer` for `release`.
    fn count_sent(
        &self,
        peer: Peer<'_>,
        release: u32,
        patch: bool,
        img: &Image,
        offset: u32,
        len: u32,
    ) {
        let sent = u64::from(len.min(img.info.size.saturating_sub(offset)));
        self.metrics
            .image_bytes
            .fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
        if let (Peer::Device(d), Ok(mut m)) = (peer, self.sent.lock()) {
            let e = m
                .entry((d.to_string(), release, patch))
                .or_insert((0, unix_now()));
            e.0 += sent;
        }
    }
}

/// `found` (in the snapshot), else what `load` reads from the store; unknown if neither has it.
async fn or_stored<T>(
    found: Option<T>,
    image: ImageId,
    load: impl std::future::Future<Output = anyhow::Result<Option<T>>>,
) -> Result<T, ImageError> {
    match found {
        Some(x) => Ok(x),
        None => load
            .await
            .map_err(|e| ImageError::Io(e.to_string()))?
            .ok_or(ImageError::UnknownImage(image)),
    }
}

/// The device a request speaks for: the authenticated one, or (lab mode) the one it claims.
fn speaker(peer: Peer<'_>, claimed: &[u8]) -> String {
    match peer {
        Peer::Device(d) => d.to_string(),
        Peer::Anonymous => String::from_utf8_lossy(claimed).into_owned(),
    }
}

impl Application for Fleet {
    async fn check_in(&self, peer: Peer<'_>, checkin: &CheckIn<'_>) -> Decision {
        let id = speaker(peer, checkin.device_id);
        match self.check_in_inner(&id, checkin).await {
            Ok(d) => d,
            Err(e) => {
                eprintln!("ota-server: check-in from {id}: {e:#}");
                Decision::Defer {
                    retry_after: 300,
                    reason: DeferReason::ServerBusy,
                }
            }
        }
    }

    async fn report(&self, peer: Peer<'_>, report: &Report<'_>) {
        let id = speaker(peer, report.device_id);
        if let Err(e) = self.report_inner(&id, report).await {
            eprintln!("ota-server: report from {id}: {e:#}");
        }
    }

    async fn image(
        &self,
        peer: Peer<'_>,
        image: ImageId,
        offset: u32,
        len: u32,
    ) -> Result<Image, HandlerError> {
        self.image_for(peer, image, offset, len).await
    }
}

impl DeviceKeys for Fleet {
    fn lookup(&self, _kid: &[u8]) -> Option<DeviceKey> {
        // The server always awaits `lookup_async`.
        None
    }

    fn advance(&self, _device: &str, _seq: u64) -> bool {
        false
    }

    fn lookup_async<'a>(&'a self, kid: &'a [u8]) -> KeyFuture<'a, Option<DeviceKey>> {
        Box::pin(async move {
            let cred = match self.first_key(kid) {
                Some(c) => c,
                None => match self.store.credentials_by_kid(kid).await {
                    Ok(c) => c?,
                    Err(e) => {
                        eprintln!("ota-server: credentials lookup: {e:#}");
                        return None;
                    }
                },
            };
            if let Ok(mut m) = self.classes.lock() {
                m.insert(cred.id.clone(), cred.class.clone());
            }
            Some(DeviceKey {
                device: cred.id,
                secret: cred.secret,
                salt: cred.salt,
                device_sender_id: cred.kid,
                server_sender_id: Vec::new(),
                floor: cred.floor,
            })
        })
    }

    fn advance_async<'a>(&'a self, device: &'a str, seq: u64) -> KeyFuture<'a, bool> {
        Box::pin(async move {
            match self.store.advance_floor(device, seq).await {
                Ok(fresh) => fresh,
                Err(e) => {
                    eprintln!("ota-server: cannot record the sequence number of {device}: {e}");
                    false
                }
            }
        })
    }
}
