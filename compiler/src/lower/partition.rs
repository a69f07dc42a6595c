//! Partitioning: every node of a graph placed on the device or on the host, and placed nodes
//! grouped into regions whose graph stays acyclic.
//!
//! Placement is [`super::select::device_support`]'s answer for the node in the context of the
//! whole graph (the code `compile` runs): a node the device lowering accepts, fuses or folds
//! goes to the device, any other to the host, with the lowering's reason.
//!
//! Regions: with nodes in topological order, a node's *level* is the largest of its
//! producers' levels, plus one for a producer on the other side. Nodes of the same level and
//! side form one region. An edge between regions never goes to a lower level, and between
//! different sides always to a higher one, so contracting the regions cannot create a cycle
//! (a device region is never on both sides of a host region); the region graph is still
//! checked with petgraph's topological sort, which also gives the execution order.

use std::collections::HashMap;

use petgraph::algo::toposort;
use petgraph::graph::DiGraph;

use super::{CompileOptions, LowerError};
use crate::ir::{Graph, ValueId};

/// Where a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Place {
    /// On the accelerator, in a device program.
    Device,
    /// On the CPU, in a host function.
    Host,
}

/// One node's placement and, for the host, the device lowering's reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Where it runs.
    pub place: Place,
    /// Why it is not on the device (for host nodes).
    pub reason: Option<String>,
}

/// A maximal group of nodes on one side that runs as one device job or one host call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// Its side.
    pub place: Place,
    /// Its nodes (indices into the graph's nodes, in topological order).
    pub nodes: Vec<usize>,
    /// Values it reads that another region or the caller provides (not constants), in first
    /// use order.
    pub inputs: Vec<ValueId>,
    /// Values it produces that another region reads or the graph returns, in production order.
    pub outputs: Vec<ValueId>,
}

/// The placement of every node and the regions, in an execution order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Per node, in graph order.
    pub placements: Vec<Placement>,
    /// Regions in an order that respects every dependency.
    pub regions: Vec<Region>,
}

/// Partitions `graph` (folded, typed, in topological order) for `opts.config`.
///
/// Errors: an internal error if the region graph had a cycle (the level construction above
/// rules it out; the check keeps that claim honest).
pub fn partition(graph: &Graph, opts: &CompileOptions) -> Result<Partition, LowerError> {
    let placements: Vec<Placement> = super::select::device_support(graph, opts)
        .into_iter()
        .map(|r| match r {
            Ok(()) => Placement { place: Place::Device, reason: None },
            Err(e) => Placement { place: Place::Host, reason: Some(e.message) },
        })
        .collect();
    Ok(Partition { regions: regions(graph, &placements)?, placements })
}

/// The regions of `graph` for given placements (see the module documentation).
pub fn regions(graph: &Graph, placements: &[Placement]) -> Result<Vec<Region>, LowerError> {
    let mut producer: HashMap<ValueId, usize> = HashMap::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        for v in &n.outputs {
            producer.insert(*v, i);
        }
    }
    let mut level = vec![0usize; graph.nodes.len()];
    for (i, n) in graph.nodes.iter().enumerate() {
        for v in n.inputs.iter().flatten() {
            if let Some(&p) = producer.get(v) {
                let step = usize::from(placements[p].place != placements[i].place);
                level[i] = level[i].max(level[p] + step);
            }
        }
    }
    // Regions keyed by (level, side), nodes kept in graph order.
    let mut keys: Vec<(usize, Place)> = Vec::new();
    let mut region_of = vec![0usize; graph.nodes.len()];
    let mut members: Vec<Vec<usize>> = Vec::new();
    for i in 0..graph.nodes.len() {
        let key = (level[i], placements[i].place);
        let r = match keys.iter().position(|k| *k == key) {
            Some(r) => r,
            None => {
                keys.push(key);
                members.push(Vec::new());
                keys.len() - 1
            }
        };
        region_of[i] = r;
        members[r].push(i);
    }
    let mut dag = DiGraph::<usize, ()>::new();
    let ids: Vec<_> = (0..keys.len()).map(|r| dag.add_node(r)).collect();
    for (i, n) in graph.nodes.iter().enumerate() {
        for v in n.inputs.iter().flatten() {
            if let Some(&p) = producer.get(v)
                && region_of[p] != region_of[i]
            {
                dag.update_edge(ids[region_of[p]], ids[region_of[i]], ());
            }
        }
    }
    let order = toposort(&dag, None).map_err(|c| {
        LowerError::msg(format!(
            "internal: the region graph has a cycle through region {}",
            dag[c.node_id()]
        ))
    })?;
    let mut out = Vec::with_capacity(order.len());
    for id in order {
        let r = dag[id];
        let nodes = members[r].clone();
        let mut inputs = Vec::new();
        let mut outputs = Vec::new();
        for &i in &nodes {
            for v in graph.nodes[i].inputs.iter().flatten() {
                let outside = producer.get(v).is_none_or(|&p| region_of[p] != r);
                if outside && graph.value(*v).constant.is_none() && !inputs.contains(v) {
                    inputs.push(*v);
                }
            }
            for v in &graph.nodes[i].outputs {
                let read_elsewhere =
                    graph.nodes.iter().enumerate().any(|(j, m)| {
                        region_of[j] != r && m.inputs.iter().flatten().any(|x| x == v)
                    });
                if (read_elsewhere || graph.outputs.contains(v)) && !outputs.contains(v) {
                    outputs.push(*v);
                }
            }
        }
        out.push(Region { place: keys[r].1, nodes, inputs, outputs });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(text: &str) -> Graph {
        let mut g = crate::pipeline::load_text(text, "t", None, &Default::default()).unwrap();
        crate::pipeline::run_frontend(&mut g, &mut |_, _| {}).unwrap();
        g
    }

    #[test]
    fn device_regions_on_both_sides_of_a_host_region() {
        // The int64 Add is not lowered to the device; the float ops around it are.
        let g = graph(
            r#"<ir_version: 8, opset_import: ["" : 17]>
            agraph (float[2,3] x) => (float[2,3] y) {
                a = Relu(x)
                b = Cast<to = 7>(a)
                c = Add(b, b)
                d = Cast<to = 1>(c)
                y = Relu(d)
            }"#,
        );
        let p = partition(&g, &CompileOptions::default()).unwrap();
        let places: Vec<Place> = p.placements.iter().map(|p| p.place).collect();
        let add = g.nodes.iter().position(|n| n.op_type == "Add").unwrap();
        assert_eq!(places[add], Place::Host, "{:?}", p.placements[add]);
        let why = p.placements[add].reason.as_deref().unwrap_or_default();
        assert!(why.contains("element-wise") || why.contains("int64"), "{why}");
        let sides: Vec<Place> = p.regions.iter().map(|r| r.place).collect();
        assert_eq!(sides.first(), Some(&Place::Device));
        assert_eq!(sides.last(), Some(&Place::Device));
        assert!(sides.contains(&Place::Host));
        // Every region's inputs are produced by an earlier region or are graph inputs.
        let mut have: Vec<ValueId> = g.inputs.clone();
        for r in &p.regions {
            for v in &r.inputs {
                assert!(have.contains(v), "region {r:?} reads {v:?} before it exists");
            }
            have.extend(&r.outputs);
        }
        assert!(g.outputs.iter().all(|v| have.contains(v)));
    }

    #[test]
    fn independent_sides_stay_in_separate_regions_without_cycles() {
        let g = graph(
            r#"<ir_version: 8, opset_import: ["" : 17]>
            agraph (float[4] x, int64[4] i) => (float[4] y, int64[4] j) {
                y = Relu(x)
                j = Add(i, i)
            }"#,
        );
        let p = partition(&g, &CompileOptions::default()).unwrap();
        assert_eq!(p.regions.len(), 2);
        assert_ne!(p.regions[0].place, p.regions[1].place);
    }
}
