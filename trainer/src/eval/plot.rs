//! ROC plot (TAR against log FAR) as a PNG. Axis text needs a system font; without one the
//! curves are still drawn, unlabeled, rather than failing the evaluation.

use super::SetReport;
use plotters::prelude::*;
use std::path::Path;

/// Draws one curve per report to `path` (PNG, written atomically).
pub fn roc_png(path: &Path, reports: &[SetReport]) -> Result<(), String> {
    let (w, h) = (800u32, 600u32);
    let mut pixels = vec![0u8; (w * h * 3) as usize];
    draw(&mut pixels, (w, h), reports, true)
        .or_else(|_| draw(&mut pixels, (w, h), reports, false))?;
    let img = image::RgbImage::from_raw(w, h, pixels).ok_or("bad image buffer")?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| format!("{}: cannot encode PNG: {e}", path.display()))?;
    shared::atomic_write(path, &png).map_err(|e| format!("{}: {e}", path.display()))
}

fn draw(
    pixels: &mut [u8],
    size: (u32, u32),
    reports: &[SetReport],
    text: bool,
) -> Result<(), String> {
    let root = BitMapBackend::with_buffer(pixels, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let min_far = reports
        .iter()
        .flat_map(|r| r.roc.iter().map(|p| p.far))
        .filter(|&f| f > 0.0)
        .fold(1.0f64, f64::min)
        .max(1e-6);
    let x_lo = min_far.log10().floor();
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder
            .caption("ROC", ("sans-serif", 24))
            .x_label_area_size(40)
            .y_label_area_size(50);
    }
    let mut chart = builder
        .build_cartesian_2d(x_lo..0.0f64, 0.0..1.0f64)
        .map_err(|e| e.to_string())?;
    if text {
        chart
            .configure_mesh()
            .x_desc("log10 FAR")
            .y_desc("TAR")
            .draw()
            .map_err(|e| e.to_string())?;
    }
    let colours = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    for (i, r) in reports.iter().enumerate() {
        let colour = colours[i % colours.len()];
        let pts = r
            .roc
            .iter()
            .filter(|p| p.far > 0.0)
            .map(|p| (p.far.log10().max(x_lo), p.tar));
        let series = chart
            .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        if text {
            series
                .label(format!("{} {}", r.set, r.condition.label()))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
