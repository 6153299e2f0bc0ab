//! The plot of the delay distributions: configured, meshsim and netem side by side.

use super::*;

pub(crate) const PLOT_BIN_MS: f64 = 1.0;

pub(crate) fn jitter_seconds(dist: JitterDist) -> u64 {
    match dist {
        JitterDist::Pareto | JitterDist::ParetoNormal => JITTER_SECONDS_PARETO,
        JitterDist::Normal | JitterDist::Uniform => JITTER_SECONDS,
    }
}

/// The delays (ms) a distribution's panel shows.
pub(crate) fn plot_range(dist: JitterDist) -> (f64, f64) {
    match dist {
        JitterDist::Uniform => (30.0, 70.0),
        JitterDist::Pareto | JitterDist::ParetoNormal => (40.0, 100.0),
        JitterDist::Normal => (10.0, 90.0),
    }
}

/// Step outline of the histogram of `delays` over `(lo, hi)`, as densities per ms.
pub(crate) fn histogram(delays: &[f64], (lo, hi): (f64, f64)) -> Vec<(f64, f64)> {
    let bins = ((hi - lo) / PLOT_BIN_MS) as usize;
    let mut counts = vec![0u64; bins];
    for &d in delays {
        if d >= lo && d < hi {
            counts[((d - lo) / PLOT_BIN_MS) as usize] += 1;
        }
    }
    let n = delays.len().max(1) as f64;
    let mut points = vec![(lo, 0.0)];
    for (i, c) in counts.iter().enumerate() {
        let d = *c as f64 / n / PLOT_BIN_MS;
        let x0 = lo + i as f64 * PLOT_BIN_MS;
        points.push((x0, d));
        points.push((x0 + PLOT_BIN_MS, d));
    }
    points.push((hi, 0.0));
    points
}

/// The density of `reference` over `(lo, hi)`. Where it jumps, the curve gets an exactly
/// vertical segment: plotters draws a thick, steep but not vertical segment past the end of the
/// axis.
pub(crate) fn curve(reference: &Reference, (lo, hi): (f64, f64)) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = (0..=800)
        .map(|i| lo + (hi - lo) * i as f64 / 800.0)
        .map(|x| (x, reference.density(x)))
        .collect();
    for edge in reference.jumps() {
        if edge > lo && edge < hi {
            let at = points.partition_point(|p| p.0 < edge);
            let below = reference.density(edge - 1e-9);
            let above = reference.density(edge + 1e-9);
            points.splice(at..at, [(edge, below), (edge, above)]);
        }
    }
    points
}

/// One line of a panel and its legend.
pub(crate) struct Curve {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
    pub(crate) style: ShapeStyle,
}

pub(crate) fn plot(path: &Path, cases: &[JitterCase], netem_pareto: &[f64]) -> Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| anyhow!("the bundled DejaVu font did not load"))?;
    let root = BitMapBackend::new(path, (1650, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(44);
    title.draw_text(
        "One-way delay, 50 ms ± 10 ms: configured vs meshsim vs netem (same run, VM under software emulation; unshaped median subtracted)",
        &("sans-serif", 19).into_font().color(&BLACK),
        (16, 14),
    )?;
    let colours = [
        RGBColor(31, 97, 196),
        RGBColor(46, 160, 67),
        RGBColor(214, 39, 40),
    ];
    for (area, case) in body.split_evenly((1, cases.len())).iter().zip(cases) {
        let range = plot_range(case.dist);
        let mut curves = vec![Curve {
            name: format!("configured ({})", dist_name(case.dist)),
            points: curve(&case.rows[0].reference, range),
            style: BLACK.stroke_width(2),
        }];
        if case.dist == JitterDist::Pareto {
            let table = Reference::new(case.dist, Shaper::Netem, netem_pareto);
            curves.push(Curve {
                name: "configured, netem's pareto table".to_owned(),
                points: curve(&table, range),
                style: RGBColor(150, 150, 150).stroke_width(2),
            });
        }
        for (row, colour) in case.rows.iter().zip(colours) {
            curves.push(Curve {
                name: format!("{} (n={})", row.name, row.probes),
                points: histogram(&row.delays_ms, range),
                style: colour.stroke_width(1),
            });
        }
        let top = curves
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.1))
            .fold(0.0, f64::max)
            * 1.25;
        let mut chart = ChartBuilder::on(area)
            .caption(dist_name(case.dist), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(58)
            .build_cartesian_2d(range.0..range.1, 0.0..top.max(1e-3))?;
        chart
            .configure_mesh()
            .x_desc("one-way delay (ms)")
            .y_desc("density (1/ms)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .label_style(("sans-serif", 14))
            .light_line_style(RGBColor(236, 236, 236))
            .draw()?;
        for c in curves {
            let style = c.style;
            chart
                .draw_series(LineSeries::new(c.points, style))?
                .label(c.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
