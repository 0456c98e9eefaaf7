//! The server's store: SQLite in `DATA/ota.db`, in WAL mode so the CLI can add releases and
//! change rollouts while `serve` runs. Every change is one transaction: a failed command leaves
//! nothing half-written.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use ed25519_dalek::SigningKey;
use ota_core::host::OwnedManifest;
use ota_core::manifest::{Manifest, MANIFEST_FORMAT};
use ota_core::wire::{Digest, ImageId, Signature, Version};
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest as _, Sha256};

use crate::{class_id, VENDOR};

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

    /// Seconds until the window opens at `minute_of_day` + `second`, 0 if it is open.
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

/// A class's rollout.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// The release rolled out.
    pub release: Release,
    /// Share of the class's devices, by a stable hash of their id.
    pub percent: u8,
    /// Devices included whatever the percentage.
    pub devices: Vec<String>,
    /// Maintenance window.
    pub window: Option<Window>,
    /// Cancelled: devices abandon downloads of it.
    pub cancelled: bool,
}

/// One device as the server last saw it.
#[derive(Debug, Clone, Default)]
pub struct DeviceRow {
    /// Id.
    pub id: String,
    /// Class name (or the numeric id if unknown).
    pub class: String,
    /// Running version.
    pub running: String,
    /// Running sequence number.
    pub running_seq: u32,
    /// Phase of its update.
    pub phase: String,
    /// Bytes staged / image bytes, when downloading.
    pub progress: Option<(u32, u32)>,
    /// Last result.
    pub result: String,
    /// Its reason.
    pub reason: String,
    /// Unix seconds of the last check-in or report.
    pub last_seen: i64,
    /// Sequence number of a release that failed on it (not offered again).
    pub failed_seq: Option<u32>,
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

fn credentials_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Credentials> {
    let floor: Option<i64> = r.get(5)?;
    Ok(Credentials {
        id: r.get(0)?,
        class: r.get(1)?,
        kid: r.get(2)?,
        secret: r.get(3)?,
        salt: r.get(4)?,
        floor: floor.and_then(|f| u64::try_from(f).ok()),
    })
}

/// `n` big-endian without leading zero bytes (at least one byte).
fn minimal_be(n: u64) -> Vec<u8> {
    let b = n.to_be_bytes();
    let skip = b.iter().take_while(|&&x| x == 0).count().min(7);
    b.get(skip..).unwrap_or(&b).to_vec()
}

/// A release row: id, class, version, sequence, manifest body, signature.
type ReleaseRow = (u32, String, Version, u32, Vec<u8>, Vec<u8>);

/// The store.
pub struct Store {
    conn: Connection,
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn version_text(v: Version) -> String {
    format!("{}.{}.{}", v.major, v.minor, v.patch)
}

impl Store {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("ota.db");
        let conn =
            Connection::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS classes (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
             CREATE TABLE IF NOT EXISTS images (digest BLOB PRIMARY KEY, bytes BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS releases (
                id INTEGER PRIMARY KEY, class TEXT NOT NULL, major INTEGER, minor INTEGER, patch INTEGER,
                sequence INTEGER NOT NULL, digest BLOB NOT NULL REFERENCES images(digest),
                body BLOB NOT NULL, signature BLOB NOT NULL, created INTEGER NOT NULL,
                UNIQUE(class, sequence));
             CREATE TABLE IF NOT EXISTS rollouts (
                class TEXT PRIMARY KEY, release INTEGER NOT NULL REFERENCES releases(id),
                percent INTEGER NOT NULL, devices TEXT NOT NULL, window TEXT, cancelled INTEGER NOT NULL,
                updated INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS devices (
                id TEXT PRIMARY KEY, class TEXT NOT NULL, running TEXT NOT NULL, running_seq INTEGER NOT NULL,
                phase TEXT NOT NULL, staged INTEGER, size INTEGER, result TEXT NOT NULL, reason TEXT NOT NULL,
                last_seen INTEGER NOT NULL, failed_seq INTEGER);
             CREATE TABLE IF NOT EXISTS checkins (id TEXT PRIMARY KEY, bytes BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS credentials (
                id TEXT PRIMARY KEY, class TEXT NOT NULL, kid BLOB NOT NULL UNIQUE, secret BLOB NOT NULL,
                salt BLOB NOT NULL, floor INTEGER, created INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS integrity_reports (
                release INTEGER NOT NULL, device TEXT NOT NULL, PRIMARY KEY (release, device));",
        )
        .context("cannot create the schema")?;
        // Columns added after the first release of the schema.
        let has_halted: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('releases') WHERE name = 'halted'")?
            .exists([])?;
        if !has_halted {
            conn.execute_batch("ALTER TABLE releases ADD COLUMN halted TEXT")
                .context("cannot migrate the releases table")?;
        }
        Ok(Self { conn })
    }

    /// Provisions device `id` of `class`: a new OSCORE sender id (`kid`, the next free number)
    /// and a fresh master secret and salt. Refuses an id that breaks the device id rule or is
    /// already provisioned.
    pub fn add_device(&mut self, id: &str, class: &str) -> anyhow::Result<Credentials> {
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
        let tx = self.conn.transaction()?;
        if tx
            .query_row("SELECT 1 FROM credentials WHERE id = ?1", [id], |_| Ok(()))
            .optional()?
            .is_some()
        {
            bail!("device {id} is already provisioned");
        }
        let count: i64 = tx.query_row("SELECT COUNT(*) FROM credentials", [], |r| r.get(0))?;
        let count = u64::try_from(count).unwrap_or(0);
        // Sender ids are numbers 1, 2, 3... in their shortest big-endian form, so the kid in
        // every request is 1 byte for the first 255 devices, 2 for the next 65 280.
        let mut n = count + 1;
        let kid = loop {
            let kid = minimal_be(n);
            let taken = tx
                .query_row("SELECT 1 FROM credentials WHERE kid = ?1", [&kid], |_| {
                    Ok(())
                })
                .optional()?
                .is_some();
            if !taken {
                break kid;
            }
            n += 1;
        };
        tx.execute(
            "INSERT INTO credentials (id, class, kid, secret, salt, floor, created) VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6)",
            params![id, class, &kid, &secret[..], &salt[..], unix_now()],
        )?;
        tx.commit()?;
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
    pub fn credentials_by_kid(&self, kid: &[u8]) -> anyhow::Result<Option<Credentials>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, class, kid, secret, salt, floor FROM credentials WHERE kid = ?1",
        )?;
        Ok(stmt.query_row([kid], credentials_row).optional()?)
    }

    /// The credentials of device `id`.
    pub fn credentials(&self, id: &str) -> anyhow::Result<Option<Credentials>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, class, kid, secret, salt, floor FROM credentials WHERE id = ?1",
        )?;
        Ok(stmt.query_row([id], credentials_row).optional()?)
    }

    /// Raises device `id`'s floor to `seq` if it is above it: `false` if not (a replayed
    /// check-in or report). One statement, so two server instances never both succeed.
    pub fn advance_floor(&self, id: &str, seq: u64) -> anyhow::Result<bool> {
        let seq = i64::try_from(seq).context("sequence number out of range")?;
        let changed = self.conn.execute(
            "UPDATE credentials SET floor = ?2 WHERE id = ?1 AND (floor IS NULL OR floor < ?2)",
            params![id, seq],
        )?;
        Ok(changed == 1)
    }

    /// Stops offering release `id`, with the reason status shows.
    pub fn halt_release(&self, id: u32, reason: &str) -> anyhow::Result<()> {
        self.conn.execute(
            "UPDATE releases SET halted = ?2 WHERE id = ?1 AND halted IS NULL",
            params![id, reason],
        )?;
        Ok(())
    }

    /// Why release `id` is halted, if it is.
    pub fn halted(&self, id: u32) -> anyhow::Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT halted FROM releases WHERE id = ?1", [id], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()?
            .flatten())
    }

    /// Records that `device` found release `id`'s image failing its integrity check; returns
    /// how many devices have so far.
    pub fn integrity_failure(&self, id: u32, device: &str) -> anyhow::Result<u32> {
        self.conn.execute(
            "INSERT OR IGNORE INTO integrity_reports (release, device) VALUES (?1, ?2)",
            params![id, device],
        )?;
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM integrity_reports WHERE release = ?1",
            [id],
            |r| r.get(0),
        )?)
    }

    /// Every halted release: class, version and why.
    pub fn halted_releases(&self) -> anyhow::Result<Vec<(String, Version, String)>> {
        let mut stmt = self.conn.prepare(
            "SELECT class, major, minor, patch, halted FROM releases WHERE halted IS NOT NULL ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                Version::new(r.get(1)?, r.get(2)?, r.get(3)?),
                r.get(4)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Offers release `id` again: clears its halt and its integrity reports.
    pub fn resume_release(&self, id: u32) -> anyhow::Result<()> {
        self.conn
            .execute("UPDATE releases SET halted = NULL WHERE id = ?1", [id])?;
        self.conn
            .execute("DELETE FROM integrity_reports WHERE release = ?1", [id])?;
        Ok(())
    }

    /// Name of the class with this numeric id, if a release was ever made for it.
    pub fn class_name(&self, id: u32) -> anyhow::Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT name FROM classes WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Signs and stores a release of `image` for `class`; its version must be above every earlier
    /// release of the class. The image is stored once per content.
    pub fn add_release(
        &mut self,
        class: &str,
        version: Version,
        image: &[u8],
        key: &SigningKey,
        chunk_size: u16,
    ) -> anyhow::Result<Release> {
        if class.is_empty() {
            bail!("class name is empty");
        }
        if image.is_empty() {
            bail!("image is empty");
        }
        let size = u32::try_from(image.len()).context("image larger than 4 GiB")?;
        if !(16..=1024).contains(&chunk_size) || !chunk_size.is_power_of_two() {
            bail!(
                "chunk size {chunk_size} must be a power of two from 16 to 1024 (CoAP block sizes)"
            );
        }
        let tx = self.conn.transaction()?;
        let last: Option<(u16, u16, u16, u32)> = tx
            .query_row(
                "SELECT major, minor, patch, sequence FROM releases WHERE class = ?1 ORDER BY sequence DESC LIMIT 1",
                params![class],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let sequence = match last {
            Some((a, b, c, seq)) => {
                let prev = Version::new(a, b, c);
                if version <= prev {
                    bail!(
                        "version {} is not greater than the current release {} of {class}",
                        version_text(version),
                        version_text(prev)
                    );
                }
                seq + 1
            }
            None => 1,
        };
        let digest = Digest(Sha256::digest(image).into());
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            vendor: VENDOR,
            class: class_id(class),
            sequence,
            version,
            image_size: size,
            digest,
            chunk_size,
            min_running: None,
            patch: None,
        };
        let signed = OwnedManifest::sign(&manifest, key);
        tx.execute(
            "INSERT OR IGNORE INTO classes (id, name) VALUES (?1, ?2)",
            params![class_id(class), class],
        )?;
        let owner: String = tx.query_row(
            "SELECT name FROM classes WHERE id = ?1",
            params![class_id(class)],
            |r| r.get(0),
        )?;
        if owner != class {
            bail!("class {class} collides with class {owner} (same CRC-32); pick another name");
        }
        tx.execute(
            "INSERT OR IGNORE INTO images (digest, bytes) VALUES (?1, ?2)",
            params![&digest.0[..], image],
        )?;
        tx.execute(
            "INSERT INTO releases (class, major, minor, patch, sequence, digest, body, signature, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![class, version.major, version.minor, version.patch, sequence, &digest.0[..], signed.body(), &signed.signature().0[..], unix_now()],
        )?;
        let id = u32::try_from(tx.last_insert_rowid()).context("release id overflow")?;
        tx.commit()?;
        Ok(Release {
            id,
            class: class.into(),
            version,
            sequence,
            manifest: signed,
        })
    }

    fn release_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReleaseRow> {
        Ok((
            r.get(0)?,
            r.get(1)?,
            Version::new(r.get(2)?, r.get(3)?, r.get(4)?),
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
        ))
    }

    fn make_release(row: ReleaseRow) -> anyhow::Result<Release> {
        let (id, class, version, sequence, body, sig) = row;
        let sig: [u8; 64] = sig
            .try_into()
            .map_err(|_| anyhow::anyhow!("stored signature is not 64 bytes"))?;
        let manifest = OwnedManifest::new(body, Signature(sig))?;
        Ok(Release {
            id,
            class,
            version,
            sequence,
            manifest,
        })
    }

    /// The release of `class` at `version`.
    pub fn release(&self, class: &str, version: Version) -> anyhow::Result<Option<Release>> {
        let row = self
            .conn
            .query_row(
                "SELECT id, class, major, minor, patch, sequence, body, signature FROM releases
                 WHERE class = ?1 AND major = ?2 AND minor = ?3 AND patch = ?4",
                params![class, version.major, version.minor, version.patch],
                Self::release_from_row,
            )
            .optional()?;
        row.map(Self::make_release).transpose()
    }

    /// The release of `class` with anti-rollback sequence number `sequence`.
    pub fn release_by_sequence(
        &self,
        class: &str,
        sequence: u32,
    ) -> anyhow::Result<Option<Release>> {
        let row = self
            .conn
            .query_row(
                "SELECT id, class, major, minor, patch, sequence, body, signature FROM releases
                 WHERE class = ?1 AND sequence = ?2",
                params![class, sequence],
                Self::release_from_row,
            )
            .optional()?;
        row.map(Self::make_release).transpose()
    }

    /// The release with image id `id`.
    pub fn release_by_id(&self, id: u32) -> anyhow::Result<Option<Release>> {
        let row = self
            .conn
            .query_row(
                "SELECT id, class, major, minor, patch, sequence, body, signature FROM releases WHERE id = ?1",
                params![id],
                Self::release_from_row,
            )
            .optional()?;
        row.map(Self::make_release).transpose()
    }

    /// Bytes of image `id`.
    pub fn image(&self, id: ImageId) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row(
                "SELECT images.bytes FROM releases JOIN images ON images.digest = releases.digest WHERE releases.id = ?1",
                params![id.0],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Sets the desired state of `class`: roll `version` out to `percent` of its devices (and
    /// to `devices` whatever the percentage), inside `window`; or cancel the rollout.
    pub fn set_rollout(
        &mut self,
        class: &str,
        version: Version,
        percent: u8,
        devices: &[String],
        window: Option<Window>,
        cancel: bool,
    ) -> anyhow::Result<Release> {
        if percent > 100 {
            bail!("percent {percent} is above 100");
        }
        let Some(release) = self.release(class, version)? else {
            bail!("no release {} for class {class}", version_text(version));
        };
        self.conn.execute(
            "INSERT INTO rollouts (class, release, percent, devices, window, cancelled, updated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(class) DO UPDATE SET release = ?2, percent = ?3, devices = ?4, window = ?5, cancelled = ?6, updated = ?7",
            params![class, release.id, percent, devices.join(","), window.map(|w| w.to_text()), cancel, unix_now()],
        )?;
        Ok(release)
    }

    /// The rollout of `class`.
    pub fn rollout(&self, class: &str) -> anyhow::Result<Option<Rollout>> {
        let row: Option<(u32, u8, String, Option<String>, bool)> = self
            .conn
            .query_row(
                "SELECT release, percent, devices, window, cancelled FROM rollouts WHERE class = ?1",
                params![class],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((id, percent, devices, window, cancelled)) = row else {
            return Ok(None);
        };
        let Some(release) = self.release_by_id(id)? else {
            bail!("rollout of {class} names missing release {id}");
        };
        Ok(Some(Rollout {
            release,
            percent,
            devices: devices
                .split(',')
                .filter(|d| !d.is_empty())
                .map(String::from)
                .collect(),
            window: window.as_deref().map(Window::parse).transpose()?,
            cancelled,
        }))
    }

    /// Stores what a device just told us.
    pub fn upsert_device(&self, d: &DeviceRow) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO devices (id, class, running, running_seq, phase, staged, size, result, reason, last_seen, failed_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT(id) DO UPDATE SET class = ?2, running = ?3, running_seq = ?4, phase = ?5, staged = ?6,
                size = ?7, result = ?8, reason = ?9, last_seen = ?10, failed_seq = ?11",
            params![
                d.id, d.class, d.running, d.running_seq, d.phase,
                d.progress.map(|p| p.0), d.progress.map(|p| p.1),
                d.result, d.reason, d.last_seen, d.failed_seq
            ],
        )?;
        Ok(())
    }

    /// One device.
    pub fn device(&self, id: &str) -> anyhow::Result<Option<DeviceRow>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{DEVICE_COLUMNS} WHERE id = ?1"))?;
        Ok(stmt.query_row([id], device_row).optional()?)
    }

    /// Every device, by id.
    pub fn devices(&self) -> anyhow::Result<Vec<DeviceRow>> {
        let mut stmt = self
            .conn
            .prepare(&format!("{DEVICE_COLUMNS} ORDER BY id"))?;
        let rows = stmt.query_map([], device_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Keeps a device's last check-in (encoded), to work out its desired state again when a
    /// rollout changes while it sleeps.
    pub fn set_checkin(&self, id: &str, bytes: &[u8]) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO checkins (id, bytes) VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET bytes = ?2",
            params![id, bytes],
        )?;
        Ok(())
    }

    /// Every device's last check-in, by id.
    pub fn checkins(&self) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, bytes FROM checkins ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Changes whenever another connection (an `ota-server release` or `rollout` run) commits
    /// to the store: a cheap way for `serve` to notice a new rollout.
    pub fn data_version(&self) -> anyhow::Result<i64> {
        Ok(self
            .conn
            .pragma_query_value(None, "data_version", |r| r.get(0))?)
    }
}

const DEVICE_COLUMNS: &str = "SELECT id, class, running, running_seq, phase, staged, size, result, reason, last_seen, failed_seq FROM devices";

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
    let staged: Option<u32> = r.get(5)?;
    let size: Option<u32> = r.get(6)?;
    Ok(DeviceRow {
        id: r.get(0)?,
        class: r.get(1)?,
        running: r.get(2)?,
        running_seq: r.get(3)?,
        phase: r.get(4)?,
        progress: staged.zip(size),
        result: r.get(7)?,
        reason: r.get(8)?,
        last_seen: r.get(9)?,
        failed_seq: r.get(10)?,
    })
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

/// `version_text` for other modules.
pub fn vtext(v: Version) -> String {
    version_text(v)
}
