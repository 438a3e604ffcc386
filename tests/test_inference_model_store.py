"""The model store: both published layouts, version reporting, hot reload, bad publishes."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch
from model_publishing import CLASSES, point_current, publish

from services.inference.model_store import (
    ModelDirectoryError,
    ModelStore,
    ModelUnavailableError,
    numeric_version,
    resolve_checkpoint,
)

torch.set_num_threads(1)


def test_plain_checkpoint_folder_is_served_with_its_card_version(tmp_path: Path):
    publish(tmp_path / "model", version=7, seed=0)
    store = ModelStore(tmp_path / "model")
    assert not store.ready
    with pytest.raises(ModelUnavailableError, match="no model is loaded"):
        store.current()
    assert store.reload_if_changed()
    served = store.current()
    assert served.version == "7" and served.class_names == tuple(CLASSES)
    assert served.input_shape == (1, 16, 32, 32)
    assert not store.reload_if_changed()


def test_versions_folder_follows_the_current_pointer(tmp_path: Path):
    publish(tmp_path / "versions" / "1", version=1, seed=0)
    publish(tmp_path / "versions" / "2", version=2, seed=1)
    point_current(tmp_path, 1)
    store = ModelStore(tmp_path)
    store.reload_if_changed()
    assert store.current().version == "1"
    point_current(tmp_path, 2)
    assert store.reload_if_changed()
    assert store.current().version == "2"


def test_current_pointer_may_be_a_text_file_naming_the_version(tmp_path: Path):
    publish(tmp_path / "versions" / "4", version=4, seed=0)
    (tmp_path / "current").write_text("4\n")
    assert resolve_checkpoint(tmp_path) == (tmp_path / "versions" / "4").resolve()


def test_without_pointer_the_highest_numbered_version_is_served(tmp_path: Path):
    for version in (2, 10, 9):
        publish(tmp_path / "versions" / str(version), version=version, seed=version)
    assert resolve_checkpoint(tmp_path).name == "10"


def test_renamed_over_plain_folder_is_reloaded(tmp_path: Path):
    model_dir = tmp_path / "model"
    publish(model_dir, version=1, seed=0)
    store = ModelStore(model_dir)
    store.reload_if_changed()
    staging = tmp_path / "model.tmp-2"
    publish(staging, version=2, seed=1)
    old = tmp_path / "model.old"
    model_dir.rename(old)
    staging.rename(model_dir)
    shutil.rmtree(old)
    assert store.reload_if_changed()
    assert store.current().version == "2"


def test_broken_publish_keeps_the_served_version(tmp_path: Path):
    publish(tmp_path / "versions" / "1", version=1, seed=0)
    point_current(tmp_path, 1)
    store = ModelStore(tmp_path)
    store.reload_if_changed()
    broken = tmp_path / "versions" / "2"
    broken.mkdir(parents=True)
    shutil.copy(tmp_path / "versions" / "1" / "card.json", broken / "card.json")
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    point_current(tmp_path, 2)
    assert not store.reload_if_changed()
    assert store.current().version == "1"


def test_empty_model_directory_names_the_accepted_layouts(tmp_path: Path):
    with pytest.raises(ModelDirectoryError, match="versions/<n>/"):
        resolve_checkpoint(tmp_path)


def test_watcher_thread_picks_up_a_new_version(tmp_path: Path):
    publish(tmp_path / "versions" / "1", version=1, seed=0)
    point_current(tmp_path, 1)
    seen = []
    store = ModelStore(tmp_path, poll_interval_s=0.05, on_change=lambda s: seen.append(s.version))
    store.start()
    try:
        publish(tmp_path / "versions" / "2", version=2, seed=1)
        point_current(tmp_path, 2)
        for _ in range(100):
            if store.current().version == "2":
                break
            time.sleep(0.05)
    finally:
        store.stop()
    assert seen == ["1", "2"]


def test_numeric_version_takes_the_trailing_number():
    assert numeric_version("12") == 12
    assert numeric_version("global-7") == 7
    assert numeric_version("local") == 0


def test_single_row_prediction_equals_the_model_output(tmp_path: Path):
    model = publish(tmp_path / "model", version=1, seed=0)
    store = ModelStore(tmp_path / "model")
    store.reload_if_changed()
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.inference_mode():
        expected = torch.softmax(model(x), dim=1)
    got = store.current().predict(x)
    assert got.shape == (1, 2)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
