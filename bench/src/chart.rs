//! `docs/benchmarks.png`: three panels of horizontal grouped bars drawn with plotters'
//! bitmap backend — P1 throughput per path (up, down), P2 echo p99 per path (alone, under
//! bulk up, under bulk down; log scale), P3 command wall times. The `--before` build's
//! paths (`… (before)`) get the same colours, lighter. Text is rasterized with
//! ab_glyph from a system TrueType font (Debian `fonts-dejavu-core`), so no fontconfig or
//! freetype is needed.

use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::load::Dir;
use crate::paths::BEFORE;
use crate::report::Report;

/// Fonts tried in order.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn register_font() -> Result<()> {
    let path = FONTS
        .iter()
        .find(|p| Path::new(p).is_file())
        .ok_or_else(|| anyhow!("no DejaVuSans.ttf found (install fonts-dejavu-core)"))?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{path} is not a usable font"))
}

/// One series of a grouped bar panel.
struct Series {
    name: &'static str,
    color: RGBColor,
    values: Vec<f64>,
}

const BLUE: RGBColor = RGBColor(52, 101, 164);
const ORANGE: RGBColor = RGBColor(230, 126, 34);
const GREEN: RGBColor = RGBColor(46, 139, 87);
const GREY: RGBColor = RGBColor(120, 120, 120);

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// `c` mixed halfway with white: the bars of the `--before` build.
fn lighter(c: RGBColor) -> RGBColor {
    let mix = |v: u8| ((u16::from(v) + 255) / 2) as u8;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

/// Horizontal grouped bars: one group per category (top to bottom), labelled inside; the
/// categories whose name ends with [`BEFORE`] are drawn lighter.
fn bars(panel: &Area, title: &str, cats: &[String], series: &[Series], log: bool) -> Result<()> {
    let (_, h) = panel.dim_in_pixel();
    let (area, legend) = panel.split_vertically(h.saturating_sub(30));
    let area = &area;
    let n = cats.len() as f64;
    let all = series.iter().flat_map(|s| s.values.iter().copied());
    let max = all.clone().filter(|v| v.is_finite()).fold(1.0, f64::max);
    let min = all
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold(max, f64::min);
    let mut cb = ChartBuilder::on(area);
    cb.caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(8);
    let sub = 0.8 / series.len() as f64;
    let label_style = ("sans-serif", 14).into_font();
    let value_style = ("sans-serif", 12).into_font();
    // Group i spans y in [n-1-i, n-i): the name on top, bars below it.
    let draw_groups = |x0: f64,
                       rect: &mut dyn FnMut(f64, f64, f64, RGBColor, String) -> Result<()>,
                       text: &mut dyn FnMut(String, f64, f64) -> Result<()>|
     -> Result<()> {
        for (i, cat) in cats.iter().enumerate() {
            let top = n - i as f64;
            text(cat.clone(), x0, top - 0.02)?;
            for (k, s) in series.iter().enumerate() {
                let v = s.values.get(i).copied().unwrap_or(f64::NAN);
                if !v.is_finite() {
                    continue;
                }
                let y1 = top - 0.2 - k as f64 * sub;
                let label = if v >= 100.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                };
                let color = if cat.ends_with(BEFORE) {
                    lighter(s.color)
                } else {
                    s.color
                };
                rect(v, y1 - sub * 0.9, y1, color, label)?;
            }
        }
        Ok(())
    };
    if log {
        let lo = 10f64.powf((min.max(1.0)).log10().floor());
        let hi = max * 3.0;
        let mut chart = cb.build_cartesian_2d((lo..hi).log_scale(), 0f64..n)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc(title_unit(title))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 12))
            .draw()?;
        let pa = chart.plotting_area();
        draw_groups(
            lo,
            &mut |v, y0, y1, c, l| {
                pa.draw(&Rectangle::new([(lo, y0), (v, y1)], c.filled()))?;
                pa.draw(&Text::new(l, (v * 1.05, y1), value_style.clone()))?;
                Ok(())
            },
            &mut |t, x, y| Ok(pa.draw(&Text::new(t, (x * 1.05, y), label_style.clone()))?),
        )?;
    } else {
        let hi = max * 1.18;
        let mut chart: ChartContext<_, Cartesian2d<RangedCoordf64, RangedCoordf64>> =
            cb.build_cartesian_2d(0f64..hi, 0f64..n)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc(title_unit(title))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 12))
            .draw()?;
        let pa = chart.plotting_area();
        draw_groups(
            0.0,
            &mut |v, y0, y1, c, l| {
                pa.draw(&Rectangle::new([(0.0, y0), (v, y1)], c.filled()))?;
                pa.draw(&Text::new(l, (v + hi * 0.01, y1), value_style.clone()))?;
                Ok(())
            },
            &mut |t, _x, y| Ok(pa.draw(&Text::new(t, (hi * 0.005, y), label_style.clone()))?),
        )?;
    }
    // legend: one row under the chart
    let mut x = 60;
    for s in series {
        legend.draw(&Rectangle::new([(x, 8), (x + 12, 20)], s.color.filled()))?;
        legend.draw(&Text::new(
            s.name,
            (x + 18, 7),
            ("sans-serif", 14).into_font(),
        ))?;
        x += 30 + 8 * s.name.len() as i32;
    }
    if cats.iter().any(|c| c.ends_with(BEFORE)) {
        legend.draw(&Text::new(
            "lighter: before",
            (x, 7),
            ("sans-serif", 14).into_font(),
        ))?;
    }
    Ok(())
}

/// The unit in a panel title's parentheses, for the axis.
fn title_unit(title: &str) -> String {
    title
        .split('(')
        .nth(1)
        .and_then(|s| s.split([',', ')']).next())
        .unwrap_or("")
        .to_owned()
}

/// Draw the chart of `report` to `path` (PNG).
pub fn draw(report: &Report, path: &Path) -> Result<()> {
    register_font()?;
    // taller with more paths (`--before` adds two), so the bars keep their size
    let height = 620.max(160 + 75 * report.paths.len() as u32);
    let root = BitMapBackend::new(path, (1800, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (head, body) = root.split_vertically(44);
    let m = &report.machine;
    head.draw(&Text::new(
        format!(
            "virtgate benchmarks, loopback, {} ({} cores), {}{}",
            m.cpu,
            m.cores,
            m.date,
            if report.cfg.quick { ", quick mode" } else { "" }
        ),
        (16, 12),
        ("sans-serif", 22).into_font(),
    ))?;
    let panels = body.split_evenly((1, 3));
    let names: Vec<String> = report.paths.iter().map(|p| p.name.to_owned()).collect();
    let per_path = |f: &dyn Fn(&crate::measure::PathResult) -> f64| -> Vec<f64> {
        report.paths.iter().map(f).collect()
    };
    bars(
        &panels[0],
        "P1 one stream (MB/s, higher is better)",
        &names,
        &[
            Series {
                name: "up (client → server)",
                color: BLUE,
                values: per_path(&|p| p.p1(Dir::Up)),
            },
            Series {
                name: "down (server → client)",
                color: ORANGE,
                values: per_path(&|p| p.p1(Dir::Down)),
            },
        ],
        false,
    )
    .context("P1 panel")?;
    bars(
        &panels[1],
        "P2 64-byte echo p99 (µs, log scale, lower is better)",
        &names,
        &[
            Series {
                name: "alone",
                color: GREEN,
                values: per_path(&|p| p.echo.p99),
            },
            Series {
                name: "with bulk up",
                color: BLUE,
                values: per_path(&|p| p.under_up.rtt.p99),
            },
            Series {
                name: "with bulk down",
                color: ORANGE,
                values: per_path(&|p| p.under_down.rtt.p99),
            },
        ],
        true,
    )
    .context("P2 panel")?;
    let cmds: Vec<String> = report.logins.iter().map(|l| l.name.to_owned()).collect();
    bars(
        &panels[2],
        "P3 connect + auth + call (ms, median)",
        &cmds,
        &[Series {
            name: "wall time",
            color: GREY,
            values: report.logins.iter().map(|l| l.median()).collect(),
        }],
        false,
    )
    .context("P3 panel")?;
    root.present().context("writing the PNG")?;
    Ok(())
}
