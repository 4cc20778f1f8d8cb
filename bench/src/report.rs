//! Results: one row per (scenario, connections, run), their medians over
//! runs, the stdout table and the SVG plot.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use serde::Serialize;

use crate::scenarios::{Outcome, Scenario};

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub class: String,
    pub connections: usize,
    pub run: usize,
    pub requests_ok: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    pub errors_by_status: BTreeMap<String, u64>,
    pub error_samples: Vec<String>,
    pub peak_rss_mib: f64,
    /// rps / ping's rps at the same concurrency in the same run.
    pub pct_of_ping: Option<f64>,
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Row {
    pub fn new(
        scenario: Scenario,
        name: &str,
        connections: usize,
        run: usize,
        o: &Outcome,
        peak_kib: u64,
    ) -> Row {
        let ms = |q: f64| o.latency_us.value_at_quantile(q) as f64 / 1000.0;
        Row {
            scenario: name.to_owned(),
            class: scenario.class().to_owned(),
            connections,
            run,
            requests_ok: o.ok(),
            rps: o.rps(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: o.latency_us.max() as f64 / 1000.0,
            errors: o.errors.values().sum(),
            errors_by_status: o
                .errors
                .iter()
                .map(|(s, n)| {
                    (
                        if *s == 0 {
                            "transport".into()
                        } else {
                            s.to_string()
                        },
                        *n,
                    )
                })
                .collect(),
            error_samples: o.error_samples.clone(),
            peak_rss_mib: mib(peak_kib),
            pct_of_ping: None,
        }
    }
}

/// Fills `pct_of_ping` from the ping rows of the same run and concurrency.
pub fn relate_to_ping(rows: &mut [Row]) {
    let ping: BTreeMap<(usize, usize), f64> = rows
        .iter()
        .filter(|r| r.scenario == "ping")
        .map(|r| ((r.run, r.connections), r.rps))
        .collect();
    for row in rows.iter_mut() {
        if let Some(p) = ping.get(&(row.run, row.connections))
            && *p > 0.0
        {
            row.pct_of_ping = Some(100.0 * row.rps / p);
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// The median over runs of each figure (errors are summed).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub class: String,
    pub connections: usize,
    pub runs: usize,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub errors: u64,
    pub peak_rss_mib: f64,
    pub pct_of_ping: Option<f64>,
}

pub fn summarize(rows: &[Row]) -> Vec<Summary> {
    // Keep first-seen order of scenarios, then by connections.
    let mut keys: Vec<(String, usize)> = Vec::new();
    for r in rows {
        let key = (r.scenario.clone(), r.connections);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.into_iter()
        .map(|(scenario, connections)| {
            let group: Vec<&Row> = rows
                .iter()
                .filter(|r| r.scenario == scenario && r.connections == connections)
                .collect();
            let of = |f: fn(&Row) -> f64| median(group.iter().map(|r| f(r)).collect());
            let pct: Vec<f64> = group.iter().filter_map(|r| r.pct_of_ping).collect();
            Summary {
                class: group[0].class.clone(),
                runs: group.len(),
                rps: of(|r| r.rps),
                p50_ms: of(|r| r.p50_ms),
                p99_ms: of(|r| r.p99_ms),
                p999_ms: of(|r| r.p999_ms),
                errors: group.iter().map(|r| r.errors).sum(),
                peak_rss_mib: of(|r| r.peak_rss_mib),
                pct_of_ping: (!pct.is_empty()).then(|| median(pct)),
                scenario,
                connections,
            }
        })
        .collect()
}

pub fn print_table(summaries: &[Summary]) {
    println!(
        "| scenario | conns | rps | p50 ms | p99 ms | p99.9 ms | errors | peak RSS MiB | % of ping |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in summaries {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.1} | {} |",
            s.scenario,
            s.connections,
            s.rps,
            s.p50_ms,
            s.p99_ms,
            s.p999_ms,
            s.errors,
            s.peak_rss_mib,
            s.pct_of_ping.map_or("".into(), |p| format!("{p:.0}%")),
        );
    }
}

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// Two panels, throughput and p99, one bar per concurrency in each scenario's group.
pub fn plot(summaries: &[Summary], path: &Path, title: &str) -> Result<()> {
    let mut scenarios: Vec<&str> = Vec::new();
    let mut levels: Vec<usize> = Vec::new();
    for s in summaries {
        if !scenarios.contains(&s.scenario.as_str()) {
            scenarios.push(&s.scenario);
        }
        if !levels.contains(&s.connections) {
            levels.push(s.connections);
        }
    }
    levels.sort_unstable();
    if scenarios.is_empty() {
        return Ok(());
    }
    let width = (160 + scenarios.len() * 70) as u32;
    let root = SVGBackend::new(path, (width.max(900), 900)).into_drawing_area();
    let err = |e| anyhow!("plotting: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(err)?;
    let panels = root.split_evenly((2, 1));
    type Metric = (&'static str, fn(&Summary) -> f64);
    let metrics: [Metric; 2] = [
        ("requests/s (median of runs)", |s| s.rps),
        ("p99 latency, ms (median of runs)", |s| s.p99_ms),
    ];
    let n = scenarios.len();
    let bar = 0.8 / levels.len() as f64;
    for (panel, (label, value)) in panels.iter().zip(metrics) {
        let top = summaries.iter().map(value).fold(0.0, f64::max).max(1.0) * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .margin(10)
            .x_label_area_size(110)
            .y_label_area_size(70)
            .caption(label, ("sans-serif", 16))
            .build_cartesian_2d(-0.5..(n as f64 - 0.5), 0.0..top)
            .map_err(err)?;
        let names = scenarios.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n + 1)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
                    names[i as usize].to_owned()
                } else {
                    String::new()
                }
            })
            .x_label_style(
                ("sans-serif", 12)
                    .into_font()
                    .transform(FontTransform::Rotate90),
            )
            .draw()
            .map_err(err)?;
        for (j, &level) in levels.iter().enumerate() {
            let color = COLORS[j % COLORS.len()];
            chart
                .draw_series(
                    summaries
                        .iter()
                        .filter(|s| s.connections == level)
                        .map(|s| {
                            let i =
                                scenarios.iter().position(|n| *n == s.scenario).unwrap_or(0) as f64;
                            let x0 = i - 0.4 + j as f64 * bar;
                            Rectangle::new([(x0, 0.0), (x0 + bar * 0.9, value(s))], color.filled())
                        }),
                )
                .map_err(err)?
                .label(format!("{level} connections"))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}
