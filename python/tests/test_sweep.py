"""Design-space sweeps on a local process pool and on a Dask LocalCluster give the same table;
a failing pair is a row with its error; the Pareto front is non-dominated."""

from pathlib import Path
from typing import List, Union

import accelc

UNSUPPORTED = b'<ir_version: 8, opset_import: ["" : 17]>\ng (float[2] x) => (float[2] y) { y = Det (x) }\n'


def grid() -> List[accelc.DeviceConfig]:
    return [
        accelc.DeviceConfig("a16", array_dim=16, spad_bytes=256 << 10),
        accelc.DeviceConfig.builtin("default"),
        accelc.DeviceConfig("a64", array_dim=64, vx_lanes=64, spad_bytes=2 << 20),
    ]


def check_table(r: accelc.SweepResult, zoo: Path) -> None:
    assert [(row.model, row.config) for row in r.rows] == [
        (m, c)
        for m in ("mlp_mnist.onnx", "squeezenet1_1.onnx", r.rows[-1].model)
        for c in ("a16", "default", "a64")
    ]
    ok = [row for row in r.rows if row.error is None]
    assert len(ok) == 6
    for row in ok:
        assert row.cycles and row.cycles > 0 and row.peak_sram_bytes and row.macs
        assert row.utilisation is not None and 0 < row.utilisation <= 1
    bad = [row for row in r.rows if row.error is not None]
    assert len(bad) == 3 and all("UnsupportedError" in (b.error or "") for b in bad)
    squeeze = [row for row in ok if row.model == "squeezenet1_1.onnx"]
    small, big = squeeze[0].cycles, squeeze[2].cycles
    assert small is not None and big is not None and small > big  # 16x16 is slower than 64x64
    front = r.pareto("squeezenet1_1.onnx")
    assert front
    for f in front:
        assert not any(
            o.cycles is not None and f.cycles is not None
            and o.peak_sram_bytes is not None and f.peak_sram_bytes is not None
            and o.cycles < f.cycles and o.peak_sram_bytes < f.peak_sram_bytes
            for o in squeeze
        )


def test_sweep_on_a_process_pool(zoo: Path) -> None:
    models: List[Union[Path, bytes]] = [zoo / "mlp_mnist.onnx", zoo / "squeezenet1_1.onnx", UNSUPPORTED]
    r = accelc.sweep(models, grid())
    check_table(r, zoo)


def test_sweep_on_a_dask_local_cluster(zoo: Path) -> None:
    import distributed

    models: List[Union[Path, bytes]] = [zoo / "mlp_mnist.onnx", zoo / "squeezenet1_1.onnx", UNSUPPORTED]
    # distributed has no type annotations.
    with distributed.LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        with distributed.Client(cluster) as client:  # type: ignore[no-untyped-call]
            r = accelc.sweep(models, grid(), executor=client.get_executor())
    check_table(r, zoo)
    # The simulator is deterministic: the same table as the local pool.
    local = accelc.sweep(models, grid())
    assert [row.cycles for row in r.rows] == [row.cycles for row in local.rows]


def test_one_model_or_config_given_alone(zoo: Path) -> None:
    r = accelc.sweep(str(zoo / "mlp_mnist.onnx"), "default")
    assert len(r.rows) == 1 and r.rows[0].error is None
