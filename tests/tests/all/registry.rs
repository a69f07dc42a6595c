//! The op registry (`accelc_compiler::ops`): every op type has exactly one home, and every
//! facet of every family handles each of its ops. Walked over the ONNX backend node tests (one
//! or more real models per op type): each supported node is imported, printed in the text
//! syntax and re-imported to the same op (the printer facet writes every attribute the import
//! facet reads), and its shape rule, reference semantics and device lowering answer without a
//! registry routing error.

use std::collections::BTreeSet;
use std::path::PathBuf;

use accelc_compiler::interp::run;
use accelc_compiler::ir::Op;
use accelc_compiler::lower::{CompileOptions, device_support};
use accelc_compiler::onnx::{ImportOptions, import, load};
use accelc_compiler::ops::{REGISTRY, def, family_of, onnx_ops};
use accelc_compiler::pipeline::run_frontend;
use accelc_compiler::text::{parse, print};
use accelc_tests::node_test_dirs;
use bytes::Bytes;
use prost::Message;

#[test]
fn every_op_type_has_exactly_one_family() {
    let mut seen = BTreeSet::new();
    for d in REGISTRY {
        assert!(!d.family.is_empty());
        for op in d.onnx {
            assert!(seen.insert(*op), "{op} is imported by two families");
            assert_eq!(family_of(op).map(|f| f.family), Some(d.family), "{op}");
        }
    }
    assert_eq!(seen.len(), onnx_ops().len());
    assert!(family_of("NoSuchOp").is_none());
}

#[test]
fn every_family_handles_each_of_its_ops_on_the_node_tests() {
    let mut covered = BTreeSet::new();
    let mut failures = Vec::new();
    let opts = CompileOptions::default();
    for dir in node_test_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let Ok(mut g) = load(&dir.join("model.onnx"), &ImportOptions::default()) else { continue };
        // Import facet coverage counts the graph as imported (folding removes Constant nodes).
        for n in g.nodes.iter().filter(|n| !matches!(n.op, Op::Unsupported { .. })) {
            covered.insert(n.op_type.clone());
        }
        // The shape rule facet (folding, inference, verification); a refusal is an answer, a
        // routing error is not.
        if let Err(e) = run_frontend(&mut g, &mut |_, _| {})
            && e.contains("internal:")
        {
            failures.push(format!("{name}: frontend: {e}"));
        }
        let supported: Vec<&accelc_compiler::ir::Node> =
            g.nodes.iter().filter(|n| !matches!(n.op, Op::Unsupported { .. })).collect();
        if supported.is_empty() {
            continue;
        }
        for n in &supported {
            // Nodes the importer builds itself (BatchNormalization-7 spatial = 0 becomes
            // element-wise nodes) keep their original op type only where it is the family's.
            let d = def(&n.op);
            if family_of(&n.op_type).is_some_and(|f| f.family != d.family) {
                failures
                    .push(format!("{name}: {} imports as {:?}, of {}", n.op_type, n.op, d.family));
            }
        }
        // Printer facet: print, parse, import gives the same ops.
        let text = print(&g);
        let back = parse(&text).map_err(|d| format!("{d:?}")).and_then(|m| {
            import(Bytes::from(m.encode_to_vec()), None, &ImportOptions::default())
                .map_err(|e| e.to_string())
        });
        match back {
            Ok(b) => {
                // Only supported nodes: an unsupported one's attributes were never imported.
                let changed = g.nodes.iter().zip(&b.nodes).find(|(x, y)| {
                    !matches!(x.op, Op::Unsupported { .. })
                        && (x.op != y.op || x.op_type != y.op_type)
                });
                if let Some((x, y)) = changed {
                    failures.push(format!("{name}: print/import turns {:?} into {:?}", x.op, y.op));
                } else if b.nodes.len() != g.nodes.len() {
                    failures.push(format!("{name}: print/import changes the node count"));
                }
            }
            Err(e) => failures.push(format!("{name}: printed text does not re-import: {e}")),
        }
        // Lowering facet, and (through `load`) the shape rule: no routing error.
        for (i, r) in device_support(&g, &opts).iter().enumerate() {
            if let Err(e) = r
                && e.message.contains("internal:")
            {
                failures.push(format!("{name}: node {i} lowering: {e}"));
            }
        }
        // Reference facet on zero inputs of the declared types, when every input is typed.
        let zeros: Option<Vec<accelc_compiler::interp::Array>> = g
            .inputs
            .iter()
            .map(|v| {
                g.value(*v).ty.as_ref().map(|t| {
                    accelc_compiler::interp::Array::from_tensor(&accelc_compiler::ir::Tensor {
                        dtype: t.dtype,
                        shape: t.shape.clone(),
                        data: vec![0u8; t.shape.iter().product::<usize>() * t.dtype.size()].into(),
                    })
                })
            })
            .collect();
        if supported.len() == g.nodes.len()
            && let Some(z) = zeros
            && let Err(e) = run(&g, &z)
            && e.message.contains("internal:")
        {
            failures.push(format!("{name}: reference: {e}"));
        }
    }
    let missing: Vec<&str> = onnx_ops().into_iter().filter(|op| !covered.contains(*op)).collect();
    assert!(missing.is_empty(), "no node test exercises {missing:?}");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// `select` for one node on its own agrees with the whole-graph answer `compile` acts on, over
/// the zoo and the node tests: a node the graph accepts runs alone too, and a node the graph
/// refuses is refused alone for the same reason (except a node whose refusal comes from an
/// untyped input, which alone is a graph input of no type either way).
#[test]
fn select_of_one_node_agrees_with_the_whole_graph() {
    use accelc_compiler::lower::device_supports;
    use accelc_isa::DeviceConfig;
    let mut paths: Vec<PathBuf> =
        accelc_tests::ZOO_MODELS.iter().map(|m| accelc_tests::zoo(&format!("{m}.onnx"))).collect();
    paths.extend(node_test_dirs().into_iter().map(|d| d.join("model.onnx")));
    let (mut nodes, mut disagree) = (0, Vec::new());
    for cfg in DeviceConfig::builtin() {
        let opts = CompileOptions { config: cfg.clone(), expose_all: false };
        for p in &paths {
            let Ok(mut g) = load(p, &ImportOptions::default()) else { continue };
            if run_frontend(&mut g, &mut |_, _| {}).is_err() {
                continue;
            }
            for (i, whole) in device_support(&g, &opts).into_iter().enumerate() {
                if matches!(g.nodes[i].op, Op::Constant) {
                    continue;
                }
                nodes += 1;
                let alone = device_supports(&g, i, &cfg);
                if whole.as_ref().map_err(|e| &e.message) != alone.as_ref().map_err(|e| &e.message)
                {
                    disagree.push(format!(
                        "{} node {} on {}: whole graph {whole:?}, alone {alone:?}",
                        p.display(),
                        g.nodes[i].name,
                        cfg.name
                    ));
                }
            }
        }
    }
    assert!(nodes > 1000, "only {nodes} nodes compared");
    assert!(
        disagree.is_empty(),
        "{} of {nodes} disagree:\n{}",
        disagree.len(),
        disagree.join("\n")
    );
}
