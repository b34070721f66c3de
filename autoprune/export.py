"""Export an applied policy ready to deploy: the pruned model rebuilt from policy + tensors (no
pickled code), ONNX checked against PyTorch with onnxruntime, and a markdown report.
:func:`export` is the public entry; :func:`load_pruned_model` reloads an export."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autoprune._io import write_json, write_with
from autoprune.errors import CheckpointError, PolicyError
from autoprune.models import build_model, load_state_dict
from autoprune.policy import PruningPolicy
from autoprune.prunable import discover
from autoprune.pruning import apply_policy

POLICY, MODEL, ONNX, REPORT = "best_policy.json", "model.pt", "model.onnx", "report.json"


def model_io(policy: PruningPolicy) -> tuple[tuple[int, ...], int]:
    """The input shape and class count a policy was applied with (recorded by ``apply``;
    older policies: the model's defaults, 10 classes)."""
    from autoprune.models import model_spec

    meta = policy.metadata
    if "input_shape" in meta and "num_classes" in meta:
        return tuple(int(v) for v in meta["input_shape"]), int(meta["num_classes"])
    return model_spec(policy.model).input_shape, 10


def load_pruned_model(
    policy_path: str | Path,
    state_path: str | Path,
    *,
    num_classes: int | None = None,
    input_size: int | None = None,
) -> nn.Module:
    """Rebuild a pruned model with no pickled code: dense architecture from the registry, the
    policy's channel counts, then the saved tensors (``weights_only=True``). Input shape and
    class count come from the policy (``apply`` records them); arguments override."""
    policy = PruningPolicy.load(policy_path)
    shape, classes = model_io(policy)
    if input_size is not None:
        shape = (shape[0], input_size, input_size)
    num_classes = num_classes or classes
    dense = build_model(policy.model, num_classes, pretrained=False)
    layers = discover(dense, shape)
    structured = PruningPolicy(
        policy.model,
        policy.ratios,
        "structured" if policy.mode != "unstructured" else "unstructured",
        policy.round_to,
    )
    model = apply_policy(dense, structured, layers, shape)
    state = load_state_dict(state_path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{state_path} does not fit the pruned architecture of "
            f"{policy_path}: {str(e).splitlines()[0]}"
        ) from e
    return model.eval()


def onnx_metadata(policy: PruningPolicy) -> dict[str, str]:
    """What a deployment needs to feed the ONNX model and to know which policy it is, as the
    file's metadata (``custom_metadata_map`` in onnxruntime): input shape, normalization, class
    names, the model family and the policy itself with its SHA-256."""
    import hashlib
    import json

    meta = policy.metadata
    text = json.dumps(policy.to_dict(), sort_keys=True)
    shape, classes = model_io(policy)
    out = {
        "autoprune.model": policy.model,
        "autoprune.input_shape": json.dumps([*shape]),
        "autoprune.num_classes": str(classes),
        "autoprune.policy_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "autoprune.policy": text,
    }
    for key in ("mean", "std", "classes"):
        if key in meta:
            out[f"autoprune.{key}"] = json.dumps(meta[key])
    return out


def _with_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Add ``metadata`` to an ONNX file's ``metadata_props`` (in place)."""
    import onnx

    proto = onnx.load(str(path))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: Path,
    metadata: dict[str, str] | None = None,
) -> float:
    """Write ONNX (dynamic batch, ``metadata`` in the file) and return the max |ONNX − PyTorch|
    on a random batch of 2."""
    from autoprune.hardware.backends.ort import session, to_onnx

    x = torch.randn(2, *input_shape)

    def write(tmp: Path) -> None:
        to_onnx(model, x, tmp, dynamic_batch=True)
        if metadata:
            _with_metadata(tmp, metadata)

    write_with(path, write)
    got = session(path, threads=1).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = model.eval()(x).numpy()
    diff = float(np.abs(got - want).max())
    if diff > 1e-3:
        path.unlink(missing_ok=True)
        raise PolicyError(f"ONNX output differs from PyTorch by {diff:.2e}; export refused")
    return diff


def _copy(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)


def export_dir(src: Path, dst: Path, *, onnx: bool = True) -> dict[str, Any]:
    """Export an applied run (``src`` holds best_policy.json, model.pt, report.json): reload the
    model from policy + tensors (proving it reloads), write ONNX with a parity check and a
    markdown report into ``dst``."""
    import json

    for name in (POLICY, MODEL, REPORT):
        if not (src / name).is_file():
            raise PolicyError(f"{src} has no {name}: run `autoprune apply` first")
    rep = json.loads((src / REPORT).read_text())
    policy = PruningPolicy.load(src / POLICY)
    shape, _ = model_io(policy)
    model = load_pruned_model(src / POLICY, src / MODEL)
    dst.mkdir(parents=True, exist_ok=True)
    if src.resolve() != dst.resolve():
        for name in (POLICY, MODEL):
            write_with(dst / name, partial(_copy, src / name))
    # What this export wrote, where: the paths a user copies to the device.
    files = {"policy": str(dst / POLICY), "model": str(dst / MODEL)}
    if onnx:
        rep["onnx_max_abs_diff"] = export_onnx(model, shape, dst / ONNX, onnx_metadata(policy))
        files["onnx"] = str(dst / ONNX)
    rep["files"] = {**files, "report": str(dst / REPORT), "report_md": str(dst / "report.md")}
    write_json(dst / REPORT, rep)
    from autoprune._io import write_text
    from autoprune.report import summary_markdown

    write_text(dst / "report.md", summary_markdown(rep))
    return rep


def export(
    run_dir: str | Path, *, out: str | Path | None = None, onnx: bool = True
) -> dict[str, Any]:
    """Export a search run after ``apply`` (``RUN/final`` → ``RUN/export``) or an applied
    folder (→ its ``export`` subfolder, or ``out``); returns the report dict."""
    run_dir = Path(run_dir)
    src = run_dir / "final" if (run_dir / "final").is_dir() else run_dir
    dst = Path(out) if out else (src.parent / "export" if src.name == "final" else src / "export")
    return export_dir(src, dst, onnx=onnx)


__all__ = ["export", "export_dir", "export_onnx", "load_pruned_model", "model_io", "onnx_metadata"]
