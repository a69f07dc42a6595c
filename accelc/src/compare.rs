//! Comparing device results with references: element-wise tolerances, and the first tensor of
//! a model, in program order, on which the device and the reference interpreter disagree.

use accelc_compiler::interp::{self, Array};
use accelc_compiler::ir::{Graph, ValueId};
use accelc_compiler::lower::Compiled;
use accelc_compiler::lower::execplan::PlanCompiled;
use accelc_isa::blob::Direction;
use accelc_runtime::driver::DeviceOptions;

use crate::{Error, HostTensor, Session};

/// Relative tolerance of comparisons with a reference (the zoo's onnxruntime tolerance).
pub const RTOL: f32 = 1e-3;
/// Absolute tolerance of comparisons with a reference.
pub const ATOL: f32 = 1e-5;
/// Error allowed on intermediate tensors in proportion to the tensor's largest magnitude:
/// summing in another order leaves rounding errors that scale with the terms, not with the
/// (possibly cancelled) result, so elementwise tolerances alone flag near-zero outputs of
/// residual additions. About 170 ulps of the largest element.
pub const SCALE_TOL: f32 = 1e-5;

/// The worst element of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// Flat (row-major) index.
    pub index: usize,
    /// The value found.
    pub got: f32,
    /// The value expected.
    pub want: f32,
    /// By how much the difference exceeds the tolerance (infinite for NaN against a number).
    pub excess: f32,
}

/// The worst element of `got` against `want` beyond `ATOL + RTOL·|want|`, if any. NaN matches
/// only NaN and an infinity only itself.
pub fn compare(got: &[f32], want: &[f32]) -> Option<Mismatch> {
    compare_scaled(got, want, 0.0)
}

/// As [`compare`] with an extra absolute allowance `extra`.
pub fn compare_scaled(got: &[f32], want: &[f32], extra: f32) -> Option<Mismatch> {
    compare_within(got, want, RTOL, ATOL + extra)
}

/// The worst element of `got` against `want` beyond `atol + rtol·|want|`, if any (as
/// [`compare`], with the caller's tolerances).
pub fn compare_within(got: &[f32], want: &[f32], rtol: f32, atol: f32) -> Option<Mismatch> {
    let mut worst: Option<Mismatch> = None;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        // inf - inf is NaN, which would compare as within any tolerance.
        let excess = if g.is_finite() && w.is_finite() {
            (g - w).abs() - (atol + rtol * w.abs())
        } else if g == w || (g.is_nan() && w.is_nan()) {
            0.0
        } else {
            f32::INFINITY
        };
        if excess > 0.0 && worst.as_ref().is_none_or(|x| excess > x.excess) {
            worst = Some(Mismatch { index: i, got: *g, want: *w, excess });
        }
    }
    worst
}

/// `got` against `want` as tensors: the same type and dimensions are required (an error says
/// which differs); floats compare within the tolerances of [`compare`], integers and bools
/// exactly. Returns the worst element beyond tolerance (for integers the first that differs,
/// its values converted to `f32`; [`HostTensor::element_text`] gives them exactly).
pub fn compare_tensors(got: &HostTensor, want: &HostTensor) -> Result<Option<Mismatch>, Error> {
    compare_tensors_within(got, want, RTOL, ATOL)
}

/// As [`compare_tensors`], floats within `atol + rtol·|want|`.
pub fn compare_tensors_within(
    got: &HostTensor,
    want: &HostTensor,
    rtol: f32,
    atol: f32,
) -> Result<Option<Mismatch>, Error> {
    if got.dtype != want.dtype {
        return Err(Error::Input(format!("{} values against expected {}", got.dtype, want.dtype)));
    }
    if got.dims != want.dims {
        return Err(Error::Input(format!(
            "shape {:?} against expected shape {:?}",
            got.dims, want.dims
        )));
    }
    if let (Some(g), Some(w)) = (got.f32s(), want.f32s()) {
        return Ok(compare_within(&g, &w, rtol, atol));
    }
    let (g, w) = (got.ints().unwrap_or_default(), want.ints().unwrap_or_default());
    Ok(g.iter().zip(&w).position(|(a, b)| a != b).map(|index| Mismatch {
        index,
        got: g[index] as f32,
        want: w[index] as f32,
        excess: (g[index] - w[index]).unsigned_abs() as f32,
    }))
}

/// The first tensor, in program order, on which the device and the reference interpreter
/// disagree.
#[derive(Clone, Debug, PartialEq)]
pub struct Difference {
    /// The tensor (ONNX value name).
    pub tensor: String,
    /// The kernel that produced it (its ONNX nodes joined with `+`), or `(graph output,
    /// through an alias)` for a graph output no kernel names.
    pub layer: String,
    /// Its instruction range.
    pub insts: (u32, u32),
    /// The worst element: index, device value, reference value.
    pub element: (usize, f32, f32),
    /// Largest absolute difference in the tensor.
    pub max_abs_diff: f32,
    /// Largest reference magnitude.
    pub max_ref: f32,
}

/// The largest absolute difference (0 for empty tensors).
pub fn max_abs_diff(got: &[f32], want: &[f32]) -> f32 {
    got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max)
}

/// Runs a model compiled with `expose_all` through the driver and `graph` (the reference: the
/// model before optimisation) on the interpreter, and returns the first tensor, in program
/// order, that differs (or the number of tensors compared). Tensors are matched by name; the
/// optimizer keeps a value's name only on values equal to it, and tensors it introduced (no
/// counterpart in the reference) are skipped. Float tensors are compared within
/// [`RTOL`]/[`ATOL`] plus [`SCALE_TOL`] of the tensor's largest magnitude. The device has
/// policy `device` (its job cycle limit and watchdog).
pub fn first_difference(
    graph: &Graph,
    compiled: &Compiled,
    inputs: &[HostTensor],
    device: DeviceOptions,
) -> Result<Result<usize, Difference>, Error> {
    let blob = compiled.blob().map_err(|e| Error::Internal(e.to_string()))?;
    let outs = Session::with_options(blob, device)?.run(inputs)?.outputs;
    let names: Vec<String> = compiled
        .io
        .iter()
        .filter(|t| t.direction == Direction::Output)
        .map(|t| t.name.clone())
        .collect();
    // Reference values with the device's output names (those the reference has).
    let mut g2 = graph.clone();
    let mut known: Vec<String> = Vec::new();
    g2.outputs = names
        .iter()
        .filter_map(|n| {
            let i = graph.values.iter().position(|v| &v.name == n && v.constant.is_none())?;
            known.push(n.clone());
            Some(ValueId(i as u32))
        })
        .collect();
    let want = crate::reference(&g2, inputs)?;
    // Layers in program order, then the outputs no layer names (produced through an alias of
    // a kernel's result, as a legalized 1-D convolution's output is): every tensor the
    // reference knows is compared.
    let mut order: Vec<(String, String, (u32, u32))> = Vec::new();
    for layer in &compiled.layers {
        if let Some(v) = &layer.output
            && !order.iter().any(|(x, _, _)| x == v)
        {
            order.push((v.clone(), layer.name.clone(), (layer.start, layer.end)));
        }
    }
    // (Only the model's own outputs: other exposed values a kernel fused away have no bytes.)
    let graph_outputs: Vec<&str> =
        graph.outputs.iter().map(|o| graph.value(*o).name.as_str()).collect();
    for n in known.iter().filter(|n| graph_outputs.contains(&n.as_str())) {
        if !order.iter().any(|(x, _, _)| x == n) {
            order.push((n.clone(), "(graph output, through an alias)".into(), (0, 0)));
        }
    }
    first_in_order(order, &names, &outs, &known, &want)
}

/// As [`first_difference`] for a model compiled to a plan with `expose_all` (every device
/// program's and every host region's intermediates returned; `optimized` is the graph the plan
/// was compiled from, whose node indices its steps hold): tensors in step order, each
/// device job's in program order (named `device_K: layer`, with its instruction range in
/// that job's program), each host region's node by node (named `host_K: node`, no
/// instruction range).
pub fn first_difference_plan(
    graph: &Graph,
    optimized: &Graph,
    plan: &PlanCompiled,
    inputs: &[HostTensor],
    device: DeviceOptions,
) -> Result<Result<usize, Difference>, Error> {
    let session = Session::with_options(plan.blob.clone(), device)?;
    let names: Vec<String> = session.outputs().iter().map(|t| t.name.clone()).collect();
    let outs = session.run(inputs)?.outputs;
    let mut g2 = graph.clone();
    let mut known: Vec<String> = Vec::new();
    g2.outputs = names
        .iter()
        .filter_map(|n| {
            let i = graph.values.iter().position(|v| &v.name == n && v.constant.is_none())?;
            known.push(n.clone());
            Some(ValueId(i as u32))
        })
        .collect();
    let want = crate::reference(&g2, inputs)?;
    let mut order: Vec<(String, String, (u32, u32))> = Vec::new();
    for step in &plan.steps {
        match &step.compiled {
            Some(c) => {
                for layer in &c.layers {
                    if let Some(v) = &layer.output
                        && !order.iter().any(|(x, _, _)| x == v)
                    {
                        order.push((
                            v.clone(),
                            format!("{}: {}", step.name, layer.name),
                            (layer.start, layer.end),
                        ));
                    }
                }
                // Region outputs no layer names (through an alias of a kernel's result).
                for v in &step.outputs {
                    let n = &optimized.value(*v).name;
                    if !order.iter().any(|(x, _, _)| x == n) {
                        order.push((
                            n.clone(),
                            format!("{} (through an alias)", step.name),
                            (0, 0),
                        ));
                    }
                }
            }
            None => {
                // Node by node, as the host function runs them (`optimized` holds the nodes).
                for &i in &step.nodes {
                    let node = &optimized.nodes[i];
                    for v in &node.outputs {
                        let n = &optimized.value(*v).name;
                        if step.outputs.contains(v) && !order.iter().any(|(x, _, _)| x == n) {
                            order.push((
                                n.clone(),
                                format!("{} (host): {} ({})", step.name, node.name, node.op_type),
                                (0, 0),
                            ));
                        }
                    }
                }
                for v in &step.outputs {
                    let n = &optimized.value(*v).name;
                    if !order.iter().any(|(x, _, _)| x == n) {
                        order.push((n.clone(), format!("{} (host)", step.name), (0, 0)));
                    }
                }
            }
        }
    }
    first_in_order(order, &names, &outs, &known, &want)
}

/// The first tensor of `order` (name, producer, instruction range) whose device value
/// (`outs`, named `names`) differs from its reference value (`want`, named `known`), or how
/// many were compared.
fn first_in_order(
    order: Vec<(String, String, (u32, u32))>,
    names: &[String],
    outs: &[HostTensor],
    known: &[String],
    want: &[HostTensor],
) -> Result<Result<usize, Difference>, Error> {
    let mut checked = 0;
    for (v, layer, insts) in order {
        let (Some(i), Some(r)) =
            (names.iter().position(|x| *x == v), known.iter().position(|x| *x == v))
        else {
            continue;
        };
        checked += 1;
        let (got, w) = match (outs[i].f32s(), want[r].f32s()) {
            (Some(g), Some(w)) => (g, w),
            _ => {
                // Integer and bool tensors compare exactly.
                if let Some(m) = compare_tensors(&outs[i], &want[r])? {
                    return Ok(Err(Difference {
                        tensor: v,
                        layer,
                        insts,
                        element: (m.index, m.got, m.want),
                        max_abs_diff: m.excess,
                        // The largest magnitude of the reference's integers (bools: 0 or 1).
                        max_ref: want[r].ints().map_or(0.0, |v| {
                            v.iter().map(|x| x.unsigned_abs()).max().unwrap_or(0) as f32
                        }),
                    }));
                }
                continue;
            }
        };
        let max_ref = w.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        if let Some(m) = compare_scaled(&got, &w, SCALE_TOL * max_ref) {
            return Ok(Err(Difference {
                tensor: v,
                layer,
                insts,
                element: (m.index, m.got, m.want),
                max_abs_diff: max_abs_diff(&got, &w),
                max_ref,
            }));
        }
    }
    Ok(Ok(checked))
}

/// Runs `graph` on the reference interpreter.
pub fn reference(graph: &Graph, inputs: &[HostTensor]) -> Result<Vec<HostTensor>, Error> {
    let arrays: Vec<Array> = inputs.iter().map(HostTensor::to_array).collect();
    let outs = interp::run(graph, &arrays)
        .map_err(|e| Error::Model(format!("reference interpreter: {e}")))?;
    Ok(outs.iter().map(HostTensor::from_array).collect())
}
