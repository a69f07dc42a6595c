//! The execution plan of a model that does not run wholly on the device: its partition
//! ([`super::partition`]) into device regions, each compiled to its own program by
//! [`super::compile`], and host regions, written as MLIR functions ([`super::host`]), with the
//! tensors they exchange, serialised as a plan blob (`accelc_isa::plan`, format 2).
//!
//! A device region whose program cannot be built (a limit only emission meets, or a node the
//! region's own context refuses) moves the node the error names to the host and the
//! partition is recomputed, at most once per node, so the plan always ends with every node
//! placed where it compiles or with the first node that compiles nowhere.

use std::borrow::Cow;
use std::collections::HashMap;

use accelc_isa::plan::{PlanBlob, PlanTensor, Step, StepKind};

use super::partition::{Place, Placement, Region, regions};
use super::{CompileOptions, Compiled, LowerError};
use crate::ir::{Graph, Node, ValueId};

/// One step of a plan as compiled.
#[derive(Clone, Debug)]
pub struct PlanStep {
    /// Device job or host call.
    pub place: Place,
    /// The host function's symbol, or the device job's label (`device_K`).
    pub name: String,
    /// The graph nodes it runs (indices into the optimized graph).
    pub nodes: Vec<usize>,
    /// Values read, in argument (or program signature) order.
    pub inputs: Vec<ValueId>,
    /// Values written.
    pub outputs: Vec<ValueId>,
    /// The device program (device steps).
    pub compiled: Option<Compiled>,
}

/// A compiled plan.
#[derive(Clone, Debug)]
pub struct PlanCompiled {
    /// Every node's final placement (in graph order) and, for host nodes, the reason.
    pub placements: Vec<Placement>,
    /// The steps, in execution order.
    pub steps: Vec<PlanStep>,
    /// The host module (MLIR text).
    pub host: String,
    /// The plan blob.
    pub blob: Vec<u8>,
}

impl PlanCompiled {
    /// Device jobs in the plan.
    pub fn device_steps(&self) -> impl Iterator<Item = &PlanStep> {
        self.steps.iter().filter(|s| s.place == Place::Device)
    }
}

/// What a model compiles to: one device program, or a plan of device programs and host code.
#[derive(Clone, Debug)]
pub enum Lowered {
    /// Every node runs on the device.
    Device(Box<Compiled>),
    /// Some nodes run on the host.
    Plan(PlanCompiled),
}

/// Compiles `graph` for `opts.config`: one program when the device runs every node, else a
/// plan with host regions. With `expose_all` every intermediate is an output (of the program,
/// or of the plan: each device program's and each host region's), for `diff`.
///
/// Errors: a node neither the device nor the host lowers (named, with the host's reason); a
/// model that needs a plan and returns a constant;
/// internal inconsistencies.
pub fn compile_any(graph: &Graph, opts: &CompileOptions) -> Result<Lowered, LowerError> {
    let support = super::select::device_support(graph, opts);
    // A node that did not import (or whose inputs are untyped because one upstream did not)
    // runs nowhere: the first one stops the compile with its own reason.
    for (n, r) in graph.nodes.iter().zip(&support) {
        let untyped = n
            .inputs
            .iter()
            .flatten()
            .chain(&n.outputs)
            .any(|v| super::host::value_type(graph, *v).is_err());
        if matches!(n.op, crate::ir::Op::Unsupported { .. }) || untyped {
            return Err(match r {
                Err(e) => e.clone(),
                Ok(()) => LowerError::at(&n.name, "a value it reads or writes has no type"),
            });
        }
    }
    if support.iter().all(Result::is_ok) {
        // The whole-graph compile can still meet a limit only emission sees: then the plan
        // moves that node to the host.
        match super::compile(graph, opts) {
            Ok(c) => return Ok(Lowered::Device(Box::new(c))),
            Err(e) if e.message.contains("internal") => return Err(e),
            // A limit of a node, or of the program (an int64 output), is what a plan avoids.
            Err(_) => {}
        }
    }
    let mut placements: Vec<Placement> = support
        .into_iter()
        .map(|r| match r {
            Ok(()) => Placement { place: Place::Device, reason: None },
            Err(e) => Placement { place: Place::Host, reason: Some(e.message) },
        })
        .collect();
    keep_islands_on_host(graph, &mut placements)?;
    for _ in 0..=graph.nodes.len() {
        let attempt = try_plan(graph, opts, &placements).map_err(|mut e| {
            // A node without a host lowering: say why it is not on the device either.
            let why = e.node.as_deref().and_then(|name| {
                let i = graph.nodes.iter().position(|n| n.name == name)?;
                placements[i].reason.clone()
            });
            if let Some(why) = why {
                e.message = format!("not on the device ({why}), and {}", e.message);
            }
            e
        })?;
        match attempt {
            Ok(plan) => return Ok(Lowered::Plan(plan)),
            Err((node, why)) => {
                if placements[node].place == Place::Host {
                    return Err(LowerError::at(&graph.nodes[node].name, why));
                }
                placements[node] = Placement { place: Place::Host, reason: Some(why) };
            }
        }
    }
    Err(LowerError::msg("internal: the plan did not settle"))
}

/// The island rule: a device region whose every neighbour is a host region (or the graph's
/// inputs and outputs), with at least one host region on each side, and that does no
/// matrix-engine work (no multiply-accumulates by the cost model's `work` facet) is placed on
/// the host too. Such a region would cost a device job (a submission, a fence, and its tensors
/// written to and read back from DRAM, each way paying the DRAM latency) to run vector or
/// data-movement work the CPU does at about the same speed, between two host calls that have
/// the data in cache. A region with MACs stays on the device: the matrix engine is what the
/// round trip buys. Only islands whose nodes all have host lowerings move.
fn keep_islands_on_host(graph: &Graph, placements: &mut [Placement]) -> Result<(), LowerError> {
    let regs = regions(graph, placements)?;
    let mut producer: HashMap<ValueId, usize> = HashMap::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        for v in &n.outputs {
            producer.insert(*v, i);
        }
    }
    let mut consumers: HashMap<ValueId, Vec<usize>> = HashMap::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        for v in n.inputs.iter().flatten() {
            consumers.entry(*v).or_default().push(i);
        }
    }
    for r in regs.iter().filter(|r| r.place == Place::Device) {
        let host = |i: &usize| placements[*i].place == Place::Host;
        let before: Vec<usize> = r.inputs.iter().filter_map(|v| producer.get(v).copied()).collect();
        let after: Vec<usize> = r
            .outputs
            .iter()
            .flat_map(|v| consumers.get(v).into_iter().flatten().copied())
            .filter(|i| !r.nodes.contains(i))
            .collect();
        let between = !before.is_empty()
            && !after.is_empty()
            && before.iter().all(host)
            && after.iter().all(host);
        if !between || r.nodes.iter().any(|&i| macs(graph, i) > 0) {
            continue;
        }
        // Only when the host lowers every node of the island.
        let name = "island_probe".to_string();
        let probe = [(name, r.nodes.as_slice(), r.inputs.as_slice(), r.outputs.as_slice())];
        if super::host::module(graph, &probe).is_err() {
            continue;
        }
        for &i in &r.nodes {
            placements[i] = Placement {
                place: Place::Host,
                reason: Some(
                    "kept on the host: a device island between host regions with no \
                     matrix-engine work (a device job's submission and DRAM round trip would \
                     buy nothing)"
                        .into(),
                ),
            };
        }
    }
    Ok(())
}

/// Multiply-accumulates of node `i` by the cost model's `work` facet (0 when it is not a
/// matrix-engine kernel).
fn macs(graph: &Graph, i: usize) -> u64 {
    let n = &graph.nodes[i];
    let ins: Vec<Option<crate::ir::TensorType>> =
        n.inputs.iter().map(|v| v.and_then(|v| super::host::value_type(graph, v).ok())).collect();
    let outs: Vec<crate::ir::TensorType> =
        n.outputs.iter().filter_map(|v| super::host::value_type(graph, *v).ok()).collect();
    match (crate::ops::def(&n.op).work)(&n.op, &ins, &outs) {
        crate::ops::Work::Macs(m) => m,
        _ => 0,
    }
}

/// Compiles `graph` as a plan with every node on the host (one host function): what checks
/// the host lowerings against the reference on their own, and what a caller that wants no
/// device at all runs.
///
/// Errors: the first node without a host lowering.
pub fn compile_host_only(graph: &Graph, opts: &CompileOptions) -> Result<PlanCompiled, LowerError> {
    let placements =
        vec![
            Placement { place: Place::Host, reason: Some("placed on the host by request".into()) };
            graph.nodes.len()
        ];
    match try_plan(graph, opts, &placements)? {
        Ok(p) => Ok(p),
        Err((node, why)) => Err(LowerError::at(&graph.nodes[node].name, why)),
    }
}

/// One attempt: `Ok(Err((node, reason)))` when a device region's compile refused `node`.
fn try_plan(
    graph: &Graph,
    opts: &CompileOptions,
    placements: &[Placement],
) -> Result<Result<PlanCompiled, (usize, String)>, LowerError> {
    let regs: Vec<Region> = regions(graph, placements)?;
    let mut steps = Vec::with_capacity(regs.len());
    let mut host_regions = Vec::new();
    let (mut ndev, mut nhost) = (0usize, 0usize);
    for r in &regs {
        match r.place {
            Place::Device => {
                let sub = subgraph(graph, &r.nodes, &r.inputs, &r.outputs);
                let sub_opts =
                    CompileOptions { config: opts.config.clone(), expose_all: opts.expose_all };
                let compiled = match super::compile(&sub, &sub_opts) {
                    Ok(c) => c,
                    Err(e) if e.message.contains("internal") => return Err(e),
                    Err(e) => {
                        // Blame the named node, or the region's first.
                        let node = e
                            .node
                            .as_deref()
                            .and_then(|n| r.nodes.iter().find(|&&i| graph.nodes[i].name == n))
                            .copied()
                            .unwrap_or(r.nodes[0]);
                        return Ok(Err((node, e.message)));
                    }
                };
                // With every intermediate exposed (for `diff`), the program's outputs are its
                // region's outputs and intermediates, in the program's signature order.
                let outputs = if opts.expose_all {
                    compiled
                        .io
                        .iter()
                        .filter(|t| t.direction == accelc_isa::blob::Direction::Output)
                        .map(|t| {
                            by_name(graph, &t.name).ok_or_else(|| {
                                LowerError::msg(format!(
                                    "internal: program output `{}` is not a graph value",
                                    t.name
                                ))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?
                } else {
                    r.outputs.clone()
                };
                steps.push(PlanStep {
                    place: Place::Device,
                    name: format!("device_{ndev}"),
                    nodes: r.nodes.clone(),
                    inputs: r.inputs.clone(),
                    outputs,
                    compiled: Some(compiled),
                });
                ndev += 1;
            }
            Place::Host => {
                // The host allocates every tensor it writes: each within the driver's buffer
                // limit, as a device tensor is.
                for &i in &r.nodes {
                    for v in &graph.nodes[i].outputs {
                        let t = super::host::value_type(graph, *v)?;
                        let bytes = t
                            .shape
                            .iter()
                            .try_fold(t.dtype.size() as u64, |a, d| a.checked_mul(*d as u64));
                        if bytes.is_none_or(|b| b > accelc_isa::verify::MAX_BUFFER_BYTES) {
                            return Err(LowerError::at(
                                &graph.nodes[i].name,
                                format!(
                                    "`{}` is {t}, more than the {} bytes (16 GiB, the driver's buffer limit) a host tensor may hold",
                                    graph.value(*v).name,
                                    accelc_isa::verify::MAX_BUFFER_BYTES
                                ),
                            ));
                        }
                    }
                }
                let name = format!("host_{nhost}");
                nhost += 1;
                let mut outputs = r.outputs.clone();
                if opts.expose_all {
                    for &i in &r.nodes {
                        for v in &graph.nodes[i].outputs {
                            if !outputs.contains(v) && graph.value(*v).constant.is_none() {
                                outputs.push(*v);
                            }
                        }
                    }
                }
                host_regions.push((
                    name.clone(),
                    r.nodes.clone(),
                    r.inputs.clone(),
                    outputs.clone(),
                ));
                steps.push(PlanStep {
                    place: Place::Host,
                    name,
                    nodes: r.nodes.clone(),
                    inputs: r.inputs.clone(),
                    outputs,
                    compiled: None,
                });
            }
        }
    }
    // Graph outputs that are constants (folded, or int64 values the device cannot return)
    // are written by one host call of their own.
    let consts: Vec<ValueId> =
        graph.outputs.iter().filter(|v| graph.value(**v).constant.is_some()).copied().collect();
    let const_region =
        Region { place: Place::Host, nodes: vec![], inputs: vec![], outputs: consts };
    if !const_region.outputs.is_empty() {
        let name = format!("host_{nhost}");
        host_regions.push((name.clone(), vec![], vec![], const_region.outputs.clone()));
        steps.push(PlanStep {
            place: Place::Host,
            name,
            nodes: vec![],
            inputs: vec![],
            outputs: const_region.outputs.clone(),
            compiled: None,
        });
    }
    let list: Vec<super::host::HostRegion<'_>> = host_regions
        .iter()
        .map(|(n, nodes, ins, outs)| (n.clone(), nodes.as_slice(), ins.as_slice(), outs.as_slice()))
        .collect();
    let host = super::host::module(graph, &list)?;
    let blob = plan_blob(graph, opts, &steps, &host)?;
    Ok(Ok(PlanCompiled { placements: placements.to_vec(), steps, host, blob }))
}

/// The value of `g` called `name`.
fn by_name(g: &Graph, name: &str) -> Option<ValueId> {
    g.values.iter().position(|v| v.name == name).map(|i| ValueId(i as u32))
}

/// The nodes `nodes` of `g` as a graph of their own: `inputs` become graph inputs, `outputs`
/// graph outputs, constants stay constants.
fn subgraph(g: &Graph, nodes: &[usize], inputs: &[ValueId], outputs: &[ValueId]) -> Graph {
    let mut sub = Graph { opset: g.opset, ..Graph::default() };
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    let mut copy = |sub: &mut Graph, v: ValueId| -> ValueId {
        *map.entry(v).or_insert_with(|| sub.add_value(g.value(v).clone()))
    };
    sub.inputs = inputs.iter().map(|v| copy(&mut sub, *v)).collect();
    for &i in nodes {
        let n = &g.nodes[i];
        let node = Node {
            inputs: n.inputs.iter().map(|v| v.map(|v| copy(&mut sub, v))).collect(),
            outputs: n.outputs.iter().map(|v| copy(&mut sub, *v)).collect(),
            ..n.clone()
        };
        sub.nodes.push(node);
    }
    sub.outputs = outputs.iter().map(|v| copy(&mut sub, *v)).collect();
    sub
}

/// The plan blob of `steps`.
fn plan_blob(
    g: &Graph,
    opts: &CompileOptions,
    steps: &[PlanStep],
    host: &str,
) -> Result<Vec<u8>, LowerError> {
    let mut tensors: Vec<PlanTensor> = Vec::new();
    let mut index: HashMap<ValueId, u32> = HashMap::new();
    let mut slot = |v: ValueId| -> Result<u32, LowerError> {
        if let Some(i) = index.get(&v) {
            return Ok(*i);
        }
        let value = g.value(v);
        let t = super::host::value_type(g, v)?;
        let i = tensors.len() as u32;
        tensors.push(PlanTensor {
            name: value.name.clone(),
            onnx_type: t.dtype.onnx_code() as u8,
            dims: t.shape.iter().map(|d| *d as u64).collect(),
        });
        index.insert(v, i);
        Ok(i)
    };
    let inputs = g.inputs.iter().map(|v| slot(*v)).collect::<Result<Vec<_>, _>>()?;
    let mut psteps = Vec::new();
    let mut programs = Vec::new();
    for s in steps {
        let ins = s.inputs.iter().map(|v| slot(*v)).collect::<Result<Vec<_>, _>>()?;
        let outs = s.outputs.iter().map(|v| slot(*v)).collect::<Result<Vec<_>, _>>()?;
        let kind = match &s.compiled {
            Some(c) => {
                programs.push(Cow::Owned(c.blob()?));
                StepKind::Device { program: (programs.len() - 1) as u32 }
            }
            None => StepKind::Host,
        };
        psteps.push(Step { kind, name: s.name.clone(), inputs: ins, outputs: outs });
    }
    let mut outputs = Vec::new();
    // With every intermediate exposed, the plan returns every step's outputs after the
    // model's own.
    let mut returned: Vec<ValueId> = g.outputs.clone();
    if opts.expose_all {
        for st in steps {
            for v in &st.outputs {
                if !returned.contains(v) {
                    returned.push(*v);
                }
            }
        }
    }
    for v in &returned {
        let produced = g.inputs.contains(v) || steps.iter().any(|s| s.outputs.contains(v));
        if !produced {
            return Err(LowerError::msg(format!(
                "graph output `{}` is a constant; a plan does not return constants yet",
                g.value(*v).name
            )));
        }
        outputs.push(slot(*v)?);
    }
    let plan = PlanBlob {
        target: opts.config.target(),
        tensors,
        inputs,
        outputs,
        steps: psteps,
        programs,
        host: host.to_string(),
        meta: {
            let mut meta =
                vec![("producer".into(), format!("accelc {}", env!("CARGO_PKG_VERSION")))];
            // The names of host nodes, for run-time errors (`index name` per line), while they
            // fit one metadata string.
            let mut names = String::new();
            for st in steps.iter().filter(|s| s.compiled.is_none()) {
                for &i in &st.nodes {
                    names.push_str(&format!("{i} {}\n", g.nodes[i].name));
                }
            }
            if !names.is_empty() && names.len() <= usize::from(u16::MAX) {
                meta.push(("host_nodes".into(), names));
            }
            meta
        },
    };
    plan.to_bytes().map_err(|e| LowerError::msg(format!("internal: plan blob: {e}")))
}
