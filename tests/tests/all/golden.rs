//! Golden outputs: every zoo model, compiled at `-O2` for the default device and run on the
//! simulator with its stored input, produces exactly the output bytes recorded in
//! `tests/golden/zoo-outputs.txt` (a SHA-256 per model). The simulator is bit-exact, so a
//! change to the compiler's schedule or the simulator's speed paths that alters any output
//! bit fails here; a change meant to alter results rewrites the file with `UPDATE_EXPECT=1`
//! and says why in its commit.

use accelc::{DType, HostTensor, Options, Session, Source};
use sha2::{Digest, Sha256};

fn digest(model: &str) -> String {
    let path = accelc_tests::zoo(&format!("{model}.onnx"));
    let c = accelc::compile(Source::Path(&path), &Options::default(), &mut ())
        .unwrap_or_else(|e| panic!("{model}: {e}"));
    let session = Session::new(c.blob().unwrap()).unwrap_or_else(|e| panic!("{model}: {e}"));
    let npy = std::fs::read(accelc_tests::zoo(&format!("{model}.input_0.npy"))).unwrap();
    // The zoo's inputs are float32 .npy files: the payload follows the header's newline.
    let header = npy.iter().position(|b| *b == b'\n').unwrap() + 1;
    let dims = session.inputs()[0].dims.clone();
    let x = HostTensor::new(DType::F32, dims, npy[header..].to_vec()).unwrap();
    let r = session.run(std::slice::from_ref(&x)).unwrap_or_else(|e| panic!("{model}: {e}"));
    let mut h = Sha256::new();
    for o in &r.outputs {
        h.update(&o.data);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn zoo_outputs_are_bit_identical_to_the_recorded_ones() {
    let path = accelc_tests::tests_path("golden/zoo-outputs.txt");
    let got: String =
        accelc_tests::ZOO_MODELS.iter().map(|m| format!("{m} {}\n", digest(m))).collect();
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(got, want, "zoo outputs changed (UPDATE_EXPECT=1 rewrites {})", path.display());
}
