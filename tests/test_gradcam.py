"""Grad-CAM mechanics: shape, range, alignment with the input, no side effects on the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ucadi.model import ModelError, ModelInputError, build_model
from ucadi.model.densenet3d import TransmitBlock3d
from ucadi.model.gradcam import grad_cam

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("densenet3d", "cpu-small")


def test_heatmap_has_the_input_shape_and_lies_in_unit_range(model):
    heatmap = grad_cam(model, np.random.default_rng(0).normal(size=(16, 32, 32)), 1)
    assert heatmap.shape == (16, 32, 32) and heatmap.dtype == np.float32
    assert heatmap.min() >= 0 and heatmap.max() == pytest.approx(1.0)


def test_grad_cam_leaves_the_model_mode_and_gradients_as_they_were(model):
    model.train()
    grad_cam(model, torch.randn(1, 1, 16, 32, 32), 0)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    model.eval()


def test_heatmap_peaks_where_the_class_evidence_is():
    # A hand-set network whose class-1 score is the mean of the raw input carried through
    # channel 0 (stem copies it, dense blocks concatenate it, transmit blocks pass and pool it):
    # an input bright in one corner must give a heatmap peaking in that corner.
    model = build_model("densenet3d", "cpu-small").eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for norm in (m for m in model.modules() if isinstance(m, nn.BatchNorm3d)):
            norm.weight.fill_(1.0)
        model.stem[0].weight[0, 0, 1, 1, 1] = 1.0
        for transmit in (m for m in model.blocks if isinstance(m, TransmitBlock3d)):
            transmit[2].weight[0, 0, 0, 0, 0] = 1.0
        model.classifier.weight[1, 0] = 1.0
    x = torch.zeros(1, 1, 16, 32, 32)
    x[..., 8:16, 24:32, 24:32] = 5.0
    heatmap = grad_cam(model, x, 1)
    peak = np.unravel_index(heatmap.argmax(), heatmap.shape)
    assert 8 <= peak[0] < 16 and peak[1] >= 20 and peak[2] >= 20
    assert heatmap[:, :12, :12].max() < 0.05


def test_grad_cam_works_on_a_model_with_frozen_weights_under_no_grad():
    torch.manual_seed(1)
    frozen = build_model("densenet3d", "cpu-small").eval().requires_grad_(False)
    with torch.no_grad():
        heatmap = grad_cam(frozen, torch.randn(16, 32, 32), 1)
    assert heatmap.shape == (16, 32, 32) and np.isfinite(heatmap).all()


def test_bad_target_class_and_batches_are_refused(model):
    with pytest.raises(ModelError, match="target_class 2"):
        grad_cam(model, torch.zeros(16, 32, 32), 2)
    with pytest.raises(ModelInputError, match="one study"):
        grad_cam(model, torch.zeros(2, 1, 16, 32, 32), 1)
