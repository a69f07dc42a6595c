//! Extraction: the cheapest e-node of every e-class by a per-node cost table, the cost of a
//! choice being its own cost plus its distinct children's (a tree cost, as egg's `Extractor`
//! with an additive cost function, except that a class used twice by one node counts once:
//! `Concat(x, x)` computes `x` once, and counting it twice would price the whole graph above
//! `x` double).
//!
//! egg's `Extractor` recomputes every class until nothing changes; on a long chain that is one
//! pass per link, quadratic (8,000 chained nodes took 12 s). This is Knuth's generalisation of
//! Dijkstra's algorithm to superior functions (Knuth, "A generalization of Dijkstra's
//! algorithm", IPL 6(1), 1977): an additive cost with non-negative own costs is superior (never
//! below any child's), so settling classes cheapest first gives every class its exact minimum,
//! the same costs egg's fixpoint reaches, in O(E log V). Each class keeps the node that gave
//! it its cost (so the choice is acyclic even through zero-cost nodes); among candidates of
//! equal cost, the earlier node of the class.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use egg::{Id, Language};

use super::{EG, Node};

/// A choice's cost: estimated cycles, then the number of nodes in its tree (of two choices
/// equally fast, the smaller: a folded constant over the expression it folds), ordered with
/// `f64::total_cmp` (cycles are finite and non-negative; unknown nodes cost 1e18).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Cost(f64, u64);

impl Eq for Cost {}
impl PartialOrd for Cost {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Cost {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// The chosen e-node and its tree cost, per canonical e-class.
#[derive(Debug)]
pub struct Extraction {
    best: HashMap<Id, (Cost, Node)>,
}

impl Extraction {
    /// Computes the best node of every class of `eg` that has a finite choice (a class whose
    /// every node needs itself has none), with `own` giving a node's own cost (missing: 1e18).
    pub fn new(eg: &EG, own: &HashMap<Node, f64>) -> Extraction {
        let own_cost = |n: &Node| own.get(n).copied().unwrap_or(1e18).max(0.0);
        // For every node: how many distinct classes it still waits for; for every class, the
        // nodes (class, index) that wait for it.
        let mut waiting: HashMap<(Id, usize), usize> = HashMap::new();
        let mut parents: HashMap<Id, Vec<(Id, usize)>> = HashMap::new();
        // The best candidate so far of each unsettled class: (cost, node index). A candidate
        // only ever has settled children, so the choice is acyclic (settling order is a
        // topological order), even through zero-cost nodes.
        let mut tentative: HashMap<Id, (Cost, usize)> = HashMap::new();
        let mut heap = BinaryHeap::new();
        let offer = |tentative: &mut HashMap<Id, (Cost, usize)>,
                     heap: &mut BinaryHeap<Reverse<(Cost, Id)>>,
                     id: Id,
                     cost: Cost,
                     j: usize| {
            // Equal costs: the earlier node of the class.
            let better = tentative.get(&id).is_none_or(|&(c, k)| (cost, j) < (c, k));
            if better {
                tentative.insert(id, (cost, j));
                heap.push(Reverse((cost, id)));
            }
        };
        for class in eg.classes() {
            for (j, node) in class.nodes.iter().enumerate() {
                let mut kids: Vec<Id> = node.children().iter().map(|c| eg.find(*c)).collect();
                kids.sort_unstable();
                kids.dedup();
                if kids.is_empty() {
                    offer(&mut tentative, &mut heap, class.id, Cost(own_cost(node), 1), j);
                    continue;
                }
                waiting.insert((class.id, j), kids.len());
                for k in kids {
                    parents.entry(k).or_default().push((class.id, j));
                }
            }
        }
        let mut best: HashMap<Id, (Cost, Node)> = HashMap::new();
        while let Some(Reverse((_, id))) = heap.pop() {
            if best.contains_key(&id) {
                continue;
            }
            let Some(&(cost, j)) = tentative.get(&id) else { continue };
            best.insert(id, (cost, eg[id].nodes[j].clone()));
            for &(p, j) in parents.get(&id).map(Vec::as_slice).unwrap_or(&[]) {
                let Some(left) = waiting.get_mut(&(p, j)) else { continue };
                *left -= 1;
                if *left > 0 || best.contains_key(&p) {
                    continue;
                }
                let node = &eg[p].nodes[j];
                let mut kids: Vec<Id> = node.children().iter().map(|c| eg.find(*c)).collect();
                kids.sort_unstable();
                kids.dedup();
                let total = kids.iter().try_fold(Cost(own_cost(node), 1), |acc, c| {
                    best.get(c).map(|(k, _)| Cost(acc.0 + k.0, acc.1.saturating_add(k.1)))
                });
                if let Some(cost) = total {
                    offer(&mut tentative, &mut heap, p, cost, j);
                }
            }
        }
        Extraction { best }
    }

    /// The chosen node of class `id`, or `None` when the class has no finite choice.
    pub fn best_node(&self, eg: &EG, id: Id) -> Option<&Node> {
        self.best.get(&eg.find(id)).map(|(_, n)| n)
    }

    /// The tree cost of class `id`'s choice (infinite when it has none).
    pub fn best_cost(&self, eg: &EG, id: Id) -> f64 {
        self.best.get(&eg.find(id)).map_or(f64::INFINITY, |(c, _)| c.0)
    }
}
