//! The fleet's desired state, answered from the store for every check-in; the image source
//! (images checked against their manifest's digest when loaded, kept in a bounded cache); the
//! device credentials the CoAP server authenticates requests with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ota_core::host::{read_slice, Decision, DesiredState, ImageError, ImageInfo, ImageSource};
use ota_core::wire::{
    self, CheckIn, DeferReason, ImageId, LastOutcome, Phase, Report, ResultCode, Urgency,
};
use ota_transport_coap::server::{DeviceKey, DeviceKeys};
use sha2::{Digest as _, Sha256};

use crate::cache::ImageCache;
use crate::store::{bucket, unix_now, vtext, DeviceRow, Store};

/// Devices reporting a release's image failing its integrity check before it is halted.
pub const INTEGRITY_FAILURES_TO_HALT: u32 = 3;

/// How long a "may this device fetch this image" answer is reused.
const FETCH_DECISION_TTL: Duration = Duration::from_secs(10);

/// Answers check-ins from the store and records what devices say.
pub struct Fleet {
    store: Mutex<Store>,
    images: Mutex<ImageCache>,
    /// Releases whose stored image matched its manifest (checked once per process).
    verified: Mutex<HashMap<u32, ()>>,
    fetch: Mutex<HashMap<(String, ImageId), (bool, Instant)>>,
    next_check_in: u32,
    /// Seconds since midnight UTC, for maintenance windows (a function so tests can fix it).
    clock: Box<dyn Fn() -> u32 + Send + Sync>,
}

/// Human words for a result code.
pub fn reason_text(code: ResultCode) -> String {
    let text = match code {
        ResultCode::SUCCESS => "success",
        ResultCode::OUT_OF_STORAGE => "not enough flash",
        ResultCode::OUT_OF_MEMORY => "out of RAM",
        ResultCode::CONNECTION_LOST => "connection lost",
        ResultCode::INTEGRITY_FAILURE => "integrity check failed",
        ResultCode::UNSUPPORTED_PACKAGE => "unsupported package (vendor or class)",
        ResultCode::UPDATE_FAILED => "update failed",
        ResultCode::BAD_SIGNATURE => "bad manifest signature",
        ResultCode::NOT_NEWER => "not newer than running (anti-rollback)",
        ResultCode::CHUNK_TOO_LARGE => "chunk size beyond the device's limit",
        ResultCode::RUNNING_TOO_OLD => "running version below the minimum",
        ResultCode::HEALTH_CHECK_FAILED => "health check failed",
        ResultCode::TRIAL_RESET => "reset during trial boot",
        ResultCode::CANCELLED => "cancelled",
        ResultCode::STORAGE_ERROR => "flash error",
        ResultCode(c) => return format!("code {c} (LwM2M {})", ResultCode(c).lwm2m()),
    };
    text.to_string()
}

impl Fleet {
    /// Over `store`, telling devices to check in every `next_check_in` seconds.
    pub fn new(store: Store, next_check_in: u32) -> Self {
        Self::with_image_cache(store, next_check_in, 256 << 20)
    }

    /// [`Fleet::new`] keeping at most `cache_bytes` of images in memory (least recently used
    /// out).
    pub fn with_image_cache(store: Store, next_check_in: u32, cache_bytes: usize) -> Self {
        Self {
            store: Mutex::new(store),
            images: Mutex::new(ImageCache::new(cache_bytes)),
            verified: Mutex::new(HashMap::new()),
            fetch: Mutex::new(HashMap::new()),
            next_check_in,
            clock: Box::new(|| (unix_now() % 86_400) as u32),
        }
    }

    /// Bytes of images held in memory now.
    pub fn cached_image_bytes(&self) -> usize {
        self.images.lock().map(|c| c.bytes()).unwrap_or(0)
    }

    /// Why release `id` must not be offered, if so: halted, or its stored image does not
    /// match its manifest (checked once, then remembered; a mismatch halts the release).
    fn release_fault(&self, store: &Store, id: u32) -> anyhow::Result<Option<String>> {
        if let Some(why) = store.halted(id)? {
            return Ok(Some(why));
        }
        if self.verified.lock().is_ok_and(|v| v.contains_key(&id)) {
            return Ok(None);
        }
        let bytes = match verified_image(store, ImageId(id)) {
            Ok(b) => b,
            Err(why) => {
                eprintln!("ota-server: release {id} halted: {why}");
                store.halt_release(id, &why)?;
                return Ok(Some(why));
            }
        };
        if let Ok(mut v) = self.verified.lock() {
            v.insert(id, ());
        }
        if let Ok(mut c) = self.images.lock() {
            c.insert(ImageId(id), bytes);
        }
        Ok(None)
    }

    /// Counts `device`'s integrity failure of release `id`; halts the release at
    /// [`INTEGRITY_FAILURES_TO_HALT`] devices.
    fn integrity_failed(&self, store: &Store, id: u32, device: &str) -> anyhow::Result<()> {
        let n = store.integrity_failure(id, device)?;
        eprintln!("ota-server: {device} reports release {id} failing its integrity check ({n} devices so far)");
        if n >= INTEGRITY_FAILURES_TO_HALT {
            let why = format!("{n} devices reported integrity failures");
            if store.halted(id)?.is_none() {
                eprintln!("ota-server: release {id} halted: {why}");
            }
            store.halt_release(id, &why)?;
        }
        Ok(())
    }

    fn store(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Store>> {
        self.store
            .lock()
            .map_err(|_| anyhow::anyhow!("store lock poisoned"))
    }

    /// Every device's last check-in, by id (see [`Store::checkins`]).
    pub fn checkins(&self) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        self.store()?.checkins()
    }

    /// See [`Store::data_version`].
    pub fn data_version(&self) -> anyhow::Result<i64> {
        self.store()?.data_version()
    }

    /// Decides and records the check-in: the device row and the check-in itself.
    fn decide_inner(&self, c: &CheckIn<'_>) -> anyhow::Result<Decision> {
        let store = self.store()?;
        let (decision, row) = self.plan(&store, c)?;
        store.upsert_device(&row)?;
        store.set_checkin(
            &row.id,
            &wire::encode_vec(&wire::Message::CheckIn(c.clone())),
        )?;
        Ok(decision)
    }

    /// The decision for `c` and the device row it leaves, without writing anything.
    fn plan(&self, store: &Store, c: &CheckIn<'_>) -> anyhow::Result<(Decision, DeviceRow)> {
        let up_to_date = Decision::UpToDate {
            next_check_in: self.next_check_in,
        };
        let id = String::from_utf8_lossy(c.device_id).into_owned();
        let class = store
            .class_name(c.class)?
            .unwrap_or_else(|| format!("#{}", c.class));
        if let Some(cred) = store.credentials(&id)? {
            if crate::class_id(&cred.class) != c.class {
                // A provisioned device speaks for its own class only.
                let mut row = store.device(&id)?.unwrap_or_default();
                (row.id, row.class, row.last_seen) = (id.clone(), cred.class.clone(), unix_now());
                (row.result, row.reason) = (
                    "refused".into(),
                    format!("claims class {class}, provisioned as {}", cred.class),
                );
                eprintln!("ota-server: {id} {}", row.reason);
                return Ok((up_to_date, row));
            }
        }
        let mut row = store.device(&id)?.unwrap_or_default();
        row.id = id.clone();
        row.class = class.clone();
        row.running = vtext(c.running.version);
        row.running_seq = c.running.sequence;
        row.last_seen = unix_now();
        match c.last {
            LastOutcome::Confirmed { sequence } => {
                (row.result, row.reason) = ("confirmed".into(), format!("sequence {sequence}"));
            }
            LastOutcome::RolledBack { sequence, reason } => {
                (row.result, row.reason) = ("rolled back".into(), reason_text(reason));
                row.failed_seq = Some(sequence);
            }
            LastOutcome::Failed { sequence, reason } => {
                (row.result, row.reason) = ("failed".into(), reason_text(reason));
                row.failed_seq = Some(sequence);
                if reason == ResultCode::INTEGRITY_FAILURE {
                    if let Some(r) = store.release_by_sequence(&class, sequence)? {
                        self.integrity_failed(store, r.id, &id)?;
                    }
                }
            }
            LastOutcome::None => {}
        }
        let rollout = store.rollout(&class)?;
        let decision = match rollout {
            None => up_to_date,
            Some(r) if c.vendor != crate::VENDOR => {
                let _ = r;
                up_to_date
            }
            Some(r) if r.cancelled => {
                if c.resume.is_some() {
                    Decision::Cancel {
                        next_check_in: self.next_check_in,
                    }
                } else {
                    up_to_date
                }
            }
            Some(r) if c.running.sequence >= r.release.sequence => up_to_date,
            Some(r) if row.failed_seq == Some(r.release.sequence) => up_to_date,
            Some(r) if !(r.devices.contains(&id) || bucket(&id, &class) < r.percent) => {
                Decision::Defer {
                    retry_after: self.next_check_in,
                    reason: DeferReason::RolloutNotReached,
                }
            }
            Some(r) => match r.window.map(|w| w.wait_secs((self.clock)())) {
                Some(wait) if wait > 0 => Decision::Defer {
                    retry_after: wait,
                    reason: DeferReason::OutsideWindow,
                },
                _ if self.release_fault(store, r.release.id)?.is_some() => Decision::Defer {
                    retry_after: self.next_check_in,
                    reason: DeferReason::ServerBusy,
                },
                _ => Decision::Offer {
                    image: ImageId(r.release.id),
                    manifest: r.release.manifest.clone(),
                    urgency: Urgency::Attempt,
                    next_check_in: self.next_check_in,
                },
            },
        };
        row.phase = match (&decision, c.resume) {
            (Decision::Offer { manifest, .. }, Some(h)) => {
                let size = manifest.manifest().image_size;
                row.progress = Some((h.next_offset.min(size), size));
                "downloading".into()
            }
            (Decision::Offer { manifest, .. }, None) => {
                row.progress = Some((0, manifest.manifest().image_size));
                "offered".into()
            }
            (
                Decision::Defer {
                    reason: DeferReason::OutsideWindow,
                    ..
                },
                _,
            ) => "waiting for window".into(),
            (
                Decision::Defer {
                    reason: DeferReason::ServerBusy,
                    ..
                },
                _,
            ) => "held: release halted".into(),
            (Decision::Defer { .. }, _) => "not in rollout yet".into(),
            (Decision::Cancel { .. }, _) => "cancelled".into(),
            (Decision::UpToDate { .. }, _) => {
                row.progress = None;
                if row.failed_seq.is_some() && row.result != "confirmed" {
                    row.result.clone()
                } else {
                    "up to date".into()
                }
            }
        };
        Ok((decision, row))
    }
}

impl DesiredState for Fleet {
    fn decide(&self, checkin: &CheckIn<'_>) -> Decision {
        match self.decide_inner(checkin) {
            Ok(d) => d,
            Err(e) => {
                eprintln!(
                    "ota-server: check-in from {}: {e:#}",
                    String::from_utf8_lossy(checkin.device_id)
                );
                Decision::Defer {
                    retry_after: 300,
                    reason: DeferReason::ServerBusy,
                }
            }
        }
    }

    fn peek(&self, checkin: &CheckIn<'_>) -> Decision {
        let planned = self.store().and_then(|store| self.plan(&store, checkin));
        match planned {
            Ok((d, _)) => d,
            Err(_) => Decision::Defer {
                retry_after: 300,
                reason: DeferReason::ServerBusy,
            },
        }
    }

    fn may_fetch(&self, device: &str, image: ImageId) -> bool {
        let key = (device.to_string(), image);
        if let Some(&(ok, at)) = self
            .fetch
            .lock()
            .ok()
            .and_then(|c| c.get(&key).copied())
            .as_ref()
        {
            if at.elapsed() < FETCH_DECISION_TTL {
                return ok;
            }
        }
        let ok = self
            .store()
            .and_then(|store| offered_to(&store, device, image))
            .unwrap_or(false);
        if let Ok(mut c) = self.fetch.lock() {
            if c.len() > 100_000 {
                c.clear();
            }
            c.insert(key, (ok, Instant::now()));
        }
        ok
    }

    fn on_report(&self, report: &Report<'_>) {
        let Ok(store) = self.store.lock() else { return };
        let id = String::from_utf8_lossy(report.device_id).into_owned();
        if report.phase == Phase::Failed && report.result == ResultCode::INTEGRITY_FAILURE {
            if let Err(e) = self.integrity_failed(&store, report.image.0, &id) {
                eprintln!("ota-server: report from {id}: {e:#}");
            }
        }
        let Ok(Some(mut row)) = store.device(&id) else {
            return;
        };
        row.phase = match report.phase {
            Phase::Rejected => "rejected",
            Phase::Downloading => "downloading",
            Phase::Staged => "staged",
            Phase::TrialBoot => "trial boot",
            Phase::Confirmed => "confirmed",
            Phase::RolledBack => "rolled back",
            Phase::Failed => "failed",
        }
        .into();
        if matches!(report.phase, Phase::Staged) {
            if let Some((_, size)) = row.progress {
                row.progress = Some((size, size));
            }
        }
        if report.result != ResultCode::INITIAL {
            row.result = row.phase.clone();
            row.reason = reason_text(report.result);
        }

        row.last_seen = unix_now();
        if let Err(e) = store.upsert_device(&row) {
            eprintln!("ota-server: report from {id}: {e:#}");
        }
    }
}

impl Fleet {
    /// Image `id`, from the cache or the store (checked against its manifest on load).
    fn image(&self, id: ImageId) -> Result<Arc<Vec<u8>>, ImageError> {
        if let Some(b) = self.images.lock().ok().and_then(|mut c| c.get(id)) {
            return Ok(b);
        }
        // Not under the cache lock: the store lock is taken first everywhere else.
        let store = self
            .store
            .lock()
            .map_err(|_| ImageError::Io("lock poisoned".into()))?;
        if store
            .release_by_id(id.0)
            .map_err(|e| ImageError::Io(e.to_string()))?
            .is_none()
        {
            return Err(ImageError::UnknownImage(id));
        }
        let bytes = verified_image(&store, id).map_err(|why| {
            eprintln!("ota-server: release {} halted: {why}", id.0);
            let _ = store.halt_release(id.0, &why);
            ImageError::Io(why)
        })?;
        drop(store);
        if let Ok(mut c) = self.images.lock() {
            c.insert(id, bytes.clone());
        }
        Ok(bytes)
    }
}

/// Image `id` from the store, if it matches its release's manifest (size and SHA-256); else
/// why not.
fn verified_image(store: &Store, id: ImageId) -> Result<Arc<Vec<u8>>, String> {
    let release = store
        .release_by_id(id.0)
        .map_err(|e| format!("release {} unreadable: {e:#}", id.0))?
        .ok_or_else(|| format!("release {} not found", id.0))?;
    let bytes = store
        .image(id)
        .map_err(|e| format!("stored image unreadable: {e:#}"))?
        .ok_or_else(|| "stored image missing".to_string())?;
    let m = release.manifest.manifest();
    if bytes.len() != m.image_size as usize {
        return Err(format!(
            "stored image is {} bytes, its manifest says {}",
            bytes.len(),
            m.image_size
        ));
    }
    if Sha256::digest(&bytes).as_slice() != m.digest.0 {
        return Err("stored image does not match its manifest's SHA-256".into());
    }
    Ok(Arc::new(bytes))
}

/// Is `image` the release rolled out to `device`'s class, reaching `device`, not halted?
fn offered_to(store: &Store, device: &str, image: ImageId) -> anyhow::Result<bool> {
    let Some(release) = store.release_by_id(image.0)? else {
        return Ok(false);
    };
    let class = match store.credentials(device)? {
        Some(c) => c.class,
        None => match store.device(device)? {
            Some(d) => d.class,
            None => return Ok(false),
        },
    };
    if release.class != class || store.halted(image.0)?.is_some() {
        return Ok(false);
    }
    let Some(r) = store.rollout(&class)? else {
        return Ok(false);
    };
    Ok(r.release.id == image.0
        && !r.cancelled
        && (r.devices.iter().any(|d| d == device) || bucket(device, &class) < r.percent))
}

impl DeviceKeys for Fleet {
    fn lookup(&self, kid: &[u8]) -> Option<DeviceKey> {
        let cred = self.store().ok()?.credentials_by_kid(kid).ok()??;
        Some(DeviceKey {
            device: cred.id,
            secret: cred.secret,
            salt: cred.salt,
            device_sender_id: cred.kid,
            server_sender_id: Vec::new(),
            floor: cred.floor,
        })
    }

    fn advance(&self, device: &str, seq: u64) -> bool {
        match self.store().and_then(|s| s.advance_floor(device, seq)) {
            Ok(fresh) => fresh,
            Err(e) => {
                eprintln!("ota-server: cannot record the sequence number of {device}: {e:#}");
                false
            }
        }
    }
}

impl ImageSource for Fleet {
    fn read_at(&self, image: ImageId, offset: u32, buf: &mut [u8]) -> Result<usize, ImageError> {
        read_slice(image, &self.image(image)?, offset, buf)
    }

    fn describe(&self, image: ImageId) -> Result<ImageInfo, ImageError> {
        let store = self
            .store
            .lock()
            .map_err(|_| ImageError::Io("lock poisoned".into()))?;
        let r = store
            .release_by_id(image.0)
            .map_err(|e| ImageError::Io(e.to_string()))?
            .ok_or(ImageError::UnknownImage(image))?;
        let m = r.manifest.manifest();
        Ok(ImageInfo {
            size: m.image_size,
            digest: m.digest,
        })
    }
}
