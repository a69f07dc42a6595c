//! `accelc check` tells the truth: it exits 0 exactly when `accelc compile` succeeds, and when
//! compile fails at a node, `check` lists that node as a blocker (over every model of the zoo,
//! the shared edge cases and every ONNX backend node test).

use std::path::PathBuf;

use accelc::{Options, Source};
use accelc_tests::{accelc, repo_root};

/// The node a compile error names (`node `X`: ...`), if any.
fn blamed(e: &str) -> Option<String> {
    let rest = e.split("node `").nth(1)?;
    Some(rest.split('`').next()?.to_string())
}

/// Checks one model through the facade on the default device; returns whether it compiles.
fn agrees(path: &std::path::Path) -> Option<bool> {
    agrees_on(path, &accelc::DeviceConfig::default_npu())
}

/// As [`agrees`] on device configuration `config`.
fn agrees_on(path: &std::path::Path, config: &accelc::DeviceConfig) -> Option<bool> {
    let opts = Options { config: config.clone(), ..Options::default() };
    let Ok(report) = accelc::check(Source::Path(path), &opts) else {
        // Not importable at all: compile must fail too.
        assert!(accelc::compile(Source::Path(path), &opts, &mut ()).is_err(), "{}", path.display());
        return None;
    };
    let compiled = accelc::compile(Source::Path(path), &opts, &mut ());
    assert_eq!(report.supported(), compiled.is_ok(), "{}: {:?}", path.display(), report.compile);
    if let Err(e) = &compiled {
        let names: Vec<&str> = report.blockers().map(|n| n.name.as_str()).collect();
        assert!(
            !names.is_empty(),
            "{}: compile fails ({e}) but check has no blocker",
            path.display()
        );
        match blamed(&e.to_string()) {
            // A kernel's name joins the nodes it fuses with `+`: each is a blocker.
            Some(node) => assert!(
                node.split('+').all(|n| names.contains(&n)),
                "{}: compile fails at `{node}` but check blames {names:?}",
                path.display()
            ),
            None => assert!(
                report.compile.is_err(),
                "{}: compile fails ({e}) but check reports no whole-program failure",
                path.display()
            ),
        }
    } else {
        assert_eq!(report.blockers().count(), 0, "{}", path.display());
    }
    Some(compiled.is_ok())
}

#[test]
fn check_exits_zero_exactly_when_compile_succeeds_on_the_zoo_and_cases() {
    let mut models: Vec<PathBuf> =
        accelc_tests::ZOO_MODELS.iter().map(|m| accelc_tests::zoo(&format!("{m}.onnx"))).collect();
    for e in std::fs::read_dir(repo_root().join("../shared/cases")).unwrap() {
        let p = e.unwrap().path().join("model.onnx");
        if p.exists() {
            models.push(p);
        }
    }
    for m in &models {
        let path = m.display().to_string();
        let check = accelc(&["check", &path]);
        let out = std::env::temp_dir().join(format!("accelc-check-{}.blob", std::process::id()));
        let compile = accelc(&["compile", &path, "-o", &out.display().to_string()]);
        assert_eq!(
            check.code == 0,
            compile.code == 0,
            "{path}:\n{}\n{}",
            check.stdout,
            compile.stderr
        );
        for cfg in accelc::DeviceConfig::builtin() {
            agrees_on(m, &cfg);
        }
    }
}

/// Limits only kernel emission meets (a softmax row longer than an instruction field can
/// count, a row that does not fit the tiny device's scratchpad) move the node to the host:
/// `check` says so with the limit, the model compiles to a plan, and the plan runs it right.
#[test]
fn emission_limits_put_the_node_on_the_host() {
    let dir = std::env::temp_dir().join(format!("accelc-check-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (cols, cfg) in
        [(300_000, accelc::DeviceConfig::default_npu()), (40_000, accelc::DeviceConfig::tiny())]
    {
        let p = dir.join(format!("sm{cols}.onnxtxt"));
        std::fs::write(
            &p,
            format!(
                "<ir_version: 8, opset_import: [\"\" : 17]>\ng (float[2,{cols}] x) => (float[2,{cols}] y) {{\n  y = Softmax <axis: int = 1> (x)\n}}\n"
            ),
        )
        .unwrap();
        assert_eq!(agrees_on(&p, &cfg), Some(true), "{cols} on {}", cfg.name);
        let opts = Options { config: cfg.clone(), ..Options::default() };
        let report = accelc::check(Source::Path(&p), &opts).unwrap();
        let host: Vec<&accelc::NodeCheck> = report.on_host().collect();
        assert_eq!(host.len(), 1, "{cols} on {}: {:?}", cfg.name, report.nodes);
        let why = host[0].result.as_ref().unwrap_err();
        assert!(!why.is_empty(), "{why}");
        let c = accelc::compile(Source::Path(&p), &opts, &mut ()).unwrap();
        let x: Vec<f32> = (0..2 * cols).map(|i| ((i % 97) as f32 - 48.0) / 7.0).collect();
        let x = accelc::HostTensor::from_f32(vec![2, cols], &x).unwrap();
        let s = accelc::Session::with_config(c.blob().unwrap(), cfg.clone(), Default::default());
        let got = s.unwrap().run(std::slice::from_ref(&x)).unwrap();
        let want = accelc::reference(c.oracle(), std::slice::from_ref(&x)).unwrap();
        assert_eq!(accelc::compare_tensors(&got.outputs[0], &want[0]).unwrap(), None);
    }
}

#[test]
fn check_agrees_with_compile_on_every_node_test() {
    let dirs = accelc_tests::node_test_dirs();
    let (mut ok, mut refused) = (0, 0);
    for d in &dirs {
        match agrees(&d.join("model.onnx")) {
            Some(true) => ok += 1,
            Some(false) => refused += 1,
            None => {}
        }
    }
    // Node tests take shapes and indices as graph inputs, so most do not compile as they are.
    assert!(ok > 50 && refused > 500, "{ok} compile, {refused} refused");
}
