"""The compiler from Python: compile, save and load blobs, run, check, diff, profile, the
reference interpreter, numpy types in and out, errors with locations, the GIL released."""

import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import accelc

HEADER = '<ir_version: 8, opset_import: ["" : 17]>\n'


def mlp(zoo: Path) -> Path:
    return zoo / "mlp_mnist.onnx"


def mlp_input(zoo: Path) -> npt.NDArray[Any]:
    x: npt.NDArray[Any] = np.load(zoo / "mlp_mnist.input_0.npy")
    return x


def test_compile_save_load_run(zoo: Path, tmp_path: Path) -> None:
    blob = accelc.compile(mlp(zoo), "default", 2)
    assert blob.size == len(blob.data) > 0
    assert [a.name for a in blob.get_inputs()] == ["input"]
    assert blob.get_outputs()[0].shape == [1, 10]
    text = blob.inspect()
    assert "input input: tensor(float) [1, 1, 28, 28]" in text and "MACs" in text
    path = tmp_path / "m.blob"
    blob.save(path)
    again = accelc.Blob.load(path)
    assert again.data == blob.data
    y = again.run({"input": mlp_input(zoo)})["output"]
    want = np.load(zoo / "mlp_mnist.output_0.npy")
    np.testing.assert_allclose(y, want, rtol=1e-3, atol=1e-5)
    # The same through the one-call form, and a model as bytes.
    y2 = accelc.run(mlp(zoo).read_bytes(), {"input": mlp_input(zoo)})["output"]
    assert np.array_equal(y, y2)


def test_check_reports_placement_and_blockers(zoo: Path) -> None:
    r = accelc.check(mlp(zoo))
    assert r.supported and not r.blockers and r.opset == 17
    assert all(n.on_device for n in r.nodes) and len(r.nodes) >= 3
    live = HEADER + "g (float[4] x) => (float[4] y) {\n  t = Det (x)\n  y = Relu (t)\n}\n"
    r = accelc.check(live)
    assert not r.supported and r.compile_error is not None
    first = r.blockers[0]
    assert first.op_type == "Det" and first.stage == "import"
    assert first.reason is not None and "`Det` is not supported" in first.reason


def test_diff_finds_no_difference_on_a_correct_model(zoo: Path) -> None:
    assert accelc.diff(mlp(zoo)) is None
    assert accelc.diff(mlp(zoo), {"input": mlp_input(zoo)}) is None


def test_reference_interpreter_matches_onnxruntime(zoo: Path) -> None:
    y = accelc.reference(mlp(zoo), {"input": mlp_input(zoo)})["output"]
    np.testing.assert_allclose(y, np.load(zoo / "mlp_mnist.output_0.npy"), rtol=1e-3, atol=1e-5)


def test_profile_records_and_roofline_svg(zoo: Path, tmp_path: Path) -> None:
    p = accelc.profile(zoo / "resnet18.onnx", {"input": np.load(zoo / "resnet18.input_0.npy")})
    assert len(p.layers) > 20
    assert sum(l.cycles for l in p.layers) <= p.total_cycles
    conv = [l for l in p.layers if l.macs > 0]
    assert sum(l.macs for l in conv) > 1_700_000_000
    for l in conv:
        assert 0 < l.utilisation <= 1 and l.cycles >= l.roofline_cycles > 0
        assert l.intensity is not None and l.ops_per_sec is not None
        # Under the roof: never faster than the peak or than bandwidth allows.
        peak = 2 * p.config.peak_macs_per_sec("float32")
        assert l.ops_per_sec <= min(peak, p.config.dram_bytes_per_sec * l.intensity) * 1.0001
    svg_path = tmp_path / "roofline.svg"
    svg = p.roofline_svg(svg_path)
    root = ET.parse(svg_path).getroot()
    assert root.tag.endswith("svg") and svg == svg_path.read_text()
    circles = [e for e in root.iter() if e.tag.endswith("circle")]
    assert len(circles) == len(p.layers)


def test_profile_to_pandas(zoo: Path) -> None:
    import pandas as pd

    df = accelc.profile(mlp(zoo)).to_pandas()
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns)[:3] == ["name", "kind", "cycles"] and len(df) == 3


@pytest.mark.parametrize(
    "dtype,onnx",
    [("int8", "int8"), ("uint8", "uint8"), ("int32", "int32"), ("bool", "bool"), ("float32", "float")],
)
def test_numpy_types_in_and_out(dtype: str, onnx: str) -> None:
    model = HEADER + f"g ({onnx}[2,3] x) => ({onnx}[3,2] y, {onnx}[2,3] z) {{\n" \
        "  s = Constant <value_ints: ints = [3, 2]> ()\n  y = Reshape (x, s)\n  z = Identity (x)\n}\n"
    x = (np.arange(6).reshape(2, 3) % 2).astype(dtype)
    sess = accelc.InferenceSession(model.encode())
    assert sess.get_inputs()[0].type == f"tensor({onnx})"
    y, z = sess.run(None, {"x": x})
    assert y.dtype == np.dtype(dtype) and z.dtype == np.dtype(dtype)
    assert np.array_equal(y, x.reshape(3, 2)) and np.array_equal(z, x)
    # Non-contiguous input arrays are accepted (copied into row-major order).
    xt = np.asfortranarray(x)
    assert np.array_equal(sess.run(["z"], {"x": xt})[0], x)


def test_errors_carry_locations(tmp_path: Path, zoo: Path) -> None:
    with pytest.raises(accelc.ModelError, match=r"2:\d+"):
        accelc.compile(HEADER + "g (float[2] x) => (float[2] y) { y = Relu (x,, }\n")
    with pytest.raises(accelc.ModelError, match="node `Relu_0`.*takes 1 input, not 2"):
        accelc.compile(HEADER + "g (float[2] x) => (float[2] y) { y = Relu (x, x) }\n")
    with pytest.raises(accelc.UnsupportedError, match="Det"):
        accelc.compile(HEADER + "g (float[2] x) => (float[2] y) { y = Det (x) }\n")
    data = bytearray(accelc.compile(mlp(zoo)).data)
    data[200] ^= 0xFF
    with pytest.raises(accelc.BlobError, match="byte 0x"):
        accelc.Blob.from_bytes(bytes(data))
    sess = accelc.InferenceSession(mlp(zoo))
    x = mlp_input(zoo)
    with pytest.raises(accelc.InputError, match="float64"):
        sess.run(None, {"input": x.astype(np.float64)})
    with pytest.raises(accelc.InputError, match=r"\[1, 784\]"):
        sess.run(None, {"input": x.reshape(1, 784)})
    with pytest.raises(accelc.InputError, match="not given"):
        sess.run(None, {})
    with pytest.raises(accelc.InputError, match="no input named `nope`"):
        sess.run(None, {"input": x, "nope": x})
    with pytest.raises(accelc.InputError, match="no output named `nope`"):
        sess.run(["nope"], {"input": x})
    # Every accelc error is an AccelcError.
    assert issubclass(accelc.UnsupportedError, accelc.ModelError)
    for e in (accelc.ModelError, accelc.BlobError, accelc.DeviceError, accelc.InputError):
        assert issubclass(e, accelc.AccelcError)


def test_the_gil_is_released_while_the_device_runs(zoo: Path) -> None:
    sess = accelc.InferenceSession(zoo / "resnet18.onnx")
    x = np.load(zoo / "resnet18.input_0.npy")
    done = threading.Event()
    ticks = 0

    def job() -> None:
        sess.run(None, {"input": x})
        done.set()

    t = threading.Thread(target=job)
    t.start()
    # Python code keeps running on this thread while the simulated device works.
    while not done.is_set():
        ticks += 1
        done.wait(0.001)
    t.join()
    assert ticks > 20, f"the main thread ran only {ticks} times during a resnet18 run"


@pytest.mark.parametrize("dtype,onnx", [("int64", "int64"), ("int32", "int32"), ("bool", "bool")])
def test_reference_takes_and_gives_every_ir_type(dtype: str, onnx: str) -> None:
    # int64 has no device type (the device refuses it by name); the reference runs it.
    model = HEADER + f"g ({onnx}[3] x) => ({onnx}[3] y) {{\n  y = Identity (x)\n}}\n"
    x = np.array([1, 0, 1]).astype(dtype)
    y = accelc.reference(model, {"x": x})["y"]
    assert y.dtype == np.dtype(dtype) and np.array_equal(y, x)
    if dtype == "int64":
        # int64 has no device type: the model compiles to a plan that runs it on the host.
        blob = accelc.compile(model)
        y2 = blob.run({"x": x})["y"]
        assert y2.dtype == np.int64 and np.array_equal(y2, x)


def test_inputs_in_every_form_numpy_and_onnxruntime_accept(zoo: Path) -> None:
    scalar = HEADER + "g (float[] a) => (float[] y) { y = Relu (a) }\n"
    sess = accelc.InferenceSession(scalar)
    for a in (np.array(-2.0, np.float32), np.float32(3.0), 4.0):
        (y,) = sess.run(None, {"a": a})
        assert y.shape == () and y == max(float(a), 0.0)
    x = mlp_input(zoo)
    m = accelc.InferenceSession(mlp(zoo))
    (want,) = m.run(None, {"input": x})
    (big,) = m.run(None, {"input": x.astype(">f4")})
    (lst,) = m.run(None, {"input": x.tolist()})
    assert np.array_equal(big, want) and np.array_equal(lst, want)
    with pytest.raises(TypeError, match="output_names"):
        m.run("output", {"input": x})


def test_onnxruntime_preamble_runs(zoo: Path) -> None:
    so = accelc.SessionOptions()
    so.graph_optimization_level = accelc.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 1
    assert "AccelcExecutionProvider" in accelc.get_available_providers()
    sess = accelc.InferenceSession(str(mlp(zoo)), so, providers=accelc.get_available_providers())
    (y,) = sess.run(None, {"input": mlp_input(zoo)}, accelc.RunOptions())
    assert y.shape == (1, 10)


def test_configs_pickle_and_refuse_a_builtin_name() -> None:
    import copy
    import pickle

    c = accelc.DeviceConfig("a64", array_dim=64, spad_bytes=2 << 20)
    assert pickle.loads(pickle.dumps(c)) == c and copy.deepcopy(c) == c
    e = accelc.InputError("x")
    assert type(pickle.loads(pickle.dumps(e))) is accelc.InputError
    assert accelc.InputError.__module__ == "accelc._native"
    with pytest.raises(accelc.InputError, match="built-in configuration's name"):
        accelc.DeviceConfig("default", array_dim=8)
    assert accelc.DeviceConfig("default") == accelc.DeviceConfig.builtin("default")


def test_a_device_without_f32_matmul_runs_the_gemms_on_the_host(zoo: Path) -> None:
    cfg = accelc.DeviceConfig("nof32", features=0)
    r = accelc.check(mlp(zoo), cfg)
    assert r.supported and not r.blockers
    host = {n.name: n.reason for n in r.on_host}
    assert "/net/net.1/Gemm" in host, r.nodes
    assert "no f32 matmul" in (host["/net/net.1/Gemm"] or "")
    # The plan (device jobs for what the device runs, host calls for the Gemms) matches
    # onnxruntime's stored output.
    blob = accelc.compile(mlp(zoo), cfg)
    y = blob.run({"input": mlp_input(zoo)})["output"]
    np.testing.assert_allclose(y, np.load(zoo / "mlp_mnist.output_0.npy"), rtol=1e-3, atol=1e-5)
    (arg,) = blob.get_inputs()
    assert arg.name == "input" and arg.shape == list(mlp_input(zoo).shape)


def test_the_job_limit_can_be_raised(zoo: Path) -> None:
    slow = accelc.DeviceConfig("slow", dram_bytes_per_sec=10**6)
    blob = accelc.compile(mlp(zoo), slow)
    with pytest.raises(accelc.DeviceError, match="max_job_cycles"):
        blob.run({"input": mlp_input(zoo)})
    blob = accelc.compile(mlp(zoo), slow, max_job_cycles=1 << 31)
    _, cycles = blob.run_with_cycles({"input": mlp_input(zoo)})
    assert cycles > 1 << 28


def test_model_metadata_matches_onnxruntime(zoo: Path) -> None:
    import onnxruntime as ort

    for stem in ("mlp_mnist", "transformer_encoder"):
        model = str(zoo / f"{stem}.onnx")
        want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).get_modelmeta()
        got = accelc.InferenceSession(model).get_modelmeta()
        for f in ("producer_name", "graph_name", "graph_description", "domain", "description",
                  "version", "custom_metadata_map"):
            assert getattr(got, f) == getattr(want, f), (stem, f)


def test_reference_names_a_wrong_input_shape_or_type(zoo: Path) -> None:
    x = mlp_input(zoo)
    with pytest.raises(accelc.InputError, match=r"input `input` is float\[1, 784\]; the model takes float\[1, 1, 28, 28\]"):
        accelc.reference(mlp(zoo), {"input": x.reshape(1, 784)})
    # float64 is a type of its own (not converted): a type mismatch, named.
    with pytest.raises(accelc.InputError, match=r"input `input` is double\[1, 1, 28, 28\]; the model takes float\[1, 1, 28, 28\]"):
        accelc.reference(mlp(zoo), {"input": x.astype(np.float64)})
    with pytest.raises(accelc.InputError, match=r"^input `input`: numpy dtype `<c8` is not supported"):
        accelc.reference(mlp(zoo), {"input": x.astype(np.complex64)})


def test_a_model_with_host_regions_checks_runs_and_diffs() -> None:
    # int64 arithmetic between two device Relus: a device job, a host call, a device job.
    model = HEADER + (
        "g (float[2,3] x) => (float[2,3] y) {\n  a = Relu (x)\n  i = Cast <to: int = 7> (a)\n"
        "  j = Mul (i, i)\n  f = Cast <to: int = 1> (j)\n  y = Relu (f)\n}\n"
    )
    r = accelc.check(model)
    assert r.supported and not r.blockers
    assert sorted(n.op_type for n in r.on_host) == ["Cast", "Cast", "Mul"]
    assert all(n.placement == "device" for n in r.nodes if n.op_type == "Relu")
    x = np.array([[1.5, -2.0, 3.7], [0.2, 9.9, -0.5]], np.float32)
    (y,) = accelc.InferenceSession(model).run(None, {"x": x})
    want = np.trunc(np.maximum(x, 0)).astype(np.int64) ** 2
    assert np.array_equal(y, want.astype(np.float32))
    assert accelc.diff(model, {"x": x}) is None
