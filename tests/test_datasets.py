"""Your own data: an image-folder tree of real images (written from the bundled CIFAR-10 JPEG
files) and a ``package.module:factory`` dataset, end to end with a model of another input size
and class count."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from autoprune.config import DatasetConfig, load_config
from autoprune.data import load_dataset
from autoprune.errors import ConfigError, DataError, MemorizedValidationWarning

REPO = Path(__file__).resolve().parent.parent
CLASSES = {0: "airplane", 3: "cat", 8: "ship"}  # three of CIFAR-10's classes


def write_tree(root: Path, per_class: dict[str, int], with_val: bool = True) -> Path:
    """ROOT/{train,val,test}/<class>/*.jpg from the bundled CIFAR-10 JPEG files (real images;
    train from the train set, val and test from disjoint parts of the test set)."""
    z = np.load(REPO / "autoprune/assets/cifar10_bundle.npz")
    sources = {"train": "train", "val": "val", "test": "holdout"}
    for split, n in per_class.items():
        if split == "val" and not with_val:
            continue
        src = sources[split]
        blob, off, labels = z[f"{src}_jpeg"], z[f"{src}_offsets"], z[f"{src}_y"]
        for label, name in CLASSES.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k, i in enumerate(np.flatnonzero(labels == label)[:n]):
                (folder / f"{k:04d}.jpg").write_bytes(blob[off[i] : off[i + 1]].tobytes())
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("imgs"), {"train": 40, "val": 12, "test": 12})


def test_image_folder_splits_resize_cache_and_record(tree: Path, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AUTOPRUNE_CACHE", str(tmp_path))
    cfg = DatasetConfig(
        name="imagefolder", root=str(tree), image_size=40, mean=[0.5] * 3, std=[0.25] * 3
    )
    d = load_dataset(cfg)
    assert d.classes == ("airplane", "cat", "ship") and d.num_classes == 3
    assert (len(d.train), len(d.val), len(d.test)) == (120, 36, 36)
    assert d.input_shape == (3, 40, 40) and d.train.x.dtype == torch.uint8
    assert not d.val_from_train and d.normalization == {"mean": [0.5] * 3, "std": [0.25] * 3}
    x, _ = next(d.val.batches(8))
    assert x.shape == (8, 3, 40, 40) and -2.1 <= float(x.min()) and float(x.max()) <= 2.1
    assert len(list(tmp_path.glob("imagefolder-*.npz"))) == 3  # decoded once, then cached
    again = load_dataset(cfg)
    assert torch.equal(again.train.x, d.train.x)


def test_image_folder_without_val_carves_and_warns(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AUTOPRUNE_CACHE", str(tmp_path / "cache"))
    root = write_tree(tmp_path / "t", {"train": 20, "test": 4}, with_val=False)
    with pytest.warns(MemorizedValidationWarning, match="carved from train"):
        d = load_dataset(DatasetConfig(name="imagefolder", root=str(root), val_size=6))
    assert d.val_from_train and (len(d.train), len(d.val)) == (54, 6)
    with pytest.raises(DataError, match="has no train/ folder"):
        load_dataset(DatasetConfig(name="imagefolder", root=str(tmp_path / "nothing")))


def test_factory_dataset_and_a_mismatched_model_are_clear(tmp_path: Path) -> None:
    d = load_dataset(DatasetConfig(name="tests.user_datasets:stripes"))
    assert d.input_shape == (3, 24, 24) and d.classes == ("horizontal", "vertical")
    assert d.test is None and set(d.reported()) == {"val"}
    with pytest.raises(DataError, match="cannot import dataset factory"):
        load_dataset(DatasetConfig(name="tests.no_such:thing"))
    cfg = load_config(
        REPO / "search_spaces/resnet20_cifar10.yaml",
        {"dataset.name": "tests.user_datasets:stripes", "model": "resnet8"},
    )
    from autoprune.workspace import build_workspace

    with pytest.raises(ConfigError, match="dataset images are 3×24×24 but model 'resnet8' takes"):
        build_workspace(cfg).load_data()


@pytest.mark.slow
def test_your_model_on_your_images_search_apply_export_reload(tree: Path, tmp_path: Path) -> None:
    """Another input size (40×40) and class count (3), through search → apply → export →
    reload; the reloaded model and its ONNX file agree."""
    from autoprune import SearchOptions, api
    from autoprune.export import load_pruned_model
    from autoprune.hardware.backends.ort import session
    from tests.conftest import FAST_PROFILE

    cfg_data = yaml.safe_load((REPO / "search_spaces/resnet20_cifar10.yaml").read_text())
    cfg_data.update(model="tests.user_models:tiny_net", num_classes=3, budget="0.8")
    cfg_data.update(
        profile=str(tmp_path / "profile.json"), profile_grid_points=3, measure_seconds=0.3
    )
    cfg_data["dataset"] = {"name": "imagefolder", "root": str(tree), "image_size": 40}
    cfg_data["search"].update(trials=3, parallel=1, startup_trials=2)
    cfg_data["fidelity"] = {"min_steps": 1, "rungs": 2, "reduction_factor": 2}
    cfg_data["short_finetune"].update(batch_size=16)
    cfg_data["final_finetune"] = {"steps": 3, "batch_size": 16, "distill": 0.5}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg_data))
    cfg = load_config(path)
    api.profile(cfg, min_time_s=FAST_PROFILE["min_time_s"], sweep=(), channel_sweep=False)
    run = tmp_path / "run"
    summary = api.search(cfg, SearchOptions(run))
    assert summary.finished == 3
    rep = api.apply(run)
    assert rep.data["input_shape"] == [3, 40, 40] and rep.data["num_classes"] == 3
    api.export(run)
    # Reload with nothing but the exported files: shape, classes, normalization come along.
    model = load_pruned_model(run / "export/best_policy.json", run / "export/model.pt")
    from autoprune.policy import PruningPolicy

    meta = PruningPolicy.load(run / "export/best_policy.json").metadata
    assert meta["input_shape"] == [3, 40, 40] and meta["classes"] == ["airplane", "cat", "ship"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_dataset(cfg.dataset)
    x, _ = next(data.test.batches(8))
    with torch.no_grad():
        want = model(x).numpy()
    got = session(run / "export/model.onnx", threads=1).run(None, {"input": x.numpy()})[0]
    assert want.shape == (8, 3) and np.abs(got - want).max() < 1e-3
    assert (io.BytesIO((run / "export/model.onnx").read_bytes()).getbuffer().nbytes) > 0
