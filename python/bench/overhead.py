"""Calling overhead of the Python package, measured side by side in one run: the median time
of ``accelc.InferenceSession.run`` on a model against the Rust facade's ``Session::run`` on
the same blob (``cargo run --release -p accelc-bench --bin session-run``) and against
onnxruntime's own ``run``, as ratios.

    python python/bench/overhead.py [MODEL [N]]   (default ../shared/models/mlp_mnist.onnx, 200)
"""

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort

import accelc

REPO = Path(__file__).resolve().parents[2]
model = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared/models/mlp_mnist.onnx"
n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
inp = model.with_name(model.stem + ".input_0.npy")
x = np.load(inp)


def median_us(run: Callable[[], object]) -> float:
    for _ in range(5):
        run()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1e6)
    return statistics.median(times)


sess = accelc.InferenceSession(model)
name = sess.get_inputs()[0].name
py = median_us(lambda: sess.run(None, {name: x}))
so = ort.SessionOptions()
so.intra_op_num_threads = 1
osess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
onnx = median_us(lambda: osess.run(None, {name: x}))
rust = float(
    subprocess.run(
        ["cargo", "run", "-q", "--release", "-p", "accelc-bench", "--bin", "session-run", "--",
         str(model), str(inp), str(n)],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout
)
print(f"{model.name}, median of {n} runs:")
print(f"  accelc.InferenceSession.run   {py:9.1f} us")
print(f"  facade Session::run (Rust)    {rust:9.1f} us   Python/Rust {py / rust:.3f}")
print(f"  onnxruntime run (1 thread)    {onnx:9.1f} us   accelc/onnxruntime {py / onnx:.2f}")
print(f"  Python layer's own cost       {py - rust:9.1f} us per call")
