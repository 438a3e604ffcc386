"""The 3D-DenseNet and baselines: sizes the papers report, shapes, input checks, DropBlock."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ucadi.cli import main
from ucadi.model import ModelError, ModelInputError, build_model
from ucadi.model.densenet3d import DenseBlock3d, TransmitBlock3d
from ucadi.model.dropblock import DropBlock3d
from ucadi.model.summary import summarize

torch.set_num_threads(1)

PAPER_DENSENET_PARAMETERS = 0.73e6
PAPER_DENSENET_GFLOPS = 143.5
# Papers' comparison table: 3D-ResNet50 46 M, 3D-Xception 22 M parameters.
PAPER_BASELINE_PARAMETERS = {"resnet3d50": 46e6, "xception3d": 22e6}


def test_paper_densenet_has_about_073_million_parameters_and_143_gflops():
    summary = summarize("densenet3d", "paper")
    assert summary.input_shape == (16, 128, 128)
    assert abs(summary.parameters / PAPER_DENSENET_PARAMETERS - 1) < 0.10
    assert abs(summary.forward_flops / 1e9 / PAPER_DENSENET_GFLOPS - 1) < 0.05


@pytest.mark.parametrize("arch", sorted(PAPER_BASELINE_PARAMETERS))
def test_baselines_match_the_papers_parameter_counts(arch):
    summary = summarize(arch, "paper")
    assert abs(summary.parameters / PAPER_BASELINE_PARAMETERS[arch] - 1) < 0.10


def test_densenet_has_six_dense_blocks_two_transmit_blocks_and_fourteen_block_convolutions():
    model = build_model("densenet3d", "paper", num_classes=4)
    dense = [m for m in model.blocks if isinstance(m, DenseBlock3d)]
    transmit = [m for m in model.blocks if isinstance(m, TransmitBlock3d)]
    convs = [m for m in model.blocks.modules() if isinstance(m, nn.Conv3d)]
    assert (len(dense), len(transmit), len(convs)) == (6, 2, 14)
    assert model.classifier.out_features == 4


def test_densenet_uses_paper_batchnorm_momentum_and_leaky_relu_slope():
    model = build_model("densenet3d", "cpu-small")
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    acts = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    # Paper momentum 0.9 (running = 0.9 running + 0.1 batch) is PyTorch's momentum 0.1.
    assert norms and all(m.momentum == pytest.approx(0.1) for m in norms)
    assert acts and all(m.negative_slope == pytest.approx(0.2) for m in acts)
    assert sum(isinstance(m, DropBlock3d) for m in model.modules()) == 2


@pytest.mark.parametrize("arch", ["densenet3d", "resnet3d18", "resnet3d50", "xception3d"])
def test_every_architecture_maps_a_cpu_small_batch_to_logits(arch):
    model = build_model(arch, "cpu-small", num_classes=2).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 1, 16, 32, 32))
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_cpu_small_is_much_smaller_than_paper_with_same_layer_structure():
    small, paper = build_model("densenet3d", "cpu-small"), build_model("densenet3d", "paper")
    assert [type(m) for m in small.modules()] == [type(m) for m in paper.modules()]
    assert sum(p.numel() for p in small.parameters()) < 0.1 * sum(
        p.numel() for p in paper.parameters())


def test_wrong_input_shape_is_refused_with_the_accepted_shape():
    model = build_model("densenet3d", "cpu-small")
    with pytest.raises(ModelInputError, match=r"\[batch, 1, 16, 32, 32\]"):
        model(torch.zeros(1, 1, 16, 64, 64))
    with pytest.raises(ModelInputError, match="shape"):
        model(torch.zeros(16, 32, 32))


def test_nan_input_is_refused():
    model = build_model("densenet3d", "cpu-small")
    x = torch.zeros(1, 1, 16, 32, 32)
    x[0, 0, 3, 4, 5] = float("nan")
    with pytest.raises(ModelInputError, match="NaN"):
        model(x)


def test_unknown_architecture_and_preset_are_named_with_choices():
    with pytest.raises(ModelError, match="densenet3d"):
        build_model("vgg3d")
    with pytest.raises(ModelError, match="cpu-small"):
        build_model("densenet3d", "huge")


def test_dropblock_drops_contiguous_blocks_at_about_the_asked_rate_in_training_only():
    torch.manual_seed(0)
    drop = DropBlock3d(drop_prob=0.2, block_size=3)
    x = torch.ones(4, 2, 16, 32, 32)
    dropped = drop.train()(x)
    zero_fraction = float((dropped == 0).float().mean())
    assert 0.1 < zero_fraction < 0.3
    # Kept activations are rescaled so the expected sum is unchanged.
    assert float(dropped.mean()) == pytest.approx(1.0, rel=1e-5)
    # Blocks, not voxels: a dropped voxel's neighbours are mostly dropped too.
    zeros = dropped[:, 0] == 0
    neighbour_zero = (zeros[:, :, :, 1:] & zeros[:, :, :, :-1]).sum() / zeros[:, :, :, 1:].sum()
    assert float(neighbour_zero) > 0.5
    assert torch.equal(drop.eval()(x), x)


def test_model_summary_command_prints_parameters_and_flops(capsys):
    assert main(["model", "summary", "--arch", "resnet3d18", "--preset", "paper"]) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "GFLOPs" in out and "33,1" in out
