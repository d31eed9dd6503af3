//! `ventana bench` at toy sizes: the scenarios run end to end and their counts are real.

use std::time::Duration;
use ventana_bench::load::{LoadOptions, Stop};
use ventana_bench::stats::Percentiles;
use ventana_bench::{baseline, notify};

fn tiny_load() -> LoadOptions {
    LoadOptions {
        connections: 4,
        stop: Stop::Count(50),
        warmup: Duration::from_millis(200),
        rate: None,
    }
}

fn assert_ordered_and_positive(what: &str, p: &Percentiles) {
    assert!(p.p50 > Duration::ZERO, "{what}: {p:?}");
    assert!(
        p.p50 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.max,
        "{what}: {p:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_delivers_every_accepted_message_to_a_device() {
    let options = notify::NotifyOptions {
        users: 5,
        load: tiny_load(),
        drain_timeout: Duration::from_secs(20),
        setup_parallelism: 5,
        // A receiver that takes a moment: every webhook still arrives.
        hook_delay: Duration::from_millis(20),
    };
    let run = notify::run(&options).await.unwrap();
    assert_eq!(run.accepted, 50, "{run:?}");
    assert_eq!(run.failed, 0, "{run:?}");
    assert_eq!(run.delivered, run.accepted, "{run:?}");
    assert_eq!(run.delivered_webhooks, run.accepted, "{run:?}");
    assert!(run.drained);
    assert_eq!(run.accept_latency.count, 50);
    assert_eq!(run.device_latency.count, 50);
    assert_ordered_and_positive("accept", &run.accept_latency);
    assert_ordered_and_positive("accept→device", &run.device_latency);
    // A message reaches the device only after the API call that sent it started.
    assert!(run.device_latency.p50 >= Duration::from_micros(1));
    let figures = run.figures();
    assert!(figures.get("accepted/s").unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_stores_one_row_per_accepted_request() {
    let run = baseline::run(&tiny_load()).await.unwrap();
    assert_eq!(run.accepted, 50, "{run:?}");
    assert_eq!(run.failed, 0, "{run:?}");
    assert_eq!(run.rows, run.accepted_all_phases, "{run:?}");
    assert!(run.commits > 0 && run.commits <= run.rows);
    assert_ordered_and_positive("request", &run.latency);
    assert!(run.warnings().is_empty(), "{:?}", run.warnings());
}
