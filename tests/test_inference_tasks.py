"""Issue 24: the inference service serving a four-class or a severity model. Every answer
carries the probabilities of the card's classes and the card (its task included); the
COVID-19 probability is that of the 'covid' class, and 0 for a severity model, which has no
such class (it grades a study already known to be COVID-19)."""

from __future__ import annotations

import json

import pytest
import torch
from test_inference_diagnosis import covid_study  # noqa: F401 (fixture)

from services.inference.client import diagnose
from services.inference.server import InferenceService, ServiceConfig
from services.inference.upload import UploadLimits
from ucadi.ct import PreprocessConfig
from ucadi.learn.recipe import FOUR_CLASS_NAMES, SEVERITY_CLASS_NAMES
from ucadi.model import ModelCard, build_model, save_checkpoint
from ucadi.ops.tls import secure_channel

torch.set_num_threads(1)
CONFIG = PreprocessConfig(size=(32, 32))


@pytest.mark.parametrize(("task", "classes"), [("four_class", FOUR_CLASS_NAMES),
                                               ("severity", SEVERITY_CLASS_NAMES)])
def test_a_served_model_answers_with_its_tasks_classes(task, classes, covid_study, pki,  # noqa: F811
                                                       tmp_path):
    torch.manual_seed(0)
    model = build_model("densenet3d", "cpu-small", num_classes=len(classes))
    save_checkpoint(tmp_path, model, ModelCard.for_model(model, list(classes), CONFIG.to_dict(),
                                                         version=3, task=task))
    service = InferenceService(ServiceConfig(
        model_dir=tmp_path, limits=UploadLimits(max_upload_bytes=64 << 20, max_slices=300)))
    running = service.start(tls=pki["server"], metrics_address=None)
    channel = secure_channel(running.target, pki["client"],
                             options=(("grpc.max_receive_message_length", 64 << 20),))
    try:
        response = diagnose(channel, covid_study, samples=2)
    finally:
        channel.close()
        service.stop(0)
    probabilities = {p.class_name: p.probability for p in response.probabilities}
    assert list(probabilities) == list(classes)
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert response.predicted_class == max(probabilities, key=probabilities.get)
    assert list(response.card.class_names) == list(classes)
    assert json.loads(response.card.card_json)["task"] == task
    assert len(response.sample_probabilities) == 2 * len(classes)
    expected = probabilities["covid"] if task == "four_class" else 0.0
    assert response.covid_probability == pytest.approx(expected, abs=1e-6)
