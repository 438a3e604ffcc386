"""Issue 24: the federation's `model.task` setting with the severity task: the central chart's
value reaches the aggregator's announcement, a site builds its session from it, and a site with
no graded COVID-19 case leaves the federation at join with an error naming the task."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from test_deploy_charts import CENTRAL, render, with_central

from services.aggregator.config import DEFAULTS, build_federation_config
from services.trainer.agent import AgentSettings, AgentStatus, SiteAgent
from services.trainer.session import SiteSession
from ucadi.ct.synth import read_manifest
from ucadi.ct.synth.manifest import MANIFEST_COLUMNS
from ucadi.errors import UcadiError
from ucadi.learn.data import usable_records
from ucadi.learn.recipe import SEVERITY_CLASS_NAMES
from ucadi.model.layout import ParameterLayout, initial_model
from ucadi.ops.config import load_config
from ucadi.v1 import federation_pb2

torch.set_num_threads(1)


def _join_response(task: str) -> Any:
    """What the aggregator's Join answers for a federation of `task` (plaintext, 1 epoch)."""
    config = copy.deepcopy(DEFAULTS)
    config["model"]["task"] = task
    config["encryption"]["enabled"] = False
    federation = build_federation_config(config)
    model = federation.model
    return federation_pb2.JoinResponse(
        federation_id=federation.federation_id, local_epochs=1, weight_unit=1,
        model=federation_pb2.ModelSpec(
            arch=model["arch"], preset=model["preset"], task=model["task"],
            init_seed=model["init_seed"], recipe_json=model["recipe_json"],
            layout_hash=model["layout_hash"], value_count=model["value_count"],
            optimizer_json=model["optimizer_json"]))


def test_the_central_charts_task_value_announces_a_three_grade_model(tmp_path: Path) -> None:
    manifests, _ = render(CENTRAL, with_central({"federation": {"model": {"task": "severity"}}}))
    config_map = next(m for m in manifests if m["kind"] == "ConfigMap")
    path = tmp_path / "aggregator.yaml"
    path.write_text(config_map["data"]["aggregator.yaml"])
    config = load_config(DEFAULTS, path, environ={})
    config["encryption"]["key_id"] = "00" * 16
    federation = build_federation_config(config)
    assert federation.model["task"] == "severity"
    assert json.loads(federation.model["recipe_json"])["task"] == "severity"
    head = initial_model("densenet3d", federation.model["preset"], len(SEVERITY_CLASS_NAMES), 0)
    assert federation.model["layout_hash"] == ParameterLayout.of(head.state_dict()).hash


def test_a_site_session_for_severity_trains_and_validates_on_graded_cases(tiny_cohort: Path
                                                                          ) -> None:
    records = [r for r in read_manifest(tiny_cohort) if r.site == "main-campus"]
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "val"]
    session = SiteSession.from_join(_join_response("severity"), train, val, device="cpu",
                                    seed=0)
    assert session.recipe.task == "severity"
    assert session.train_cases == len(usable_records(train, "severity")) > 0
    assert session.val_set.task == "severity"
    assert len(session.val_set) == len(usable_records(val, "severity"))


class _Federation:
    """The calls a site makes up to and at leaving."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.left: list[str] = []

    def join(self, train_cases: int, version: str) -> Any:
        return self.response

    def leave(self, reason: str) -> None:
        self.left.append(reason)


def test_a_site_without_graded_cases_leaves_a_severity_federation_saying_why(
        tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        for i, (label, split) in enumerate([("covid", "train"), ("non_covid", "train"),
                                            ("covid", "val")]):
            # COVID-19 cases without a grade (severity 0), as a binary-labelled site has.
            writer.writerow({"case_id": f"uk-{i}", "patient_id": f"p{i}", "site": "nccid-uk",
                             "split": split, "label": label,
                             "binary_label": int(label == "covid"), "severity": 0,
                             "contrast": 0, "slices": 40, "series_path": f"series/{i}",
                             "mask_path": ""})
    federation = _Federation(_join_response("severity"))
    status = AgentStatus()
    agent = SiteAgent(AgentSettings(site="nccid-uk", manifest=manifest,
                                    model_dir=tmp_path / "models", work_dir=tmp_path / "work"),
                      federation, cipher=None, status=status)  # type: ignore[arg-type]
    with pytest.raises(UcadiError, match="usable for the federation's task 'severity'"):
        agent.run()
    assert len(federation.left) == 1 and "nccid-uk" in federation.left[0]
    assert status.phase == "left"

