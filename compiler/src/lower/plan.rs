//! Memory planning: constants packed into the constant segment, inputs and outputs into
//! theirs, and every other tensor of the schedule placed in the DRAM arena by liveness (tensors
//! alive in the same step never overlap), then checked ([`Sched::verify_memory`]).

use super::LowerError;
use super::consts::ConstImage;
use super::emit;
use std::collections::HashMap;

use super::schedule::{Ew, Kernel, Sched, Step, Store, T, Tens};

/// The memory plan's results.
pub(crate) struct MemPlan {
    /// Arena tensors: `(tensor, first step, last step)`.
    pub lifetimes: Vec<(T, usize, usize)>,
    pub(crate) consts: ConstImage,
    pub(crate) input_bytes: u64,
    pub(crate) output_bytes: u64,
    pub(crate) arena_bytes: u64,
    /// `(name, segment, offset, tensor)`.
    pub(crate) inputs: Vec<(String, u8, u64, T)>,
    pub(crate) outputs: Vec<(String, u8, u64, T)>,
}

pub(crate) fn align(x: u64) -> u64 {
    x.div_ceil(64) * 64
}

/// Places constants, inputs, outputs and the arena.
pub(crate) fn plan_memory(s: &mut Sched) -> Result<MemPlan, LowerError> {
    // Outputs: computed in place in the output segment when nothing reads them afterwards
    // and they are row-major; otherwise copied there at the end.
    let mut read = vec![false; s.tens.len()];
    for st in &s.steps {
        for t in st.uses().0 {
            read[s.root(t).index()] = true;
        }
    }
    let mut placed_out: Vec<T> = Vec::new();
    let mut outputs = Vec::new();
    let mut out_top = 0u64;
    for (name, t) in s.outputs.clone() {
        let tn = &s.tens[t];
        let direct = matches!(tn.store, Store::Arena)
            && !read[t.index()]
            && (!tn.nhwc || tn.layouts_agree())
            && !placed_out.contains(&t)
            && !s.steps.is_empty();
        let target = if direct {
            t
        } else {
            let c = s.tens.push(Tens {
                name: format!("{name}.out"),
                shape: tn.shape.clone(),
                dtype: tn.dtype,
                nhwc: false,
                store: Store::Arena,
                loc: None,
            });
            let ew =
                Ew { out: c, out_view: vec![], inputs: vec![(t, vec![])], prog: vec![], regs: 0 };
            s.steps.push(Step {
                kernel: Kernel::Elementwise(ew),
                name: format!("output:{name}"),
                output: None,
                consts: vec![],
                packed: None,
                const_offs: vec![],
            });
            c
        };
        s.tens[target].loc = Some((emit::SEG_OUTPUT, out_top));
        placed_out.push(target);
        outputs.push((name, emit::SEG_OUTPUT, out_top, target));
        out_top = align(out_top + s.tens[target].bytes());
    }
    // Constants: tensors any step reads, then step constants.
    let mut consts = ConstImage::default();
    let mut used = vec![false; s.tens.len()];
    for st in &s.steps {
        let (r, w) = st.uses();
        for t in r.into_iter().chain(w) {
            used[s.root(t).index()] = true;
        }
    }
    for (i, is_used) in used.iter().enumerate() {
        let t = T(i as u32);
        if let Store::Const(bytes) = &s.tens[t].store
            && *is_used
        {
            let off = align(consts.len());
            consts.push_bytes(off, bytes.clone());
            s.tens[t].loc = Some((emit::SEG_CONST, off));
        }
    }
    for st in &mut s.steps {
        for (i, c) in st.consts.iter().enumerate() {
            let off = align(consts.len());
            consts.push_bytes(off, bytes::Bytes::copy_from_slice(c));
            st.const_offs[i] = off;
        }
        if let Some(p) = &st.packed {
            let off = align(consts.len());
            consts.push_packed(off, p.clone());
            st.const_offs[st.consts.len()] = off;
        }
    }
    // Inputs.
    let mut inputs = Vec::new();
    let mut in_top = 0u64;
    for (name, t) in s.inputs.clone() {
        s.tens[t].loc = Some((emit::SEG_INPUT, in_top));
        inputs.push((name, emit::SEG_INPUT, in_top, t));
        in_top = align(in_top + s.tens[t].bytes());
    }
    // Arena: lifetimes in steps, then first fit by decreasing size.
    let mut life: HashMap<T, (usize, usize)> = HashMap::new();
    for (i, st) in s.steps.iter().enumerate() {
        let (r, w) = st.uses();
        for t in r.into_iter().chain(w) {
            let root = s.root(t);
            if matches!(s.tens[root].store, Store::Arena) && s.tens[root].loc.is_none() {
                let e = life.entry(root).or_insert((i, i));
                e.0 = e.0.min(i);
                e.1 = e.1.max(i);
            }
        }
    }
    let mut lifetimes: Vec<(T, usize, usize)> = life.iter().map(|(t, l)| (*t, l.0, l.1)).collect();
    lifetimes.sort_unstable();
    let mut order: Vec<(T, (usize, usize))> = life.into_iter().collect();
    order.sort_by_key(|(t, l)| (std::cmp::Reverse(s.tens[*t].bytes()), l.0, *t));
    let mut placed: Vec<(u64, u64, usize, usize)> = Vec::new();
    let mut arena = 0u64;
    for (t, (a, z)) in order {
        let size = align(s.tens[t].bytes().max(1));
        let mut conflicts: Vec<(u64, u64)> =
            placed.iter().filter(|p| p.2 <= z && a <= p.3).map(|p| (p.0, p.1)).collect();
        conflicts.sort_unstable();
        let mut off = 0u64;
        for (o, e) in conflicts {
            if off + size <= o {
                break;
            }
            off = off.max(e);
        }
        placed.push((off, off + size, a, z));
        arena = arena.max(off + size);
        s.tens[t].loc = Some((emit::SEG_ARENA, off));
    }
    Ok(MemPlan {
        lifetimes,
        consts,
        input_bytes: in_top,
        output_bytes: out_top,
        arena_bytes: arena,
        inputs,
        outputs,
    })
}

impl Sched {
    /// The memory plan's invariants: every tensor a step touches has an address inside its
    /// segment, and no two arena tensors alive in the same step overlap.
    pub(crate) fn verify_memory(&self, mem: &MemPlan) -> Result<(), String> {
        for (i, st) in self.steps.iter().enumerate() {
            let (r, w) = st.uses();
            for t in r.into_iter().chain(w) {
                let root = self.root(t);
                let Some((seg, off)) = self.tens[root].loc else {
                    return Err(format!(
                        "step {i} (`{}`) uses `{}`, which has no address",
                        st.name, self.tens[t].name
                    ));
                };
                let size = match seg {
                    emit::SEG_ARENA => mem.arena_bytes,
                    emit::SEG_INPUT => mem.input_bytes,
                    emit::SEG_OUTPUT => mem.output_bytes,
                    _ => mem.consts.len(),
                };
                if off + self.tens[t].bytes() > size {
                    return Err(format!("`{}` ends past its segment", self.tens[t].name));
                }
            }
        }
        // A sweep over steps: the tensors alive at a step never overlap each other, so sorted
        // by offset (then end) their ends never decrease, and a tensor entering the set can
        // only overlap its nearest neighbours. O(n log n), where checking every pair was
        // quadratic (half of a 16,000-node chain's compile time).
        let span = |t: T| {
            let (_, o) = self.tens[t].loc.unwrap_or_default();
            (o, o + self.tens[t].bytes())
        };
        let overlap = |(oa, ea): (u64, u64), (ob, eb): (u64, u64)| oa < eb && ob < ea;
        let mut by_start: Vec<&(T, usize, usize)> = mem.lifetimes.iter().collect();
        by_start.sort_by_key(|&&(t, a0, _)| (a0, t));
        // Keyed by (offset, end, tensor).
        type Key = (u64, u64, T);
        let mut alive: std::collections::BTreeMap<Key, (usize, usize)> =
            std::collections::BTreeMap::new();
        let mut ends: std::collections::BinaryHeap<std::cmp::Reverse<(usize, Key)>> =
            std::collections::BinaryHeap::new();
        for &(a, a0, a1) in by_start {
            while let Some(std::cmp::Reverse((end, key))) = ends.peek().copied() {
                if end >= a0 {
                    break;
                }
                ends.pop();
                alive.remove(&key);
            }
            let (oa, ea) = span(a);
            let key = (oa, ea, a);
            let before = alive.range(..key).next_back();
            let after = alive.range(key..).next();
            for (&(ob, eb, b), &(b0, b1)) in before.into_iter().chain(after) {
                if overlap((oa, ea), (ob, eb)) {
                    return Err(format!(
                        "arena tensors `{}` and `{}` are alive together (steps {b0}..={b1} and {a0}..={a1}) and overlap",
                        self.tens[b].name, self.tens[a].name
                    ));
                }
            }
            alive.insert(key, (a0, a1));
            ends.push(std::cmp::Reverse((a1, key)));
        }
        Ok(())
    }
}
