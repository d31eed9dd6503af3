//! `connections`: many idle devices connected to one node, and what they cost it in memory.
//! The node runs as a child process (`ventana serve`, this same binary), so its resident set
//! (`VmRSS` in `/proc/<pid>/status`) holds the node alone, not the devices or the load.

use crate::fixture::{
    DeviceStores, Devices, NodeAccess, Progress, device_dir, register_devices, status,
};
use crate::report::{Figures, Unit};
use crate::stats::per_second;
use anyhow::{Context, Result, bail};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::sync::mpsc;
use ventana_crypto::Token;

#[derive(Debug, Clone)]
pub struct ConnectionsOptions {
    pub devices: usize,
    pub parallelism: usize,
    /// How long all stay connected before the node's memory is read.
    pub hold: Duration,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ConnectionsRun {
    pub target: usize,
    /// The most devices connected at one time.
    pub reached: usize,
    /// Connected when the memory was read, after the hold.
    pub held: usize,
    /// The node's resident set: just started; with every device registered but none
    /// connected; with all connected, after the hold.
    pub rss_started_kib: u64,
    pub rss_registered_kib: u64,
    pub rss_connected_kib: u64,
    /// `VmHWM`: the node's peak resident set over the run.
    pub rss_peak_kib: u64,
    pub registration_time: Duration,
    pub connect_time: Duration,
}

impl ConnectionsRun {
    pub fn figures(&self) -> Figures {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let per_connection = if self.held > 0 {
            self.rss_connected_kib
                .saturating_sub(self.rss_registered_kib) as f64
                / self.held as f64
        } else {
            0.0
        };
        let mut f = Figures::default();
        f.push(
            "largest M reached (connected at once)",
            Unit::Count,
            self.reached as f64,
        );
        f.push("connected after the hold", Unit::Count, self.held as f64);
        f.push(
            "node RSS at start (MiB)",
            Unit::MiB,
            mib(self.rss_started_kib),
        );
        f.push(
            "node RSS, all registered, none connected (MiB)",
            Unit::MiB,
            mib(self.rss_registered_kib),
        );
        f.push(
            "node RSS, all connected (MiB)",
            Unit::MiB,
            mib(self.rss_connected_kib),
        );
        f.push(
            "node peak RSS, VmHWM (MiB)",
            Unit::MiB,
            mib(self.rss_peak_kib),
        );
        f.push("memory per connection (KiB)", Unit::KiB, per_connection);
        f.push(
            "registration (s)",
            Unit::Seconds,
            self.registration_time.as_secs_f64(),
        );
        f.push(
            "registrations/s",
            Unit::PerSecond,
            per_second(self.target as u64, self.registration_time),
        );
        f.push(
            "connecting all (s)",
            Unit::Seconds,
            self.connect_time.as_secs_f64(),
        );
        f
    }

    pub fn warnings(&self) -> Vec<String> {
        if self.held < self.target {
            vec![format!(
                "only {} of {} devices were connected after the hold (largest at once: {})",
                self.held, self.target, self.reached
            )]
        } else {
            Vec::new()
        }
    }
}

pub fn notes() -> Vec<String> {
    vec![
        "node: `ventana serve` (this binary) as a child process on 127.0.0.1, a fresh data directory per run in the system temp directory, SQLite WAL with synchronous=FULL as in production".into(),
        "memory read from /proc/<node pid>/status (VmRSS, VmHWM); memory per connection = (RSS all connected − RSS all registered) ÷ devices connected".into(),
        "devices registered through the real path (code requested, read through the admin API, keys uploaded) with bounded parallelism, then each connected as a real ventana_client::Endpoint over WebSocket; their identities share one SQLite store on tmpfs in this process".into(),
    ]
}

/// A `ventana serve` child process.
struct NodeProcess {
    child: Child,
    access: NodeAccess,
    _data_dir: TempDir,
}

impl NodeProcess {
    async fn start() -> Result<Self> {
        let data_dir = tempfile::Builder::new()
            .prefix("ventana-bench-node-")
            .tempdir()?;
        // A port the kernel just handed out and we let go of: another process could take it
        // in between, in which case the node fails to start and says so.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let admin_token = Token::generate("vop").expose().to_owned();
        let log = std::fs::File::create(data_dir.path().join("node.log"))?;
        let child = Command::new(std::env::current_exe().context("finding this binary")?)
            .arg("serve")
            // In the data directory, so no `./ventana.toml` of the caller's is picked up.
            .current_dir(data_dir.path())
            .env_remove("VENTANA_CONFIG")
            .env_remove("VENTANA_DATABASE_URL")
            .env_remove("VENTANA_SEAL_KEY")
            .env("VENTANA_LISTEN", format!("127.0.0.1:{port}"))
            .env("VENTANA_DATA_DIR", data_dir.path())
            .env("VENTANA_ADMIN_TOKEN", &admin_token)
            .env("VENTANA_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting `ventana serve`")?;
        let node = Self {
            child,
            access: NodeAccess::new(format!("http://127.0.0.1:{port}"), admin_token),
            _data_dir: data_dir,
        };
        node.access.wait_healthy().await?;
        Ok(node)
    }

    /// `(VmRSS, VmHWM)` in KiB.
    fn memory(&self) -> Result<(u64, u64)> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {name} in {path}"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// SIGTERM (the node drains and stops, as under a service manager), then waits; kills it
    /// if it has not stopped after 30 s.
    async fn stop(mut self) -> Result<()> {
        // std has no way to send SIGTERM and unsafe code is forbidden here: `kill` does it.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(exit) = self.child.try_wait()? {
                if !exit.success() {
                    bail!("`ventana serve` exited with {exit}");
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("`ventana serve` did not stop within 30 s of SIGTERM; killed");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub async fn run(options: &ConnectionsOptions) -> Result<ConnectionsRun> {
    let node = NodeProcess::start().await?;
    let result = measure(&node, options).await;
    let stopped = node.stop().await;
    let run = result?;
    stopped?;
    Ok(run)
}

async fn measure(node: &NodeProcess, options: &ConnectionsOptions) -> Result<ConnectionsRun> {
    // Let the node finish starting before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_started_kib, _) = node.memory()?;
    let target = options.devices.max(1);

    status(format!(
        "registering {target} devices, {} at a time",
        options.parallelism
    ));
    let began = Instant::now();
    let registered_count = Arc::new(AtomicU64::new(0));
    let progress = {
        let count = Arc::clone(&registered_count);
        Progress::start(move || {
            let done = count.load(Ordering::Relaxed);
            format!(
                "registered {done} of {target} ({:.0}/s)",
                per_second(done, began.elapsed())
            )
        })
    };
    let dir = device_dir()?;
    let count = Arc::clone(&registered_count);
    let registered = register_devices(
        &node.access,
        target,
        options.parallelism,
        DeviceStores::Shared,
        &dir,
        move || {
            count.fetch_add(1, Ordering::Relaxed);
        },
    )
    .await?;
    drop(progress);
    let registration_time = began.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_registered_kib, _) = node.memory()?;

    status(format!("connecting {target} devices"));
    let began = Instant::now();
    // Idle devices: nothing is sent to them, so what they would report goes nowhere.
    let (nowhere, _) = mpsc::unbounded_channel();
    let devices = Devices::connect(&node.access, registered, dir, |_| nowhere.clone()).await?;
    let reached = Arc::new(AtomicUsize::new(0));
    let progress = {
        let reached = Arc::clone(&reached);
        Progress::start(move || {
            format!("connected {} of {target}", reached.load(Ordering::Relaxed))
        })
    };
    let deadline = began + options.connect_timeout;
    loop {
        let connected = devices.connected();
        reached.fetch_max(connected, Ordering::Relaxed);
        if connected >= target || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connect_time = began.elapsed();
    drop(progress);

    status(format!(
        "holding them connected for {:.0} s",
        options.hold.as_secs_f64()
    ));
    let hold_until = Instant::now() + options.hold;
    while Instant::now() < hold_until {
        reached.fetch_max(devices.connected(), Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let held = devices.connected();
    let (rss_connected_kib, rss_peak_kib) = node.memory()?;
    devices.disconnect().await;
    Ok(ConnectionsRun {
        target,
        reached: reached.load(Ordering::Relaxed).max(held),
        held,
        rss_started_kib,
        rss_registered_kib,
        rss_connected_kib,
        rss_peak_kib,
        registration_time,
        connect_time,
    })
}
