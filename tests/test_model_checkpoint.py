"""Checkpoints: safetensors + model card round trip, and every disagreement refused clearly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ucadi.model import CheckpointError, ModelCard, build_model, load_checkpoint, save_checkpoint
from ucadi.model.layout import ParameterLayout, load_into

torch.set_num_threads(1)

PREPROCESS = {"slices": 16, "size": [32, 32], "window_hu": [-1200.0, 600.0]}


def _saved(tmp_path, preset="cpu-small", classes=("non_covid", "covid")):
    torch.manual_seed(0)
    model = build_model("densenet3d", preset, len(classes))
    card = ModelCard.for_model(model, list(classes), PREPROCESS,
                               training={"cases": 12}, metrics={"threshold": 0.4}, version=3)
    save_checkpoint(tmp_path, model, card)
    return model, card


def test_checkpoint_round_trip_gives_the_same_outputs_and_card(tmp_path):
    model, card = _saved(tmp_path)
    loaded, loaded_card = load_checkpoint(tmp_path)
    x = torch.randn(2, 1, 16, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))
    assert loaded_card == card
    stored = json.loads((tmp_path / "card.json").read_text())
    assert stored["arch"] == "densenet3d" and stored["version"] == 3
    assert stored["parameters"] == sum(p.numel() for p in model.parameters())
    assert stored["preprocess"] == PREPROCESS and len(stored["weights_sha256"]) == 64


def test_weights_of_another_preset_are_refused_with_the_shape_mismatch(tmp_path):
    _saved(tmp_path)
    other = build_model("densenet3d", "cpu-medium")
    save_file({k: v.contiguous() for k, v in other.state_dict().items()},
              str(tmp_path / "model.safetensors"))
    card = json.loads((tmp_path / "card.json").read_text())
    card["weights_sha256"] = ""
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_checkpoint(tmp_path)


def test_weights_changed_after_saving_fail_the_cards_digest(tmp_path):
    _saved(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state["classifier.bias"] = state["classifier.bias"] + 1
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(tmp_path)


def test_card_with_class_names_not_matching_the_head_is_refused(tmp_path):
    _saved(tmp_path)
    card = json.loads((tmp_path / "card.json").read_text())
    card["class_names"] = ["healthy", "covid", "other_viral", "bacterial"]
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="shape mismatches|outputs"):
        load_checkpoint(tmp_path)


def test_missing_tensors_and_unknown_card_fields_are_named(tmp_path):
    _saved(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    del state["classifier.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    card = json.loads((tmp_path / "card.json").read_text())
    card["weights_sha256"] = ""
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="missing 1 tensors"):
        load_checkpoint(tmp_path)
    card["colour"] = "blue"
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="unknown fields"):
        load_checkpoint(tmp_path)


def test_folder_without_card_says_what_a_model_folder_holds(tmp_path):
    with pytest.raises(CheckpointError, match="card.json"):
        load_checkpoint(tmp_path)


def test_saving_a_card_of_another_architecture_is_refused(tmp_path):
    model = build_model("densenet3d", "cpu-small")
    card = ModelCard.for_model(build_model("resnet3d18", "cpu-small"), ["a", "b"], PREPROCESS)
    with pytest.raises(CheckpointError, match="resnet3d18"):
        save_checkpoint(tmp_path, model, card)


SAVE_IN_A_FRESH_PROCESS = """
import hashlib, sys, torch
from ucadi.model.checkpoint import save_weights
save_weights({"w": torch.arange(6.0)}, sys.argv[1],
             metadata={"arch": "densenet3d", "preset": "cpu-small", "task": "binary", "v": "3"})
print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())
"""


def test_the_same_tensors_and_metadata_give_the_same_bytes_in_every_process(tmp_path):
    # safetensors orders metadata keys differently from one process to the next.
    runs = [subprocess.Popen([sys.executable, "-c", SAVE_IN_A_FRESH_PROCESS,
                              str(tmp_path / f"{n}.safetensors")], stdout=subprocess.PIPE,
                             text=True) for n in range(3)]
    digests = {run.communicate(timeout=120)[0].strip() for run in runs}
    assert all(run.returncode == 0 for run in runs)
    assert len(digests) == 1, "the same tensors saved to different bytes"
    with safe_open(str(tmp_path / "0.safetensors"), "pt") as handle:
        assert handle.metadata()["preset"] == "cpu-small", "the rewritten header still reads"


def test_a_global_version_is_saved_to_the_same_bytes_whatever_a_sites_batch_counters(tmp_path):
    torch.manual_seed(0)
    template = build_model("densenet3d", "cpu-small", 2)
    layout = ParameterLayout.of(template.state_dict())
    vector = layout.flatten(template.state_dict())
    digests = set()
    for counter in (0, 7, 123):  # what each site's own training left in BatchNorm's counters
        model = build_model("densenet3d", "cpu-small", 2)
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(counter)
        load_into(model, layout, vector)
        card = ModelCard.for_model(model, ["non_covid", "covid"], PREPROCESS, version=1)
        digests.add(save_checkpoint(tmp_path / str(counter), model, card).weights_sha256)
    assert len(digests) == 1
    assert len({(tmp_path / str(c) / "model.safetensors").read_bytes() for c in (0, 7, 123)}) == 1
