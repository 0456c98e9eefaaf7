//! Server instances as processes of their own, each held to a fixed share of one core by a
//! cgroup CPU quota: the stand-in for instances on machines of their own.
//!
//! On a two-core machine one uncapped instance, PostgreSQL and the clients already keep both
//! cores busy, so a second instance can only take CPU from the first: that measures the
//! machine. With each instance capped well below what the machine has spare, an instance is
//! the bottleneck, and two of them show whether the design scales on one database (shared
//! rows, locks, replay floors) rather than whether the machine has a third core.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use ota_server::fleet::Fleet;
use ota_server::serve::spawn_coap;
use ota_server::store::{Location, Store};

/// The quota's period: short, so that a throttled instance waits milliseconds, not the
/// default 100 ms, for its next slice.
const PERIOD_US: u64 = 10_000;

/// A cgroup with a CPU quota, removed on drop (once its processes have ended).
pub struct CpuCap {
    dir: PathBuf,
}

impl CpuCap {
    /// A cgroup named `name` allowed `share` of one core: cgroup v2's `cpu.max` where the
    /// unified hierarchy is mounted at `/sys/fs/cgroup`, else v1's `cpu` controller.
    pub fn new(name: &str, share: f64) -> Result<CpuCap, String> {
        let quota = ((share * PERIOD_US as f64) as u64).max(1000);
        let root = Path::new("/sys/fs/cgroup");
        if root.join("cgroup.controllers").exists() {
            // v2: enabling the controller for the root's children is a no-op when it is on.
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+cpu");
            let dir = root.join(name);
            make_dir(&dir)?;
            write(&dir.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?;
            Ok(CpuCap { dir })
        } else {
            let dir = root.join("cpu").join(name);
            make_dir(&dir)?;
            write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
            write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
            Ok(CpuCap { dir })
        }
    }

    /// Moves process `pid`, all its threads, into the cgroup.
    pub fn enter(&self, pid: u32) -> Result<(), String> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn make_dir(dir: &Path) -> Result<(), String> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create cgroup {}: {e}", dir.display())),
    }
}

fn write(file: &Path, value: &str) -> Result<(), String> {
    std::fs::write(file, value).map_err(|e| format!("cannot write {}: {e}", file.display()))
}

/// One server instance in a child process (this binary, `serve-instance`), in its own capped
/// cgroup; it serves until dropped.
pub struct Instance {
    child: Child,
    /// Where it answers.
    pub addr: SocketAddr,
    _cap: CpuCap,
}

impl Instance {
    /// Starts an instance on `url`, on `addr` (port 0 for a new one; an instance's port to
    /// share it), held to `share` of a core.
    pub fn start(url: &str, addr: SocketAddr, share: f64, n: usize) -> Result<Instance, String> {
        let cap = CpuCap::new(&format!("ota-bench-{}-{n}", std::process::id()), share)?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args(["serve-instance", url, &addr.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start an instance: {e}"))?;
        let entered = cap.enter(child.id());
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let addr = line.trim().parse().ok();
        match (entered, addr) {
            (Ok(()), Some(addr)) => Ok(Instance {
                child,
                addr,
                _cap: cap,
            }),
            (entered, _) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(entered
                    .err()
                    .unwrap_or_else(|| format!("the instance printed no address: {line:?}")))
            }
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Closing its stdin ends it; a kill is the fallback.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ota-bench serve-instance URL ADDR`: the child's side. Serves as `ota-server serve --db URL`
/// does, prints the address it answers on, and exits when its stdin closes.
pub fn serve_instance(url: &str, addr: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let store = Store::open_at(&Location::Postgres(url.to_string()))
            .await
            .expect("the store");
        let app = Arc::new(Fleet::new(store, 3600, 256 << 20).await.expect("the fleet"));
        let addr: SocketAddr = addr.parse().expect("an address");
        let (local, _) = spawn_coap(app, addr, 2).expect("a socket");
        println!("{local}");
        let _ = std::io::stdout().flush();
        let _ = tokio::task::spawn_blocking(|| {
            let mut rest = String::new();
            let _ = std::io::stdin().read_line(&mut rest);
        })
        .await;
    });
}
