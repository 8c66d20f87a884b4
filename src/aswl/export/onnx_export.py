"""ONNX export with sparse initializers (optional extra: ``pip install aswl[onnx]``).

The model is exported by PyTorch's TorchScript-based exporter; every weight whose nonzeros and
their int64 positions take less room than the dense tensor becomes a ``sparse_initializer``
(values + flat indices, as the ONNX spec defines them). onnxruntime densifies them when it
loads the file. The exported file is loaded back in onnxruntime and its outputs compared with
PyTorch's; if the sparse file does not load, a dense file is written instead, with a note.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aswl.export.compact import ExportError

log = logging.getLogger(__name__)
OPSET = 17


def _require() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise ExportError(f"ONNX export needs onnx and onnxruntime ({err.name} is missing): "
                          "pip install 'aswl[onnx]'") from err
    return onnx, onnxruntime


def _torch_onnx_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(1, *input_shape),), buffer, dynamo=False,
                          opset_version=OPSET, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return buffer.getvalue()


def sparsify_initializers(onnx_model: Any) -> int:
    """Move every float initializer that is smaller as (values, int64 indices) to
    ``graph.sparse_initializer``; returns how many were moved."""
    from onnx import helper, numpy_helper

    graph = onnx_model.graph
    moved = 0
    for init in list(graph.initializer):
        array = numpy_helper.to_array(init)
        if array.dtype != np.float32 or array.size < 16:
            continue
        flat = array.reshape(-1)
        positions = np.flatnonzero(flat)
        if positions.size * (4 + 8) >= flat.size * 4:
            continue
        values = numpy_helper.from_array(flat[positions].astype(np.float32), init.name)
        indices = numpy_helper.from_array(positions.astype(np.int64), init.name + "_indices")
        graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, array.shape))
        graph.initializer.remove(init)
        moved += 1
    return moved


def session(path_or_bytes: str | Path | bytes, threads: int = 1) -> Any:
    """An onnxruntime CPU session, or an :class:`ExportError` naming the bad file."""
    _, ort = _require()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    if not isinstance(path_or_bytes, bytes) and not Path(source).is_file():
        raise ExportError(f"ONNX file {source!r} not found")
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        name = "the ONNX model" if isinstance(path_or_bytes, bytes) else repr(source)
        raise ExportError(f"onnxruntime cannot load {name} (corrupt or truncated?): "
                          f"{str(err).splitlines()[0][:300]}") from err


def run_session(sess: Any, x: torch.Tensor) -> np.ndarray:
    """Outputs of an ONNX session for the batch ``x``."""
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path,
                sparse: bool = True, atol: float = 1e-4) -> dict[str, Any]:
    """Write ``model`` as ONNX (sparse initializers where smaller); returns bytes, the count of
    sparse initializers, the max difference from PyTorch on a random batch and any note."""
    onnx, _ = _require()
    proto = onnx.load_from_string(_torch_onnx_bytes(model, input_shape))
    moved = sparsify_initializers(proto) if sparse else 0
    data = proto.SerializeToString()
    note = ""
    torch.manual_seed(0)
    x = torch.randn(4, *input_shape)
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    try:
        diff = float(np.abs(run_session(session(data), x) - expected).max())
    except ExportError as err:
        if not moved:
            raise
        note = f"sparse initializers not accepted by onnxruntime ({err}); wrote dense ONNX"
        log.warning(note)
        proto = onnx.load_from_string(_torch_onnx_bytes(model, input_shape))
        data, moved = proto.SerializeToString(), 0
        diff = float(np.abs(run_session(session(data), x) - expected).max())
    if diff > atol:
        raise ExportError(f"the ONNX model differs from PyTorch by {diff:.2e} (> {atol})")
    from aswl.io import write_atomic

    write_atomic(path, data)  # a WriteError names the file and the fix
    return {"bytes": len(data), "sparse_initializers": moved, "max_abs_diff": diff,
            "note": note}
