//! Device configurations built at run time and the roofline chart: built-ins validate, a field
//! out of range is named, a model compiled for a custom configuration runs on a device of it
//! and matches the reference, and `profile --roofline` draws one circle per layer.

use accelc::{DeviceConfig, HostTensor, Options, Session, Source};
use accelc_runtime::driver::DeviceOptions;
use accelc_tests::{accelc, repo_root};

#[test]
fn builtins_validate_and_bad_fields_are_named() {
    for c in DeviceConfig::builtin() {
        c.validate().unwrap_or_else(|e| panic!("{}: {e}", c.name));
    }
    let base = DeviceConfig::default_npu();
    let cases: [(&str, DeviceConfig); 5] = [
        ("array_dim = 48", DeviceConfig { array_dim: 48, ..base.clone() }),
        ("spad_bytes = 16777216", DeviceConfig { spad_bytes: 16 << 20, ..base.clone() }),
        (
            "acc_bytes = 100000: must be a multiple of 64",
            DeviceConfig { acc_bytes: 100_000, ..base.clone() },
        ),
        ("clock_hz = 0", DeviceConfig { clock_hz: 0, ..base.clone() }),
        ("name \"\"", DeviceConfig { name: String::new(), ..base.clone() }),
    ];
    for (needle, c) in cases {
        let e = c.validate().unwrap_err();
        assert!(e.contains(needle), "{needle}: {e}");
        let opts = Options { config: c, ..Options::default() };
        let err = accelc::compile(
            Source::Path(&repo_root().join("models/mlp_mnist.onnx")),
            &opts,
            &mut (),
        )
        .unwrap_err();
        assert!(matches!(err, accelc::Error::Input(_)), "{err:?}");
    }
}

#[test]
fn a_custom_configuration_runs_on_a_device_of_it() {
    let cfg = DeviceConfig {
        name: "a16".into(),
        array_dim: 16,
        vx_lanes: 16,
        spad_bytes: 256 << 10,
        ..DeviceConfig::default_npu()
    };
    let model = repo_root().join("models/mlp_mnist.onnx");
    let opts = Options { config: cfg.clone(), ..Options::default() };
    let c = accelc::compile(Source::Path(&model), &opts, &mut ()).unwrap();
    let x: ndarray::ArrayD<f32> =
        ndarray_npy::read_npy(repo_root().join("models/mlp_mnist.input_0.npy")).unwrap();
    let input = HostTensor::from_f32(x.shape().to_vec(), x.as_slice().unwrap()).unwrap();
    let want = accelc::reference(&c.reference, std::slice::from_ref(&input)).unwrap();
    let s = Session::with_config(c.blob().unwrap(), cfg, DeviceOptions::default()).unwrap();
    let got = s.run(&[input]).unwrap().outputs;
    let m = accelc::compare_tensors(&got[0], &want[0]).unwrap();
    assert!(m.is_none(), "{m:?}");
    // Blobs record the config name, not its timing: a built-in lookup refuses it by name.
    let e = Session::new(c.blob().unwrap()).unwrap_err().to_string();
    assert!(e.contains("`a16`, which is not a built-in"), "{e}");
    // A device with other parameters refuses it.
    let e = Session::with_config(
        c.blob().unwrap(),
        DeviceConfig::default_npu(),
        DeviceOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("built for ISA 1.1 on `a16`; this device is ISA 1.1 `default`"), "{e}");
}

#[test]
fn the_roofline_chart_has_one_circle_per_layer() {
    let dir = std::env::temp_dir().join(format!("accelc-roofline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("r.svg");
    let model = repo_root().join("models/mlp_mnist.onnx");
    let r = accelc(&["profile", model.to_str().unwrap(), "--roofline", svg.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let layers = r.stdout.lines().skip(1).take_while(|l| !l.starts_with("total")).count();
    assert_eq!(layers, 3, "{}", r.stdout);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    assert_eq!(text.matches("<circle").count(), layers);
    assert!(text.contains("mlp_mnist.onnx on default") && text.contains("roof:"));
}
