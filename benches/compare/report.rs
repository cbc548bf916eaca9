//! The report: a markdown table, the targets, and an SVG chart.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use plotters::prelude::*;

/// One figure of one workload on one backend.
#[derive(Clone, Debug)]
pub struct Row {
    pub backend: String,
    pub workload: String,
    pub figure: String,
    pub value: f64,
    /// The raw baseline it is compared with, and its value.
    pub baseline: Option<(String, f64)>,
    /// Speed as a share of the baseline's (1.0 = as fast as raw SQLite).
    pub ratio: Option<f64>,
}

impl Row {
    pub fn new(backend: &str, workload: &str, figure: &str, value: f64) -> Self {
        Row {
            backend: backend.into(),
            workload: workload.into(),
            figure: figure.into(),
            value,
            baseline: None,
            ratio: None,
        }
    }

    /// Compares with an earlier figure of the same run (the end of a soak
    /// with its start): ours ÷ that.
    pub fn against_self(mut self, earlier: &str, value: f64) -> Self {
        self.ratio = Some(self.value / value);
        self.baseline = Some((earlier.into(), value));
        self
    }

    /// Compares with `baseline`: for rates, ours ÷ theirs; for latencies,
    /// theirs ÷ ours, so the ratio is always "as fast as raw". A baseline
    /// that was not measured (zero: a run of selected workloads skips the
    /// raw ones, or NaN: a latency series never run) gives no ratio.
    pub fn against(mut self, baseline: &str, value: f64, higher_is_better: bool) -> Self {
        if value.is_nan() || value <= 0.0 {
            return self;
        }
        self.ratio = Some(if higher_is_better {
            self.value / value
        } else {
            value / self.value
        });
        self.baseline = Some((baseline.into(), value));
        self
    }
}

pub struct Report {
    rows: Vec<Row>,
    quick: bool,
}

/// A target of the benchmark issue: the row it reads and the ratio it needs.
struct Target {
    what: &'static str,
    backend: &'static str,
    workload: &'static str,
    figure: &'static str,
    at_least: f64,
}

const TARGETS: &[Target] = &[
    Target {
        what: "64 producers vs raw 64 rows per transaction (their ceiling)",
        backend: "sqlite",
        workload: "ingest, 64 concurrent producers",
        figure: "events/s vs 64-row transactions",
        at_least: 0.9,
    },
    Target {
        what: "1 producer, each awaited, vs raw 1 row per transaction",
        backend: "sqlite",
        workload: "ingest, 1 producer, each awaited",
        figure: "events/s",
        at_least: 0.8,
    },
    Target {
        what: "ingest_batch of 100 vs raw 100 rows per transaction",
        backend: "sqlite",
        workload: "ingest_batch of 100",
        figure: "events/s",
        at_least: 0.7,
    },
    Target {
        what: "pull pages of 100 vs raw select pages of 100 reading every column",
        backend: "sqlite",
        workload: "pull pages of 100, ",
        figure: "events/s",
        at_least: 0.5,
    },
    Target {
        what: "Worker with 8 handlers vs raw claim + ack in batches of 100",
        backend: "sqlite",
        workload: "Worker, 8 no-op handlers",
        figure: "events/s",
        at_least: 0.5,
    },
    Target {
        what: "Worker with 1 handler vs raw claim + ack one at a time",
        backend: "sqlite",
        workload: "Worker, 1 no-op handlers",
        figure: "events/s",
        at_least: 0.75,
    },
    Target {
        what: "small tenant's ingest p99 beside a big tenant's worst traffic, vs 5 ms",
        backend: "sqlite",
        workload: "big tenant beside a small one",
        figure: "small tenant: ingest p99 ms, beside the big one's worst",
        at_least: 1.0,
    },
    Target {
        what: "small tenant's pull p99 beside a big tenant's worst traffic, vs 5 ms",
        backend: "sqlite",
        workload: "big tenant beside a small one",
        figure: "small tenant: pull p99 ms, beside the big one's worst",
        at_least: 1.0,
    },
    Target {
        what: "subscription p99, ingest returned to event on the stream, in-process, vs 10 ms",
        backend: "sqlite",
        workload: "subscription latency",
        figure: "in-process: p99 ms",
        at_least: 1.0,
    },
    Target {
        what: "subscription p99 across processes, vs 250 ms",
        backend: "sqlite",
        workload: "subscription latency",
        figure: "across processes: p99 ms",
        at_least: 1.0,
    },
    Target {
        what: "longest stall of 2 writer processes, vs 250 ms",
        backend: "sqlite",
        workload: "writers in 2 processes",
        figure: "longest stall ms",
        at_least: 1.0,
    },
    Target {
        what: "longest stall of 4 writer processes, vs 250 ms",
        backend: "sqlite",
        workload: "writers in 4 processes",
        figure: "longest stall ms",
        at_least: 1.0,
    },
    Target {
        what: "claim + ack, 8 workers, vs raw select + update in batches of 100",
        backend: "sqlite",
        workload: "claim 100 + ack each, 8 workers",
        figure: "events/s",
        at_least: 1.0,
    },
];

impl Report {
    pub fn new(quick: bool) -> Self {
        Report {
            rows: Vec::new(),
            quick,
        }
    }

    pub fn extend(&mut self, rows: Vec<Row>) {
        self.rows.extend(rows);
    }

    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// Prints the report and writes it, with the chart, under `target/`.
    pub fn finish(&self, took: Duration) {
        let markdown = self.markdown(took);
        println!("{markdown}");
        let dir = target_dir();
        let _ = std::fs::create_dir_all(&dir);
        let md = dir.join("bench-report.md");
        match std::fs::write(&md, &markdown) {
            Ok(()) => eprintln!("wrote {}", md.display()),
            Err(e) => eprintln!("could not write {}: {e}", md.display()),
        }
        let svg = dir.join("bench-ingest.svg");
        match self.chart(&svg) {
            Ok(()) => eprintln!("wrote {}", svg.display()),
            Err(e) => eprintln!("could not draw {}: {e}", svg.display()),
        }
    }

    fn markdown(&self, took: Duration) -> String {
        let mut out = String::new();
        let mode = if self.quick {
            "quick (ZAPINBOX_BENCH_QUICK=1)"
        } else {
            "full"
        };
        let _ = writeln!(out, "## zapinbox benchmarks\n");
        let _ = writeln!(out, "- machine: {}", machine());
        let _ = writeln!(
            out,
            "- mode: {mode}; took {:.0} s; throughput figures are the median of {} run(s); runs on this shared VM vary by ±20 %",
            took.as_secs_f64(),
            if self.quick { 1 } else { 3 }
        );
        let _ = writeln!(out, "- command: `cargo bench --bench compare`");
        let _ = writeln!(
            out,
            "- every workload on a fresh database, 200-byte JSON payloads, `Durability::Full` (`synchronous=FULL`, WAL)\n"
        );
        let _ = writeln!(
            out,
            "| backend | workload | figure | value | raw baseline | baseline value | speed vs raw |"
        );
        let _ = writeln!(out, "|---|---|---|---:|---|---:|---:|");
        for r in &self.rows {
            let (base, base_value) = match &r.baseline {
                Some((name, v)) => (name.as_str(), fmt(*v)),
                None => ("", String::new()),
            };
            let ratio = r
                .ratio
                .map(|x| format!("{:.0} %", x * 100.0))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.backend,
                r.workload,
                r.figure,
                fmt(r.value),
                base,
                base_value,
                ratio
            );
        }
        let _ = writeln!(out, "\n### Targets\n");
        for t in TARGETS {
            let row = self.rows.iter().find(|r| {
                r.backend == t.backend && r.workload.starts_with(t.workload) && r.figure == t.figure
            });
            let line = match row.and_then(|r| r.ratio) {
                Some(ratio) => format!(
                    "- {}: {:.0} % (target {:.0} %): **{}**",
                    t.what,
                    ratio * 100.0,
                    t.at_least * 100.0,
                    if ratio >= t.at_least { "met" } else { "missed" }
                ),
                None => format!("- {}: not measured", t.what),
            };
            let _ = writeln!(out, "{line}");
        }
        if let Some(line) = self.ceiling_line() {
            let _ = writeln!(out, "{line}");
        }
        if let Some(line) = self.soak_line() {
            let _ = writeln!(out, "{line}");
        }
        if let Some(line) = self.rss_line() {
            let _ = writeln!(out, "{line}");
        }
        out
    }

    /// What raw SQLite itself reaches when it may put only 64 rows in a
    /// transaction, which is all 64 awaiting callers can share.
    fn ceiling_line(&self) -> Option<String> {
        let raw64 = self.rows.iter().find(|r| {
            r.backend == "raw sqlite" && r.workload == "insert, 64 rows per transaction"
        })?;
        let ours = self
            .rows
            .iter()
            .find(|r| r.figure == "events/s vs 64-row transactions")?;
        Some(format!(
            "- ceiling for 64 awaiting producers: raw SQLite with 64 rows per transaction reaches {:.0} % of 1 000-row transactions; the SQLite backend reaches {:.0} % of that ceiling",
            raw64.ratio? * 100.0,
            ours.ratio? * 100.0
        ))
    }

    fn soak_line(&self) -> Option<String> {
        let end = self
            .rows
            .iter()
            .find(|r| r.workload == "soak: ingest, last tenth of the run")?;
        let ratio = end.ratio?;
        Some(format!(
            "- soak: ingest throughput at the end is {:.0} % of the start (target within 20 %): **{}**",
            ratio * 100.0,
            if ratio >= 0.8 { "met" } else { "missed" }
        ))
    }

    fn rss_line(&self) -> Option<String> {
        let rss: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.workload.starts_with("peak RSS"))
            .collect();
        let [small, large] = rss[..] else { return None };
        let growth = large.value / small.value - 1.0;
        Some(format!(
            "- RSS flat between {} and {}: grew {:.0} % (target within 20 %): **{}**",
            small.workload.trim_start_matches("peak RSS, "),
            large.workload.trim_start_matches("peak RSS, "),
            growth * 100.0,
            if growth <= 0.2 { "met" } else { "missed" }
        ))
    }

    fn chart(&self, path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
        let concurrency = [1u32, 8, 64];
        // SQLite against its raw limits; the in-memory reference is in the
        // table (it would flatten this chart).
        let series: Vec<(String, Vec<(f64, f64)>)> = ["sqlite"]
            .iter()
            .map(|backend| {
                let points = concurrency
                    .iter()
                    .filter_map(|c| {
                        let workload = format!("ingest, {c} concurrent producers");
                        self.rows
                            .iter()
                            .find(|r| {
                                r.backend == *backend
                                    && r.workload == workload
                                    && r.figure == "events/s"
                            })
                            .map(|r| (f64::from(*c), r.value))
                    })
                    .collect();
                (backend.to_string(), points)
            })
            .collect();
        let raw = |workload: &str| {
            self.rows
                .iter()
                .find(|r| {
                    r.backend == "raw sqlite" && r.workload == workload && r.figure == "events/s"
                })
                .map(|r| r.value)
        };
        let lines = [
            (
                "raw SQLite, 1 000 rows per transaction",
                raw("insert, 1 000 rows per transaction"),
            ),
            (
                "raw SQLite, 64 rows per transaction (ceiling for 64 awaiting producers)",
                raw("insert, 64 rows per transaction"),
            ),
            (
                "raw SQLite, 1 row per transaction",
                raw("insert, 1 row per transaction"),
            ),
        ];
        let top = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
            .chain(lines.iter().filter_map(|(_, y)| *y))
            .fold(1.0, f64::max);
        let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "SQLite backend: ingest throughput by concurrent producers (Durability::Full)",
                ("sans-serif", 18),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d((1f64..64f64).log_scale(), 1f64..top * 1.15)?;
        chart
            .configure_mesh()
            .x_desc("concurrent producers")
            .y_desc("events / s")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{:.0}k", y / 1000.0))
            .draw()?;
        let colors = [RGBColor(31, 119, 180), RGBColor(255, 127, 14)];
        for ((name, points), color) in series.iter().zip(colors) {
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
        }
        for ((name, value), color) in lines.iter().zip([
            RGBColor(44, 160, 44),
            RGBColor(214, 39, 40),
            RGBColor(148, 103, 189),
        ]) {
            if let Some(v) = value {
                chart
                    .draw_series(LineSeries::new(
                        vec![(1.0, *v), (64.0, *v)],
                        color.stroke_width(1),
                    ))?
                    .label(*name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        root.present()?;
        Ok(())
    }
}

fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target")
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Cores and CPU model of this machine.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}, {}", std::env::consts::OS)
}
