"""accelc from Python: compile ONNX models for a simulated NPU, run them with an
onnxruntime-compatible session, check placement, compare with the reference interpreter,
profile per layer (with a roofline chart) and sweep device configurations.

>>> import accelc
>>> sess = accelc.InferenceSession("mlp_mnist.onnx")          # doctest: +SKIP
>>> (y,) = sess.run(None, {"input": x})                        # doctest: +SKIP

Errors are :class:`AccelcError` subclasses carrying the same messages (node, byte offset,
line and column) as the command line's.
"""

from ._core import (
    Blob,
    GraphOptimizationLevel,
    RunOptions,
    SessionOptions,
    get_available_providers,
    get_device,
    CheckReport,
    Difference,
    InferenceSession,
    LayerRecord,
    ModelMetadata,
    NodeArg,
    NodeCheck,
    Profile,
    check,
    compile,
    configs,
    diff,
    profile,
    reference,
    run,
)
from ._native import (
    AccelcError,
    BlobError,
    DeviceConfig,
    DeviceError,
    InputError,
    InternalError,
    ModelError,
    UnsupportedError,
    __version__,
)
from ._sweep import SweepResult, SweepRow, sweep

__all__ = [
    "AccelcError",
    "Blob",
    "BlobError",
    "CheckReport",
    "DeviceConfig",
    "DeviceError",
    "Difference",
    "GraphOptimizationLevel",
    "RunOptions",
    "SessionOptions",
    "get_available_providers",
    "get_device",
    "InferenceSession",
    "InputError",
    "InternalError",
    "LayerRecord",
    "ModelError",
    "ModelMetadata",
    "NodeArg",
    "NodeCheck",
    "Profile",
    "SweepResult",
    "SweepRow",
    "UnsupportedError",
    "__version__",
    "check",
    "compile",
    "configs",
    "diff",
    "profile",
    "reference",
    "run",
    "sweep",
]
