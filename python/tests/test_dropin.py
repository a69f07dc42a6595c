"""The drop-in test: an onnxruntime script whose only change is its import runs unchanged on
zoo models and matches onnxruntime (the zoo's rule: rtol 1e-3, atol 1e-5)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).with_name("ort_script.py")
ORT_IMPORT = "import onnxruntime as ort\n"


def run_script(source: str, tmp: Path, model: Path, stem: str) -> np.ndarray:
    script = tmp / "script.py"
    script.write_text(source)
    out = tmp / "y.npy"
    inp = model.with_name(f"{stem}.input_0.npy")
    r = subprocess.run(
        [sys.executable, str(script), str(model), str(inp), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    y: np.ndarray = np.load(out)
    return y


@pytest.mark.parametrize("stem", ["mlp_mnist", "transformer_encoder", "resnet18"])
def test_onnxruntime_script_runs_with_only_the_import_changed(
    zoo: Path, tmp_path: Path, stem: str
) -> None:
    original = SCRIPT.read_text()
    assert original.count(ORT_IMPORT) == 1
    changed = original.replace(ORT_IMPORT, "import accelc as ort\n")
    model = zoo / f"{stem}.onnx"
    (tmp_path / "ort").mkdir()
    (tmp_path / "accelc").mkdir()
    want = run_script(original, tmp_path / "ort", model, stem)
    got = run_script(changed, tmp_path / "accelc", model, stem)
    stored = np.load(zoo / f"{stem}.output_0.npy")
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(got, stored, rtol=1e-3, atol=1e-5)
