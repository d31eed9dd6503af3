//! Latency percentiles from the raw samples (sorted, nearest rank): the sample counts here
//! are at most a few million, so keeping every sample costs less than a histogram crate.

use std::time::Duration;

/// The distribution of one latency, summarised.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

impl Percentiles {
    /// Summarises `samples` (any order). All zero when there are none.
    pub fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let Some(&max) = samples.last() else {
            return Self::default();
        };
        Self {
            count: samples.len(),
            p50: nearest_rank(&samples, 0.50),
            p99: nearest_rank(&samples, 0.99),
            p999: nearest_rank(&samples, 0.999),
            max,
        }
    }
}

/// The smallest sample at or above the `q` quantile; `sorted` is not empty.
fn nearest_rank(sorted: &[Duration], q: f64) -> Duration {
    // ceil(q * n) as a 1-based rank; float-to-int `as` saturates, and the rank is clamped
    // into the slice, so this cannot index out of bounds.
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `count / elapsed`, or 0 when nothing was timed.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples = (1..=1000).map(Duration::from_millis).collect();
        let p = Percentiles::of(samples);
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50, Duration::from_millis(500));
        assert_eq!(p.p99, Duration::from_millis(990));
        assert_eq!(p.p999, Duration::from_millis(999));
        assert_eq!(p.max, Duration::from_millis(1000));
    }

    #[test]
    fn one_sample_is_every_percentile_and_none_is_zero() {
        let p = Percentiles::of(vec![Duration::from_micros(7)]);
        assert_eq!(
            (p.p50, p.p999),
            (Duration::from_micros(7), Duration::from_micros(7))
        );
        assert_eq!(Percentiles::of(Vec::new()), Percentiles::default());
    }
}

/// CPU time so far, of this process and of the whole machine, from `/proc` (Linux; zero
/// elsewhere). The difference of two samples tells whether a phase was bound by CPU or by
/// waiting (for fsyncs, say), and whether something else was busy on the machine meanwhile.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSample {
    at: Option<std::time::Instant>,
    /// utime + stime of this process, in clock ticks.
    process: u64,
    /// Busy (not idle, not iowait) and iowait ticks over every CPU.
    machine_busy: u64,
    machine_iowait: u64,
}

/// Cores in use over a phase: (this process, the whole machine, the machine in iowait).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuUse {
    pub process: f64,
    pub machine: f64,
    pub iowait: f64,
}

/// `/proc` reports CPU times in USER_HZ, which Linux fixes at 100 for user space.
const TICKS_PER_SECOND: f64 = 100.0;

impl CpuSample {
    pub fn now() -> Self {
        let process = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| {
                // Fields after the command name (which may hold spaces) start at `) `;
                // utime and stime are the 14th and 15th fields of the whole line.
                let rest = &stat[stat.rfind(')')? + 2..];
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let utime: u64 = fields.get(11)?.parse().ok()?;
                let stime: u64 = fields.get(12)?.parse().ok()?;
                Some(utime + stime)
            })
            .unwrap_or(0);
        let (machine_busy, machine_iowait) = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| {
                let line = stat.lines().next()?.strip_prefix("cpu ")?;
                let t: Vec<u64> = line
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect();
                // user nice system idle iowait irq softirq steal (guest time is in user).
                let total: u64 = t.iter().take(8).sum();
                let (idle, iowait) = (*t.get(3)?, *t.get(4)?);
                Some((total - idle - iowait, iowait))
            })
            .unwrap_or((0, 0));
        Self {
            at: Some(std::time::Instant::now()),
            process,
            machine_busy,
            machine_iowait,
        }
    }

    /// Cores used since `self`.
    pub fn until(&self, later: &CpuSample) -> CpuUse {
        let secs = match (self.at, later.at) {
            (Some(a), Some(b)) => (b - a).as_secs_f64(),
            _ => 0.0,
        };
        if secs <= 0.0 {
            return CpuUse::default();
        }
        let cores = |a: u64, b: u64| b.saturating_sub(a) as f64 / TICKS_PER_SECOND / secs;
        CpuUse {
            process: cores(self.process, later.process),
            machine: cores(self.machine_busy, later.machine_busy),
            iowait: cores(self.machine_iowait, later.machine_iowait),
        }
    }
}
