//! The server's store: every typed operation (provisioning, releases, rollouts, devices, their
//! history, tokens) written once in SQL over a [`Backend`], which is SQLite under a data
//! directory ([`sqlite`], the default) or PostgreSQL shared by several instances
//! ([`postgres`]). Both get the same schema from the same migrations ([`schema`]).
//!
//! | module | what it holds |
//! |---|---|
//! | [`sql`] | values, rows, the [`Backend`] trait |
//! | [`schema`] | the migrations |
//! | [`write`](mod@write) | what the serving path writes behind the request |
//! | [`sqlite`], [`postgres`] | the two backends |
//!
//! Every change of what devices are offered (a release, a rollout, a halt) bumps a counter in
//! `meta`; serving instances poll it and reload their view of the fleet when it moves
//! ([`Store::config_version`]).

pub mod postgres;
pub mod schema;
pub mod sql;
pub mod sqlite;
pub mod summary;
pub mod write;

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use ed25519_dalek::SigningKey;
use ota_core::host::OwnedManifest;
use ota_core::manifest::{Manifest, PatchInfo, MANIFEST_FORMAT};
use ota_core::wire::{Digest, DigestPrefix, ImageId, Signature, Version};
use sha2::{Digest as _, Sha256};

pub use sql::{Backend, Row, Value};
pub use write::{DeviceRow, Write, WriteError};

use crate::params;
use crate::{class_id, VENDOR};

/// Unix seconds now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `X.Y.Z`.
pub fn vtext(v: Version) -> String {
    format!("{}.{}.{}", v.major, v.minor, v.patch)
}

/// A release as stored.
#[derive(Debug, Clone)]
pub struct Release {
    /// Image id devices fetch it by.
    pub id: u32,
    /// Device class name.
    pub class: String,
    /// Version.
    pub version: Version,
    /// Anti-rollback sequence number.
    pub sequence: u32,
    /// The signed manifest.
    pub manifest: OwnedManifest,
    /// Why it is no longer offered, if it is halted.
    pub halted: Option<String>,
    /// Unix seconds.
    pub created: i64,
    /// Its patches from earlier releases (loaded with a rollout; empty elsewhere).
    pub patches: Vec<Patch>,
}

impl Release {
    /// The image id and manifest a device whose resume hint names `prefix` is fetching: the
    /// whole image's or one of the patches'.
    pub fn by_manifest(&self, prefix: DigestPrefix) -> Option<(ImageId, &OwnedManifest)> {
        if self.manifest.digest().prefix() == prefix {
            return Some((ImageId(self.id), &self.manifest));
        }
        self.patches
            .iter()
            .find(|p| p.manifest.digest().prefix() == prefix)
            .map(|p| (ImageId(p.id), &p.manifest))
    }

    /// Whether `image` is this release's image or one of its patches.
    pub fn serves(&self, image: ImageId) -> bool {
        self.id == image.0 || self.patches.iter().any(|p| p.id == image.0)
    }
}

/// Image ids of patches have this bit set (releases count up from 1 without it).
pub const PATCH_IMAGE_BIT: u32 = 1 << 31;

/// A patch that rebuilds a release's image from an earlier release's, under a manifest of its
/// own (format 2: the target image as the release's, plus the patch and its source).
#[derive(Debug, Clone)]
pub struct Patch {
    /// Image id devices fetch it by (with [`PATCH_IMAGE_BIT`]).
    pub id: u32,
    /// The release it rebuilds.
    pub release: u32,
    /// The release it applies to.
    pub source: u32,
    /// The first 8 bytes of the source image's SHA-256, as a check-in carries them.
    pub source_prefix: DigestPrefix,
    /// The patch's size and SHA-256, and its source's, from the manifest.
    pub info: PatchInfo,
    /// The signed manifest.
    pub manifest: OwnedManifest,
}

const PATCH_COLUMNS: &str = "SELECT id, release, source, body, signature FROM patches";

fn patch_of(r: &Row) -> anyhow::Result<Patch> {
    let sig: [u8; 64] = r
        .bytes(4)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("stored signature is not 64 bytes"))?;
    let manifest = OwnedManifest::new(r.bytes(3)?, Signature(sig))?;
    let info = manifest
        .manifest()
        .patch
        .context("a stored patch's manifest describes no patch")?;
    Ok(Patch {
        id: r.num::<u32>(0)? | PATCH_IMAGE_BIT,
        release: r.num(1)?,
        source: r.num(2)?,
        source_prefix: info.source_digest.prefix(),
        info,
        manifest,
    })
}

/// A maintenance window, server time (UTC), minutes since midnight; may wrap past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Opens at.
    pub start: u16,
    /// Closes at.
    pub end: u16,
}

impl Window {
    /// Parses `HH:MM-HH:MM`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let hm = |t: &str| -> anyhow::Result<u16> {
            let (h, m) = t.split_once(':').context("expected HH:MM")?;
            let (h, m): (u16, u16) = (h.parse()?, m.parse()?);
            if h > 23 || m > 59 {
                bail!("{t} is not a time of day");
            }
            Ok(h * 60 + m)
        };
        let (a, b) = s.split_once('-').context("window must be HH:MM-HH:MM")?;
        Ok(Self {
            start: hm(a).with_context(|| format!("bad window {s}"))?,
            end: hm(b).with_context(|| format!("bad window {s}"))?,
        })
    }

    /// Seconds until the window opens at `now_secs_of_day`, 0 if it is open.
    pub fn wait_secs(&self, now_secs_of_day: u32) -> u32 {
        let minute = (now_secs_of_day / 60) as u16;
        let open = if self.start <= self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        };
        if open {
            return 0;
        }
        let start = u32::from(self.start) * 60;
        (start + 86_400 - now_secs_of_day) % 86_400
    }

    /// `HH:MM-HH:MM`.
    pub fn to_text(&self) -> String {
        format!(
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutState {
    /// Offered to the current step's share of the class; ramps when the step has soaked.
    Running,
    /// Not offered to devices that have not started (by hand, or automatically when the
    /// step's failures passed the threshold); downloads under way finish.
    Paused,
    /// Devices abandon downloads of it.
    Cancelled,
    /// At its last step.
    Complete,
}

impl RolloutState {
    /// Its name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Cancelled => "cancelled",
            RolloutState::Complete => "complete",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "paused" => RolloutState::Paused,
            "cancelled" => RolloutState::Cancelled,
            "complete" => RolloutState::Complete,
            _ => RolloutState::Running,
        }
    }
}

/// How a rollout ramps and when it stops itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutPlan {
    /// Share of the class at each step, percent, rising (a device is in if a stable hash of
    /// its id falls below it).
    pub steps: Vec<u8>,
    /// Least time at a step before the next, seconds.
    pub soak_secs: u32,
    /// Pause when more than this share of the step's finished updates failed or rolled back.
    pub max_failure_percent: u8,
    /// ... once at least this many finished at the step.
    pub min_outcomes: u32,
    /// Devices included whatever the step.
    pub devices: Vec<String>,
    /// Maintenance window.
    pub window: Option<Window>,
}

impl RolloutPlan {
    /// One step to `percent` at once (what `rollout --percent` does).
    pub fn immediate(percent: u8) -> Self {
        Self {
            steps: vec![percent],
            soak_secs: 0,
            max_failure_percent: 100,
            min_outcomes: 1,
            devices: Vec::new(),
            window: None,
        }
    }

    /// Parses `1,10,100`.
    pub fn parse_steps(s: &str) -> anyhow::Result<Vec<u8>> {
        let steps: Vec<u8> = s
            .split(',')
            .map(|p| p.trim().trim_end_matches('%').parse::<u8>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("steps {s:?} are not percentages like 1,10,100"))?;
        Ok(steps)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.steps.is_empty() {
            bail!("a rollout needs at least one step");
        }
        if self.steps.iter().any(|&p| p > 100) {
            bail!("a step above 100%");
        }
        if self.steps.windows(2).any(|w| w.first() >= w.get(1)) {
            bail!("steps must rise: {:?}", self.steps);
        }
        if self.max_failure_percent > 100 {
            bail!("failure threshold above 100%");
        }
        for d in &self.devices {
            ota_core::wire::check_device_id(d.as_bytes())
                .map_err(|e| anyhow::anyhow!("device id {d:?}: {e}"))?;
        }
        Ok(())
    }
}

/// A class's rollout.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// The class.
    pub class: String,
    /// The release rolled out.
    pub release: Release,
    /// How it ramps.
    pub plan: RolloutPlan,
    /// Index of the current step.
    pub step: usize,
    /// Unix seconds the current step began.
    pub step_started: i64,
    /// Where it stands.
    pub state: RolloutState,
    /// Why (a pause's cause, say).
    pub state_reason: String,
    /// Unix seconds.
    pub created: i64,
}

impl Rollout {
    /// Share of the class offered now, percent.
    pub fn percent(&self) -> u8 {
        self.plan
            .steps
            .get(self.step)
            .or(self.plan.steps.last())
            .copied()
            .unwrap_or(0)
    }

    /// Cancelled.
    pub fn cancelled(&self) -> bool {
        self.state == RolloutState::Cancelled
    }

    /// Whether `device` of its class is in the current step.
    pub fn reaches(&self, device: &str) -> bool {
        self.plan.devices.iter().any(|d| d == device)
            || bucket(device, &self.class) < self.percent()
    }
}

/// A provisioned device's OSCORE credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Device id.
    pub id: String,
    /// Its class.
    pub class: String,
    /// Its OSCORE sender id (the kid of its requests).
    pub kid: Vec<u8>,
    /// Master secret (16 bytes).
    pub secret: Vec<u8>,
    /// Master salt (8 bytes).
    pub salt: Vec<u8>,
    /// Highest sequence number of a check-in or report accepted.
    pub floor: Option<u64>,
}

/// One entry of a device's history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    /// Unix seconds.
    pub at: i64,
    /// What happened.
    pub kind: String,
    /// Details.
    pub detail: String,
}

/// What one device fetched for one release, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Transfer {
    /// The device.
    pub device: String,
    /// The release (image id).
    pub release: u32,
    /// Image bytes sent to it.
    pub bytes: u64,
    /// Of those, a patch's bytes (the rest were the whole image's).
    pub patch_bytes: u64,
    /// Unix seconds of the first block.
    pub started: i64,
    /// Unix seconds it ended, if it did.
    pub finished: Option<i64>,
    /// `success`, `failure`, `rollback`.
    pub outcome: Option<String>,
}

/// What one release's transfers add up to ([`Store::transfer_totals`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferTotals {
    /// The release.
    pub release: u32,
    /// Devices that fetched from it.
    pub devices: u64,
    /// Bytes sent (whole image and patch).
    pub bytes: u64,
    /// Devices that confirmed it.
    pub confirmed: u64,
    /// Bytes sent to those.
    pub confirmed_bytes: u64,
    /// Patch bytes sent.
    pub patch_bytes: u64,
}

/// Which devices to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct DeviceFilter {
    /// Of this class.
    pub class: Option<String>,
    /// Running this version.
    pub version: Option<String>,
    /// In this phase.
    pub state: Option<String>,
    /// At most this many (default 1000).
    pub limit: Option<u32>,
}

/// `n` big-endian without leading zero bytes (at least one byte).
fn minimal_be(n: u64) -> Vec<u8> {
    let b = n.to_be_bytes();
    let skip = b.iter().take_while(|&&x| x == 0).count().min(7);
    b.get(skip..).unwrap_or(&b).to_vec()
}

/// Stable per-device bucket 0..100 for percentage rollouts.
pub fn bucket(device: &str, class: &str) -> u8 {
    let mut h = Sha256::new();
    h.update(class.as_bytes());
    h.update([0]);
    h.update(device.as_bytes());
    let d: [u8; 32] = h.finalize().into();
    let [a, b, ..] = d;
    (u16::from_le_bytes([a, b]) % 100) as u8
}

const RELEASE_COLUMNS: &str =
    "SELECT id, class, major, minor, patch, sequence, body, signature, halted, created FROM releases";
const DEVICE_COLUMNS: &str = "SELECT id, class, running, running_seq, phase, staged, size, result, reason, last_seen, failed_seq, next_check_in, checkin, whole_seq FROM devices";
const CREDENTIAL_COLUMNS: &str = "SELECT id, class, kid, secret, salt, floor FROM credentials";
const ROLLOUT_COLUMNS: &str = "SELECT class, release, steps, step, step_started, soak_secs, max_failure_percent, min_outcomes, devices, maintenance, state, state_reason, created FROM rollouts";

fn release_of(r: &Row) -> anyhow::Result<Release> {
    let sig: [u8; 64] = r
        .bytes(7)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("stored signature is not 64 bytes"))?;
    Ok(Release {
        id: r.num(0)?,
        class: r.text(1)?,
        version: Version::new(r.num(2)?, r.num(3)?, r.num(4)?),
        sequence: r.num(5)?,
        manifest: OwnedManifest::new(r.bytes(6)?, Signature(sig))?,
        halted: r.opt_text(8)?,
        created: r.int(9)?,
        patches: Vec::new(),
    })
}

fn device_of(r: &Row) -> anyhow::Result<DeviceRow> {
    let staged: Option<u32> = r.opt_num(5)?;
    let size: Option<u32> = r.opt_num(6)?;
    Ok(DeviceRow {
        id: r.text(0)?,
        class: r.text(1)?,
        running: r.text(2)?,
        running_seq: r.num(3)?,
        phase: r.text(4)?,
        progress: staged.zip(size),
        result: r.text(7)?,
        reason: r.text(8)?,
        last_seen: r.int(9)?,
        failed_seq: r.opt_num(10)?,
        next_check_in: r.num(11)?,
        checkin: r.opt_bytes(12)?,
        whole_seq: r.opt_num(13)?,
    })
}

fn credentials_of(r: &Row) -> anyhow::Result<Credentials> {
    Ok(Credentials {
        id: r.text(0)?,
        class: r.text(1)?,
        kid: r.bytes(2)?,
        secret: r.bytes(3)?,
        salt: r.bytes(4)?,
        floor: r.opt_num(5)?,
    })
}

/// Where the store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// SQLite in `DIR/ota.db`.
    Dir(std::path::PathBuf),
    /// A PostgreSQL URL.
    Postgres(String),
}

impl Location {
    /// `--db URL` if given, else `--data DIR`.
    pub fn from_args(data: &Path, db: Option<&str>) -> anyhow::Result<Self> {
        match db {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Location::Postgres(url.to_string()))
            }
            Some(url) => bail!("--db {url:?}: only postgres:// URLs (SQLite is --data DIR)"),
            None => Ok(Location::Dir(data.to_path_buf())),
        }
    }
}

/// The store: typed operations over a [`Backend`].
#[derive(Clone)]
pub struct Store {
    db: Arc<dyn Backend>,
}

impl Store {
    /// Opens (creating and migrating) the store at `location`.
    pub async fn open_at(location: &Location) -> anyhow::Result<Self> {
        let db: Arc<dyn Backend> = match location {
            Location::Dir(dir) => Arc::new(sqlite::Sqlite::open(dir)?),
            Location::Postgres(url) => Arc::new(postgres::Postgres::connect(url).await?),
        };
        let store = Self { db };
        for (version, script) in schema::MIGRATIONS {
            schema::migrate(&*store.db, *version, script)
                .await
                .with_context(|| format!("cannot migrate the store to version {version}"))?;
        }
        Ok(store)
    }

    /// Opens the SQLite store in `dir`.
    pub async fn open(dir: &Path) -> anyhow::Result<Self> {
        Self::open_at(&Location::Dir(dir.to_path_buf())).await
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.db
    }

    /// Bumps the configuration counter inside `tx`.
    async fn bump(tx: &mut Box<dyn sql::Tx>) -> anyhow::Result<()> {
        tx.execute(
            "UPDATE meta SET value = value + 1 WHERE key = 'config'",
            vec![],
        )
        .await?;
        Ok(())
    }

    /// Changes whenever releases, rollouts or halts change (by any instance or CLI run).
    pub async fn config_version(&self) -> anyhow::Result<i64> {
        let rows = self
            .db
            .query("SELECT value FROM meta WHERE key = 'config'", vec![])
            .await?;
        Ok(rows.first().map(|r| r.int(0)).transpose()?.unwrap_or(0))
    }

    // ----- provisioning and keys -----

    /// Provisions device `id` of `class`: a new OSCORE sender id (`kid`, the next free number)
    /// and a fresh master secret and salt. Refuses an id that breaks the device id rule or is
    /// already provisioned.
    pub async fn add_device(&self, id: &str, class: &str) -> anyhow::Result<Credentials> {
        ota_core::wire::check_device_id(id.as_bytes())
            .map_err(|e| anyhow::anyhow!("device id {id:?}: {e}"))?;
        if class.is_empty() {
            bail!("class name is empty");
        }
        let mut secret = [0u8; 16];
        let mut salt = [0u8; 8];
        getrandom::getrandom(&mut secret)
            .and_then(|()| getrandom::getrandom(&mut salt))
            .map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
        let mut tx = self.db.begin().await?;
        if self.db.kind() == "postgres" {
            // Numbering kids is read-then-write: one provisioning at a time.
            tx.query("SELECT pg_advisory_xact_lock(7261002)", vec![])
                .await?;
        }
        if !tx
            .query("SELECT 1 FROM credentials WHERE id = $1", params![id])
            .await?
            .is_empty()
        {
            bail!("device {id} is already provisioned");
        }
        let count = tx
            .query("SELECT COUNT(*) FROM credentials", vec![])
            .await?
            .first()
            .map(|r| r.int(0))
            .transpose()?
            .unwrap_or(0);
        // Sender ids are numbers 1, 2, 3... in their shortest big-endian form, so the kid in
        // every request is 1 byte for the first 255 devices, 2 for the next 65 280.
        let mut n = u64::try_from(count).unwrap_or(0) + 1;
        let kid = loop {
            let kid = minimal_be(n);
            let taken = !tx
                .query(
                    "SELECT 1 FROM credentials WHERE kid = $1",
                    params![kid.clone()],
                )
                .await?
                .is_empty();
            if !taken {
                break kid;
            }
            n += 1;
        };
        tx.execute(
            "INSERT INTO credentials (id, class, kid, secret, salt, floor, created) VALUES ($1, $2, $3, $4, $5, NULL, $6)",
            params![id, class, kid.clone(), &secret[..], &salt[..], unix_now()],
        )
        .await?;
        tx.commit().await?;
        Ok(Credentials {
            id: id.into(),
            class: class.into(),
            kid,
            secret: secret.to_vec(),
            salt: salt.to_vec(),
            floor: None,
        })
    }

    /// The credentials whose device sender id is `kid`.
    pub async fn credentials_by_kid(&self, kid: &[u8]) -> anyhow::Result<Option<Credentials>> {
        let rows = self
            .db
            .query(
                &format!("{CREDENTIAL_COLUMNS} WHERE kid = $1"),
                params![kid],
            )
            .await?;
        rows.first().map(credentials_of).transpose()
    }

    /// The credentials of device `id`.
    pub async fn credentials(&self, id: &str) -> anyhow::Result<Option<Credentials>> {
        let rows = self
            .db
            .query(&format!("{CREDENTIAL_COLUMNS} WHERE id = $1"), params![id])
            .await?;
        rows.first().map(credentials_of).transpose()
    }

    /// Every provisioned device's credentials (a server that is the only writer loads them
    /// once at start rather than one lookup per device).
    pub async fn all_credentials(&self) -> anyhow::Result<Vec<Credentials>> {
        let rows = self.db.query(CREDENTIAL_COLUMNS, vec![]).await?;
        rows.iter().map(credentials_of).collect()
    }

    /// Every device's row (see [`Store::all_credentials`]).
    pub async fn all_devices(&self) -> anyhow::Result<Vec<DeviceRow>> {
        let rows = self.db.query(DEVICE_COLUMNS, vec![]).await?;
        rows.iter().map(device_of).collect()
    }

    /// Raises device `id`'s replay floor to `seq` if it is above it ([`Backend::advance`]).
    pub async fn advance_floor(&self, id: &str, seq: u64) -> Result<bool, WriteError> {
        self.db.advance(id, seq).await
    }

    // ----- releases -----

    /// Signs and stores a release of `image` for `class`; its version must be above every
    /// earlier release of the class. The image is stored once per content.
    pub async fn add_release(
        &self,
        class: &str,
        version: Version,
        image: &[u8],
        key: &SigningKey,
        chunk_size: u16,
    ) -> anyhow::Result<Release> {
        if image.is_empty() {
            bail!("image is empty");
        }
        let size = u32::try_from(image.len()).context("image larger than 4 GiB")?;
        if !(16..=1024).contains(&chunk_size) || !chunk_size.is_power_of_two() {
            bail!(
                "chunk size {chunk_size} must be a power of two from 16 to 1024 (CoAP block sizes)"
            );
        }
        let (sequence, _) = self.next_sequence(class, version).await?;
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            vendor: VENDOR,
            class: class_id(class),
            sequence,
            version,
            image_size: size,
            digest: Digest(Sha256::digest(image).into()),
            chunk_size,
            min_running: None,
            patch: None,
        };
        self.add_signed_release(class, OwnedManifest::sign(&manifest, key), image, None)
            .await
    }

    /// The sequence number the next release of `class` gets, if `version` is above the last.
    pub async fn next_sequence(
        &self,
        class: &str,
        version: Version,
    ) -> anyhow::Result<(u32, bool)> {
        if class.is_empty() {
            bail!("class name is empty");
        }
        let last = self
            .db
            .query(
                "SELECT major, minor, patch, sequence FROM releases WHERE class = $1 ORDER BY sequence DESC LIMIT 1",
                params![class],
            )
            .await?;
        match last.first() {
            Some(r) => {
                let prev = Version::new(r.num(0)?, r.num(1)?, r.num(2)?);
                if version <= prev {
                    bail!(
                        "version {} is not greater than the current release {} of {class}",
                        vtext(version),
                        vtext(prev)
                    );
                }
                Ok((r.num::<u32>(3)? + 1, true))
            }
            None => Ok((1, false)),
        }
    }

    /// Stores a release of `image` for `class` under a manifest signed elsewhere (checked with
    /// `public` if given): the manifest must be for this server's vendor and `class`, describe
    /// `image` (size, SHA-256), and carry a version and sequence above every earlier release.
    pub async fn add_signed_release(
        &self,
        class: &str,
        manifest: OwnedManifest,
        image: &[u8],
        public: Option<&[u8; 32]>,
    ) -> anyhow::Result<Release> {
        let m = *manifest.manifest();
        if class.is_empty() {
            bail!("class name is empty");
        }
        if m.vendor != VENDOR || m.class != class_id(class) {
            bail!("the manifest is for another vendor or class than {class}");
        }
        if image.len() != m.image_size as usize || Sha256::digest(image).as_slice() != m.digest.0 {
            bail!("the image does not match the manifest (size or SHA-256)");
        }
        if !(16..=1024).contains(&m.chunk_size) || !m.chunk_size.is_power_of_two() {
            bail!(
                "the manifest's chunk size {} is not a CoAP block size",
                m.chunk_size
            );
        }
        if let Some(public) = public {
            let key = ed25519_dalek::VerifyingKey::from_bytes(public)?;
            let sig = ed25519_dalek::Signature::from_bytes(&manifest.signature().0);
            key.verify_strict(manifest.body(), &sig).map_err(|_| {
                anyhow::anyhow!(
                    "the manifest's signature does not verify with the server's public key"
                )
            })?;
        }
        let mut tx = self.db.begin().await?;
        if self.db.kind() == "postgres" {
            tx.query("SELECT pg_advisory_xact_lock(7261003)", vec![])
                .await?;
        }
        let last = tx
            .query(
                "SELECT major, minor, patch, sequence FROM releases WHERE class = $1 ORDER BY sequence DESC LIMIT 1",
                params![class],
            )
            .await?;
        if let Some(r) = last.first() {
            let prev = Version::new(r.num(0)?, r.num(1)?, r.num(2)?);
            let seq: u32 = r.num(3)?;
            if m.version <= prev || m.sequence <= seq {
                bail!(
                    "version {} (sequence {}) is not above the current release {} (sequence {seq}) of {class}",
                    vtext(m.version),
                    m.sequence,
                    vtext(prev)
                );
            }
        }
        tx.execute(
            "INSERT INTO classes (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            params![class_id(class), class],
        )
        .await?;
        let owner = tx
            .query(
                "SELECT name FROM classes WHERE id = $1",
                params![class_id(class)],
            )
            .await?
            .first()
            .map(|r| r.text(0))
            .transpose()?
            .unwrap_or_default();
        if owner != class {
            bail!("class {class} collides with class {owner} (same CRC-32); pick another name");
        }
        tx.execute(
            "INSERT INTO images (digest, bytes) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING",
            params![&m.digest.0[..], image],
        )
        .await?;
        let created = unix_now();
        let id = tx
            .query(
                "INSERT INTO releases (class, major, minor, patch, sequence, digest, body, signature, created)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                params![
                    class,
                    m.version.major,
                    m.version.minor,
                    m.version.patch,
                    m.sequence,
                    &m.digest.0[..],
                    manifest.body(),
                    &manifest.signature().0[..],
                    created
                ],
            )
            .await?
            .first()
            .map(|r| r.num::<u32>(0))
            .transpose()?
            .context("no release id")?;
        Self::bump(&mut tx).await?;
        tx.commit().await?;
        Ok(Release {
            id,
            class: class.into(),
            version: m.version,
            sequence: m.sequence,
            manifest,
            halted: None,
            created,
            patches: Vec::new(),
        })
    }

    async fn release_where(&self, cond: &str, p: Vec<Value>) -> anyhow::Result<Option<Release>> {
        let rows = self
            .db
            .query(&format!("{RELEASE_COLUMNS} WHERE {cond}"), p)
            .await?;
        rows.first().map(release_of).transpose()
    }

    /// The release of `class` at `version`.
    pub async fn release(&self, class: &str, version: Version) -> anyhow::Result<Option<Release>> {
        self.release_where(
            "class = $1 AND major = $2 AND minor = $3 AND patch = $4",
            params![class, version.major, version.minor, version.patch],
        )
        .await
    }

    /// The release of `class` with anti-rollback sequence number `sequence`.
    pub async fn release_by_sequence(
        &self,
        class: &str,
        sequence: u32,
    ) -> anyhow::Result<Option<Release>> {
        self.release_where("class = $1 AND sequence = $2", params![class, sequence])
            .await
    }

    /// The release with image id `id`.
    pub async fn release_by_id(&self, id: u32) -> anyhow::Result<Option<Release>> {
        self.release_where("id = $1", params![id]).await
    }

    /// Every release, newest first.
    pub async fn releases(&self) -> anyhow::Result<Vec<Release>> {
        let rows = self
            .db
            .query(&format!("{RELEASE_COLUMNS} ORDER BY id DESC"), vec![])
            .await?;
        rows.iter().map(release_of).collect()
    }

    /// Stores `patch`, which rebuilds `release`'s image from `source`'s, under a manifest
    /// signed with `key` (the release's, plus the patch). Replaces an earlier patch between
    /// the same two releases.
    pub async fn add_patch(
        &self,
        release: &Release,
        source: &Release,
        source_image: &[u8],
        patch: &[u8],
        key: &SigningKey,
    ) -> anyhow::Result<Patch> {
        let target = *release.manifest.manifest();
        let from = source.manifest.manifest();
        if source.class != release.class || source.sequence >= release.sequence {
            bail!("a patch applies to an earlier release of the same class");
        }
        if Sha256::digest(source_image).as_slice() != from.digest.0 {
            bail!("the source image does not match its release's manifest");
        }
        let info = PatchInfo {
            size: u32::try_from(patch.len()).context("patch larger than 4 GiB")?,
            digest: Digest(Sha256::digest(patch).into()),
            source_size: from.image_size,
            source_digest: from.digest,
        };
        let manifest = OwnedManifest::sign(&target.with_patch(info), key);
        let mut tx = self.db.begin().await?;
        tx.execute(
            "INSERT INTO images (digest, bytes) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING",
            params![&info.digest.0[..], patch],
        )
        .await?;
        tx.execute(
            "DELETE FROM patches WHERE release = $1 AND source = $2",
            params![release.id, source.id],
        )
        .await?;
        let id = tx
            .query(
                "INSERT INTO patches (release, source, source_prefix, digest, size, body, signature)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                params![
                    release.id,
                    source.id,
                    &info.source_digest.0[..8],
                    &info.digest.0[..],
                    info.size,
                    manifest.body(),
                    &manifest.signature().0[..]
                ],
            )
            .await?
            .first()
            .map(|r| r.num::<u32>(0))
            .transpose()?
            .context("no patch id")?;
        if id & PATCH_IMAGE_BIT != 0 {
            bail!("patch ids are exhausted");
        }
        Self::bump(&mut tx).await?;
        tx.commit().await?;
        Ok(Patch {
            id: id | PATCH_IMAGE_BIT,
            release: release.id,
            source: source.id,
            source_prefix: info.source_digest.prefix(),
            info,
            manifest,
        })
    }

    /// The patches that rebuild release `id`'s image, by source.
    pub async fn patches_of(&self, id: u32) -> anyhow::Result<Vec<Patch>> {
        let rows = self
            .db
            .query(
                &format!("{PATCH_COLUMNS} WHERE release = $1 ORDER BY source"),
                params![id],
            )
            .await?;
        rows.iter().map(patch_of).collect()
    }

    /// The patch with image id `id`.
    pub async fn patch_by_id(&self, id: ImageId) -> anyhow::Result<Option<Patch>> {
        let rows = self
            .db
            .query(
                &format!("{PATCH_COLUMNS} WHERE id = $1"),
                params![id.0 & !PATCH_IMAGE_BIT],
            )
            .await?;
        rows.first().map(patch_of).transpose()
    }

    /// Bytes stored under SHA-256 `digest` (an image or a patch).
    pub async fn bytes_by_digest(&self, digest: &Digest) -> anyhow::Result<Option<Vec<u8>>> {
        let rows = self
            .db
            .query(
                "SELECT bytes FROM images WHERE digest = $1",
                params![&digest.0[..]],
            )
            .await?;
        Ok(rows.first().map(|r| r.bytes(0)).transpose()?)
    }

    /// Bytes of image `id`.
    pub async fn image(&self, id: ImageId) -> anyhow::Result<Option<Vec<u8>>> {
        let rows = self
            .db
            .query(
                "SELECT images.bytes FROM releases JOIN images ON images.digest = releases.digest WHERE releases.id = $1",
                params![id.0],
            )
            .await?;
        rows.first()
            .map(|r| r.bytes(0))
            .transpose()
            .map_err(Into::into)
    }

    /// Stops offering release `id`, with the reason status shows.
    pub async fn halt_release(&self, id: u32, reason: &str) -> anyhow::Result<()> {
        let mut tx = self.db.begin().await?;
        let n = tx
            .execute(
                "UPDATE releases SET halted = $2 WHERE id = $1 AND halted IS NULL",
                params![id, reason],
            )
            .await?;
        if n > 0 {
            Self::bump(&mut tx).await?;
        }
        tx.commit().await
    }

    /// Why release `id` is halted, if it is.
    pub async fn halted(&self, id: u32) -> anyhow::Result<Option<String>> {
        Ok(self.release_by_id(id).await?.and_then(|r| r.halted))
    }

    /// Records that `device` found release `id`'s image failing its integrity check; returns
    /// how many devices have so far.
    pub async fn integrity_failure(&self, id: u32, device: &str) -> anyhow::Result<u32> {
        self.db
            .execute(
                "INSERT INTO integrity_reports (release, device) VALUES ($1, $2) ON CONFLICT (release, device) DO NOTHING",
                params![id, device],
            )
            .await?;
        let rows = self
            .db
            .query(
                "SELECT COUNT(*) FROM integrity_reports WHERE release = $1",
                params![id],
            )
            .await?;
        Ok(rows.first().map(|r| r.num(0)).transpose()?.unwrap_or(0))
    }

    /// Every halted release: class, version and why.
    pub async fn halted_releases(&self) -> anyhow::Result<Vec<(String, Version, String)>> {
        let mut out: Vec<_> = self
            .releases()
            .await?
            .into_iter()
            .filter_map(|r| r.halted.map(|h| (r.class, r.version, h)))
            .collect();
        out.reverse();
        Ok(out)
    }

    /// Offers release `id` again: clears its halt and its integrity reports.
    pub async fn resume_release(&self, id: u32) -> anyhow::Result<()> {
        let mut tx = self.db.begin().await?;
        tx.execute(
            "UPDATE releases SET halted = NULL WHERE id = $1",
            params![id],
        )
        .await?;
        tx.execute(
            "DELETE FROM integrity_reports WHERE release = $1",
            params![id],
        )
        .await?;
        Self::bump(&mut tx).await?;
        tx.commit().await
    }

    /// Every class: numeric id and name.
    pub async fn classes(&self) -> anyhow::Result<Vec<(u32, String)>> {
        let rows = self
            .db
            .query("SELECT id, name FROM classes", vec![])
            .await?;
        rows.iter().map(|r| Ok((r.num(0)?, r.text(1)?))).collect()
    }

    // ----- rollouts -----

    /// Rolls `version` of `class` out by `plan` (replacing the class's rollout).
    pub async fn set_rollout(
        &self,
        class: &str,
        version: Version,
        plan: &RolloutPlan,
    ) -> anyhow::Result<Rollout> {
        plan.check()?;
        let Some(release) = self.release(class, version).await? else {
            bail!("no release {} for class {class}", vtext(version));
        };
        let now = unix_now();
        let last = plan.steps.len() <= 1;
        let state = if last {
            RolloutState::Complete
        } else {
            RolloutState::Running
        };
        let mut tx = self.db.begin().await?;
        tx.execute(
            "INSERT INTO rollouts (class, release, steps, step, step_started, soak_secs, max_failure_percent, min_outcomes, devices, maintenance, state, state_reason, created, updated)
             VALUES ($1, $2, $3, 0, $4, $5, $6, $7, $8, $9, $10, '', $4, $4)
             ON CONFLICT (class) DO UPDATE SET release = excluded.release, steps = excluded.steps, step = 0,
                step_started = excluded.step_started, soak_secs = excluded.soak_secs,
                max_failure_percent = excluded.max_failure_percent, min_outcomes = excluded.min_outcomes,
                devices = excluded.devices, maintenance = excluded.maintenance, state = excluded.state,
                state_reason = '', created = excluded.created, updated = excluded.updated",
            params![
                class,
                release.id,
                plan.steps.iter().map(u8::to_string).collect::<Vec<_>>().join(","),
                now,
                plan.soak_secs,
                plan.max_failure_percent,
                plan.min_outcomes,
                plan.devices.join(","),
                plan.window.map(|w| w.to_text()),
                state.as_str()
            ],
        )
        .await?;
        Self::bump(&mut tx).await?;
        tx.commit().await?;
        self.rollout(class).await?.context("rollout vanished")
    }

    /// Moves `class`'s rollout from `from` (the state the caller saw, so two instances do not
    /// both act) to `to`, with a reason; `step` to move to the next step as well. `false` if
    /// it was no longer in `from`.
    pub async fn transition(
        &self,
        class: &str,
        from: RolloutState,
        to: RolloutState,
        reason: &str,
        next_step: Option<usize>,
    ) -> anyhow::Result<bool> {
        let mut tx = self.db.begin().await?;
        let now = unix_now();
        let n = match next_step {
            Some(step) => {
                tx.execute(
                    "UPDATE rollouts SET state = $3, state_reason = $4, step = $5, step_started = $6, updated = $6
                     WHERE class = $1 AND state = $2 AND step = $5 - 1",
                    params![class, from.as_str(), to.as_str(), reason, step as i64, now],
                )
                .await?
            }
            // Out of a pause, the step's failures are counted afresh.
            None if from == RolloutState::Paused => {
                tx.execute(
                    "UPDATE rollouts SET state = $3, state_reason = $4, step_started = $5, updated = $5 WHERE class = $1 AND state = $2",
                    params![class, from.as_str(), to.as_str(), reason, now],
                )
                .await?
            }
            None => {
                tx.execute(
                    "UPDATE rollouts SET state = $3, state_reason = $4, updated = $5 WHERE class = $1 AND state = $2",
                    params![class, from.as_str(), to.as_str(), reason, now],
                )
                .await?
            }
        };
        if n > 0 {
            Self::bump(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    /// The rollout of `class`.
    pub async fn rollout(&self, class: &str) -> anyhow::Result<Option<Rollout>> {
        let rows = self
            .db
            .query(
                &format!("{ROLLOUT_COLUMNS} WHERE class = $1"),
                params![class],
            )
            .await?;
        match rows.first() {
            Some(r) => Ok(Some(self.rollout_of(r).await?)),
            None => Ok(None),
        }
    }

    /// Every rollout, by class.
    pub async fn rollouts(&self) -> anyhow::Result<Vec<Rollout>> {
        let rows = self
            .db
            .query(&format!("{ROLLOUT_COLUMNS} ORDER BY class"), vec![])
            .await?;
        let mut out = Vec::new();
        for r in &rows {
            out.push(self.rollout_of(r).await?);
        }
        Ok(out)
    }

    async fn rollout_of(&self, r: &Row) -> anyhow::Result<Rollout> {
        let class = r.text(0)?;
        let id: u32 = r.num(1)?;
        let Some(mut release) = self.release_by_id(id).await? else {
            bail!("rollout of {class} names missing release {id}");
        };
        release.patches = self.patches_of(id).await?;
        let list = |s: String| -> Vec<String> {
            s.split(',')
                .filter(|d| !d.is_empty())
                .map(String::from)
                .collect()
        };
        Ok(Rollout {
            class,
            release,
            plan: RolloutPlan {
                steps: RolloutPlan::parse_steps(&r.text(2)?)?,
                soak_secs: r.num(5)?,
                max_failure_percent: r.num(6)?,
                min_outcomes: r.num(7)?,
                devices: list(r.text(8)?),
                window: r.opt_text(9)?.as_deref().map(Window::parse).transpose()?,
            },
            step: r.num(3)?,
            step_started: r.int(4)?,
            state: RolloutState::parse(&r.text(10)?),
            state_reason: r.text(11)?,
            created: r.int(12)?,
        })
    }

    /// Outcomes of updates to release `id` that ended at or after `since`: (successes,
    /// failures and rollbacks).
    pub async fn outcomes_since(&self, id: u32, since: i64) -> anyhow::Result<(u32, u32)> {
        let rows = self
            .db
            .query(
                "SELECT outcome, COUNT(*) FROM transfers WHERE release = $1 AND finished >= $2 AND outcome IS NOT NULL GROUP BY outcome",
                params![id, since],
            )
            .await?;
        let (mut ok, mut bad) = (0, 0);
        for r in &rows {
            let n: u32 = r.num(1)?;
            if r.text(0)? == "success" {
                ok += n;
            } else {
                bad += n;
            }
        }
        Ok((ok, bad))
    }

    // ----- devices -----

    /// One device.
    pub async fn device(&self, id: &str) -> anyhow::Result<Option<DeviceRow>> {
        let rows = self
            .db
            .query(&format!("{DEVICE_COLUMNS} WHERE id = $1"), params![id])
            .await?;
        rows.first().map(device_of).transpose()
    }

    /// Devices matching `filter`, by id.
    pub async fn devices(&self, filter: &DeviceFilter) -> anyhow::Result<Vec<DeviceRow>> {
        let mut cond = Vec::new();
        let mut p = Vec::new();
        for (col, v) in [
            ("class", &filter.class),
            ("running", &filter.version),
            ("phase", &filter.state),
        ] {
            if let Some(v) = v {
                p.push(Value::from(v));
                cond.push(format!("{col} = ${}", p.len()));
            }
        }
        let limit = filter.limit.unwrap_or(100_000).min(100_000);
        p.push(Value::from(limit));
        let sql = format!(
            "{DEVICE_COLUMNS} {} {} ORDER BY id LIMIT ${}",
            if cond.is_empty() { "" } else { "WHERE" },
            cond.join(" AND "),
            p.len()
        );
        let rows = self.db.query(&sql, p).await?;
        rows.iter().map(device_of).collect()
    }

    /// A device's history, oldest first (at most the last 500 entries).
    pub async fn events(&self, device: &str) -> anyhow::Result<Vec<Event>> {
        let rows = self
            .db
            .query(
                "SELECT at, kind, detail FROM (SELECT id, at, kind, detail FROM events WHERE device = $1 ORDER BY id DESC LIMIT 500) AS e ORDER BY id",
                params![device],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    at: r.int(0)?,
                    kind: r.text(1)?,
                    detail: r.text(2)?,
                })
            })
            .collect()
    }

    /// What devices fetched: of one device, or of every device for one release.
    pub async fn transfers(
        &self,
        device: Option<&str>,
        release: Option<u32>,
    ) -> anyhow::Result<Vec<Transfer>> {
        let (cond, p) = match (device, release) {
            (Some(d), Some(r)) => ("device = $1 AND release = $2", params![d, r]),
            (Some(d), None) => ("device = $1", params![d]),
            (None, Some(r)) => ("release = $1", params![r]),
            (None, None) => ("1 = 1", vec![]),
        };
        let rows = self
            .db
            .query(
                &format!("SELECT device, release, bytes, started, finished, outcome, patch_bytes FROM transfers WHERE {cond} ORDER BY release, device"),
                p,
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Transfer {
                    device: r.text(0)?,
                    release: r.num(1)?,
                    bytes: r.num(2)?,
                    started: r.int(3)?,
                    finished: r.opt_int(4)?,
                    outcome: r.opt_text(5)?,
                    patch_bytes: r.num(6)?,
                })
            })
            .collect()
    }

    /// Per release: devices that fetched from it, bytes sent, and what confirmed updates cost.
    pub async fn transfer_totals(&self) -> anyhow::Result<Vec<TransferTotals>> {
        let rows = self
            .db
            .query(
                "SELECT release, COUNT(*), COALESCE(SUM(bytes), 0),
                        COALESCE(SUM(CASE WHEN outcome = 'success' THEN 1 ELSE 0 END), 0),
                        COALESCE(SUM(CASE WHEN outcome = 'success' THEN bytes ELSE 0 END), 0),
                        COALESCE(SUM(patch_bytes), 0)
                 FROM transfers GROUP BY release ORDER BY release",
                vec![],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TransferTotals {
                    release: r.num(0)?,
                    devices: r.num(1)?,
                    bytes: r.num(2)?,
                    confirmed: r.num(3)?,
                    confirmed_bytes: r.num(4)?,
                    patch_bytes: r.num(5)?,
                })
            })
            .collect()
    }

    /// Every device's last check-in, by id.
    pub async fn checkins(&self) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let rows = self
            .db
            .query(
                "SELECT id, checkin FROM devices WHERE checkin IS NOT NULL ORDER BY id",
                vec![],
            )
            .await?;
        rows.iter().map(|r| Ok((r.text(0)?, r.bytes(1)?))).collect()
    }

    /// Queues a write behind the request ([`Backend::record`]).
    pub fn record(&self, w: Write) {
        self.db.record(w);
    }

    /// Waits for every queued write ([`Backend::flush`]).
    pub async fn flush(&self) -> Result<(), WriteError> {
        self.db.flush().await
    }

    // ----- API tokens -----

    /// Creates an API token named `name`; returns it (only its SHA-256 is stored).
    pub async fn create_token(&self, name: &str) -> anyhow::Result<String> {
        if name.is_empty() || name.len() > 64 {
            bail!("a token name is 1 to 64 characters");
        }
        let mut raw = [0u8; 32];
        getrandom::getrandom(&mut raw).map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
        let token = format!("ota_{}", hex::encode(raw));
        self.db
            .execute(
                "INSERT INTO tokens (hash, name, created) VALUES ($1, $2, $3)",
                params![Sha256::digest(token.as_bytes()).to_vec(), name, unix_now()],
            )
            .await?;
        Ok(token)
    }

    /// The name of the token `token`, if it is one.
    pub async fn check_token(&self, token: &str) -> anyhow::Result<Option<String>> {
        let rows = self
            .db
            .query(
                "SELECT name FROM tokens WHERE hash = $1",
                params![Sha256::digest(token.as_bytes()).to_vec()],
            )
            .await?;
        rows.first()
            .map(|r| r.text(0))
            .transpose()
            .map_err(Into::into)
    }
}
