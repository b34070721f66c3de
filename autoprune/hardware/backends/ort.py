"""ONNX Runtime as the latency backend: the budget can be set for the runtime a model is
deployed with, not only for eager PyTorch. Whole models go through ``torch.onnx`` export; the
profile's single layers are written directly as one-node ONNX graphs (an export per layer would
take seconds each, and the table times over a thousand of them)."""

from __future__ import annotations

import copy
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from autoprune.errors import ConfigError
from autoprune.hardware.backends._base import LatencyBackend, Runner

if TYPE_CHECKING:
    from autoprune.prunable import ModuleGeometry


def to_onnx(model: nn.Module, example: torch.Tensor, path: Path, *, dynamic_batch: bool) -> None:
    """Write ``model`` as ONNX (opset from the dynamo exporter; weights inside the file). A CPU
    copy is exported; ``model`` itself is left as it is."""
    kwargs: dict[str, Any] = {}
    if dynamic_batch:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            copy.deepcopy(model).cpu().eval(),
            (example.cpu(),),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamo=True,
            verbose=False,
            external_data=False,
            **kwargs,
        )


def session(
    model: bytes | str | Path, threads: int, providers: tuple[str, ...] = ("CPUExecutionProvider",)
) -> Any:
    """An InferenceSession on ``providers``, ``threads`` intra-op threads, all graph
    optimizations."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, opts, providers=list(providers))


def op_runner(
    kind: str,
    c_in: int,
    c_out: int,
    *,
    kernel: int,
    stride: int,
    padding: int,
    depthwise: bool,
    in_hw: tuple[int, ...],
    batch: int,
    threads: int,
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
) -> Any:
    """A callable running one conv (or linear) layer of this geometry in ONNX Runtime."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if kind == "linear":
        w = rng.standard_normal((c_out, c_in)).astype(np.float32)
        b = np.zeros(c_out, dtype=np.float32)
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
        inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
        x_shape, y_shape = [batch, c_in], [batch, c_out]
    else:
        groups = c_in if depthwise else 1
        w = rng.standard_normal((c_out, c_in // groups, kernel, kernel)).astype(np.float32)
        node = helper.make_node(
            "Conv",
            ["x", "w"],
            ["y"],
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[padding] * 4,
            group=groups,
        )
        inits = [numpy_helper.from_array(w, "w")]
        x_shape = [batch, c_in, *in_hw]
        y_shape = [batch, c_out] + [(s + 2 * padding - kernel) // stride + 1 for s in in_hw]
    graph = helper.make_graph(
        [node],
        "op",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = min(proto.ir_version, 9)
    sess = session(proto.SerializeToString(), threads, providers)
    feed = {"x": rng.standard_normal(x_shape).astype(np.float32)}
    return lambda: sess.run(None, feed)


class OnnxRuntimeBackend(LatencyBackend):
    """ONNX Runtime: its CPU execution provider on ``cpu`` (``spec.threads`` intra-op threads),
    its CUDA execution provider on ``cuda`` when the installed onnxruntime has one."""

    name = "onnxruntime"

    @property
    def providers(self) -> tuple[str, ...]:
        if self.spec.cuda:
            return ("CUDAExecutionProvider", "CPUExecutionProvider")
        return ("CPUExecutionProvider",)

    def check(self) -> None:
        import onnxruntime

        if self.spec.dtype != "float32" or self.spec.channels_last:
            raise ConfigError(
                f"runtime {self.name} times the float32 ONNX export (its own layouts); use "
                "runtime torch, cuda-graphs or torch-compile for other precisions or formats"
            )
        have = onnxruntime.get_available_providers()
        if self.providers[0] not in have:
            raise ConfigError(
                f"the installed onnxruntime has no {self.providers[0]} (it has "
                f"{', '.join(have)}); install an onnxruntime build that has it "
                "(onnxruntime-gpu)"
            )

    def model_runner(self, model: nn.Module, input_shape: tuple[int, ...]) -> Runner:
        x = torch.randn(self.spec.batch, *input_shape)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.onnx"
            to_onnx(model, x, path, dynamic_batch=False)  # exports a CPU copy
            sess = session(path.read_bytes(), self.spec.threads, self.providers)
        feed = {sess.get_inputs()[0].name: x.numpy()}
        return lambda: sess.run(None, feed)

    def layer_runner(self, geometry: ModuleGeometry, c_in: int, c_out: int) -> Runner:
        return op_runner(
            geometry.kind,
            c_in,
            c_out,
            kernel=geometry.kernel,
            stride=geometry.stride,
            padding=geometry.padding,
            depthwise=geometry.depthwise,
            in_hw=tuple(geometry.in_hw),
            batch=self.spec.batch,
            threads=self.spec.threads,
            providers=self.providers,
        )

    def describe(self) -> dict[str, Any]:
        import onnxruntime

        out = super().describe()
        out["versions"] = {**out["versions"], "onnxruntime": onnxruntime.__version__}
        out["providers"] = list(self.providers)
        return out


class TensorRTBackend(OnnxRuntimeBackend):
    """ONNX Runtime's TensorRT execution provider (falling back to CUDA for unsupported ops);
    GPUs only, and only with an onnxruntime-gpu build that has it."""

    name = "tensorrt"

    @property
    def providers(self) -> tuple[str, ...]:
        return ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

    @property
    def default_round_to(self) -> int:
        return 8


__all__ = ["OnnxRuntimeBackend", "TensorRTBackend", "op_runner", "session", "to_onnx"]
