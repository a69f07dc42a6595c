"""The Python half of accelc: numpy conversion and small result objects over the native
module (``accelc._native``), which wraps the Rust facade. No compiler logic lives here."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from . import _native
from ._native import DeviceConfig, InputError

#: A model: a path, binary ONNX bytes, or ONNX text syntax (bytes or str starting with ``<``).
Model = Union[str, "os.PathLike[str]", bytes]
#: A configuration: a built-in's name or a :class:`DeviceConfig`.
Config = Union[str, DeviceConfig]

# numpy dtype string -> onnxruntime type string.
_ORT_TYPES = {
    "<f4": "tensor(float)",
    "|i1": "tensor(int8)",
    "|u1": "tensor(uint8)",
    "<i4": "tensor(int32)",
    "<i8": "tensor(int64)",
    "|b1": "tensor(bool)",
}

Wire = Tuple[str, List[int], bytes]


def _config(config: Config) -> DeviceConfig:
    if isinstance(config, DeviceConfig):
        return config
    if isinstance(config, str):
        return DeviceConfig.builtin(config)
    raise TypeError(f"config must be a name or a DeviceConfig, not {type(config).__name__}")


def _model(model: Model) -> Union[str, bytes]:
    """Paths as str, text models as UTF-8 bytes, binary models as they are."""
    if isinstance(model, bytes):
        return model
    if isinstance(model, str) and model.lstrip().startswith("<"):
        return model.encode()
    return os.fspath(model)


def _to_wire(name: str, value: Any, dtype: Optional[str], shape: Sequence[int]) -> Wire:
    """A numpy-convertible input as ``(dtype, shape, bytes)``, checked against the signature
    (``dtype`` is the numpy dtype string the model takes)."""
    if isinstance(value, np.ndarray) or np.isscalar(value) and isinstance(value, np.generic):
        a = np.asarray(value)
    else:
        # Python lists and scalars take the model's type, as onnxruntime converts them.
        a = np.asarray(value, dtype=None if dtype is None else np.dtype(dtype))
    if a.dtype.byteorder == ">":
        # Big-endian data in the model's type: the same values, byte-swapped for the device.
        a = a.astype(a.dtype.newbyteorder("<"))
    if dtype is not None and a.dtype != np.dtype(dtype):
        raise InputError(
            f"input `{name}` is {a.dtype}{list(a.shape)}; the model takes "
            f"{np.dtype(dtype)}{list(shape)}"
        )
    # Row-major bytes; np.require keeps 0-d arrays 0-d (ascontiguousarray makes them 1-d).
    a = np.require(a, requirements="C")
    return (a.dtype.str, list(a.shape), a.tobytes())


def _from_wire(dtype: str, shape: Sequence[int], data: bytes) -> npt.NDArray[Any]:
    # A copy, so the array is writable and owns its memory, as onnxruntime's outputs do.
    return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(tuple(shape)).copy()


@dataclass(frozen=True)
class NodeArg:
    """A model input or output as onnxruntime's ``NodeArg`` describes it."""

    name: str
    #: Dimensions (all static in a compiled model).
    shape: List[int]
    #: onnxruntime's type string, e.g. ``tensor(float)``.
    type: str


@dataclass(frozen=True)
class ModelMetadata:
    """The model's metadata as onnxruntime's ``ModelMetadata`` gives it."""

    producer_name: str
    graph_name: str
    graph_description: str
    domain: str
    description: str
    version: int
    custom_metadata_map: Dict[str, str]


def _args(specs: Iterable[Tuple[str, Optional[str], List[int]]]) -> List[NodeArg]:
    return [
        NodeArg(name, [int(d) for d in dims], _ORT_TYPES.get(dtype or "", "tensor(unknown)"))
        for name, dtype, dims in specs
    ]


class Blob:
    """A compiled model (a command blob) for one device configuration.

    Made by :func:`compile` or :meth:`Blob.load`; runs on a simulated device of its
    configuration, loaded on first use and reused."""

    def __init__(self, native: _native.NativeBlob) -> None:
        self._native = native

    @classmethod
    def load(
        cls,
        path: Union[str, "os.PathLike[str]"],
        config: Optional[Config] = None,
        max_job_cycles: Optional[int] = None,
    ) -> "Blob":
        """Reads a blob file. ``config`` is needed only for a custom configuration (blobs
        record what a program's validity depends on, not the timing). Raises ``BlobError``
        with the byte offset of what is malformed."""
        with open(path, "rb") as f:
            data = f.read()
        return cls.from_bytes(data, config, max_job_cycles)

    @classmethod
    def from_bytes(
        cls, data: bytes, config: Optional[Config] = None, max_job_cycles: Optional[int] = None
    ) -> "Blob":
        """As :meth:`load`, from the blob's bytes. ``max_job_cycles`` raises the device's job
        limit (2^28 cycles by default)."""
        cfg = None if config is None else _config(config)
        return cls(_native.load_blob(data, cfg, max_job_cycles))

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Writes the blob to ``path`` (through a temporary file renamed into place, so a
        failure never leaves a half-written file)."""
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                f.write(self.data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @property
    def data(self) -> bytes:
        """The blob's bytes."""
        return self._native.data()

    @property
    def size(self) -> int:
        """Size in bytes."""
        return len(self._native)

    def __len__(self) -> int:
        return len(self._native)

    @property
    def config(self) -> DeviceConfig:
        """The configuration it runs on."""
        return self._native.config

    def get_inputs(self) -> List[NodeArg]:
        """Inputs in signature order."""
        return _args(self._native.inputs())

    def get_outputs(self) -> List[NodeArg]:
        """Outputs in order."""
        return _args(self._native.outputs())

    def inspect(self) -> str:
        """A summary: size, configuration, I/O, and the compiler's figures when compiled in
        this process (peak scratchpad and accumulator bytes, arena, estimated cycles)."""
        lines = [f"blob of {self.size} bytes for `{self.config.name}`"]
        for kind, args in (("input", self.get_inputs()), ("output", self.get_outputs())):
            for a in args:
                lines.append(f"  {kind} {a.name}: {a.type} {a.shape}")
        fig = self._native.figures()
        if fig is not None:
            spad, acc, arena, est, nodes = fig
            lines.append(
                f"  {nodes} graph nodes; scratchpad peak {spad} bytes, accumulator peak {acc} "
                f"bytes, arena {arena} bytes; estimated {est} cycles"
            )
        layers = self._native.layers()
        if layers is not None:
            lines.append(f"  {len(layers)} layers, {sum(l[2] for l in layers)} MACs")
        return "\n".join(lines)

    @property
    def peak_sram_bytes(self) -> Optional[int]:
        """Peak on-chip bytes (scratchpad plus accumulator) of the program, when compiled in
        this process."""
        fig = self._native.figures()
        return None if fig is None else fig[0] + fig[1]

    def _inputs(self, feed: Optional[Mapping[str, Any]], seed: int) -> List[Wire]:
        specs = self._native.inputs()
        if feed is None:
            return [(d, s, bytes(b)) for d, s, b in self._native.random_inputs(seed)]
        names = [n for n, _, _ in specs]
        unknown = [k for k in feed if k not in names]
        if unknown:
            raise InputError(f"no input named `{unknown[0]}` (the model takes {', '.join(names)})")
        missing = [n for n in names if n not in feed]
        if missing:
            raise InputError(f"input `{missing[0]}` is not given")
        return [_to_wire(n, feed[n], d, s) for n, d, s in specs]

    def run(
        self, inputs: Optional[Mapping[str, Any]] = None, seed: int = 0
    ) -> Dict[str, npt.NDArray[Any]]:
        """Runs once on the simulated device. ``inputs`` maps every input name to an array of
        its type and shape (random ones from ``seed`` when ``None``). Returns the outputs by
        name. Raises ``InputError`` for inputs that do not fit, ``DeviceError`` for a fault."""
        outs, _cycles = self._native.run(self._inputs(inputs, seed))
        names = [a.name for a in self.get_outputs()]
        return {n: _from_wire(*o) for n, o in zip(names, outs)}

    def run_with_cycles(
        self, inputs: Optional[Mapping[str, Any]] = None, seed: int = 0
    ) -> Tuple[Dict[str, npt.NDArray[Any]], int]:
        """As :meth:`run`, with the job's simulated cycles."""
        outs, cycles = self._native.run(self._inputs(inputs, seed))
        names = [a.name for a in self.get_outputs()]
        return {n: _from_wire(*o) for n, o in zip(names, outs)}, int(cycles)


def compile(
    model: Model,
    config: Config = "default",
    opt_level: int = 2,
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
    max_job_cycles: Optional[int] = None,
) -> Blob:
    """Compiles an ONNX model (path, bytes or text) for ``config`` at ``opt_level`` (0, 1, 2).
    ``input_shapes`` fixes symbolic input dimensions by input name; ``max_job_cycles`` raises
    the device's job limit for its runs (2^28 cycles by default). Raises ``ModelError`` naming
    the node (``UnsupportedError`` when the device cannot run it)."""
    if isinstance(opt_level, bool) or opt_level not in (0, 1, 2):
        raise InputError(f"opt_level {opt_level!r}: must be 0, 1 or 2")
    shapes = None if input_shapes is None else {k: list(v) for k, v in input_shapes.items()}
    native = _native.compile(_model(model), _config(config), opt_level, shapes, max_job_cycles)
    return Blob(native)


def configs() -> List[DeviceConfig]:
    """Every built-in device configuration."""
    return _native.configs()


class InferenceSession:
    """onnxruntime's ``InferenceSession`` on the simulated device: the model is compiled once
    when the session is made, and each :meth:`run` is one job on the device.

    ``providers``, ``sess_options`` and ``provider_options`` are accepted so onnxruntime
    scripts run unchanged; they do not change anything (the accelc device is the provider)."""

    def __init__(
        self,
        path_or_bytes: Model,
        sess_options: Any = None,
        providers: Optional[Sequence[Any]] = None,
        provider_options: Optional[Sequence[Any]] = None,
        *,
        config: Config = "default",
        opt_level: int = 2,
        input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
        max_job_cycles: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        del sess_options, providers, provider_options, kwargs
        self._model = _model(path_or_bytes)
        self._blob = compile(self._model, config, opt_level, input_shapes, max_job_cycles)
        self._meta: Optional[ModelMetadata] = None

    @property
    def blob(self) -> Blob:
        """The compiled model."""
        return self._blob

    def get_inputs(self) -> List[NodeArg]:
        """Inputs in signature order."""
        return self._blob.get_inputs()

    def get_outputs(self) -> List[NodeArg]:
        """Outputs in order."""
        return self._blob.get_outputs()

    def get_overridable_initializers(self) -> List[NodeArg]:
        """None: initializers are compiled into the blob."""
        return []

    def get_providers(self) -> List[str]:
        """The one provider: the accelc device."""
        return ["AccelcExecutionProvider"]

    def get_modelmeta(self) -> ModelMetadata:
        """The model's metadata (producer, graph name, version, custom properties)."""
        if self._meta is None:
            p, g, gd, d, desc, v, custom = _native.model_meta(self._model)
            self._meta = ModelMetadata(p, g, gd, d, desc, v, dict(custom))
        return self._meta

    def run(
        self,
        output_names: Optional[Sequence[str]],
        input_feed: Mapping[str, Any],
        run_options: Any = None,
    ) -> List[npt.NDArray[Any]]:
        """Runs the model: ``input_feed`` maps every input name to an array; returns the
        outputs named in ``output_names`` (every output when ``None`` or empty), in that
        order. Raises ``InputError`` for a missing, unknown or mistyped input or an unknown
        output name."""
        del run_options
        if isinstance(output_names, (str, bytes)):
            raise TypeError("output_names must be a list of names or None, not a string")
        outs = self._blob.run(input_feed)
        if not output_names:
            return list(outs.values())
        missing = [n for n in output_names if n not in outs]
        if missing:
            raise InputError(f"no output named `{missing[0]}` (the model has {', '.join(outs)})")
        return [outs[n] for n in output_names]


@dataclass(frozen=True)
class NodeCheck:
    """Where one node runs: on the device, or why not."""

    name: str
    op_type: str
    #: ``import``, ``frontend`` or ``device``: where it was decided.
    stage: str
    #: Why it does not run on the device (``None`` when it does).
    reason: Optional[str]
    #: Where the compiled model runs it: ``"device"``, ``"host"`` (the CPU, through the
    #: plan's MLIR host code), or ``None`` when the model does not compile.
    placement: Optional[str] = None

    @property
    def on_device(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class CheckReport:
    """Per-node placement and blockers, decided by the code ``compile`` runs."""

    opset: int
    imported_nodes: int
    nodes: List[NodeCheck]
    #: ``compile``'s error for this configuration, ``None`` when it succeeds.
    compile_error: Optional[str]

    @property
    def supported(self) -> bool:
        """Whether the model compiles for the device."""
        return self.compile_error is None

    @property
    def blockers(self) -> List[NodeCheck]:
        """The nodes that run nowhere: not on the device, and not placed on the host."""
        return [n for n in self.nodes if n.reason is not None and n.placement != "host"]

    @property
    def on_host(self) -> List[NodeCheck]:
        """The nodes the compiled model runs on the host CPU."""
        return [n for n in self.nodes if n.placement == "host"]


def check(model: Model, config: Config = "default", opt_level: int = 2) -> CheckReport:
    """Which nodes run on the device, which on the host and why, and which run nowhere.
    Raises ``ModelError`` only when the model cannot be imported at all."""
    nodes, (opset, imported, err) = _native.check(_model(model), _config(config), opt_level)
    return CheckReport(opset, imported, [NodeCheck(*n) for n in nodes], err)


def run(
    model: Union[Model, Blob],
    inputs: Optional[Mapping[str, Any]] = None,
    config: Config = "default",
    opt_level: int = 2,
    seed: int = 0,
) -> Dict[str, npt.NDArray[Any]]:
    """Compiles (unless given a :class:`Blob`) and runs once; returns the outputs by name."""
    blob = model if isinstance(model, Blob) else compile(model, config, opt_level)
    return blob.run(inputs, seed)


def _named(inputs: Mapping[str, Any]) -> Dict[str, Wire]:
    return {n: _to_wire(n, v, None, []) for n, v in inputs.items()}


def reference(model: Model, inputs: Mapping[str, Any]) -> Dict[str, npt.NDArray[Any]]:
    """Runs the model on the reference interpreter (the oracle every device result is checked
    against); ``inputs`` maps every input name to an array."""
    return {n: _from_wire(*w) for n, w in _native.reference(_model(model), _named(inputs))}


@dataclass(frozen=True)
class Difference:
    """The first tensor, in program order, on which the device and the reference differ."""

    #: The tensor (ONNX value name).
    tensor: str
    #: The kernel that produced it (its ONNX nodes joined with ``+``).
    layer: str
    #: Its instruction range ``(first, end)``.
    instructions: Tuple[int, int]
    #: The worst element's flat index.
    index: int
    #: The device's value there.
    device: float
    #: The reference's value there.
    reference: float
    #: Largest absolute difference in the tensor.
    max_abs_diff: float
    #: Largest reference magnitude.
    max_reference: float


def diff(
    model: Model,
    inputs: Optional[Mapping[str, Any]] = None,
    config: Config = "default",
    opt_level: int = 2,
    seed: int = 0,
) -> Optional[Difference]:
    """Compares every intermediate tensor of the device's run with the reference interpreter
    and returns the first that differs, or ``None`` when all match (rtol, atol plus a share of
    each tensor's largest magnitude, as the CLI's ``diff``). Random inputs from ``seed`` when
    ``inputs`` is ``None``. Raises ``ModelError`` when nothing could be compared."""
    wires = None if inputs is None else _named(inputs)
    compared, d = _native.diff(_model(model), _config(config), opt_level, wires, seed)
    if d is None:
        if compared == 0:
            raise _native.ModelError(
                "no tensor of the device's run has a counterpart in the reference"
            )
        return None
    tensor, layer, insts, (index, dev, ref), mad, mref = d
    return Difference(tensor, layer, (insts[0], insts[1]), index, dev, ref, mad, mref)


@dataclass(frozen=True)
class LayerRecord:
    """One layer (kernel) of a profiled run."""

    name: str
    #: Kernel kind (``matmul``, ``conv``, ``vector``, ...).
    kind: str
    #: Cycles from the previous kernel's barrier to this one's.
    cycles: int
    #: Multiply-accumulates of useful work.
    macs: int
    #: Bytes its DMA moved.
    dma_bytes: int
    #: MACs over cycles times the matrix engine's peak f32 MACs per cycle (0..1).
    utilisation: float
    #: The roofline bound in cycles.
    roofline_cycles: int
    #: Operations (2 per MAC) per DMA byte (``None`` without MACs or traffic).
    intensity: Optional[float]
    #: Achieved operations per second at the device clock (``None`` without MACs).
    ops_per_sec: Optional[float]


@dataclass
class Profile:
    """A profiled run: per-layer records and the job's total cycles."""

    config: DeviceConfig
    layers: List[LayerRecord]
    total_cycles: int
    title: str = "roofline"
    _rows: List[Tuple[str, int, int, int]] = field(default_factory=list, repr=False)

    @property
    def macs(self) -> int:
        return sum(l.macs for l in self.layers)

    @property
    def roofline_cycles(self) -> int:
        return sum(l.roofline_cycles for l in self.layers)

    def to_pandas(self) -> Any:
        """The layers as a pandas DataFrame (pandas must be installed)."""
        import pandas as pd

        return pd.DataFrame([l.__dict__ for l in self.layers])

    def roofline_svg(self, path: Optional[Union[str, "os.PathLike[str]"]] = None) -> str:
        """The roofline chart as SVG (the chart ``accelc profile --roofline`` draws); written
        to ``path`` when given. Each layer with MACs is a point under the roof."""
        svg = _native.roofline_svg(self._rows, self.config, self.title)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(svg)
        return svg

    def plot_roofline(self, ax: Any = None) -> Any:
        """The roofline chart on a matplotlib ``Axes`` (a new figure's when ``None``); needs
        matplotlib. Returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(8, 5))
        peak = 2.0 * self.config.peak_macs_per_sec("float32")
        bw = float(self.config.dram_bytes_per_sec)
        if peak == 0:
            raise InputError(f"`{self.config.name}` has no float32 matmul: there is no roof")
        pts = [(l.intensity, l.ops_per_sec) for l in self.layers]
        placed = [(x, y) for x, y in pts if x is not None and y is not None]
        floor = len(pts) - len(placed)
        xs = [x for x, _ in placed] + [peak / bw]
        lo, hi = min(xs) / 4, max(xs) * 4
        grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
        ax.plot(grid, [min(peak, bw * x) / 1e9 for x in grid], label="roof")
        ax.scatter([x for x, _ in placed], [y / 1e9 for _, y in placed], color="red",
                   label="layer with matrix-engine work")
        if floor:
            # As the SVG: layers without MACs on the floor, at the left edge.
            ys = [y for _, y in placed] or [peak]
            ax.scatter([lo * 1.05] * floor, [min(ys) / 4e9 * 1.05] * floor, facecolors="none",
                       edgecolors="black", label="layer without MACs (vector, copy)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("operational intensity (operations per DRAM byte)")
        ax.set_ylabel("achieved rate (GOPS)")
        ax.set_title(self.title)
        ax.legend()
        return ax


def profile(
    model: Union[Model, Blob],
    inputs: Optional[Mapping[str, Any]] = None,
    config: Config = "default",
    opt_level: int = 2,
    seed: int = 0,
) -> Profile:
    """Compiles (unless given a :class:`Blob`) and runs once with a trace, cut per layer."""
    blob = model if isinstance(model, Blob) else compile(model, config, opt_level)
    rows, total = blob._native.profile(blob._inputs(inputs, seed))
    clock = blob.config.clock_hz
    layers = []
    for name, kind, cycles, macs, dma, util, roof in rows:
        intensity = 2.0 * macs / dma if macs and dma else None
        rate = 2.0 * macs * clock / max(cycles, 1) if macs else None
        layers.append(LayerRecord(name, kind, cycles, macs, dma, util, roof, intensity, rate))
    title = f"{_title(model)} on {blob.config.name}"
    chart = [(l.name, l.cycles, l.macs, l.dma_bytes) for l in layers]
    return Profile(blob.config, layers, int(total), title, chart)


def _title(model: Union[Model, Blob]) -> str:
    if isinstance(model, (str, os.PathLike)) and not str(model).lstrip().startswith("<"):
        return os.path.basename(os.fspath(model))
    return "model"


class GraphOptimizationLevel:
    """onnxruntime's optimisation levels, accepted for compatibility (accelc's optimizer level
    is ``InferenceSession(..., opt_level=)``)."""

    ORT_DISABLE_ALL = 0
    ORT_ENABLE_BASIC = 1
    ORT_ENABLE_EXTENDED = 2
    ORT_ENABLE_ALL = 99


class SessionOptions:
    """onnxruntime's ``SessionOptions``, accepted so scripts that build one run unchanged; its
    settings (threads, optimisation level, logging) do not change the simulated device."""

    def __init__(self) -> None:
        self.graph_optimization_level = GraphOptimizationLevel.ORT_ENABLE_ALL
        self.intra_op_num_threads = 0
        self.inter_op_num_threads = 0
        self.log_severity_level = 2
        self.enable_profiling = False


class RunOptions:
    """onnxruntime's ``RunOptions``, accepted and ignored."""

    def __init__(self) -> None:
        self.log_severity_level = 2
        self.run_tag = ""


def get_available_providers() -> List[str]:
    """The one provider: the accelc device."""
    return ["AccelcExecutionProvider"]


def get_device() -> str:
    """What runs the models: the simulated NPU."""
    return "NPU (accelc simulator)"
