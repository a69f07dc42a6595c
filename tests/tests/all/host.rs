//! Host partitions: models the device does not run wholly compile to a plan (device programs,
//! an MLIR host module, ordered steps) that runs through the facade's session and matches the
//! reference interpreter; run-time errors in host code are named by node; a plan blob that
//! was tampered with is refused when it loads.

use accelc::{Error, HostTensor, Options, Session, Source};
use accelc_compiler::lower::partition::Place;
use accelc_isa::plan::{PlanBlob, StepKind};
use accelc_tests::{accelc, tests_path};

fn compile_text(text: &str) -> accelc::Compilation {
    accelc::compile(Source::Text(text), &Options::default(), &mut ()).unwrap()
}

fn f32s(dims: Vec<usize>, v: &[f32]) -> HostTensor {
    HostTensor::from_f32(dims, v).unwrap()
}

/// A conv, an int64 index computation with a runtime Gather, a conv: the device on both
/// sides of a host region, one device job per device region, the reference's result.
#[test]
fn device_regions_on_both_sides_of_a_host_region_match_the_reference() {
    let path = tests_path("models/host_island.onnxtxt");
    let c = accelc::compile(Source::Path(&path), &Options::default(), &mut ()).unwrap();
    assert!(c.compiled.is_none(), "the model needs a plan");
    let plan = c.plan.as_ref().unwrap();
    let sides: Vec<Place> = plan.steps.iter().map(|s| s.place).collect();
    assert_eq!(sides, [Place::Device, Place::Host, Place::Device]);
    let on = |s: &accelc_compiler::lower::execplan::PlanStep| -> Vec<&str> {
        s.nodes.iter().map(|i| c.optimized.nodes[*i].op_type.as_str()).collect()
    };
    assert_eq!(on(&plan.steps[0]), ["Conv"]);
    assert_eq!(on(&plan.steps[1]), ["Cast", "Abs", "Mod", "Gather"]);
    assert_eq!(on(&plan.steps[2]), ["Conv"]);
    // The blob: two programs, each a valid format-1 blob, and one host function.
    let bytes = c.blob().unwrap();
    let blob = PlanBlob::read(&bytes).unwrap();
    assert_eq!(blob.programs.len(), 2);
    for p in &blob.programs {
        accelc_isa::blob::Blob::read(p).unwrap();
    }
    let kinds: Vec<StepKind> = blob.steps.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [StepKind::Device { program: 0 }, StepKind::Host, StepKind::Device { program: 1 }]
    );
    assert!(blob.host.contains("func.func @host_0("), "{}", blob.host);

    let x: Vec<f32> = (0..32).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.375).collect();
    let input = f32s(vec![1, 2, 4, 4], &x);
    let session = Session::new(c.blob().unwrap()).unwrap();
    assert!(session.is_plan());
    let run = session.run(std::slice::from_ref(&input)).unwrap();
    let want = accelc::reference(c.oracle(), std::slice::from_ref(&input)).unwrap();
    assert_eq!(accelc::compare_tensors(&run.outputs[0], &want[0]).unwrap(), None);
    // One device job per device region, one host call, in order.
    let steps: Vec<(bool, bool)> =
        run.steps.iter().map(|s| (s.device.is_some(), s.host_time.is_some())).collect();
    assert_eq!(steps, [(true, false), (false, true), (true, false)]);
    let job_cycles: u64 =
        run.steps.iter().filter_map(|s| s.device.as_ref()).map(|d| d.1.cycles).sum();
    assert_eq!(job_cycles, run.stats.cycles);
    assert!(run.stats.cycles > 0);

    // The CLI: check places each node, compile writes the plan, run compares.
    let p = path.display().to_string();
    let check = accelc(&["check", &p]);
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert!(
        check
            .stdout
            .contains("node `Gather_4` (Gather): on the host: Gather indices must be constant"),
        "{}",
        check.stdout
    );
    assert!(check.stdout.contains("4 on the host, 0 blocker(s)"), "{}", check.stdout);
    let run = accelc(&["run", &p, "--compare"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("2 device jobs") && run.stdout.contains("1 host calls"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("matches the reference"), "{}", run.stdout);
    let mlir = accelc(&["compile", &p, "--emit", "mlir"]);
    assert_eq!(mlir.code, 0, "{}", mlir.stderr);
    assert!(
        mlir.stdout.starts_with("module {") && mlir.stdout.contains("scf.for"),
        "{}",
        mlir.stdout
    );
    // diff compares every tensor, the host region's node by node.
    let diff = accelc(&["diff", &p]);
    assert_eq!(diff.code, 0, "{}", diff.stderr);
    assert!(diff.stdout.starts_with("all 6 tensors match"), "{}", diff.stdout);
    let profile = accelc(&["profile", &p]);
    assert_eq!(profile.code, 0, "{}", profile.stderr);
    assert!(
        profile.stdout.contains("step host_0") && profile.stdout.contains("wall time"),
        "{}",
        profile.stdout
    );
}

/// A device region between host regions that does no matrix work stays on the host.
#[test]
fn a_device_island_without_matrix_work_stays_on_the_host() {
    let c = compile_text(
        r#"<ir_version: 8, opset_import: ["" : 17]>
        g (int64[2,3] i) => (int64[2,3] k) {
            a = Add(i, i)
            f = Cast<to = 1>(a)
            r = Relu(f)
            j = Cast<to = 7>(r)
            k = Mul(j, i)
        }"#,
    );
    let plan = c.plan.as_ref().unwrap();
    assert_eq!(plan.steps.len(), 1, "{:?}", plan.steps.iter().map(|s| &s.name).collect::<Vec<_>>());
    let relu = c.optimized.nodes.iter().position(|n| n.op_type == "Relu").unwrap();
    let why = plan.placements[relu].reason.as_deref().unwrap();
    assert!(why.contains("island"), "{why}");
    let i = HostTensor::new(
        accelc::DType::I64,
        vec![2, 3],
        [-3i64, 0, 4, 7, -1, 2].iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
    .unwrap();
    let got = Session::new(c.blob().unwrap()).unwrap().run(std::slice::from_ref(&i)).unwrap();
    let want = accelc::reference(c.oracle(), std::slice::from_ref(&i)).unwrap();
    assert_eq!(got.outputs[0], want[0]);
    // relu(2i)·i: [0, 0, 32, 98, 0, 8].
    let vals: Vec<i64> =
        got.outputs[0].data.chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(vals, [0, 0, 32, 98, 0, 8]);
}

/// Integer division by zero and an out-of-range Gather index are the reference's errors, named
/// by node, never a trap or a wrong value.
#[test]
fn host_run_time_errors_name_the_node() {
    let div = compile_text(
        r#"<ir_version: 8, opset_import: ["" : 17]>
        g (int64[3] a, int64[3] b) => (int64[3] q) {
            q = Div(a, b)
        }"#,
    );
    let t = |v: [i64; 3]| {
        HostTensor::new(
            accelc::DType::I64,
            vec![3],
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
        .unwrap()
    };
    let s = Session::new(div.blob().unwrap()).unwrap();
    let ok = s.run(&[t([7, -7, i64::MIN]), t([2, 2, -1])]).unwrap();
    let want = accelc::reference(div.oracle(), &[t([7, -7, i64::MIN]), t([2, 2, -1])]).unwrap();
    assert_eq!(ok.outputs[0], want[0], "truncating division, i64::MIN / -1 wraps");
    let e = s.run(&[t([1, 2, 3]), t([1, 0, 1])]).unwrap_err();
    assert!(matches!(e, Error::Input(_)), "{e:?}");
    assert!(e.to_string().contains("integer division by zero"), "{e}");
    assert!(accelc::reference(div.oracle(), &[t([1, 2, 3]), t([1, 0, 1])]).is_err());

    let gather = compile_text(
        r#"<ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x, int64[2] i) => (float[2] y) {
            y = Gather<axis = 0>(x, i)
        }"#,
    );
    let s = Session::new(gather.blob().unwrap()).unwrap();
    let x = f32s(vec![4], &[1.0, 2.0, 3.0, 4.0]);
    let ok = s.run(&[x.clone(), t2(&[-1, 0])]).unwrap();
    assert_eq!(
        ok.outputs[0].data,
        [4.0f32, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()
    );
    let e = s.run(&[x, t2(&[0, 4])]).unwrap_err().to_string();
    assert!(e.contains("index is out of range") && e.contains("host_0"), "{e}");
}

fn t2(v: &[i64]) -> HostTensor {
    HostTensor::new(
        accelc::DType::I64,
        vec![v.len()],
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
    .unwrap()
}

/// A plan blob whose host module was replaced (checksums recomputed, so only the loader's
/// checks can tell) is refused at load with the reason; so is a truncated one.
#[test]
fn a_tampered_plan_is_refused_when_it_loads() {
    let c = accelc::compile(
        Source::Path(&tests_path("models/host_island.onnxtxt")),
        &Options::default(),
        &mut (),
    )
    .unwrap();
    let bytes = c.blob().unwrap();
    let plan = PlanBlob::read(&bytes).unwrap();
    let cases = [
        // A declaration of an external symbol.
        plan.host.replacen("module {", "module {\nfunc.func private @system(memref<1xi8>)", 1),
        // The host function with another signature than the plan's.
        plan.host.replacen("memref<1x2x4x4xf32>", "memref<1x2x4x5xf32>", 1),
        // Not MLIR.
        "this is not a module".to_string(),
    ];
    for (k, host) in cases.into_iter().enumerate() {
        let mut p = plan.clone();
        p.host = host;
        let e = Session::new(p.to_bytes().unwrap()).unwrap_err();
        assert!(matches!(e, Error::Blob(_)), "case {k}: {e:?}");
        assert!(e.to_string().contains("host module"), "case {k}: {e}");
    }
    let e = Session::new(bytes[..bytes.len() - 10].to_vec()).unwrap_err().to_string();
    assert!(e.contains("malformed blob"), "{e}");
    // A format-1 reader (the device-only tools) names the format instead of misreading it.
    let e = accelc_isa::blob::Blob::read(&bytes).unwrap_err().to_string();
    assert!(e.contains("plan blob"), "{e}");
}

/// The integer kernels the optimizer makes (QConv, QAdd, QGlobalAveragePool) have host
/// lowerings with the device's fixed-point arithmetic: an int8 zoo model compiled with every
/// node on the host gives the integer reference's output bit for bit.
#[test]
fn an_int8_model_wholly_on_the_host_is_bit_exact() {
    use accelc_compiler::ir::Op;
    use accelc_compiler::lower::CompileOptions;
    let model = accelc_tests::zoo("mobilenet_v2_int8_qdq.onnx");
    let c = accelc::compile(Source::Path(&model), &Options::default(), &mut ()).unwrap();
    let count = |f: fn(&Op) -> bool| c.optimized.nodes.iter().filter(|n| f(&n.op)).count();
    assert!(count(|o| matches!(o, Op::QConv { .. })) > 40);
    assert!(count(|o| matches!(o, Op::QAdd { .. })) > 5);
    assert!(count(|o| matches!(o, Op::QGlobalAveragePool { .. })) == 1);
    let plan = accelc_compiler::lower::execplan::compile_host_only(
        &c.optimized,
        &CompileOptions::default(),
    )
    .unwrap();
    assert_eq!(plan.steps.len(), 1);
    let x = accelc::npy::read(&accelc_tests::zoo("mobilenet_v2_int8_qdq.input_0.npy")).unwrap();
    let got = Session::new(plan.blob).unwrap().run(std::slice::from_ref(&x)).unwrap();
    let want = accelc::reference(c.oracle(), std::slice::from_ref(&x)).unwrap();
    assert_eq!(got.outputs[0].dtype, want[0].dtype);
    assert!(got.outputs[0].data == want[0].data, "the host's output differs from the reference");
}
