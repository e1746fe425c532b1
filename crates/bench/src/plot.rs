//! load.svg: throughput and p99 latency against concurrency (log scale), direct and through
//! the proxy, with the RSA-2048 ceiling as a dashed line. SVG only; text is SVG `<text>`, so
//! no fonts are needed to draw it.

use std::path::Path;

use plotters::coord::combinators::{LogCoord, WithKeyPoints};
use plotters::prelude::*;

use crate::report::{Report, Row};

const DIRECT: RGBColor = RGBColor(31, 119, 180);
const PROXY: RGBColor = RGBColor(214, 39, 40);
const CEILING: RGBColor = RGBColor(90, 90, 90);
const NGINX: RGBColor = RGBColor(44, 160, 44);
const NOT_RSA: RGBColor = RGBColor(255, 127, 14);

type Error = Box<dyn std::error::Error + Send + Sync>;
type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

pub(crate) fn draw(report: &Report, path: &Path) -> anyhow::Result<()> {
    draw_svg(report, path).map_err(|err| anyhow::anyhow!("drawing {}: {err}", path.display()))
}

fn draw_svg(report: &Report, path: &Path) -> Result<(), Error> {
    let floor = report.rows.iter().any(|row| row.mode == "nginx");
    let width = if floor { 1800 } else { 1200 };
    let root = SVGBackend::new(path, (width, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(56);
    title.draw(&Text::new(
        format!(
            "pkcv-proxy load: {}, {} cores shared by the proxy, the load generator and the upstream",
            report.machine.cpu_model, report.machine.cores
        ),
        (20, 12),
        ("sans-serif", 18).into_font(),
    ))?;
    title.draw(&Text::new(
        format!(
            "RS256 with RSA-2048; proxy upstream.http2 = {}; upstream answers after {} ms; \
             {:.0} s warm-up + {:.0} s measured per step; keep-alive HTTP/1.1 clients",
            report.proxy_upstream_http2,
            report.upstream_delay_ms,
            report.warmup_secs,
            report.measure_secs
        ),
        (20, 36),
        ("sans-serif", 13).into_font().color(&RGBColor(80, 80, 80)),
    ))?;
    let (left, right) = body.split_horizontally(600);
    throughput(report, &left)?;
    if floor {
        let (middle, right) = right.split_horizontally(600);
        latency(report, &middle)?;
        cpu(report, &right)?;
    } else {
        latency(report, &right)?;
    }
    root.present()?;
    Ok(())
}

fn series<'a>(
    report: &'a Report,
    mode: &'a str,
    value: impl Fn(&Row) -> f64 + 'a,
) -> Vec<(f64, f64)> {
    report
        .rows
        .iter()
        .filter(|row| row.mode == mode && row.requests > 0)
        .map(|row| (row.clients as f64, value(row)))
        .collect()
}

fn x_range(report: &Report) -> std::ops::Range<f64> {
    let max = report.rows.iter().map(|row| row.clients).max().unwrap_or(1) as f64;
    0.7..(max * 1.5).max(2.0)
}

/// The log-scale x axis, labelled at the concurrencies measured.
fn x_axis(report: &Report) -> WithKeyPoints<LogCoord<f64>> {
    let mut points: Vec<f64> = report.rows.iter().map(|row| row.clients as f64).collect();
    points.sort_by(f64::total_cmp);
    points.dedup();
    x_range(report).log_scale().with_key_points(points)
}

/// Through the proxy against the ceiling, on a linear axis. Direct runs at many times the
/// ceiling (no RSA), so it is named in the legend rather than drawn off the scale.
fn throughput(report: &Report, area: &Area<'_>) -> Result<(), Error> {
    let top = report
        .rows
        .iter()
        .filter(|row| row.mode == "proxy")
        .map(|row| row.req_per_sec)
        .fold(report.ceiling_req_per_sec, f64::max)
        * 1.5;
    let x = x_range(report);
    let mut chart = ChartBuilder::on(area)
        .caption("Throughput through the proxy (req/s)", ("sans-serif", 16))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_axis(report), 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients (keep-alive)")
        .y_desc("req/s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let ceiling = report.ceiling_req_per_sec;
    chart
        .draw_series(DashedLineSeries::new(
            [(x.start, ceiling), (x.end, ceiling)],
            6,
            4,
            CEILING.stroke_width(2),
        ))?
        .label(format!(
            "RSA-2048 ceiling: {} cores / {:.0} µs = {:.0} req/s",
            report.machine.cores, report.rsa2048_sign_us, ceiling
        ))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], CEILING.stroke_width(2)));
    line(
        &mut chart,
        series(report, "proxy", |row| row.req_per_sec),
        "through the proxy",
        PROXY,
    )?;
    if let Some(text) = direct_range(report) {
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label(text)
            .legend(|(x, y)| Circle::new((x + 10, y), 4, DIRECT.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

fn direct_range(report: &Report) -> Option<String> {
    let direct = series(report, "direct", |row| row.req_per_sec);
    let low = direct.iter().map(|p| p.1).reduce(f64::min)?;
    let high = direct.iter().map(|p| p.1).reduce(f64::max)?;
    Some(format!(
        "direct, no proxy: {low:.0}-{high:.0} req/s (off the scale)"
    ))
}

fn latency(report: &Report, area: &Area<'_>) -> Result<(), Error> {
    let ms = |us: u64| us as f64 / 1000.0;
    let values: Vec<f64> = report
        .rows
        .iter()
        .filter(|r| r.requests > 0)
        .map(|r| ms(r.p99_us))
        .collect();
    let low = values
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .min(1.0)
        * 0.5;
    let high = values.iter().copied().fold(1.0, f64::max) * 2.0;
    let mut chart = ChartBuilder::on(area)
        .caption("p99 latency (ms, log scale)", ("sans-serif", 16))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_axis(report), (low..high).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients (keep-alive)")
        .y_desc("ms")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()?;
    for (mode, color) in [("direct", DIRECT), ("nginx", NGINX), ("proxy", PROXY)] {
        if !report.rows.iter().any(|row| row.mode == mode) {
            continue;
        }
        line(
            &mut chart,
            series(report, mode, |row| ms(row.p99_us)),
            &format!("{mode} p99"),
            color,
        )?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

/// CPU per request: the proxy's, the proxy's beyond the RSA signature, and the nginx floor
/// (the nginx worker's), with the RSA sign time as a dashed line (log scale).
fn cpu(report: &Report, area: &Area<'_>) -> Result<(), Error> {
    let proxy = series(report, "proxy", |row| {
        row.proxy_cpu_per_request_us.unwrap_or(0.0)
    });
    let not_rsa = series(report, "proxy", |row| {
        row.not_rsa_cpu_per_request_us.unwrap_or(0.0)
    });
    let nginx = series(report, "nginx", |row| {
        row.proxy_cpu_per_request_us.unwrap_or(0.0)
    });
    let values = || proxy.iter().chain(&not_rsa).chain(&nginx).map(|p| p.1);
    let low = values()
        .filter(|v| *v > 0.0)
        .fold(report.rsa2048_sign_us, f64::min)
        * 0.5;
    let high = values().fold(report.rsa2048_sign_us, f64::max) * 2.0;
    let x = x_range(report);
    let mut chart = ChartBuilder::on(area)
        .caption("CPU per request (µs, log scale)", ("sans-serif", 16))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_axis(report), (low.max(0.1)..high).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients (keep-alive)")
        .y_desc("µs")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let sign = report.rsa2048_sign_us;
    chart
        .draw_series(DashedLineSeries::new(
            [(x.start, sign), (x.end, sign)],
            6,
            4,
            CEILING.stroke_width(2),
        ))?
        .label(format!("one RSA-2048 sign: {sign:.0} µs"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], CEILING.stroke_width(2)));
    let positive = |points: Vec<(f64, f64)>| -> Vec<(f64, f64)> {
        points.into_iter().filter(|p| p.1 > 0.0).collect()
    };
    line(&mut chart, positive(proxy), "proxy CPU/req", PROXY)?;
    line(
        &mut chart,
        positive(not_rsa),
        "proxy minus the RSA sign",
        NOT_RSA,
    )?;
    line(
        &mut chart,
        positive(nginx),
        "nginx worker CPU/req (floor)",
        NGINX,
    )?;
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

fn line<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    points: Vec<(f64, f64)>,
    label: &str,
    color: RGBColor,
) -> Result<(), Error>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
        .label(label.to_owned())
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    chart.draw_series(
        points
            .into_iter()
            .map(|p| Circle::new(p, 4, color.filled())),
    )?;
    Ok(())
}

fn legend<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> Result<(), Error>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
