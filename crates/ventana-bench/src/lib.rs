//! `ventana bench <scenario>`: throughput and latency through the real path — HTTP to the
//! Cloud API, the relay, end-to-end encryption, devices over WebSockets, signed webhooks to a
//! receiver on loopback — with the node's SQLite as durable as in production.
//!
//! The `ventana` binary parses `ventana bench …` into [`BenchArgs`] and calls [`run`].
//!
//! - [`notify`], [`conversation`], [`connections`], [`history`], [`baseline`]: one module per
//!   scenario; `history` pre-fills the stores through `ventana-store`'s bulk import.
//! - [`fixture`]: the node (`ventana_node::run`, in this process), the business and the
//!   devices a scenario runs against.
//! - [`load`]: the HTTP load generator (closed or open loop) the scenarios and baseline share.
//! - [`stats`], [`report`]: percentiles, and the table or JSON every scenario prints.

pub mod baseline;
pub mod connections;
pub mod conversation;
pub mod fixture;
pub mod history;
pub mod load;
pub mod notify;
pub mod report;
pub mod stats;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use load::{LoadOptions, Stop};
use report::{Figures, Report};
use std::time::Duration;

#[derive(Args, Debug)]
#[command(after_help = "\
Every scenario drives a real node on 127.0.0.1, on a fresh temporary data directory per run, \
with its SQLite stores as durable as in production (WAL, synchronous=FULL): real HTTP to the \
Cloud API, the real relay, real end-to-end encryption, real devices over WebSockets and a real \
webhook receiver. A warm-up precedes each measured phase; progress goes to stderr, the report \
to stdout.

Examples:
  ventana bench notify --users 100 --messages 5000 --runs 1 --baseline
  ventana bench notify --rate 1000 --duration 20
  ventana bench conversation --users 50 --json
  ventana bench connections --devices 10000
  ventana bench history --history 10000000")]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
    /// Repeat the scenario this many times (a fresh node each time); the report gives the
    /// median, min and max of every figure.
    #[arg(long, global = true, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    runs: u32,
    /// Also measure the baseline in each run: a bare HTTP handler doing one JSON parse and one
    /// group-committed SQLite insert (synchronous=FULL), over the same connections. The
    /// scenario's throughput is then also given as a ratio to it.
    #[arg(long, global = true)]
    baseline: bool,
    /// Print the report as JSON on stdout (progress still goes to stderr).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// The business sends to many users through the Cloud API, each user a real device.
    Notify(NotifyArgs),
    /// Users write, a business bot answers every webhook through the API: round trips.
    Conversation(ConversationArgs),
    /// Many idle devices connected to one `ventana serve` child process: its memory.
    Connections(ConnectionsArgs),
    /// `notify` on an empty node, then on one whose stores hold a large history.
    History(HistoryArgs),
    /// Only the baseline: one durable SQLite write per HTTP request.
    Baseline(LoadArgs),
}

/// How the HTTP API is loaded.
#[derive(Args, Debug, Clone)]
struct LoadArgs {
    /// HTTP connections (at most this many requests in flight).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    connections: u32,
    /// Measure this many messages (instead of a duration).
    #[arg(long, conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    messages: Option<u64>,
    /// Measure for this many seconds [default: 10].
    #[arg(long)]
    duration: Option<f64>,
    /// Load this many seconds first, not measured.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Offer this many messages per second (open loop) instead of sending as fast as answered.
    #[arg(long)]
    rate: Option<f64>,
}

#[derive(Args, Debug, Clone)]
struct NotifyArgs {
    /// Users, each a real device (registered, connected, decrypting and acknowledging).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    users: u32,
    #[command(flatten)]
    load: LoadArgs,
    /// After the last request, wait at most this many seconds for deliveries and webhooks.
    #[arg(long, default_value_t = 60.0)]
    drain_timeout: f64,
    /// Devices registered at once during set-up.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    setup_parallelism: u32,
    /// The business's webhook receiver answers each POST after this many milliseconds (a
    /// helpdesk doing some work), to measure webhook deliveries per second against it.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    hook_delay_ms: u64,
}

#[derive(Args, Debug, Clone)]
struct ConversationArgs {
    /// Users, each conversing with the business: send, wait for the answer, again.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    users: u32,
    /// `--messages` counts round trips; `--connections` are the business bot's.
    #[command(flatten)]
    load: LoadArgs,
    /// A round trip not completed within this many seconds is counted as lost.
    #[arg(long, default_value_t = 30.0)]
    reply_timeout: f64,
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    setup_parallelism: u32,
}

#[derive(Args, Debug, Clone)]
struct ConnectionsArgs {
    /// Idle devices to connect.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    devices: u32,
    /// Registrations in flight at once during set-up.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    parallelism: u32,
    /// Keep them connected this many seconds before reading the node's memory.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    /// Give up on connecting them all after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    connect_timeout: f64,
}

#[derive(Args, Debug, Clone)]
struct HistoryArgs {
    #[command(flatten)]
    notify: NotifyArgs,
    /// Messages in the pre-filled history.
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    history: u64,
}

fn seconds(what: &str, value: f64) -> Result<Duration> {
    match Duration::try_from_secs_f64(value) {
        Ok(d) if d <= Duration::from_secs(24 * 3600) => Ok(d),
        _ => bail!("{what} must be between 0 and 86400 seconds (got {value})"),
    }
}

impl LoadArgs {
    fn options(&self) -> Result<LoadOptions> {
        let stop = match (self.messages, self.duration) {
            (Some(n), _) => Stop::Count(n),
            (None, Some(d)) if d > 0.0 => Stop::After(seconds("--duration", d)?),
            (None, Some(_)) => bail!("--duration must be positive"),
            (None, None) => Stop::After(Duration::from_secs(10)),
        };
        if let Some(rate) = self.rate
            && !(rate > 0.0 && rate.is_finite())
        {
            bail!("--rate must be a positive number of messages per second");
        }
        Ok(LoadOptions {
            connections: self.connections as usize,
            stop,
            warmup: seconds("--warmup", self.warmup)?,
            rate: self.rate,
        })
    }
}

impl NotifyArgs {
    fn options(&self) -> Result<notify::NotifyOptions> {
        Ok(notify::NotifyOptions {
            users: self.users as usize,
            load: self.load.options()?,
            drain_timeout: seconds("--drain-timeout", self.drain_timeout)?,
            setup_parallelism: self.setup_parallelism as usize,
            hook_delay: Duration::from_millis(self.hook_delay_ms),
        })
    }
}

/// Runs the scenario `args` name, and prints its report on stdout (progress on stderr).
pub async fn run(args: BenchArgs) -> Result<()> {
    let runs = args.runs as usize;
    let mut report = match &args.scenario {
        Scenario::Notify(a) => run_notify(a, runs, args.baseline).await?,
        Scenario::Conversation(a) => run_conversation(a, runs, args.baseline).await?,
        Scenario::Connections(a) => run_connections(a, runs, args.baseline).await?,
        Scenario::History(a) => run_history(a, runs, args.baseline).await?,
        Scenario::Baseline(a) => {
            let mut report = Report::new("baseline");
            describe_load(&mut report, &a.options()?);
            let (runs, warnings) = baseline_runs(&a.options()?, runs).await?;
            report.runs = runs;
            report.warnings = warnings;
            report.notes = baseline_notes();
            report
        }
    };
    report.warnings.dedup();
    report.print(args.json);
    Ok(())
}

/// Runs `scenario` `runs` times, each time preceded by a baseline run when asked (so both
/// see the machine in the same state), and collects figures and warnings.
async fn repeat<F, Fut>(
    report: &mut Report,
    runs: usize,
    baseline: Option<(LoadOptions, Vec<String>)>,
    mut scenario: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(Figures, Vec<String>)>>,
{
    let mut ceiling = Report::new("baseline");
    for i in 1..=runs {
        if let Some((load, _)) = &baseline {
            fixture::status(format!("run {i}/{runs}: baseline"));
            let run = baseline::run(load).await?;
            ceiling.warnings.extend(run.warnings());
            ceiling.runs.push(run.figures());
        }
        fixture::status(format!("run {i}/{runs}: {}", report.scenario));
        let (figures, warnings) = scenario().await?;
        report.runs.push(figures);
        report
            .warnings
            .extend(warnings.into_iter().map(|w| format!("run {i}: {w}")));
    }
    if let Some((load, compare)) = baseline {
        describe_load(&mut ceiling, &load);
        ceiling.notes = baseline_notes();
        report.warnings.append(&mut ceiling.warnings);
        report.baseline = Some((Box::new(ceiling), compare));
    }
    Ok(())
}

async fn baseline_runs(load: &LoadOptions, runs: usize) -> Result<(Vec<Figures>, Vec<String>)> {
    let mut figures = Vec::new();
    let mut warnings = Vec::new();
    for i in 1..=runs {
        fixture::status(format!("run {i}/{runs}: baseline"));
        let run = baseline::run(load).await?;
        warnings.extend(run.warnings());
        figures.push(run.figures());
    }
    Ok((figures, warnings))
}

/// The baseline's load next to a scenario's: the same connections and warm-up, but always as
/// fast as answered (it is a ceiling: at an offered rate it would only echo the rate), and for
/// at least 10 s when the scenario counts messages (a few thousand take it well under a second,
/// too short to be steady).
fn baseline_load(load: &LoadOptions) -> LoadOptions {
    let stop = match load.stop {
        Stop::Count(_) => Stop::After(Duration::from_secs(10)),
        after => after,
    };
    LoadOptions {
        stop,
        rate: None,
        ..load.clone()
    }
}

fn describe_load(report: &mut Report, load: &LoadOptions) {
    report.setting("load", load.describe());
    report.setting("warmup", format!("{} s", load.warmup.as_secs_f64()));
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// How every in-process scenario is measured.
fn node_notes() -> Vec<String> {
    vec![
        "durability as in production: the node's SQLite stores (relay.db, gateway.db) run in WAL mode with synchronous=FULL, every commit fsynced".into(),
        format!(
            "node in this process (ventana_node::run) on 127.0.0.1, a fresh data directory per run under {}; load generator, devices and webhook receiver share this process and its {} CPUs",
            std::env::temp_dir().display(),
            cpus()
        ),
        "each user is a real device (ventana_client::Endpoint over WebSocket: decrypts, commits, acknowledges) with its own SQLite store on tmpfs (/dev/shm) when present, so the devices' fsyncs do not compete with the node's disk".into(),
        "percentiles are nearest-rank over every sample of the measured phase (after the warm-up)".into(),
    ]
}

fn baseline_notes() -> Vec<String> {
    vec![
        "bare axum handler: one JSON parse (301-byte body, 1000 recipients) and one SQLite insert per request, one writer thread with eager group commit (≤1000 rows per commit), WAL, synchronous=FULL, fresh database per run".into(),
        "loaded by the same HTTP client code over the same connections as the scenario".into(),
    ]
}

async fn run_notify(args: &NotifyArgs, runs: usize, with_baseline: bool) -> Result<Report> {
    let options = args.options()?;
    let mut report = Report::new("notify");
    report.setting("users", options.users);
    describe_load(&mut report, &options.load);
    report.notes = node_notes();
    report.notes.push(
        "accept = HTTP round trip of POST /{phone_number_id}/messages; accept→device = from the call's start (open loop: when it was due) to the device having decrypted and committed it; delivered webhooks = `delivered` statuses received by the business".into(),
    );
    let baseline = with_baseline.then(|| {
        (
            baseline_load(&options.load),
            vec![
                "accepted/s".to_owned(),
                "delivered/s (decrypted on device)".to_owned(),
            ],
        )
    });
    let options = &options;
    repeat(&mut report, runs, baseline, move || async move {
        let run = notify::run(options).await?;
        Ok((run.figures(), run.warnings()))
    })
    .await?;
    Ok(report)
}

async fn run_conversation(
    args: &ConversationArgs,
    runs: usize,
    with_baseline: bool,
) -> Result<Report> {
    if args.load.rate.is_some() {
        bail!("conversation is a closed loop per user; --rate does not apply");
    }
    let load = args.load.options()?;
    let options = conversation::ConversationOptions {
        users: args.users as usize,
        stop: load.stop,
        warmup: load.warmup,
        connections: load.connections,
        setup_parallelism: args.setup_parallelism as usize,
        reply_timeout: seconds("--reply-timeout", args.reply_timeout)?,
    };
    let mut report = Report::new("conversation");
    report.setting("users", options.users);
    report.setting(
        "until",
        match options.stop {
            Stop::Count(n) => format!("{n} round trips"),
            Stop::After(d) => format!("{} s", d.as_secs_f64()),
        },
    );
    report.setting("warmup", format!("{} s", options.warmup.as_secs_f64()));
    report.notes = node_notes();
    report.notes.push(
        "round trip = a user's device encrypts and sends → relay → gateway decrypts → signed webhook → the bot answers with POST /{phone_number_id}/messages → relay → the user's device decrypted and committed the answer".into(),
    );
    let baseline = with_baseline.then(|| (baseline_load(&load), vec!["round trips/s".to_owned()]));
    let options = &options;
    repeat(&mut report, runs, baseline, move || async move {
        let run = conversation::run(options).await?;
        Ok((run.figures(), run.warnings()))
    })
    .await?;
    Ok(report)
}

async fn run_connections(
    args: &ConnectionsArgs,
    runs: usize,
    with_baseline: bool,
) -> Result<Report> {
    let options = connections::ConnectionsOptions {
        devices: args.devices as usize,
        parallelism: args.parallelism as usize,
        hold: seconds("--hold", args.hold)?,
        connect_timeout: seconds("--connect-timeout", args.connect_timeout)?,
    };
    let mut report = Report::new("connections");
    report.setting("devices", options.devices);
    report.setting("registration parallelism", options.parallelism);
    report.notes = connections::notes();
    // Nothing here is a throughput; the baseline is still measured when asked, for the record.
    let default_load = LoadOptions {
        connections: 32,
        stop: Stop::After(Duration::from_secs(10)),
        warmup: Duration::from_secs(2),
        rate: None,
    };
    let baseline = with_baseline.then(|| (default_load, Vec::new()));
    let options = &options;
    repeat(&mut report, runs, baseline, move || async move {
        let run = connections::run(options).await?;
        Ok((run.figures(), run.warnings()))
    })
    .await?;
    Ok(report)
}

async fn run_history(args: &HistoryArgs, runs: usize, with_baseline: bool) -> Result<Report> {
    let options = history::HistoryOptions {
        notify: args.notify.options()?,
        history: args.history,
    };
    let mut report = Report::new("history");
    report.setting("history", options.history);
    report.setting("users", options.notify.users);
    describe_load(&mut report, &options.notify.load);
    report.notes = node_notes();
    report.notes.push(history::prefill_note(options.history));
    let baseline = with_baseline.then(|| {
        (
            baseline_load(&options.notify.load),
            vec![
                "empty: accepted/s".to_owned(),
                "history: accepted/s".to_owned(),
            ],
        )
    });
    let options = &options;
    repeat(&mut report, runs, baseline, move || async move {
        let run = history::run(options).await?;
        Ok((run.figures(), run.warnings()))
    })
    .await?;
    Ok(report)
}
