"""`ucadi experiment goal --rescore`: a finished goal run's report recomputed at another
operating point from its saved per-CT scores, on a small run written by hand (the expected
thresholds and sensitivities computed by hand)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ucadi.cli import main

POOLED, UNION, TIANYOU = "pooled test", "wuhan-union (hold-out)", "wuhan-tianyou (hold-out)"
SETTINGS = {"command": "experiment", "study": "goal", "cohort": "small", "seeds": [8],
            "budget": 24, "central_budget": 0, "preset": "cpu-small", "lr": 0.05,
            "batch_size": 8, "warmup_epochs": 1, "threads": 1, "plaintext_simulation": True,
            "resume": False, "curves": False, "out": "x", "work": "y"}


def block(covid: list[float], labels: list[int]) -> dict[str, list[Any]]:
    return {"case_ids": [f"ct{i}" for i in range(len(covid))], "labels": labels,
            "covid": covid}


def scores(val_neg: list[float], val_pos: list[float], pooled: list[float]) -> dict[str, Any]:
    return {"validation": block(val_neg + val_pos, [0] * len(val_neg) + [1] * len(val_pos)),
            "sets": {POOLED: block(pooled, [0, 0, 0, 1, 1, 1]),
                     UNION: block([0.87, 0.91, 0.95, 0.99], [1] * 4),
                     TIANYOU: block([0.8, 0.93], [1, 1])}}


# Federated: validation negatives 0.1 ... 0.8, 0.9, 0.95, positives 0.85, 0.99. Youden's J
# cuts at 0.825 (sensitivity 1, specificity 0.8); specificity >= 0.9 needs 9 of 10 negatives
# below: 0.925. Hold-out: Union 4/4 and Tianyou 1/2 at 0.825 (mean 0.75); 2/4 and 1/2 at
# 0.925 (mean 0.5). Pooled test AUC 8/9.
FEDERATED = scores([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95], [0.85, 0.99],
                   [0.1, 0.5, 0.9, 0.6, 0.95, 0.99])
# Centralised: negatives 0.1 ... 0.8, 0.82, 0.84; Youden 0.845 (J = 1), specificity 0.9:
# 0.83. Hold-out 4/4 and 1/2 at both (mean 0.75). Pooled test AUC 1.
CENTRALISED = scores([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.82, 0.84], [0.85, 0.99],
                     [0.1, 0.2, 0.3, 0.7, 0.8, 0.9])


def write_run(path: Path, with_scores: bool = True) -> Path:
    local = {"main-campus": scores([0.2, 0.4], [0.6], [0.1, 0.5, 0.9, 0.6, 0.95, 0.99]),
             "nccid-uk": scores([0.2, 0.4], [0.6], [0.9, 0.8, 0.7, 0.1, 0.2, 0.3])}
    runs = [{"arm": "federated (demo)", "seed": 8, "metrics": {"seconds": 100.0}, "curve": [],
             "extra": {"epochs": 24, "describe": "E=1, fedavg + FedBN",
                       **({"scores": FEDERATED} if with_scores else {})}},
            {"arm": "local-only", "seed": 8, "metrics": {"seconds": 50.0}, "curve": [],
             "extra": {"epochs": 24, "describe": "local-only", "per_site_scores": local}},
            {"arm": "centralised", "seed": 8, "metrics": {"seconds": 20.0}, "curve": [],
             "extra": {"epochs": 12, "describe": "centralised", "scores": CENTRALISED}}]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": SETTINGS, "summary": [], "runs": runs}))
    return path


def rescored(tmp_path: Path, run: Path, point: str) -> tuple[dict[str, Any], str]:
    out = tmp_path / point.replace(":", "-")
    assert main(["experiment", "goal", "--rescore", str(run), "--operating-point", point,
                 "--out", str(out)]) == 0
    rows = {row["arm"]: row for row in json.loads((out / "goal.json").read_text())["summary"]}
    return rows, (out / "goal.md").read_text()


def test_rescoring_applies_each_rule_to_every_model_from_the_saved_scores(
        tmp_path: Path) -> None:
    run = write_run(tmp_path / "seed-8" / "goal.json")
    rows, markdown = rescored(tmp_path, run, "youden")
    fed, central = rows["federated (demo)"], rows["centralised"]
    assert fed["threshold"]["values"] == [pytest.approx(0.825)]
    assert central["threshold"]["values"] == [pytest.approx(0.845)]
    assert fed["holdout_sensitivity"]["values"] == [0.75]
    assert fed["pooled_auc"]["values"] == [pytest.approx(8 / 9)]
    assert rows["local-only"]["best_local_pooled_auc"]["values"] == [pytest.approx(8 / 9)]
    assert "| 8 | 0.889 vs 1.000: **not met** | 0.889 vs 0.889: **not met** | " \
           "0.750 vs 0.750: met |" in markdown
    assert "Youden's J on validation" in markdown
    assert "| 8 | 0.825 | 0.667 / 0.667 | 0.845 | 0.333 / 1.000 |" in markdown

    rows, markdown = rescored(tmp_path, run, "specificity:0.90")
    fed, central = rows["federated (demo)"], rows["centralised"]
    assert fed["threshold"]["values"] == [pytest.approx(0.925)]
    assert central["threshold"]["values"] == [pytest.approx(0.83)]
    assert (fed["holdout_sensitivity"]["values"], central["holdout_sensitivity"]["values"]) \
        == ([0.5], [0.75])
    assert fed["pooled_auc"]["values"] == [pytest.approx(8 / 9)]  # AUC needs no threshold
    assert fed["seconds"]["values"] == [100.0]  # what the run measured is kept
    assert "| 8 | 0.889 vs 1.000: **not met** | 0.889 vs 0.889: **not met** | " \
           "0.500 vs 0.750: **not met** |" in markdown
    assert "validation specificity >= 0.9 (lowest such cut)" in markdown
    assert "| 8 | 0.925 | 0.667 / 1.000 | 0.830 | 0.333 / 1.000 |" in markdown
    assert f"`{run}`" in markdown


def test_runs_of_several_seeds_are_rescored_together(tmp_path: Path) -> None:
    first = write_run(tmp_path / "seed-8" / "goal.json")
    second = tmp_path / "seed-9" / "goal.json"
    data = json.loads(first.read_text())
    for run in data["runs"]:
        run["seed"] = 9
    second.parent.mkdir()
    second.write_text(json.dumps(data))
    out = tmp_path / "both"
    assert main(["experiment", "goal", "--rescore", str(first), str(second),
                 "--operating-point", "specificity:0.9", "--out", str(out)]) == 0
    markdown = (out / "goal.md").read_text()
    assert "seeds [8, 9]" in markdown
    assert "| 9 | 0.925 | 0.667 / 1.000 | 0.830 | 0.333 / 1.000 |" in markdown
    # The same seed twice, or runs of another configuration, are refused.
    with pytest.raises(SystemExit, match="more than one run"):
        main(["experiment", "goal", "--rescore", str(first), str(first), "--out",
              str(tmp_path / "twice")])
    data["settings"]["budget"] = 12
    second.write_text(json.dumps(data))
    with pytest.raises(SystemExit, match="other settings.*budget"):
        main(["experiment", "goal", "--rescore", str(first), str(second), "--out",
              str(tmp_path / "mixed")])


def test_runs_without_scores_and_bad_requests_are_refused_clearly(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = write_run(tmp_path / "old" / "goal.json", with_scores=False)
    with pytest.raises(SystemExit, match="seed 8 has no per-CT scores.*rerun"):
        main(["experiment", "goal", "--rescore", str(old), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="would overwrite"):
        main(["experiment", "goal", "--rescore", str(old), "--out", str(old.parent)])
    (tmp_path / "junk.json").write_text("[1, 2]")
    with pytest.raises(SystemExit, match="not an experiment's JSON"):
        main(["experiment", "goal", "--rescore", str(tmp_path / "junk.json"), "--out",
              str(tmp_path / "o")])
    with pytest.raises(SystemExit):
        main(["experiment", "goal", "--rescore", str(old), "--operating-point", "specificity:2",
              "--out", str(tmp_path / "o")])
    assert "outside (0, 1]" in capsys.readouterr().err
