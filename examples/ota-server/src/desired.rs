//! The fleet's desired state, answered from the store for every check-in, and the image source.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ota_core::host::{read_slice, Decision, DesiredState, ImageError, ImageInfo, ImageSource};
use ota_core::wire::{
    self, CheckIn, DeferReason, ImageId, LastOutcome, Phase, Report, ResultCode, Urgency,
};

use crate::store::{bucket, unix_now, vtext, DeviceRow, Store};

/// Answers check-ins from the store and records what devices say.
pub struct Fleet {
    store: Mutex<Store>,
    images: Mutex<HashMap<ImageId, Arc<Vec<u8>>>>,
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
        Self {
            store: Mutex::new(store),
            images: Mutex::new(HashMap::new()),
            next_check_in,
            clock: Box::new(|| (unix_now() % 86_400) as u32),
        }
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

    fn on_report(&self, report: &Report<'_>) {
        let Ok(store) = self.store.lock() else { return };
        let id = String::from_utf8_lossy(report.device_id).into_owned();
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
    fn image(&self, id: ImageId) -> Result<Arc<Vec<u8>>, ImageError> {
        let mut cache = self
            .images
            .lock()
            .map_err(|_| ImageError::Io("lock poisoned".into()))?;
        if let Some(b) = cache.get(&id) {
            return Ok(b.clone());
        }
        let store = self
            .store
            .lock()
            .map_err(|_| ImageError::Io("lock poisoned".into()))?;
        let bytes = store
            .image(id)
            .map_err(|e| ImageError::Io(e.to_string()))?
            .ok_or(ImageError::UnknownImage(id))?;
        let bytes = Arc::new(bytes);
        cache.insert(id, bytes.clone());
        Ok(bytes)
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
