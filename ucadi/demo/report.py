"""The demo's closing report: baselines trained, every model evaluated, markdown + PNG + JSON."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ucadi.ct import PreprocessConfig
from ucadi.ct.synth import read_manifest
from ucadi.demo.compare import (
    CENTRALISED_WEIGHT_DECAY,
    HOLDOUT_SITES,
    POOLED,
    BaselineJob,
    BaselinePool,
    ModelResult,
    ScoringSetup,
    classes_table,
    grades_table,
    markdown_table,
    plot_comparison,
    plot_grades,
    result_from_scores,
)
from ucadi.demo.federation import FederationPlan
from ucadi.learn import TrainingRecipe
from ucadi.learn.evaluate import compare_models
from ucadi.learn.server_opt import FederatedOptimization
from ucadi.learn.site_learner import load_global_model
from ucadi.model import get_preset


def _rounds_table(summary: dict[str, Any]) -> str:
    lines = ["| round | sites | uploaded (MB) | global (MB) | round time (s) |",
             "|---|---|---|---|---|"]
    for r in summary["rounds"]:
        seconds = "–" if r["seconds"] is None else f"{r['seconds']:.1f}"
        lines.append(f"| {r['round']} | {', '.join(r['sites'])} | {r['bytes_in'] / 1e6:.2f} | "
                     f"{r['global_bytes'] / 1e6:.2f} | {seconds} |")
    return "\n".join(lines) + "\n"


def configuration_text(plan: FederationPlan, seed: int, central_epochs: int) -> str:
    """The run's seed, configuration and both budgets, as a markdown list."""
    recipe = TrainingRecipe.from_dict({"task": plan.task, **plan.recipe})
    optimization = FederatedOptimization.from_dict(plan.optimizer)
    fed_epochs = plan.rounds * plan.local_epochs
    masking = ("with pairwise masks (no single party reads a site's update)"
               if plan.pairwise_masks else "shared-key mode (pairwise masks off)")
    return (
        f"- Seed {seed} (cohort, initial weights, every site's sampling, shuffling and "
        f"DropBlock masks); {len(plan.sites)} training sites, quorum {plan.min_sites}.\n"
        f"- Model densenet3d/{plan.model_preset}, task {plan.task}; recipe: lr {recipe.lr}, "
        f"batch {recipe.batch_size}, momentum {recipe.momentum}, warm-up "
        f"{recipe.warmup_epochs} epoch(s), cosine to 0, weight decay {recipe.weight_decay} "
        f"(sites, local-only) / {CENTRALISED_WEIGHT_DECAY} (centralised).\n"
        f"- Federation: {optimization.describe()} (federation.optimizer "
        f"`{optimization.to_json()}`); encrypted, {masking}.\n"
        f"- Budgets: the federation trains {fed_epochs} local epochs per site ({plan.rounds} "
        f"rounds x {plan.local_epochs}); each local-only model trains as many "
        f"({fed_epochs}); the centralised model trains {central_epochs} epochs on the pooled "
        "data.\n")


class DemoComparison:
    """The demo's baselines and evaluation. Made before the federation starts, it trains the
    local-only and centralised models in two background worker processes while the
    federation runs (the same weights as training them one by one); `report` then scores the
    federated model and writes reports_dir/{comparison.md,png,json}."""

    def __init__(self, *, manifest: Path, plan: FederationPlan, seed: int = 0,
                 central_epochs: int | None = None, workers: int = 2) -> None:
        self.plan, self.seed = plan, seed
        self.records = read_manifest(manifest)
        preset = get_preset(plan.model_preset)
        config = PreprocessConfig(slices=preset.slices, size=(preset.height, preset.width))
        recipe = TrainingRecipe.from_dict({"task": plan.task, **plan.recipe})
        epochs = plan.rounds * plan.local_epochs
        self.central_epochs = central_epochs or epochs
        central_recipe = replace(recipe, total_epochs=self.central_epochs,
                                 weight_decay=CENTRALISED_WEIGHT_DECAY,
                                 warmup_epochs=min(recipe.warmup_epochs,
                                                   self.central_epochs - 1))
        self.num_classes = len(recipe.class_names)
        self.test_sets: dict[str, tuple[Any, ...]] = {
            site: self.split([site], "test") for site in plan.sites}
        self.test_sets[POOLED] = self.split(plan.sites, "test")
        for site in HOLDOUT_SITES:
            self.test_sets[f"{site} (hold-out)"] = self.split([site], "holdout")
        self.pooled_val = self.split(plan.sites, "val")
        jobs = [BaselineJob(f"local {site}", self.split([site], "train"), recipe, epochs,
                            self.split([site], "val")) for site in plan.sites]
        jobs.append(BaselineJob("centralised", self.split(plan.sites, "train"), central_recipe,
                                self.central_epochs, self.pooled_val))
        self.setup = ScoringSetup(config, plan.arch, plan.model_preset, self.num_classes,
                                  plan.init_seed, seed, self.test_sets, plan.task)
        self.pool = BaselinePool(jobs, self.setup, workers=workers)

    def split(self, sites: list[str] | tuple[str, ...], name: str) -> tuple[Any, ...]:
        """Records of `sites` in split `name`."""
        return tuple(r for r in self.records if r.site in sites and r.split == name)

    def close(self) -> None:
        """Stop the workers (a failed or interrupted demo)."""
        self.pool.close()

    def report(self, *, federated_state: Path, reports_dir: Path,
               federation_summary: dict[str, Any]) -> dict[str, Any]:
        """Score the federated model (the global model the sites hold), wait for the
        baselines, evaluate all of them and write the reports."""
        plan = self.plan
        federated = load_global_model(federated_state, plan.arch, plan.model_preset,
                                      self.num_classes, plan.init_seed)
        federated_scores = self.pool.score(federated.state_dict(), self.pooled_val)
        baselines = self.pool.results()
        self.pool.close()
        test_sets, task = self.test_sets, plan.task
        results: list[ModelResult] = [
            result_from_scores(f"local {site}", baselines[f"local {site}"][1],
                               self.split([site], "val"), test_sets, task)
            for site in plan.sites]
        results.append(result_from_scores("federated", federated_scores.result(),
                                          self.pooled_val, test_sets, task))
        results.append(result_from_scores("centralised", baselines["centralised"][1],
                                          self.pooled_val, test_sets, task))
        print("      every model evaluated", flush=True)
        return write_comparison(results, reports_dir, federation_summary, plan=plan,
                                seed=self.seed, central_epochs=self.central_epochs,
                                test_sets=test_sets)


def write_comparison(results: list[ModelResult], reports_dir: Path,
                     federation_summary: dict[str, Any], *, plan: FederationPlan, seed: int,
                     central_epochs: int, test_sets: dict[str, tuple[Any, ...]]
                     ) -> dict[str, Any]:
    """reports_dir/comparison.{md,png,json} (and comparison_classes.png for a four-class
    model) from every model's results; returns the markdown and the files' names."""
    epochs = plan.rounds * plan.local_epochs
    set_names = list(test_sets)
    reports_dir.mkdir(parents=True, exist_ok=True)
    files = ["comparison.md", "comparison.png"]
    tests: dict[str, dict[str, float]] = {}
    header = ("# UCADI demo: local-only vs federated vs centralised\n\n"
              + configuration_text(plan, seed, central_epochs) + "\n")
    rounds = ("## Federation rounds (encrypted FedAvg)\n\n"
              + _rounds_table(federation_summary))
    if plan.task == "severity":
        plot_grades(reports_dir / "comparison.png", results, set_names)
        markdown = (
            header + "COVID-19 severity (grades I/II/III by involved lung fraction), "
            "evaluated on each test set's graded COVID-19 CTs only (every other CT is "
            "left out, as it is from training); each CT is called its most probable grade "
            "(test-time average of 5 samplings). Macro AUC: mean one-vs-rest AUC over the "
            "grades present, 95 % CI by stratified bootstrap; kappa: quadratic-weighted "
            "Cohen's kappa. Hold-out sites are COVID-only and graded, so they count here."
            "\n\n" + rounds + "\n## Grades by test set\n\n"
            + grades_table(results, set_names) + "\n![comparison](comparison.png)\n")
    else:
        pooled_labels = np.array([r.binary_label for r in test_sets[POOLED]])
        plot_comparison(reports_dir / "comparison.png", results, pooled_labels, set_names)
        by_name = {r.name: r for r in results}
        if len(set(pooled_labels)) == 2:
            for other in [r.name for r in results if r.name != "federated"]:
                tests[other] = compare_models(by_name["federated"].pooled_scores,
                                              by_name[other].pooled_scores, pooled_labels)
        markdown = (
            header + "Binary COVID-19 vs non-COVID-19"
            + (" (the four-class model's COVID-19 probability)" if plan.task == "four_class"
               else "") + ", test-time average of 5 samplings per CT, thresholds chosen on "
            "validation data (Youden's J). CT-level metrics; AUC with 95 % DeLong CI. "
            "Hold-out sites are COVID-only: specificity and AUC do not apply there.\n\n"
            + rounds + "\n## Sensitivity / specificity / AUC by test set\n\n"
            + markdown_table(results, set_names)
            + "\n## DeLong test on the pooled test set (federated vs each model)\n\n"
            + "| other model | federated AUC | other AUC | p |\n|---|---|---|---|\n"
            + "".join(f"| {name} | {t['auc']:.3f} | {t['auc_other']:.3f} | "
                      f"{t['delong_p']:.3g} |\n" for name, t in tests.items())
            + "\n![comparison](comparison.png)\n")
        if plan.task == "four_class":
            markdown += _four_class_section(results, reports_dir)
            if (reports_dir / "comparison_classes.png").exists():
                files.append("comparison_classes.png")
    (reports_dir / "comparison.md").write_text(markdown)
    (reports_dir / "comparison.json").write_text(json.dumps({
        "seed": seed, "task": plan.task, "configuration": {
            "sites": plan.sites, "rounds": plan.rounds, "local_epochs": plan.local_epochs,
            "min_sites": plan.min_sites, "preset": plan.model_preset, "recipe": plan.recipe,
            "task": plan.task,
            "optimizer": FederatedOptimization.from_dict(plan.optimizer).to_dict(),
            "local_only_epochs": epochs, "centralised_epochs": central_epochs},
        "federation": federation_summary,
        "models": {r.name: {"threshold": r.threshold, "by_set": r.by_set,
                            **({"four_class": r.classes} if r.classes else {})}
                   for r in results},
        "delong_vs_federated": tests}, indent=2, default=float))
    return {"markdown": markdown,
            "files": [*files, "comparison.json", "demo_summary.json"]}


def _four_class_section(results: list[ModelResult], reports_dir: Path) -> str:
    """The papers' four-class outputs on the pooled test set: a table per model and the
    federated and centralised models' confusion matrices (comparison_classes.png)."""
    from ucadi.learn.report import plot_confusions

    shown = [r for r in results if r.name in ("federated", "centralised")
             and r.classes and "confusion" in r.classes]
    (reports_dir / "comparison_classes.png").unlink(missing_ok=True)
    if shown:
        plot_confusions(reports_dir / "comparison_classes.png", [
            (f"{r.name}, pooled test", np.array(r.classes["confusion"]),
             list(r.classes["class_names"])) for r in shown])
    return ("\n## Four classes on the pooled test set\n\n"
            "CTs with a four-class diagnosis (the UK-style site's binary-only labels left "
            "out), each called its most probable class; macro AUC: mean one-vs-rest AUC, "
            "95 % CI by stratified bootstrap.\n\n" + classes_table(results)
            + "\n![four-class confusion matrices](comparison_classes.png)\n")
