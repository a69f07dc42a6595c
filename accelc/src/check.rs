//! `check`: for every node of a model, whether it imports, whether it runs on the chosen
//! device and, if not, whether it runs on the host instead (its placement), and whether the
//! whole model compiles, decided by the same code `compile` runs.

use accelc_compiler::ir::Op;
use accelc_compiler::lower::execplan::{Lowered, compile_any};
use accelc_compiler::lower::partition::Place;
use accelc_compiler::lower::{CompileOptions, device_support};

use crate::{Error, Options, Source};

/// One node's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCheck {
    /// Node name.
    pub name: String,
    /// ONNX op type.
    pub op_type: String,
    /// Where it was decided: `import` for nodes that do not import, `frontend` for a node at
    /// which shape inference or the optimizer stopped, else `device` (a node of the optimized
    /// graph the lowering sees).
    pub stage: &'static str,
    /// `Err` with the reason (the failing constraint) when it does not run on the device.
    pub result: Result<(), String>,
    /// Where the compiled model runs it: `Some(Place::Device)`, `Some(Place::Host)` (then
    /// `result` says why not on the device), `None` when the model does not compile.
    pub placement: Option<Place>,
}

/// The whole answer for one model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// The model, as errors name it.
    pub model: String,
    /// Default-domain opset.
    pub opset: i64,
    /// Device configuration checked against.
    pub config: String,
    /// Nodes as imported.
    pub imported_nodes: usize,
    /// Nodes that do not import (stage `import`), then every node of the optimized graph
    /// (stage `device`), each with its answer.
    pub nodes: Vec<NodeCheck>,
    /// Whether [`crate::compile`] succeeds with the same options, and its error when not
    /// (decided by the same frontend, optimizer and lowering calls, made once).
    pub compile: Result<(), String>,
}

impl CheckReport {
    /// Whether the model compiles for the device: exactly when [`crate::compile`] succeeds.
    pub fn supported(&self) -> bool {
        self.compile.is_ok()
    }

    /// The nodes that run nowhere: not on the device and not placed on the host.
    pub fn blockers(&self) -> impl Iterator<Item = &NodeCheck> {
        self.nodes.iter().filter(|n| n.result.is_err() && n.placement != Some(Place::Host))
    }

    /// The nodes that run on the host.
    pub fn on_host(&self) -> impl Iterator<Item = &NodeCheck> {
        self.nodes.iter().filter(|n| n.placement == Some(Place::Host))
    }
}

/// Checks a model against `opts.config`.
///
/// Errors only when the file cannot be imported at all ([`Error::Model`], with the node or
/// byte position); everything else is an answer in the report.
pub fn check(src: Source<'_>, opts: &Options) -> Result<CheckReport, Error> {
    crate::compile::validate_config(&opts.config)?;
    let imported = crate::compile::import(src, opts)?;
    let mut nodes: Vec<NodeCheck> = imported
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Unsupported { reason, .. } => Some(NodeCheck {
                name: n.name.clone(),
                op_type: n.op_type.clone(),
                stage: "import",
                result: Err(reason.clone()),
                placement: None,
            }),
            _ => None,
        })
        .collect();
    // The device stage sees what `compile` lowers: the frontend's and optimizer's graph, made
    // by the same steps `compile` takes (and its verdict is theirs).
    let mut g = imported.clone();
    let frontend = crate::compile::frontend(&mut g, &src, &mut ())
        .and_then(|()| crate::optimize(&mut g, &src, opts, &mut ()).map(|_| ()))
        .map_err(|e| e.to_string());
    if let Err(e) = &frontend {
        // Shape inference or the optimizer stopped at a node: that node is the blocker.
        if let Some(name) = e.split("node `").nth(1).and_then(|r| r.split('`').next()) {
            let op_type = g.nodes.iter().find(|n| n.name == name).map(|n| n.op_type.clone());
            nodes.push(NodeCheck {
                name: name.to_string(),
                op_type: op_type.unwrap_or_default(),
                stage: "frontend",
                result: Err(e.clone()),
                placement: None,
            });
        }
    }
    let mut compile = frontend.clone();
    if frontend.is_ok() {
        let copts = CompileOptions { config: opts.config.clone(), expose_all: false };
        // The compile's own placements: every node on the device, or the plan's.
        let lowered = compile_any(&g, &copts).and_then(|l| match l {
            Lowered::Device(c) => {
                c.check_blob().map(|()| vec![(Place::Device, None); g.nodes.len()])
            }
            Lowered::Plan(p) => Ok(p.placements.into_iter().map(|p| (p.place, p.reason)).collect()),
        });
        let placed = lowered.as_ref().ok();
        for (i, (n, r)) in g.nodes.iter().zip(device_support(&g, &copts)).enumerate() {
            if matches!(n.op, Op::Unsupported { .. } | Op::Constant) {
                continue; // listed at import / nothing to run
            }
            let placement = placed.map(|p| p[i].0);
            // A node the whole-graph answer accepts that the plan still puts on the host (a
            // limit its kernel's emission met, or the island rule): the plan's reason.
            let result = match (r, placed.map(|p| &p[i])) {
                (Ok(()), Some((Place::Host, why))) => {
                    Err(why.clone().unwrap_or_else(|| "placed on the host".into()))
                }
                (r, _) => r.map_err(|e| e.message),
            };
            nodes.push(NodeCheck {
                name: n.name.clone(),
                op_type: n.op_type.clone(),
                stage: "device",
                result,
                placement,
            });
        }
        if let Err(e) = &lowered {
            // The node compile stopped at (no host lowering either, or a whole-program
            // failure) blocks the model.
            let parts: Vec<&str> =
                e.node.as_deref().map(|n| n.split('+').collect()).unwrap_or_default();
            let mut blamed = false;
            for n in nodes.iter_mut().filter(|n| parts.contains(&n.name.as_str())) {
                if n.result.is_ok() {
                    n.result = Err(format!("{} (found when its kernel was emitted)", e.message));
                }
                blamed = true;
            }
            if !blamed {
                nodes.push(NodeCheck {
                    name: e.node.clone().unwrap_or_else(|| "(whole program)".into()),
                    op_type: String::new(),
                    stage: "device",
                    result: Err(e.message.clone()),
                    placement: None,
                });
            }
        }
        compile = lowered.map(|_| ()).map_err(|e| crate::compile::lower_err(&src, e).to_string());
    }
    Ok(CheckReport {
        model: src.describe(),
        opset: imported.opset,
        config: opts.config.name.to_string(),
        imported_nodes: imported.nodes.len(),
        nodes,
        compile,
    })
}
