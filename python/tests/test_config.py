"""Device configurations built at run time: validated, compiled for, run on, and refused by
blobs built for other hardware."""

from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

import accelc


def test_builtins_are_listed() -> None:
    names = [c.name for c in accelc.configs()]
    assert names[:2] == ["default", "tiny"]
    d = accelc.DeviceConfig.builtin("default")
    assert d.array_dim == 32 and d.peak_macs_per_sec("int8") == 32 * 32 * 10**9
    assert d.ridge_ops_per_byte("float32") == pytest.approx(2 * d.peak_macs_per_sec("float32") / 8e9)
    with pytest.raises(accelc.InputError, match="no device configuration `nope`"):
        accelc.DeviceConfig.builtin("nope")


@pytest.mark.parametrize("array_dim,spad", [(16, 256 << 10), (64, 4 << 20)])
def test_a_custom_configuration_compiles_and_matches(
    zoo: Path, tmp_path: Path, array_dim: int, spad: int
) -> None:
    cfg = accelc.DeviceConfig(
        f"a{array_dim}", array_dim=array_dim, vx_lanes=array_dim, spad_bytes=spad,
        dram_bytes_per_sec=16_000_000_000, dram_read_latency=300,
    )
    assert cfg.array_dim == array_dim and cfg.name == f"a{array_dim}"
    x = np.load(zoo / "squeezenet1_1.input_0.npy")
    blob = accelc.compile(zoo / "squeezenet1_1.onnx", cfg)
    assert blob.config == cfg
    outs, cycles = blob.run_with_cycles({"input": x})
    np.testing.assert_allclose(
        outs["output"], np.load(zoo / "squeezenet1_1.output_0.npy"), rtol=1e-3, atol=1e-5
    )
    assert cycles > 0
    path = tmp_path / "c.blob"
    blob.save(path)
    # The blob records the parameters its validity depends on; it loads with its configuration.
    assert np.array_equal(accelc.Blob.load(path, cfg).run({"input": x})["output"], outs["output"])
    with pytest.raises(accelc.BlobError, match="not a built-in"):
        accelc.Blob.load(path)
    with pytest.raises(accelc.BlobError, match="other parameters"):
        accelc.Blob.load(path, "default")


def test_a_bigger_array_is_faster_on_resnet18(zoo: Path) -> None:
    x = {"input": np.load(zoo / "resnet18.input_0.npy")}
    small = accelc.compile(zoo / "resnet18.onnx", accelc.DeviceConfig("a16", array_dim=16))
    big = accelc.compile(zoo / "resnet18.onnx", "default")
    assert small.run_with_cycles(x)[1] > big.run_with_cycles(x)[1]


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("array_dim", 48, "array_dim = 48: must be a power of two"),
        ("spad_bytes", 1 << 30, "spad_bytes = 1073741824: must be from"),
        ("clock_hz", 0, "clock_hz = 0"),
        ("dram_burst_bytes", 3, "dram_burst_bytes = 3"),
        ("features", 0x80, "features = 0x80"),
    ],
)
def test_out_of_range_fields_are_named(field: str, value: int, message: str) -> None:
    with pytest.raises(accelc.InputError, match=message):
        kwargs: Dict[str, Any] = {field: value}
        accelc.DeviceConfig("bad", **kwargs)


def test_bad_names_and_bases_are_refused() -> None:
    with pytest.raises(accelc.InputError, match="name"):
        accelc.DeviceConfig("has space")
    with pytest.raises(accelc.InputError, match="no device configuration `nope`"):
        accelc.DeviceConfig("x", base="nope")
