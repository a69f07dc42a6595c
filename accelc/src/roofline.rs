//! The roofline chart of a profile as SVG (drawn with `plotters`' SVG backend): each layer a
//! point at its operational intensity (2 operations per MAC over the DRAM bytes it moved)
//! against its achieved rate (operations over its cycles at the device clock), under the roof
//! `min(peak, bandwidth × intensity)` of Williams, Waterman and Patterson, "Roofline: an
//! insightful visual performance model for multicore architectures" (CACM 52(4), 2009).

use accelc_isa::{DeviceConfig, Dtype};
use plotters::prelude::*;

use crate::Error;

/// One layer of a profile, as the chart needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    /// Layer name (its ONNX nodes).
    pub name: String,
    /// Cycles it took.
    pub cycles: u64,
    /// Multiply-accumulates of useful work.
    pub macs: u64,
    /// DRAM bytes its DMA moved.
    pub dma_bytes: u64,
}

impl Point {
    /// Operations (2 per MAC) per DRAM byte; `None` without MACs or DRAM traffic.
    pub fn intensity(&self) -> Option<f64> {
        (self.macs > 0 && self.dma_bytes > 0)
            .then(|| 2.0 * self.macs as f64 / self.dma_bytes as f64)
    }

    /// Achieved operations per second at `clock_hz`; `None` without MACs.
    pub fn rate(&self, clock_hz: u64) -> Option<f64> {
        (self.macs > 0)
            .then(|| 2.0 * self.macs as f64 * clock_hz as f64 / self.cycles.max(1) as f64)
    }
}

/// The chart as an SVG document: exactly one circle per layer, filled for a layer with MACs
/// and DRAM traffic, hollow on the bottom edge for one without (vector or copy kernels, which have no
/// matrix-engine rate), the roof for `dtype` on `config`, log-log axes. `title` heads it.
///
/// Errors: [`Error::Input`] when no layer has MACs (nothing to place under the roof) or the
/// device does not multiply `dtype`.
pub fn svg(
    points: &[Point],
    config: &DeviceConfig,
    dtype: Dtype,
    title: &str,
) -> Result<String, Error> {
    let peak = 2.0 * config.peak_macs_per_sec(dtype) as f64;
    if peak == 0.0 {
        return Err(Error::Input(format!("`{}` does not multiply {dtype}", config.name)));
    }
    let bw = config.dram_bytes_per_sec as f64;
    let placed: Vec<(f64, f64)> =
        points.iter().filter_map(|p| Some((p.intensity()?, p.rate(config.clock_hz)?))).collect();
    if placed.is_empty() {
        return Err(Error::Input(
            "no layer has multiply-accumulates to place under the roof".into(),
        ));
    }
    let ridge = peak / bw;
    // Axes: a decade around the points and the ridge point.
    let (mut x0, mut x1, mut y0) = (ridge, ridge, peak);
    for &(x, y) in &placed {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
    }
    let (x0, x1) = (x0 / 4.0, x1 * 4.0);
    let (y0, y1) = (y0 / 4.0, peak * 2.0);
    let giga = 1e9;
    let mut out = String::new();
    let draw = |out: &mut String| -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(out, (960, 640)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d((x0..x1).log_scale(), (y0 / giga..y1 / giga).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("operational intensity (operations per DRAM byte)")
            .y_desc(format!("achieved rate (G{dtype} operations/s)"))
            .draw()?;
        // The roof: bandwidth-bound left of the ridge point, compute-bound right of it.
        let roof: Vec<(f64, f64)> = (0..=200)
            .map(|i| {
                let x = x0 * (x1 / x0).powf(f64::from(i) / 200.0);
                (x, (bw * x).min(peak) / giga)
            })
            .collect();
        chart
            .draw_series(LineSeries::new(roof, BLUE.stroke_width(2)))?
            .label(format!(
                "roof: {:.1} GOPS peak, {:.1} GB/s, ridge {:.1} ops/byte",
                peak / giga,
                bw / giga,
                ridge
            ))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
        chart
            .draw_series(placed.iter().map(|&(x, y)| Circle::new((x, y / giga), 4, RED.filled())))?
            .label("layer with matrix-engine work")
            // Legend keys are squares, so the document has exactly one circle per layer.
            .legend(|(x, y)| Rectangle::new([(x + 4, y - 4), (x + 12, y + 4)], RED.filled()));
        let floor = points.iter().filter(|p| p.intensity().is_none() || p.rate(1).is_none());
        let floor: Vec<Circle<(f64, f64), i32>> =
            floor.map(|_| Circle::new((x0 * 1.05, y0 / giga * 1.05), 4, BLACK)).collect();
        if !floor.is_empty() {
            chart
                .draw_series(floor)?
                .label("layer without MACs (vector, copy): on the floor")
                .legend(|(x, y)| Rectangle::new([(x + 4, y - 4), (x + 12, y + 4)], BLACK));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw(&mut out).map_err(|e| Error::Internal(format!("drawing the roofline: {e}")))?;
    Ok(out)
}
