//! The graph optimizer: equality saturation with `egg`, extraction by the device's cost model.
//!
//! The graph becomes an e-graph over [`Node`]: graph inputs, constants, and operations whose
//! typed attributes are interned in a table (so `Transpose [1,0,2]` and `Transpose [0,2,1]` are
//! different operators). An e-class analysis ([`Facts`]) tracks every class's type and, when all
//! of an operation's inputs are constant, its folded value, so rules may build new weights out
//! of ordinary operations and the analysis turns them into constants. Rules ([`rules`]) are
//! named, one-directional and grouped by topic; the runner applies them under node, iteration
//! and time limits and reports why it stopped. Extraction ([`cost`]) picks, per class, the
//! node of least estimated device cycles (or least node count at `-O1`), and the graph is
//! rebuilt from the choice, keeping value and node names where the class has one.

pub mod cost;
pub mod extract;
pub mod rules;

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use accelc_isa::DeviceConfig;
use egg::{DidMerge, EGraph, Id, Language, Runner, StopReason};

use crate::interp::{Array, eval};
use crate::ir::{Graph, Node as IrNode, Op, Tensor, TensorType, Value, ValueId};
use crate::shape::infer_node;

/// An e-node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    /// Graph input `i`.
    Input(u32),
    /// Constant `i` of the constant table.
    Const(u32),
    /// An omitted optional input.
    Absent,
    /// Operation `k` of the operator table applied to its inputs.
    Op(u32, Vec<Id>),
    /// Output `i` of a multi-output operation.
    Get(u32, Id),
}

impl Language for Node {
    type Discriminant = (u8, u32);

    fn discriminant(&self) -> (u8, u32) {
        match self {
            Node::Input(i) => (0, *i),
            Node::Const(i) => (1, *i),
            Node::Absent => (2, 0),
            Node::Op(k, _) => (3, *k),
            Node::Get(i, _) => (4, *i),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        match (self, other) {
            (Node::Op(a, x), Node::Op(b, y)) => a == b && x.len() == y.len(),
            (Node::Get(a, _), Node::Get(b, _)) => a == b,
            (a, b) => a == b,
        }
    }

    fn children(&self) -> &[Id] {
        match self {
            Node::Op(_, c) => c,
            Node::Get(_, c) => std::slice::from_ref(c),
            _ => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            Node::Op(_, c) => c,
            Node::Get(_, c) => std::slice::from_mut(c),
            _ => &mut [],
        }
    }
}

/// An interned operator: the IR operation with its attributes, its ONNX type and arity of
/// outputs.
#[derive(Clone, Debug)]
pub struct Operator {
    /// The operation.
    pub op: Op,
    /// The ONNX op type.
    pub op_type: String,
    /// Number of outputs.
    pub outputs: usize,
}

/// What the analysis knows about an e-class.
#[derive(Clone, Debug, Default)]
pub struct Data {
    /// The type (single-output classes).
    pub ty: Option<TensorType>,
    /// Output types (multi-output operations).
    pub tuple: Option<Vec<TensorType>>,
    /// The folded value, when every input is constant.
    pub value: Option<Tensor>,
    /// Folded values of a multi-output operation.
    pub tuple_values: Option<Vec<Tensor>>,
    /// The graph value name the class carries, if it came from the graph.
    pub name: Option<String>,
    /// The graph nodes that produced it: `(op type, node name)`, sorted.
    pub nodes: std::collections::BTreeSet<(String, String)>,
}

/// The e-class analysis: types and constants, and the tables nodes index.
#[derive(Debug, Default)]
pub struct Facts {
    /// Interned operators.
    pub ops: Vec<Operator>,
    op_ids: HashMap<String, u32>,
    /// Constants.
    pub consts: Vec<Tensor>,
    const_ids: HashMap<ConstKey, u32>,
    /// Graph inputs: name and type.
    pub inputs: Vec<(String, TensorType)>,
    /// The default-domain opset.
    pub opset: i64,
    /// Largest folded result, in elements.
    pub fold_limit: usize,
}

impl Facts {
    /// Interns an operator.
    pub fn op(&mut self, op: Op, op_type: &str, outputs: usize) -> u32 {
        let key = format!("{op_type}/{outputs}/{op:?}");
        if let Some(k) = self.op_ids.get(&key) {
            return *k;
        }
        let k = self.ops.len() as u32;
        self.ops.push(Operator { op, op_type: op_type.to_string(), outputs });
        self.op_ids.insert(key, k);
        k
    }

    /// Interns a constant.
    pub fn constant(&mut self, t: Tensor) -> u32 {
        let key = ConstKey((t.dtype.name().to_string(), t.shape.clone(), t.data.clone()));
        if let Some(k) = self.const_ids.get(&key) {
            return *k;
        }
        let k = self.consts.len() as u32;
        self.consts.push(t);
        self.const_ids.insert(key, k);
        k
    }
}

/// A constant's identity: type, shape and bytes, all compared for equality, but only the
/// bytes' length and ends hashed. Hashing every byte of every weight (twice per constant)
/// was 7% of compiling resnet18; two different constants with the same ends only share a
/// bucket and are still told apart by their bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ConstKey((String, Vec<usize>, bytes::Bytes));

impl std::hash::Hash for ConstKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let (dtype, shape, data) = &self.0;
        dtype.hash(h);
        shape.hash(h);
        data.len().hash(h);
        let ends = 64.min(data.len());
        h.write(&data[..ends]);
        h.write(&data[data.len() - ends..]);
    }
}

/// The e-graph of a model.
pub type EG = EGraph<Node, Facts>;

impl egg::Analysis<Node> for Facts {
    type Data = Data;

    fn make(egraph: &mut EG, enode: &Node) -> Data {
        let facts = &egraph.analysis;
        match enode {
            Node::Input(i) => {
                let (name, ty) = facts.inputs[*i as usize].clone();
                Data { ty: Some(ty), name: Some(name), ..Data::default() }
            }
            Node::Const(i) => {
                let t = facts.consts[*i as usize].clone();
                Data {
                    ty: Some(TensorType { dtype: t.dtype, shape: t.shape.clone() }),
                    value: Some(t),
                    ..Data::default()
                }
            }
            Node::Absent => Data::default(),
            Node::Get(i, t) => {
                let d = &egraph[*t].data;
                Data {
                    ty: d.tuple.as_ref().and_then(|v| v.get(*i as usize).cloned()),
                    value: d.tuple_values.as_ref().and_then(|v| v.get(*i as usize).cloned()),
                    ..Data::default()
                }
            }
            Node::Op(k, children) => {
                let operator = facts.ops[*k as usize].clone();
                // An omitted optional input is `None`; a present but untyped one (downstream
                // of an unsupported node) leaves the result untyped too, as in `infer_node`.
                let mut inputs: Vec<Option<&Data>> = Vec::with_capacity(children.len());
                for c in children {
                    let class = &egraph[*c];
                    if class.nodes.iter().any(|n| matches!(n, Node::Absent)) {
                        inputs.push(None);
                    } else if class.data.ty.is_some() {
                        inputs.push(Some(&class.data));
                    } else {
                        return Data::default();
                    }
                }
                infer_and_fold(&operator, &inputs, facts.opset, facts.fold_limit)
            }
        }
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        let mut changed_a = false;
        if a.ty.is_none() && b.ty.is_some() {
            a.ty = b.ty.clone();
            changed_a = true;
        }
        if a.tuple.is_none() && b.tuple.is_some() {
            a.tuple = b.tuple.clone();
            changed_a = true;
        }
        if a.value.is_none() && b.value.is_some() {
            a.value = b.value.clone();
            changed_a = true;
        }
        if a.tuple_values.is_none() && b.tuple_values.is_some() {
            a.tuple_values = b.tuple_values.clone();
            changed_a = true;
        }
        // Names: the smaller one, so the result does not depend on union order.
        match (&a.name, &b.name) {
            (None, Some(_)) => {
                a.name = b.name.clone();
                changed_a = true;
            }
            (Some(x), Some(y)) if y < x => {
                a.name = b.name.clone();
                changed_a = true;
            }
            _ => {}
        }
        // The union of two sets, inserting the smaller into the larger: O(n log^2 n) over a
        // chain of merges (sorting a vector per merge was quadratic: a 20,000-node Identity
        // chain took 11 s).
        let (a_len, b_len) = (a.nodes.len(), b.nodes.len());
        let mut b_nodes = b.nodes;
        if a_len < b_len {
            std::mem::swap(&mut a.nodes, &mut b_nodes);
        }
        a.nodes.extend(b_nodes);
        changed_a |= a.nodes.len() != a_len;
        let changed_b =
            (b.value.is_none() && a.value.is_some()) || b.name != a.name || b_len != a.nodes.len();
        DidMerge(changed_a, changed_b)
    }

    fn modify(egraph: &mut EG, id: Id) {
        // A folded class gets its constant as a node, which costs nothing to extract.
        let Some(t) = egraph[id].data.value.clone() else { return };
        if egraph[id].nodes.iter().any(|n| matches!(n, Node::Const(_))) {
            return;
        }
        let k = egraph.analysis.constant(t);
        let c = egraph.add(Node::Const(k));
        egraph.union(id, c);
    }
}

/// Output types of an operator on inputs of known types (and values), and the folded result
/// when every input is constant and small.
fn infer_and_fold(op: &Operator, inputs: &[Option<&Data>], opset: i64, limit: usize) -> Data {
    let mut g = Graph { opset, ..Graph::default() };
    let mut ins = Vec::new();
    for (i, d) in inputs.iter().enumerate() {
        match d {
            Some(d) => ins.push(Some(g.add_value(Value {
                name: format!("i{i}"),
                ty: d.ty.clone(),
                constant: d.value.clone(),
            }))),
            None => ins.push(None),
        }
    }
    let outs: Vec<ValueId> = (0..op.outputs)
        .map(|i| g.add_value(Value { name: format!("o{i}"), ty: None, constant: None }))
        .collect();
    let node = IrNode {
        name: "n".into(),
        op_type: op.op_type.clone(),
        op: op.op.clone(),
        inputs: ins.clone(),
        outputs: outs.clone(),
    };
    g.nodes.push(node.clone());
    // A node that does not type-check leaves its class untyped; rules then skip it.
    let _ = infer_node(&mut g, 0);
    let types: Vec<Option<TensorType>> = outs.iter().map(|o| g.value(*o).ty.clone()).collect();
    let mut data = Data::default();
    if op.outputs == 1 {
        data.ty = types[0].clone();
    } else if types.iter().all(Option::is_some) {
        data.tuple = Some(types.iter().flatten().cloned().collect());
    }
    let all_const = inputs.iter().all(|d| d.is_none_or(|d| d.value.is_some()));
    let small = types.iter().flatten().all(|t| t.shape.iter().product::<usize>() <= limit)
        && inputs.iter().flatten().all(|d| {
            d.value.as_ref().is_some_and(|v| v.shape.iter().product::<usize>() <= limit.max(1) * 16)
        });
    let foldable = !matches!(op.op, Op::Unsupported { .. });
    if all_const && small && foldable && types.iter().all(Option::is_some) {
        let arrays: Vec<Option<Array>> = inputs
            .iter()
            .map(|d| d.and_then(|d| d.value.as_ref()).map(Array::from_tensor))
            .collect();
        let args: Vec<Option<&Array>> = arrays.iter().map(Option::as_ref).collect();
        if let Ok(vals) = eval(&node, &args, opset) {
            let tensors: Vec<Tensor> = vals.iter().map(Array::to_tensor).collect();
            if op.outputs == 1 {
                data.value = tensors.into_iter().next();
            } else {
                data.tuple_values = Some(tensors);
            }
        }
    }
    data
}

/// Optimisation levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// No rewriting.
    O0,
    /// Rules, extraction by node count.
    O1,
    /// Rules, extraction by the device's cycle estimates.
    O2,
}

impl Level {
    /// From `0`, `1` or `2`.
    pub fn from_number(n: u8) -> Option<Level> {
        match n {
            0 => Some(Level::O0),
            1 => Some(Level::O1),
            2 => Some(Level::O2),
            _ => None,
        }
    }
}

/// Limits and target of a run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The level.
    pub level: Level,
    /// The device whose costs guide extraction at `-O2`.
    pub config: DeviceConfig,
    /// Stop when the e-graph has this many nodes.
    pub node_limit: usize,
    /// Stop after this many iterations.
    pub iter_limit: usize,
    /// Stop after this long.
    pub time_limit: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            level: Level::O2,
            config: DeviceConfig::default_npu(),
            node_limit: 200_000,
            iter_limit: 30,
            time_limit: Duration::from_secs(20),
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Why the runner stopped.
    pub stop: String,
    /// Iterations run.
    pub iterations: usize,
    /// E-graph size at the end.
    pub enodes: usize,
    /// E-classes at the end.
    pub eclasses: usize,
    /// Rule applications, by rule, over all iterations.
    pub applied: Vec<(String, usize)>,
    /// Nodes before and after.
    pub nodes_before: usize,
    /// Nodes after.
    pub nodes_after: usize,
    /// Estimated device cycles of the input and the output graph (`-O2`'s cost model, counted
    /// once per node: the cost of the DAG, not of the tree the extractor sums).
    pub cycles_before: f64,
    /// After.
    pub cycles_after: f64,
    /// The extractor's own (tree) cost of the result: larger than the DAG cost when a chosen
    /// subterm is shared.
    pub tree_cost: f64,
    /// Wall time.
    pub seconds: f64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "optimizer: {} iterations, stopped: {}; e-graph {} nodes in {} classes; {:.3} s",
            self.iterations, self.stop, self.enodes, self.eclasses, self.seconds
        )?;
        writeln!(
            f,
            "optimizer: {} -> {} nodes, estimated {:.0} -> {:.0} cycles",
            self.nodes_before, self.nodes_after, self.cycles_before, self.cycles_after
        )?;
        for (rule, n) in &self.applied {
            writeln!(f, "optimizer:   {rule}: {n}")?;
        }
        Ok(())
    }
}

/// Optimises `g` (folded, typed) in place; returns what happened.
pub fn optimize(g: &mut Graph, opts: &Options) -> Result<Report, String> {
    optimize_with(g, opts, None)
}

/// As [`optimize`], with only the rules named in `only` (for testing rules one at a time).
pub fn optimize_with(
    g: &mut Graph,
    opts: &Options,
    only: Option<&[&str]>,
) -> Result<Report, String> {
    let started = Instant::now();
    let mut report = Report { nodes_before: g.nodes.len(), ..Report::default() };
    report.cycles_before = cost::graph_cycles(g, &opts.config);
    if opts.level == Level::O0 {
        report.stop = "not run (-O0)".into();
        report.nodes_after = g.nodes.len();
        report.cycles_after = report.cycles_before;
        return Ok(report);
    }
    let (egraph, roots) = to_egraph(g);
    let runner = Runner::<Node, Facts, ()>::default()
        .with_egraph(egraph)
        .with_node_limit(opts.node_limit)
        .with_iter_limit(opts.iter_limit)
        .with_time_limit(opts.time_limit)
        .run(&rules::rewrites_of(only));
    report.stop = match &runner.stop_reason {
        Some(StopReason::Saturated) => "saturated".into(),
        Some(StopReason::IterationLimit(n)) => format!("iteration limit ({n})"),
        Some(StopReason::NodeLimit(n)) => format!("node limit ({n})"),
        Some(StopReason::TimeLimit(t)) => format!("time limit ({t:.1} s)"),
        Some(StopReason::Other(s)) => s.clone(),
        None => "unknown".into(),
    };
    report.iterations = runner.iterations.len();
    let mut applied: HashMap<String, usize> = HashMap::new();
    for it in &runner.iterations {
        for (rule, n) in &it.applied {
            *applied.entry(rule.to_string()).or_default() += n;
        }
    }
    let mut applied: Vec<(String, usize)> = applied.into_iter().collect();
    applied.sort();
    report.applied = applied;
    let egraph = runner.egraph;
    report.enodes = egraph.total_size();
    report.eclasses = egraph.number_of_classes();
    let table = cost::node_costs(&egraph, &opts.config, opts.level);
    let extractor = extract::Extraction::new(&egraph, &table);
    report.tree_cost = roots.iter().map(|r| extractor.best_cost(&egraph, *r)).sum();
    *g = from_egraph(g, &egraph, &extractor, &roots)?;
    report.nodes_after = g.nodes.len();
    report.cycles_after = cost::graph_cycles(g, &opts.config);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The e-graph of `g` and the classes of its outputs.
pub fn to_egraph(g: &Graph) -> (EG, Vec<Id>) {
    let mut facts = Facts { opset: g.opset, fold_limit: 1 << 16, ..Facts::default() };
    for id in &g.inputs {
        let v = g.value(*id);
        facts.inputs.push((
            v.name.clone(),
            v.ty.clone().unwrap_or(TensorType { dtype: crate::ir::DType::F32, shape: vec![] }),
        ));
    }
    let mut eg = EG::new(facts);
    let mut class: HashMap<ValueId, Id> = HashMap::new();
    for (i, id) in g.inputs.iter().enumerate() {
        class.insert(*id, eg.add(Node::Input(i as u32)));
    }
    let lookup = |eg: &mut EG, class: &mut HashMap<ValueId, Id>, v: ValueId| -> Id {
        if let Some(c) = class.get(&v) {
            return *c;
        }
        let t = g.value(v).constant.clone().unwrap_or_else(|| Tensor::from_f32(vec![], &[0.0]));
        let k = eg.analysis.constant(t);
        let c = eg.add(Node::Const(k));
        set_name(eg, c, &g.value(v).name);
        class.insert(v, c);
        c
    };
    for n in &g.nodes {
        if n.op == Op::Constant {
            continue;
        }
        let children: Vec<Id> = n
            .inputs
            .iter()
            .map(|i| match i {
                Some(v) => lookup(&mut eg, &mut class, *v),
                None => eg.add(Node::Absent),
            })
            .collect();
        let k = eg.analysis.op(n.op.clone(), &n.op_type, n.outputs.len());
        let node = eg.add(Node::Op(k, children));
        {
            let id = eg.find(node);
            let d = &mut eg[id].data;
            d.nodes.insert((n.op_type.clone(), n.name.clone()));
        }
        if n.outputs.len() == 1 {
            set_name(&mut eg, node, &g.value(n.outputs[0]).name);
            class.insert(n.outputs[0], node);
        } else {
            for (i, o) in n.outputs.iter().enumerate() {
                let gi = eg.add(Node::Get(i as u32, node));
                set_name(&mut eg, gi, &g.value(*o).name);
                class.insert(*o, gi);
            }
        }
    }
    let roots: Vec<Id> = g.outputs.iter().map(|o| lookup(&mut eg, &mut class, *o)).collect();
    eg.rebuild();
    (eg, roots)
}

fn set_name(eg: &mut EG, id: Id, name: &str) {
    let id = eg.find(id);
    let d = &mut eg[id].data;
    if d.name.as_ref().is_none_or(|n| name < n.as_str()) {
        d.name = Some(name.to_string());
    }
}

/// Rebuilds a graph from the extractor's choice for every class the outputs need.
fn from_egraph(
    old: &Graph,
    eg: &EG,
    ex: &extract::Extraction,
    roots: &[Id],
) -> Result<Graph, String> {
    let mut g = Graph { opset: old.opset, ..Graph::default() };
    for id in &old.inputs {
        let v = old.value(*id).clone();
        let nid = g.add_value(v);
        g.inputs.push(nid);
    }
    struct State {
        single: HashMap<Id, Option<ValueId>>,
        tuple: HashMap<Id, Vec<ValueId>>,
        used_names: std::collections::HashSet<String>,
        used_nodes: std::collections::HashSet<String>,
        fresh: usize,
    }
    let mut st = State {
        single: HashMap::new(),
        tuple: HashMap::new(),
        used_names: old.inputs.iter().map(|i| old.value(*i).name.clone()).collect(),
        used_nodes: std::collections::HashSet::new(),
        fresh: 0,
    };
    // Graph outputs keep their names: reserve them first.
    let out_names: Vec<String> = old.outputs.iter().map(|o| old.value(*o).name.clone()).collect();
    for n in &out_names {
        st.used_names.insert(n.clone());
    }
    fn name_for(st: &mut State, eg: &EG, c: Id, prefix: &str) -> String {
        if let Some(n) = &eg[c].data.name
            && st.used_names.insert(n.clone())
        {
            return n.clone();
        }
        loop {
            st.fresh += 1;
            let n = format!("{prefix}_opt{}", st.fresh);
            if st.used_names.insert(n.clone()) {
                return n;
            }
        }
    }
    /// The name of an original node of the same type in the class, once; otherwise a fresh
    /// one.
    fn node_name(st: &mut State, eg: &EG, c: Id, op_type: &str) -> String {
        for (t, n) in &eg[c].data.nodes {
            if t == op_type && st.used_nodes.insert(n.clone()) {
                return n.clone();
            }
        }
        // A new operation replacing original ones: named after what it replaced.
        if let Some((_, n)) = eg[c].data.nodes.iter().next() {
            let name = format!("{n}/{op_type}");
            if st.used_nodes.insert(name.clone()) {
                return name;
            }
        }
        loop {
            st.fresh += 1;
            let n = format!("{op_type}_opt{}", st.fresh);
            if st.used_nodes.insert(n.clone()) {
                return n;
            }
        }
    }
    /// A step of the post-order walk that emits a class (or a tuple class) after its children.
    enum Task {
        Visit(Id),
        Finish(Id),
        VisitTuple(Id),
        FinishTuple(Id),
    }
    /// Emits class `c` and everything it needs, children first in order (the order a
    /// recursive walk gives), with an explicit stack: a chain of any length uses no call
    /// stack. A class met again while its own children are being emitted is a cycle.
    fn emit(
        g: &mut Graph,
        eg: &EG,
        ex: &extract::Extraction,
        st: &mut State,
        root: Id,
    ) -> Result<Option<ValueId>, String> {
        let mut open = std::collections::HashSet::new();
        let mut stack = vec![Task::Visit(root)];
        let cycle = || "internal: extraction is cyclic".to_string();
        let best =
            |c: Id| ex.best_node(eg, c).ok_or("internal: an e-class without a finite choice");
        while let Some(task) = stack.pop() {
            match task {
                Task::Visit(c) => {
                    let c = eg.find(c);
                    if st.single.contains_key(&c) {
                        continue;
                    }
                    if !open.insert((c, false)) {
                        return Err(cycle());
                    }
                    stack.push(Task::Finish(c));
                    match best(c)? {
                        Node::Get(_, t) => stack.push(Task::VisitTuple(*t)),
                        Node::Op(_, children) => {
                            stack.extend(children.iter().rev().map(|ch| Task::Visit(*ch)))
                        }
                        Node::Absent | Node::Input(_) | Node::Const(_) => {}
                    }
                }
                Task::VisitTuple(t) => {
                    let t = eg.find(t);
                    if st.tuple.contains_key(&t) {
                        continue;
                    }
                    if !open.insert((t, true)) {
                        return Err(cycle());
                    }
                    let Node::Op(_, children) = best(t)? else {
                        return Err("internal: a tuple class without an operation".into());
                    };
                    stack.push(Task::FinishTuple(t));
                    stack.extend(children.iter().rev().map(|ch| Task::Visit(*ch)));
                }
                Task::Finish(c) => {
                    open.remove(&(c, false));
                    let v = match best(c)?.clone() {
                        Node::Absent => None,
                        Node::Input(i) => Some(g.inputs[i as usize]),
                        Node::Const(k) => {
                            let t = eg.analysis.consts[k as usize].clone();
                            let name = name_for(st, eg, c, "const");
                            Some(g.add_value(Value {
                                name,
                                ty: Some(TensorType { dtype: t.dtype, shape: t.shape.clone() }),
                                constant: Some(t),
                            }))
                        }
                        Node::Get(i, t) => {
                            let outs = st.tuple.get(&eg.find(t)).ok_or_else(cycle)?;
                            outs.get(i as usize).copied()
                        }
                        Node::Op(k, children) => {
                            let inputs = children
                                .iter()
                                .map(|ch| st.single.get(&eg.find(*ch)).copied().ok_or_else(cycle))
                                .collect::<Result<Vec<_>, _>>()?;
                            let operator = &eg.analysis.ops[k as usize];
                            let name = name_for(st, eg, c, &operator.op_type);
                            let out = g.add_value(Value {
                                name: name.clone(),
                                ty: eg[c].data.ty.clone(),
                                constant: None,
                            });
                            let node = node_name(st, eg, c, &operator.op_type);
                            g.nodes.push(IrNode {
                                name: node,
                                op_type: operator.op_type.clone(),
                                op: operator.op.clone(),
                                inputs,
                                outputs: vec![out],
                            });
                            Some(out)
                        }
                    };
                    st.single.insert(c, v);
                }
                Task::FinishTuple(t) => {
                    open.remove(&(t, true));
                    let Node::Op(k, children) = best(t)?.clone() else {
                        return Err("internal: a tuple class without an operation".into());
                    };
                    let inputs = children
                        .iter()
                        .map(|ch| st.single.get(&eg.find(*ch)).copied().ok_or_else(cycle))
                        .collect::<Result<Vec<_>, _>>()?;
                    let operator = eg.analysis.ops[k as usize].clone();
                    let types = eg[t].data.tuple.clone().unwrap_or_default();
                    let outs: Vec<ValueId> = (0..operator.outputs)
                        .map(|i| {
                            st.fresh += 1;
                            let name = format!("{}_opt{}_{i}", operator.op_type, st.fresh);
                            st.used_names.insert(name.clone());
                            g.add_value(Value { name, ty: types.get(i).cloned(), constant: None })
                        })
                        .collect();
                    let node = node_name(st, eg, t, &operator.op_type);
                    g.nodes.push(IrNode {
                        name: node,
                        op_type: operator.op_type.clone(),
                        op: operator.op.clone(),
                        inputs,
                        outputs: outs.clone(),
                    });
                    st.tuple.insert(t, outs);
                }
            }
        }
        st.single.get(&eg.find(root)).copied().ok_or_else(cycle)
    }
    for (r, name) in roots.iter().zip(&out_names) {
        let v = emit(&mut g, eg, ex, &mut st, *r)?
            .ok_or_else(|| "internal: an output has no value".to_string())?;
        // The output keeps its name: the value already has it (an input passed through), is
        // renamed, or, when it is an input, a constant or already an output under another
        // name, an Identity gives the output its own value (names stay unique).
        let shared =
            g.inputs.contains(&v) || g.outputs.contains(&v) || g.value(v).constant.is_some();
        if g.value(v).name == *name && !g.outputs.contains(&v) {
            g.outputs.push(v);
        } else if shared {
            let ty = g.value(v).ty.clone();
            let out = g.add_value(Value { name: name.clone(), ty, constant: None });
            g.nodes.push(IrNode {
                name: format!("Identity:{name}"),
                op_type: "Identity".into(),
                op: Op::Identity,
                inputs: vec![Some(v)],
                outputs: vec![out],
            });
            g.outputs.push(out);
        } else {
            g.value_mut(v).name = name.clone();
            g.outputs.push(v);
        }
    }
    // Emission walked from the outputs children first, so producers precede consumers.
    Ok(g)
}
