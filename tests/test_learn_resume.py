"""Local training API and breakpoint resumption on the tiny synthetic cohort."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from ucadi.ct.synth import generate_cohort, read_manifest
from ucadi.learn import StudyDataset, TrainingRecipe, train_local
from ucadi.learn.session import ResumeError
from ucadi.learn.workflow import preprocess_for, train_model
from ucadi.model import build_model, read_card

torch.set_num_threads(1)

RECIPE = TrainingRecipe(lr=0.02, batch_size=4, warmup_epochs=1, total_epochs=3,
                        weight_decay=1e-4)


class Interrupted(Exception):
    """Stands in for Ctrl-C / a killed process between two epochs."""


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    manifest = generate_cohort(tmp_path_factory.mktemp("tiny"), "tiny", seed=3, workers=2,
                               show_progress=False)
    records = [r for r in read_manifest(manifest) if r.split == "train"]
    # Four of each binary class keep the test fast while both classes are present; the
    # non-COVID ones include the UK-like site's binary-only cases.
    return ([r for r in records if r.binary_label == 1][:4]
            + [r for r in records if r.label == "non_covid"][:2]
            + [r for r in records if r.binary_label == 0 and r.label != "non_covid"][:2])


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_interrupted_run_resumed_with_the_same_command_gives_identical_weights(cases, tmp_path):
    common = dict(arch="densenet3d", preset="cpu-small", recipe=RECIPE, seed=5, progress=False)
    train_model(cases, [], out_dir=tmp_path / "straight", **common)

    def stop_after_first_epoch(epoch, _metrics):
        if epoch == 0:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_model(cases, [], out_dir=tmp_path / "resumed",
                    on_epoch_end=stop_after_first_epoch, **common)
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    _, card = train_model(cases, [], out_dir=tmp_path / "resumed", **common)

    assert card.training["resumed_from_epoch"] == 1
    straight, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    # The run's record reads the same too: three epochs with the same losses.
    straight_history = read_card(tmp_path / "straight").training["history"]
    assert [h["train_loss"] for h in card.training["history"]] == [
        h["train_loss"] for h in straight_history]
    assert len(straight_history) == 3


def test_resuming_with_other_settings_is_refused(cases, tmp_path):
    common = dict(arch="densenet3d", preset="cpu-small", seed=5, progress=False)
    short = TrainingRecipe(lr=0.02, batch_size=4, warmup_epochs=0, total_epochs=1)
    train_model(cases, [], recipe=short, out_dir=tmp_path, **common)
    with pytest.raises(ResumeError, match="other settings"):
        train_model(cases, [], recipe=RECIPE, out_dir=tmp_path, **common)


def test_train_local_returns_weights_with_bn_buffers_and_samples_seen(cases):
    dataset = StudyDataset(cases, preprocess_for("cpu-small"), "binary", train=True, seed=0)
    torch.manual_seed(0)
    model = build_model("densenet3d", "cpu-small")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    update = train_local(model, dataset, RECIPE, start_epoch=1, epochs=1, progress=False)
    assert update.num_samples == len(cases) and update.epochs == 1
    assert set(update.state) == set(before)
    assert not torch.equal(update.state["head.0.running_mean"], before["head.0.running_mean"])
    assert update.metrics["train_loss"] > 0 and update.metrics["lr_end"] > 0
    # The returned state is a copy: training the model further leaves it unchanged.
    snapshot = update.state["classifier.weight"].clone()
    train_local(model, dataset, RECIPE, start_epoch=2, epochs=1, progress=False)
    assert torch.equal(update.state["classifier.weight"], snapshot)


def test_four_class_task_skips_binary_only_cases_with_a_warning(cases):
    uk_style = [c for c in cases if c.label == "non_covid"]
    assert uk_style, "the tiny cohort's UK-like site provides binary-only cases"
    with pytest.warns(UserWarning, match="non_covid"):
        dataset = StudyDataset(cases, preprocess_for("cpu-small"), "four_class", True, 0)
    assert len(dataset) == len(cases) - len(uk_style)
    assert set(dataset.labels) <= {0, 1, 2, 3}


def test_studies_beyond_the_stack_cache_give_the_same_samples_from_disk(cases):
    config = preprocess_for("cpu-small")
    cached = StudyDataset(cases, config, "binary", train=True, seed=4)
    uncached = StudyDataset(cases, config, "binary", train=True, seed=4, cache_bytes=0)
    for dataset in (cached, uncached):
        dataset.set_epoch(7)
    for index in (0, len(cases) - 1):
        x_cached, y_cached = cached[index]
        x_disk, y_disk = uncached[index]
        assert y_cached == y_disk and x_cached.shape == (1, 16, 32, 32)
        assert torch.allclose(x_cached, x_disk, atol=1e-5)
    assert not uncached._stacks
