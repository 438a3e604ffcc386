"""`ucadi demo` end to end on the tiny cohort: the encrypted federation as real processes, the
baselines trained in background workers while it runs, and the report. The report's numbers
for the federated model must be those of scoring the sites' global model in one thread here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from ucadi.cli import build_parser
from ucadi.ct.synth import read_manifest
from ucadi.demo.compare import POOLED, StackCache, evaluate_model
from ucadi.learn.site_learner import load_global_model
from ucadi.learn.workflow import preprocess_for

SITES = ["main-campus", "optical-valley", "sino-french", "nccid-uk"]


def test_demo_reports_every_model_with_budgets_and_reproducible_numbers(
        tmp_path: Path, tiny_cohort: Path) -> None:
    out, reports = tmp_path / "run", tmp_path / "reports"
    shutil.copytree(tiny_cohort.parent, out / "data")
    done = subprocess.run(
        [sys.executable, "-m", "ucadi.cli", "demo", "--cohort", "tiny", "--rounds", "2",
         "--seed", "0", "--out", str(out), "--reports", str(reports), "--timeout", "600"],
        capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    printed = done.stdout
    assert "[2/4]" in printed and "background" in printed
    assert "round 2/2 sealed" in printed
    assert "pairwise masks on" in printed, "the default mode"
    aggregator_log = (out / "federation" / "logs" / "aggregator.log").read_text()
    assert "round 2: unmasked from 4 answers" in aggregator_log
    assert "centralised model trained and scored" in printed

    data = json.loads((reports / "comparison.json").read_text())
    assert data["seed"] == 0
    assert data["configuration"]["local_only_epochs"] == 2
    assert data["configuration"]["centralised_epochs"] == 1
    assert set(data["models"]) == {f"local {s}" for s in SITES} | {"federated", "centralised"}
    markdown = (reports / "comparison.md").read_text()
    assert "Budgets: the federation trains 2 local epochs per site" in markdown
    assert "encrypted, with pairwise masks" in markdown
    assert "DeLong" in markdown and (reports / "comparison.png").read_bytes()[:4] == b"\x89PNG"

    # The federated model's figures are reproducible from the global model the sites hold.
    records = read_manifest(out / "data" / "manifest.csv")
    config = preprocess_for("cpu-small")
    test_sets = {site: [r for r in records if r.site == site and r.split == "test"]
                 for site in SITES}
    test_sets[POOLED] = [r for r in records if r.site in SITES and r.split == "test"]
    for site in ("wuhan-union", "wuhan-tianyou"):
        test_sets[f"{site} (hold-out)"] = [r for r in records
                                           if r.site == site and r.split == "holdout"]
    pooled_val = [r for r in records if r.site in SITES and r.split == "val"]
    state = out / "federation" / "sites" / SITES[0] / "work" / "global-state.safetensors"
    model = load_global_model(state, "densenet3d", "cpu-small", 2, 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the report's worker processes score
    try:
        here = evaluate_model("federated", model, pooled_val, test_sets, config,
                              StackCache(config), seed=0)
    finally:
        torch.set_num_threads(threads)
    reported = data["models"]["federated"]
    assert np.isclose(reported["threshold"], here.threshold, rtol=0, atol=1e-12)
    for set_name, metrics in here.by_set.items():
        for key, value in metrics.items():
            got = reported["by_set"][set_name][key]
            assert (np.isnan(value) and np.isnan(got)) or got == value, (set_name, key)


def test_demo_masks_by_default_and_no_masks_gives_the_shared_key_mode() -> None:
    assert build_parser("demo").parse_args(["demo"]).masks is True
    assert build_parser("demo").parse_args(["demo", "--no-masks"]).masks is False
