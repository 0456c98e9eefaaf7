//! Patch bytes and apply time, side by side with detools 0.53 (PyPI), on builds of this
//! repository's Cortex-M4 firmware (`examples/firmware-cortex-m`):
//!
//! - (a) two commits: the firmware's first commit and a later one,
//! - (b) the later build with one `hprintln!` message changed,
//! - (c) the later build with a feature toggled (OSCORE on; Ed25519 off),
//! - (d) unrelated images: the firmware against pseudo-random bytes of its size, both ways.
//!
//! `cargo run --release -p ota-delta --example bench_detools`. It builds each firmware once in a
//! temporary git worktree (`/tmp/ota-delta-bench`, removed afterwards: one fixed path, so build
//! paths embedded in the images do not differ between variants) and caches the flat binaries
//! under `target/delta-bench/`. It needs git, the `thumbv7em-none-eabihf` target,
//! `arm-none-eabi-objcopy` and, for the comparison, `detools` on the PATH; it installs nothing.
//! `DELTA_BENCH_OLD` and `DELTA_BENCH_NEW` choose other commits.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ota_delta::{apply_in_memory, diff, source_of, Applier, State};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The firmware's first commit, and a later one.
const OLD_COMMIT: &str = "174dfca";
const NEW_COMMIT: &str = "96b4316";
const WORKTREE: &str = "/tmp/ota-delta-bench";
const FIRMWARE: &str = "examples/firmware-cortex-m";
/// The one-string change of pair (b).
const STRING_FROM: &str = "update applied on Cortex-M4: trial boot verified, confirmed at sequence";
const STRING_TO: &str = "update applied on Cortex-M4: trial boot checked and confirmed at sequence";

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed: {}",
            cmd,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A git worktree at a fixed path, removed when dropped.
struct Worktree {
    repo: PathBuf,
    path: PathBuf,
}

impl Worktree {
    fn new(repo: &Path) -> Result<Worktree> {
        let path = PathBuf::from(WORKTREE);
        // Left over from an interrupted run.
        if path.exists() {
            let _ = run(Command::new("git")
                .arg("-C")
                .arg(repo)
                .args(["worktree", "remove", "--force"])
                .arg(&path));
            let _ = std::fs::remove_dir_all(&path);
        }
        let _ = run(Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["worktree", "prune"]));
        run(Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["worktree", "add", "--detach", "--quiet"])
            .arg(&path)
            .arg("HEAD"))?;
        Ok(Worktree {
            repo: repo.to_path_buf(),
            path,
        })
    }

    fn checkout(&self, commit: &str) -> Result<()> {
        run(Command::new("git")
            .arg("-C")
            .arg(&self.path)
            .args(["checkout", "--quiet", "--force", "--detach", commit]))?;
        Ok(())
    }
}

impl Drop for Worktree {
    fn drop(&mut self) {
        let _ = run(Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(["worktree", "remove", "--force"])
            .arg(&self.path));
    }
}

/// Builds the firmware images, or takes them from the cache.
struct Builder {
    repo: PathBuf,
    cache: PathBuf,
    worktree: Option<Worktree>,
}

impl Builder {
    fn image(
        &mut self,
        commit: &str,
        name: &str,
        features: &[&str],
        edit: bool,
    ) -> Result<Vec<u8>> {
        let full = run(Command::new("git").arg("-C").arg(&self.repo).args([
            "rev-parse",
            "--verify",
            &format!("{commit}^{{commit}}"),
        ]))?;
        let cached = self
            .cache
            .join(format!("{}-{name}.bin", &full[..12.min(full.len())]));
        if let Ok(bytes) = std::fs::read(&cached) {
            return Ok(bytes);
        }
        if self.worktree.is_none() {
            self.worktree = Some(Worktree::new(&self.repo)?);
        }
        let wt = self.worktree.as_ref().ok_or("no worktree")?;
        wt.checkout(&full)?;
        let dir = wt.path.join(FIRMWARE);
        if edit {
            let main = dir.join("src/main.rs");
            let src = std::fs::read_to_string(&main)?;
            if !src.contains(STRING_FROM) {
                return Err(format!(
                    "{commit}: the string to change is not in {}",
                    main.display()
                )
                .into());
            }
            std::fs::write(&main, src.replace(STRING_FROM, STRING_TO))?;
        }
        let target = self.cache.join("firmware-target");
        eprintln!(
            "building the firmware at {} ({name})...",
            &full[..12.min(full.len())]
        );
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&dir)
            .env("CARGO_TARGET_DIR", &target)
            .args(["build", "--release", "--quiet"]);
        for f in features {
            cmd.arg(f);
        }
        run(&mut cmd)?;
        let elf = target.join("thumbv7em-none-eabihf/release/firmware-cortex-m");
        run(Command::new("arm-none-eabi-objcopy")
            .args(["-O", "binary"])
            .arg(&elf)
            .arg(&cached))?;
        Ok(std::fs::read(&cached)?)
    }
}

/// Deterministic pseudo-random bytes (xorshift32).
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// detools' patch size with `compression`, or `None` without detools.
fn detools(dir: &Path, old: &[u8], new: &[u8], compression: &str) -> Result<Option<usize>> {
    let (o, n, p) = (
        dir.join("old.bin"),
        dir.join("new.bin"),
        dir.join("patch.bin"),
    );
    std::fs::write(&o, old)?;
    std::fs::write(&n, new)?;
    let status = Command::new("detools")
        .args(["create_patch", "-c", compression])
        .arg(&o)
        .arg(&n)
        .arg(&p)
        .output();
    match status {
        Ok(out) if out.status.success() => Ok(Some(std::fs::metadata(&p)?.len() as usize)),
        Ok(out) => Err(format!(
            "detools failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into()),
        Err(_) => Ok(None),
    }
}

/// The median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Duration> {
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed());
    }
    t.sort();
    Ok(t.get(runs / 2).copied().unwrap_or_default())
}

/// Applies in 1 KiB chunks, persisting and restoring the state between every two, as a device.
fn apply_chunked(old: &[u8], patch: &[u8], new_len: usize) -> Result<Vec<u8>> {
    let source = source_of(old);
    let mut out = Vec::with_capacity(new_len);
    let mut old_img = old;
    let mut saved = Applier::new(source, u32::MAX).state().to_bytes();
    for chunk in patch.chunks(1024) {
        let mut a = Applier::resume(State::from_bytes(&saved)?, source, u32::MAX)?;
        a.feed(chunk, &mut old_img, &mut out)?;
        saved = a.state().to_bytes();
    }
    Applier::resume(State::from_bytes(&saved)?, source, u32::MAX)?
        .finish::<ota_delta::OutOfBounds>()?;
    Ok(out)
}

fn ratio(ours: usize, theirs: Option<usize>) -> String {
    match theirs {
        Some(t) if t > 0 => format!("{:.2}", ours as f64 / t as f64),
        _ => "-".into(),
    }
}

fn size(s: Option<usize>) -> String {
    s.map_or_else(|| "-".into(), |v| v.to_string())
}

fn main() -> Result<()> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no repository root")?
        .to_path_buf();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo.join("target"), PathBuf::from);
    let cache = target.join("delta-bench");
    std::fs::create_dir_all(&cache)?;
    let old_commit = std::env::var("DELTA_BENCH_OLD").unwrap_or_else(|_| OLD_COMMIT.into());
    let new_commit = std::env::var("DELTA_BENCH_NEW").unwrap_or_else(|_| NEW_COMMIT.into());

    let mut b = Builder {
        repo: repo.clone(),
        cache: cache.clone(),
        worktree: None,
    };
    let old_fw = b.image(&old_commit, "default", &[], false)?;
    let new_fw = b.image(&new_commit, "default", &[], false)?;
    let string_fw = b.image(&new_commit, "string", &[], true)?;
    let oscore_fw = b.image(&new_commit, "oscore", &["--features", "oscore"], false)?;
    let no_ed_fw = b.image(&new_commit, "no-ed25519", &["--no-default-features"], false)?;
    drop(b);
    let random = noise(new_fw.len());

    let detools_version = Command::new("detools")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let pairs: [(String, &[u8], &[u8]); 6] = [
        (
            format!("(a) {old_commit} -> {new_commit}"),
            &old_fw,
            &new_fw,
        ),
        ("(b) one string changed".into(), &new_fw, &string_fw),
        ("(c) + feature oscore".into(), &new_fw, &oscore_fw),
        ("(c) - feature ed25519".into(), &new_fw, &no_ed_fw),
        ("(d) noise -> firmware".into(), &random, &new_fw),
        ("(d) firmware -> noise".into(), &new_fw, &random),
    ];

    println!(
        "Firmware: examples/firmware-cortex-m, thumbv7em-none-eabihf, release (opt-level z, LTO), flat binary."
    );
    println!(
        "detools: {}; ota-delta patches are checked by applying them.\n",
        detools_version
            .as_deref()
            .unwrap_or("not found (pip install detools==0.53)")
    );
    println!(
        "{:<26} {:>7} {:>9} {:>7} {:>10} {:>6} {:>7} {:>6} {:>8} {:>9} {:>10}",
        "pair",
        "NEW B",
        "ota-delta",
        "of NEW",
        "heatshrink",
        "ratio",
        "lzma",
        "ratio",
        "diff",
        "apply",
        "1KiB+state"
    );
    for (name, old, new) in pairs {
        let t = Instant::now();
        let patch = diff(old, new)?;
        let diff_time = t.elapsed();
        if apply_in_memory(old, &patch)? != new || apply_chunked(old, &patch, new.len())? != new {
            return Err(format!("{name}: the patch does not rebuild NEW").into());
        }
        let apply = median(9, || {
            apply_in_memory(old, &patch)?;
            Ok(())
        })?;
        let chunked = median(9, || {
            apply_chunked(old, &patch, new.len())?;
            Ok(())
        })?;
        let hs = detools(&cache, old, new, "heatshrink")?;
        let lzma = detools(&cache, old, new, "lzma")?;
        println!(
            "{:<26} {:>7} {:>9} {:>6.2}% {:>10} {:>6} {:>7} {:>6} {:>8.1?} {:>9.1?} {:>10.1?}",
            name,
            new.len(),
            patch.len(),
            100.0 * patch.len() as f64 / new.len().max(1) as f64,
            size(hs),
            ratio(patch.len(), hs),
            size(lzma),
            ratio(patch.len(), lzma),
            diff_time,
            apply,
            chunked
        );
    }
    println!("\nratio: ota-delta bytes / detools bytes (below 1: smaller). apply: whole patch in memory;");
    println!("1KiB+state: fed in 1 KiB chunks, the 58-byte state persisted and restored between every two.");
    for f in ["old.bin", "new.bin", "patch.bin"] {
        let _ = std::fs::remove_file(cache.join(f));
    }
    Ok(())
}
