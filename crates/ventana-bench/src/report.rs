//! What a benchmark prints: the figures of every run, aggregated as median, min and max, as
//! a table for people or JSON for machines.

use crate::stats::{CpuUse, Percentiles};
use serde_json::{Value, json};
use std::fmt::Write as _;

/// How a figure is printed (and labelled in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    PerSecond,
    Millis,
    Count,
    Seconds,
    MiB,
    KiB,
    Ratio,
    /// A plain number, one decimal.
    Plain,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Self::PerSecond => "per_second",
            Self::Millis => "ms",
            Self::Count => "count",
            Self::Seconds => "s",
            Self::MiB => "MiB",
            Self::KiB => "KiB",
            Self::Ratio => "ratio",
            Self::Plain => "number",
        }
    }

    fn format(self, value: f64) -> String {
        match self {
            Self::PerSecond | Self::Count => grouped(value.round()),
            Self::Millis => format!("{value:.2}"),
            Self::Seconds | Self::MiB | Self::KiB => format!("{value:.1}"),
            Self::Plain => format!("{value:.2}"),
            // Three significant digits, even for a tiny ratio.
            Self::Ratio if value != 0.0 && value.abs() < 0.1 => format!("{value:.2e}"),
            Self::Ratio => format!("{value:.3}"),
        }
    }
}

/// `12345` as `12,345`.
fn grouped(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 { format!("-{out}") } else { out }
}

#[derive(Debug, Clone)]
pub struct Figure {
    pub name: String,
    pub unit: Unit,
    pub value: f64,
}

/// One run's figures, in the order they are printed.
#[derive(Debug, Clone, Default)]
pub struct Figures(pub Vec<Figure>);

impl Figures {
    pub fn push(&mut self, name: impl Into<String>, unit: Unit, value: f64) {
        self.0.push(Figure {
            name: name.into(),
            unit,
            value,
        });
    }

    /// `<what> p50`, `p99` and `p99.9`, in milliseconds.
    pub fn latency(&mut self, what: &str, p: &Percentiles) {
        for (label, value) in [("p50", p.p50), ("p99", p.p99), ("p99.9", p.p999)] {
            self.push(
                format!("{what} {label} (ms)"),
                Unit::Millis,
                value.as_secs_f64() * 1000.0,
            );
        }
    }

    /// Cores used during the measured phase: this process (node and load alike), the whole
    /// machine, and the machine waiting for I/O.
    pub fn cpu(&mut self, cpu: &CpuUse) {
        self.push("CPU, this process (cores)", Unit::Plain, cpu.process);
        self.push("CPU, whole machine (cores)", Unit::Plain, cpu.machine);
        self.push("iowait, whole machine (cores)", Unit::Plain, cpu.iowait);
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|f| f.name == name).map(|f| f.value)
    }
}

/// One figure over every run.
#[derive(Debug, Clone)]
pub struct Aggregate {
    pub name: String,
    pub unit: Unit,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: Vec<f64>,
}

/// The median of `values` (the mean of the middle two for an even count); 0 if empty.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// A scenario's report: how it was measured, and what every run gave.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub scenario: String,
    /// The options the scenario ran with, as `name = value`.
    pub settings: Vec<(String, String)>,
    /// How it was measured (durability, where the node and the load ran).
    pub notes: Vec<String>,
    /// Anything that makes the figures doubtful (messages lost, a drain that timed out).
    pub warnings: Vec<String>,
    pub runs: Vec<Figures>,
    /// The same run's ceiling for one durable write per HTTP request, and which of this
    /// report's figures to express as a ratio to its throughput.
    pub baseline: Option<(Box<Report>, Vec<String>)>,
}

impl Report {
    pub fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            ..Self::default()
        }
    }

    pub fn setting(&mut self, name: &str, value: impl ToString) {
        self.settings.push((name.to_owned(), value.to_string()));
    }

    /// Every figure over every run, in the first run's order.
    pub fn aggregate(&self) -> Vec<Aggregate> {
        let Some(first) = self.runs.first() else {
            return Vec::new();
        };
        first
            .0
            .iter()
            .map(|figure| {
                let runs: Vec<f64> = self
                    .runs
                    .iter()
                    .filter_map(|r| r.get(&figure.name))
                    .collect();
                Aggregate {
                    name: figure.name.clone(),
                    unit: figure.unit,
                    median: median(&runs),
                    min: runs.iter().copied().fold(f64::INFINITY, f64::min),
                    max: runs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    runs,
                }
            })
            .collect()
    }

    /// The median of one figure over the runs.
    pub fn median_of(&self, name: &str) -> Option<f64> {
        let runs: Vec<f64> = self.runs.iter().filter_map(|r| r.get(name)).collect();
        (!runs.is_empty()).then(|| median(&runs))
    }

    /// (figure, its median, the baseline's median throughput, the ratio).
    fn ratios(&self) -> Vec<(String, f64, f64, f64)> {
        let Some((baseline, names)) = &self.baseline else {
            return Vec::new();
        };
        let Some(ceiling) = baseline.median_of(crate::baseline::THROUGHPUT) else {
            return Vec::new();
        };
        names
            .iter()
            .filter_map(|name| {
                let value = self.median_of(name)?;
                let ratio = if ceiling > 0.0 { value / ceiling } else { 0.0 };
                Some((name.clone(), value, ceiling, ratio))
            })
            .collect()
    }

    pub fn to_json(&self) -> Value {
        let figures: Vec<Value> = self
            .aggregate()
            .into_iter()
            .map(|a| json!({ "name": a.name, "unit": a.unit.name(), "median": a.median, "min": a.min, "max": a.max, "runs": a.runs }))
            .collect();
        let settings: serde_json::Map<String, Value> = self
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let mut out = json!({
            "scenario": self.scenario,
            "settings": settings,
            "notes": self.notes,
            "warnings": self.warnings,
            "runs": self.runs.len(),
            "figures": figures,
        });
        if let Some((baseline, _)) = &self.baseline {
            out["baseline"] = baseline.to_json();
            out["ratio_to_baseline"] = self
                .ratios()
                .into_iter()
                .map(|(name, value, ceiling, ratio)| json!({ "figure": name, "median": value, "baseline_median": ceiling, "ratio": ratio }))
                .collect();
        }
        out
    }

    /// The human form: a header saying how it was measured, then one row per figure.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let settings: Vec<String> = self
            .settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            out,
            "ventana bench {} — {} (median of {} run{}, [min – max])",
            self.scenario,
            settings.join(" "),
            self.runs.len(),
            if self.runs.len() == 1 { "" } else { "s" }
        );
        for note in &self.notes {
            let _ = writeln!(out, "  · {note}");
        }
        let rows = self.aggregate();
        let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(6);
        let _ = writeln!(
            out,
            "\n  {:<width$}  {:>12}  {:>12}  {:>12}",
            "figure", "median", "min", "max"
        );
        for row in &rows {
            let _ = writeln!(
                out,
                "  {:<width$}  {:>12}  {:>12}  {:>12}",
                row.name,
                row.unit.format(row.median),
                row.unit.format(row.min),
                row.unit.format(row.max)
            );
        }
        if let Some((baseline, _)) = &self.baseline {
            let _ = writeln!(out, "\n{}", baseline.to_table().trim_end());
            let _ = writeln!(
                out,
                "\n  throughput as a ratio to the baseline (median ÷ median):"
            );
            for (name, value, ceiling, ratio) in self.ratios() {
                let _ = writeln!(
                    out,
                    "  {name:<width$}  {} ÷ {} = {}",
                    Unit::PerSecond.format(value),
                    Unit::PerSecond.format(ceiling),
                    Unit::Ratio.format(ratio)
                );
            }
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "  ! {warning}");
        }
        out
    }

    pub fn print(&self, json: bool) {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&self.to_json()).unwrap_or_default()
            );
        } else {
            print!("{}", self.to_table());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_aggregate_to_median_min_and_max() {
        let mut report = Report::new("t");
        for v in [3.0, 1.0, 2.0] {
            let mut run = Figures::default();
            run.push("x/s", Unit::PerSecond, v);
            report.runs.push(run);
        }
        let rows = report.aggregate();
        assert_eq!((rows[0].median, rows[0].min, rows[0].max), (2.0, 1.0, 3.0));
        assert_eq!(grouped(1234567.0), "1,234,567");
        assert_eq!(grouped(12.0), "12");
    }
}
