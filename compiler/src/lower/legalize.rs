//! `legalize`: graph to graph, before scheduling. It rewrites nodes the kernels do not take as
//! they are into equivalent nodes they do take, in plain IR (so `--dump-ir` shows the result
//! and every later step sees ordinary nodes):
//!
//! - 1-D convolution and pooling (`[N, C, W]`) become their 2-D forms over a unit height:
//!   `Unsqueeze` of the input to `[N, C, 1, W]` (an alias), the 2-D node with a `1 × k` window
//!   (and weights reshaped to `[M, C/g, 1, k]`, sharing the bytes), and `Squeeze` back.
//!
//! Each node of the result records the original node it came from, so per-node answers
//! (`device_support`) map back to the graph the user gave.

use crate::interp::pads;
use crate::ir::{AutoPad, DType, Graph, Node, Op, Tensor, TensorType, Value, ValueId, Window};

use super::LowerError;

/// The legalized graph and, per node, the index of the original node it implements.
pub(crate) struct Legalized {
    pub(crate) graph: Graph,
    pub(crate) origin: Vec<usize>,
}

fn shape(g: &Graph, v: Option<ValueId>) -> Option<Vec<usize>> {
    v.and_then(|v| g.value(v).ty.as_ref().map(|t| t.shape.clone()))
}

fn add_value(g: &mut Graph, name: String, ty: TensorType, constant: Option<Tensor>) -> ValueId {
    g.add_value(Value { name, ty: Some(ty), constant })
}

/// Appends `op` (Unsqueeze or Squeeze) of `x` at axis 2 as node `name`, producing `out`.
fn unit_axis(g: &mut Graph, name: String, op: Op, x: ValueId, out: ValueId) {
    let t = Tensor::from_i64(vec![1], &[2]);
    let ty = TensorType { dtype: DType::I64, shape: vec![1] };
    let axes = add_value(g, format!("{name}.axes"), ty, Some(t));
    let op_type = if matches!(op, Op::Squeeze { .. }) { "Squeeze" } else { "Unsqueeze" };
    g.nodes.push(Node {
        name,
        op_type: op_type.into(),
        op,
        inputs: vec![Some(x), Some(axes)],
        outputs: vec![out],
    });
}

/// Legalizes `graph` (folded, typed).
pub(crate) fn legalize(graph: &Graph) -> Result<Legalized, LowerError> {
    let mut g = Graph { nodes: Vec::with_capacity(graph.nodes.len()), ..graph.clone() };
    let mut origin = Vec::with_capacity(graph.nodes.len());
    for (i, n) in graph.nodes.iter().enumerate() {
        let x = n.inputs.first().copied().flatten();
        let lift = matches!(n.op, Op::Conv { .. } | Op::Pool { .. })
            && shape(graph, x).is_some_and(|s| s.len() == 3)
            && graph
                .value(x.unwrap_or(ValueId(0)))
                .ty
                .as_ref()
                .is_some_and(|t| t.dtype == DType::F32);
        if !lift {
            g.nodes.push(n.clone());
            origin.push(i);
            continue;
        }
        let err = |m: String| LowerError::at(&n.name, m);
        let (Some(x), Some(&out)) = (x, n.outputs.first()) else {
            return Err(err("a window operation without input or output".into()));
        };
        let xs = shape(graph, Some(x)).unwrap_or_default();
        let os = shape(graph, Some(out)).ok_or_else(|| err("untyped output".into()))?;
        let (window, kernel) = match &n.op {
            Op::Conv { window, .. } => {
                let ws = shape(graph, n.inputs.get(1).copied().flatten())
                    .ok_or_else(|| err("untyped weights".into()))?;
                (window, ws[2])
            }
            Op::Pool { window, .. } => {
                (window, *window.kernel.first().ok_or_else(|| err("no kernel_shape".into()))?)
            }
            _ => unreachable!("matched above"),
        };
        let geo = pads(window, &xs[2..], &[kernel]).map_err(err)?;
        let window2 = Window {
            kernel: vec![1, kernel],
            strides: vec![1, geo.strides[0]],
            dilations: vec![1, geo.dilations[0]],
            pads: vec![0, geo.begin[0], 0, geo.end[0]],
            auto_pad: AutoPad::NotSet,
            ceil_mode: window.ceil_mode,
        };
        let name = &n.name;
        let f32t = |shape: Vec<usize>| TensorType { dtype: DType::F32, shape };
        let x4 =
            add_value(&mut g, format!("{name}/lift.in"), f32t(vec![xs[0], xs[1], 1, xs[2]]), None);
        unit_axis(&mut g, format!("{name}/lift"), Op::Unsqueeze { axes: None }, x, x4);
        origin.push(i);
        let mut inputs = n.inputs.clone();
        inputs[0] = Some(x4);
        let op = match &n.op {
            Op::Conv { group, .. } => {
                let w = n.inputs[1].ok_or_else(|| err("no weights".into()))?;
                let wv = graph.value(w);
                let ws = shape(graph, Some(w)).unwrap_or_default();
                let w4shape = vec![ws[0], ws[1], 1, ws[2]];
                // Constant weights are reshaped in place (same bytes); computed ones through an
                // Unsqueeze.
                let w4 = match &wv.constant {
                    Some(t) => {
                        let t4 = Tensor { shape: w4shape.clone(), ..t.clone() };
                        add_value(&mut g, format!("{}/2d", wv.name), f32t(w4shape), Some(t4))
                    }
                    None => {
                        let w4 = add_value(&mut g, format!("{name}/lift.w"), f32t(w4shape), None);
                        let op = Op::Unsqueeze { axes: None };
                        unit_axis(&mut g, format!("{name}/lift.weights"), op, w, w4);
                        origin.push(i);
                        w4
                    }
                };
                inputs[1] = Some(w4);
                Op::Conv { window: window2, group: *group }
            }
            Op::Pool { max, count_include_pad, .. } => {
                Op::Pool { max: *max, window: window2, count_include_pad: *count_include_pad }
            }
            _ => unreachable!("matched above"),
        };
        let out4 =
            add_value(&mut g, format!("{name}/lift.out"), f32t(vec![os[0], os[1], 1, os[2]]), None);
        g.nodes.push(Node {
            name: name.clone(),
            op_type: n.op_type.clone(),
            op,
            inputs,
            outputs: vec![out4],
        });
        origin.push(i);
        unit_axis(&mut g, format!("{name}/unlift"), Op::Squeeze { axes: None }, out4, out);
        origin.push(i);
    }
    Ok(Legalized { graph: g, origin })
}
