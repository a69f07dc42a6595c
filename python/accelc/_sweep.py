"""Design-space sweeps: compile and simulate every (model, configuration) pair on any
``concurrent.futures.Executor`` (a local process pool by default; Dask distributed's
``Client.get_executor()`` or Ray's for a cluster) and tabulate cycles, utilisation and peak
on-chip memory, with the Pareto front."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import _core
from ._native import AccelcError, DeviceConfig

_FIELDS = (
    "array_dim",
    "vx_lanes",
    "spad_bytes",
    "acc_bytes",
    "clock_hz",
    "dram_bytes_per_sec",
    "dram_read_latency",
    "dram_write_latency",
    "dram_burst_bytes",
    "sram_bytes_per_cycle",
    "features",
    "array_row_cycles",
)


def _plain(config: DeviceConfig) -> Dict[str, Any]:
    """A configuration as a plain dict, which pickles to any worker."""
    d: Dict[str, Any] = {f: getattr(config, f) for f in _FIELDS}
    d["name"] = config.name
    return d


def _rebuilt(d: Dict[str, Any]) -> DeviceConfig:
    fields = {k: v for k, v in d.items() if k != "name"}
    return DeviceConfig(d["name"], **fields)


@dataclass(frozen=True)
class SweepRow:
    """One (model, configuration) pair: its figures, or why it failed."""

    model: str
    config: str
    #: Simulated cycles of one inference (``None`` on failure).
    cycles: Optional[int]
    #: Wall time at the configuration's clock, in seconds.
    seconds: Optional[float]
    #: MACs over cycles times the peak f32 MACs per cycle (0..1).
    utilisation: Optional[float]
    #: Peak on-chip bytes (scratchpad plus accumulator).
    peak_sram_bytes: Optional[int]
    #: Multiply-accumulates of one inference.
    macs: Optional[int]
    #: The error's class and message when the pair failed to compile or run.
    error: Optional[str]


def _one(model: Union[str, bytes], label: str, cfg: Dict[str, Any], opt_level: int,
         seed: int) -> SweepRow:
    """Compiles and simulates one pair (runs in a worker process)."""
    config = _rebuilt(cfg)
    try:
        blob = _core.compile(model, config, opt_level)
        prof = _core.profile(blob, None, seed=seed)
    except AccelcError as e:
        return SweepRow(label, config.name, None, None, None, None, None,
                        f"{type(e).__name__}: {e}")
    peak = config.peak_macs_per_sec("float32") / config.clock_hz  # MACs per cycle
    cycles = prof.total_cycles
    util = prof.macs / (max(cycles, 1) * peak) if peak else 0.0
    return SweepRow(label, config.name, cycles, cycles / config.clock_hz, util,
                    blob.peak_sram_bytes, prof.macs, None)


@dataclass
class SweepResult:
    """The table of a sweep, one row per (model, configuration) pair, in the order given."""

    rows: List[SweepRow]

    def to_pandas(self) -> Any:
        """The table as a pandas DataFrame (pandas must be installed)."""
        import pandas as pd

        return pd.DataFrame([asdict(r) for r in self.rows])

    def pareto(self, model: Optional[str] = None) -> List[SweepRow]:
        """The rows of ``model`` no other row of it beats on both cycles and peak on-chip
        memory (lower is better on both), sorted by cycles; with ``model=None``, each model's
        front, model by model (configurations compete, models do not)."""
        if model is None:
            names = list(dict.fromkeys(r.model for r in self.rows))
            return [r for m in names for r in self.pareto(m)]
        ok = [r for r in self.rows if r.error is None and r.model == model]
        front = []
        for r in ok:
            assert r.cycles is not None and r.peak_sram_bytes is not None
            dominated = any(
                o.cycles is not None and o.peak_sram_bytes is not None
                and o.cycles <= r.cycles and o.peak_sram_bytes <= r.peak_sram_bytes
                and (o.cycles < r.cycles or o.peak_sram_bytes < r.peak_sram_bytes)
                for o in ok
            )
            if not dominated:
                front.append(r)
        return sorted(front, key=lambda r: r.cycles or 0)

    def plot_pareto(self, model: Optional[str] = None, ax: Any = None) -> Any:
        """Cycles against peak on-chip memory, each pair a point, the Pareto front joined;
        needs matplotlib. Returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(8, 5))
        ok = [r for r in self.rows if r.error is None and (model is None or r.model == model)]
        ax.scatter([r.peak_sram_bytes for r in ok], [r.cycles for r in ok], label="pairs")
        for r in ok:
            ax.annotate(f"{r.model}@{r.config}", (r.peak_sram_bytes, r.cycles), fontsize=7)
        names = [model] if model is not None else list(dict.fromkeys(r.model for r in ok))
        for m in names:
            front = sorted(self.pareto(m), key=lambda r: r.peak_sram_bytes or 0)
            ax.plot([r.peak_sram_bytes for r in front], [r.cycles for r in front],
                    label=f"Pareto front of {m}")
        ax.set_xlabel("peak on-chip memory (bytes)")
        ax.set_ylabel("cycles per inference")
        ax.set_yscale("log")
        ax.legend()
        return ax


def _label(model: _core.Model) -> Tuple[Union[str, bytes], str]:
    m = _core._model(model)
    if isinstance(m, bytes):
        return m, f"model-{hashlib.sha256(m).hexdigest()[:8]}"
    return os.path.abspath(m), os.path.basename(m)


def sweep(
    models: Sequence[_core.Model],
    configs: Sequence[_core.Config],
    executor: Optional[Executor] = None,
    opt_level: int = 2,
    seed: int = 0,
) -> SweepResult:
    """Compiles and simulates every (model, configuration) pair, each as one task on
    ``executor`` (a local process pool of ``os.cpu_count()`` workers when ``None``; any
    ``concurrent.futures.Executor`` otherwise, e.g. ``dask.distributed.Client(...)
    .get_executor()``), on random inputs from ``seed``. A pair that fails becomes a row with
    its error, so one unsupported model does not lose the sweep. Paths are made absolute, so
    workers on other machines need the same file system (or pass models as bytes)."""
    # One model or configuration given alone (a string is a sequence of characters).
    if isinstance(models, (str, bytes, os.PathLike)):
        models = [models]
    if isinstance(configs, (str, DeviceConfig)):
        configs = [configs]
    cfgs = [_plain(_core._config(c)) for c in configs]
    tasks = [(m, label, c) for m, label in map(_label, models) for c in cfgs]
    own = executor is None
    ex = executor if executor is not None else ProcessPoolExecutor()
    try:
        futures = [ex.submit(_one, m, label, c, opt_level, seed) for m, label, c in tasks]
        return SweepResult([f.result() for f in futures])
    finally:
        if own:
            ex.shutdown()
