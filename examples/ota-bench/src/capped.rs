//! Server instances as processes of their own, each held to a fixed share of one core by a
//! cgroup CPU quota: the stand-in for instances on machines of their own.
//!
//! On a two-core machine one uncapped instance, PostgreSQL and the clients leave too little
//! CPU for a second instance (1.4-1.6 of 2 cores busy with one), so a second instance mostly
//! takes CPU from the first: that measures the machine. With each instance capped well below what the machine has spare, an instance is
//! the bottleneck, and two of them show whether the design scales on one database (shared
//! rows, locks, replay floors) rather than whether the machine has a third core.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

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
    /// A cgroup named `name` allowed `share` of one core (at least a tenth: the kernel's
    /// smallest quota is 1 ms): cgroup v2's `cpu.max` where the unified hierarchy is mounted at
    /// `/sys/fs/cgroup`, else v1's `cpu` controller.
    pub fn new(name: &str, share: f64) -> Result<CpuCap, String> {
        let quota = ((share * PERIOD_US as f64) as u64).max(1000);
        let root = Path::new("/sys/fs/cgroup");
        if root.join("cgroup.controllers").exists() {
            // v2: the controller must be on for the root's children (a no-op when it is).
            let enabled = std::fs::write(root.join("cgroup.subtree_control"), "+cpu");
            let cap = CpuCap {
                dir: make_dir(&root.join(name))?,
            };
            if !cap.dir.join("cpu.max").exists() {
                return Err(format!(
                    "no cpu controller in {} ({enabled:?})",
                    cap.dir.display()
                ));
            }
            write(&cap.dir.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?;
            Ok(cap)
        } else {
            // Made before the writes, so that a failed write removes the directory.
            let cap = CpuCap {
                dir: make_dir(&root.join("cpu").join(name))?,
            };
            write(&cap.dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
            write(&cap.dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
            Ok(cap)
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

fn make_dir(dir: &Path) -> Result<PathBuf, String> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(dir.to_path_buf()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(dir.to_path_buf()),
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
    /// Its cgroup, removed once the child has ended (fields drop after [`Drop::drop`]).
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
        // The address it prints once serving, waited for on a thread of its own: a child that
        // hangs (a database that does not answer) must not hang the bench.
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(out).read_line(&mut line);
                let _ = tx.send(line);
            });
        }
        let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
        let mut instance = Instance {
            child,
            addr: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
            _cap: cap,
        };
        entered?;
        instance.addr = line.trim().parse().map_err(|_| {
            format!("the instance printed no address within {START_TIMEOUT:?}: {line:?}")
        })?;
        Ok(instance)
    }
}

/// How long an instance may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);

impl Drop for Instance {
    fn drop(&mut self) {
        // Closing its stdin asks it to end; one that has not within a second is killed.
        drop(self.child.stdin.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
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
