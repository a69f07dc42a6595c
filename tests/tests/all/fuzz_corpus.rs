//! The fuzz targets without the fuzzer: every input of each minimised corpus
//! (`fuzz/corpus/TARGET/`, kept by `cargo fuzz cmin`) and every crash the fuzzer ever found
//! (`fuzz/regressions/TARGET/`, one file per defect, named after it) runs through the target's
//! body, `accelc_tests::fuzz`, exactly as libFuzzer runs it. A body panics on a bug, so this
//! fails naming every input that still shows one.

use accelc_tests::fuzz::TARGETS;
use accelc_tests::repo_root;

#[test]
fn fuzz_corpora_and_regressions_pass() {
    let mut failures = Vec::new();
    for (name, body) in TARGETS {
        let mut ran = 0;
        for kind in ["corpus", "regressions"] {
            let dir = repo_root().join("fuzz").join(kind).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
            files.sort();
            for f in files {
                let data = std::fs::read(&f).unwrap();
                if std::panic::catch_unwind(|| body(&data)).is_err() {
                    failures.push(f.display().to_string());
                }
                ran += 1;
            }
        }
        // Every target has a corpus: an empty one would test nothing.
        assert!(ran >= 10, "fuzz target `{name}`: only {ran} corpus inputs");
    }
    assert!(failures.is_empty(), "inputs that still fail:\n{}", failures.join("\n"));
}
