"""`ucadi experiment contrast-augment`: does translating the contrast site's contrast-enhanced
training CTs to non-contrast (a CycleGAN trained inside that site) help on non-contrast scans?

Per seed: the seed's cohort; a CycleGAN (`--cyclegan-preset`) trained on the contrast site's
own training studies; then four arms at one budget of epochs: the contrast site's local model
and the federation (FedAvg, one local epoch a round, plaintext simulation), each without and
with the augmentation at that site. Every model is scored on the non-contrast test CTs of the
training sites (5 samplings per CT); the threshold comes from validation (the site's own for
the local model, every site's for the federation). Paired per seed: DeLong test of the two
AUCs on the same CTs, and the augmented model's sensitivity at the specificity the
unaugmented one reaches (the papers' comparison). Markdown, PNG and JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ucadi.experiments.report import mean_interval
from ucadi.threads import set_compute_threads

ARMS = ("local", "local + CycleGAN", "federated", "federated + CycleGAN")
NONCONTRAST_TEST = "non-contrast test"
REPORT_NAME = "contrast-augment"


def sensitivity_at_specificity(scores: np.ndarray, labels: np.ndarray,
                               specificity: float) -> float:
    """Sensitivity at the lowest cut whose specificity on these negatives is >= `specificity`
    (positive: score above the cut)."""
    negatives = np.sort(scores[labels == 0])
    positives = scores[labels == 1]
    if not len(negatives) or not len(positives):
        return math.nan
    k = min(len(negatives), max(1, math.ceil(specificity * len(negatives) - 1e-9)))
    return float((positives > negatives[k - 1]).mean())


def noncontrast_test(records: list[Any], sites: tuple[str, ...]) -> list[Any]:
    """Test CTs of the training sites acquired without contrast."""
    return [r for r in records if r.site in sites and r.split == "test" and not int(r.contrast)]


def train_translator(cohort: Any, site: str, preset_name: str, epochs: int | None, seed: int,
                     folder: Path) -> Path:
    """The seed's CycleGAN of `site` (trained once into `folder`, then reused)."""
    from ucadi.augment.presets import get_preset
    from ucadi.augment.workflow import train_site_translator

    if not (folder / "card.json").exists():
        train_site_translator(cohort.split([site], "train"), site, get_preset(preset_name),
                              folder, epochs=epochs, seed=seed,
                              log=lambda line: print(f"seed {seed} | CycleGAN: {line}",
                                                     flush=True))
    return folder


def covid_scores(scores: Any, val: Sequence[Any], test: Sequence[Any]
                 ) -> tuple[float, np.ndarray]:
    """The COVID-19 probability of each test CT (the COVID class of the model's class rows)
    and the threshold validation gives it (Youden's J; 0.5 when validation has one class)."""
    from ucadi.learn import COVID_CLASS
    from ucadi.learn.evaluate import choose_threshold

    val_labels = np.array([r.binary_label for r in val])
    threshold = (choose_threshold(np.asarray(scores.val)[:, COVID_CLASS], val_labels)
                 if len(scores.val) else 0.5)
    return threshold, np.array([scores.test[r.case_id][COVID_CLASS] for r in test])


def run_seed(args: argparse.Namespace, seed: int, finished: set[str],
             save: Callable[[dict[str, Any]], None]) -> None:
    """The arms of one seed not in `finished`: each run (scores, metrics, labels) goes to
    `save` as soon as it is done."""
    from ucadi.augment import ContrastAugmentation, load_translator
    from ucadi.demo.compare import StackCache, score_model, train_baseline
    from ucadi.experiments.arms import Cohort
    from ucadi.experiments.cli import TRAINING_SITES, cohort_for
    from ucadi.experiments.simulate import FederationSetup, simulate
    from ucadi.learn.evaluate import evaluate_binary
    from ucadi.learn.server_opt import FederatedOptimization
    from ucadi.model.layout import initial_model

    if set(args.arms) <= finished:
        return
    work = Path(args.work)
    manifest = cohort_for(args.cohort, seed, work / "cohorts")
    cohort = Cohort.load(manifest, TRAINING_SITES)
    if args.contrast_site not in TRAINING_SITES:
        raise SystemExit(f"--contrast-site must be one of {TRAINING_SITES}")
    gan = train_translator(cohort, args.contrast_site, args.cyclegan_preset,
                           args.cyclegan_epochs, seed,
                           work / REPORT_NAME / f"cyclegan-{args.contrast_site}-seed{seed}")
    recipe = {"warmup_epochs": min(args.warmup_epochs, args.budget - 1), "lr": args.lr,
              "batch_size": args.batch_size, "total_epochs": args.budget}
    setup = FederationSetup(manifest=manifest, sites=TRAINING_SITES, rounds=args.budget,
                            local_epochs=1, preset=args.preset, init_seed=seed, site_seed=seed,
                            recipe=recipe, optimization=FederatedOptimization(),
                            augment_contrast_probability=args.probability)
    cohort.cache = StackCache(setup.preprocess)
    test = noncontrast_test(cohort.records, TRAINING_SITES)
    labels = np.array([r.binary_label for r in test])
    for arm in args.arms:
        if arm in finished:
            continue
        started = time.perf_counter()
        augmented = arm.endswith("CycleGAN")
        if arm.startswith("local"):
            augment = ContrastAugmentation(load_translator(gan), args.probability, str(gan)) \
                if augmented else None
            model = initial_model(setup.arch, setup.preset, 2, seed)
            train_baseline(model, cohort.split([args.contrast_site], "train"), setup.preprocess,
                           setup.training_recipe, args.budget, seed, contrast_augment=augment)
            val = cohort.split([args.contrast_site], "val")
        else:
            federation = replace(setup, augment_contrast=((args.contrast_site, str(gan)),)
                                 if augmented else ())
            result = simulate(federation, threads=args.threads)
            model = initial_model(setup.arch, setup.preset, 2, seed)
            model.load_state_dict(next(iter(result.learners.values())).global_state(),
                                  strict=False)
            val = cohort.split(TRAINING_SITES, "val")
        scores = score_model(model, val, {NONCONTRAST_TEST: test}, setup.preprocess,
                             cohort.cache, samples=5, seed=seed)
        threshold, test_scores = covid_scores(scores, val, test)
        metrics = evaluate_binary(test_scores, labels, threshold)
        metrics["seconds"] = time.perf_counter() - started
        save({"arm": arm, "seed": seed, "metrics": metrics, "scores": test_scores.tolist(),
              "labels": labels.tolist(), "threshold": threshold, "test_cases": len(test),
              "test_covid": int(labels.sum())})
        print(f"seed {seed} | {arm:<20} | non-contrast test AUC {metrics['auc']:.3f} "
              f"({metrics['auc_ci_low']:.2f}-{metrics['auc_ci_high']:.2f}) | sensitivity "
              f"{metrics['sensitivity']:.3f} specificity {metrics['specificity']:.3f} | "
              f"{metrics['seconds']:.0f} s", flush=True)


def _pair(runs: list[dict[str, Any]]) -> None:
    """Add, to each augmented run of one seed, the paired comparison with its unaugmented
    arm (same test CTs)."""
    from ucadi.learn.stats import delong_test

    by_arm = {r["arm"]: r for r in runs}
    for run in runs:
        base = by_arm.get(run["arm"].removesuffix(" + CycleGAN"))
        if base is None or base is run:
            continue
        with_scores, without = np.array(run["scores"]), np.array(base["scores"])
        labels = np.array(run["labels"])
        specificity = base["metrics"]["specificity"]
        run["paired"] = {
            "auc_difference": run["metrics"]["auc"] - base["metrics"]["auc"],
            "delong_p": float(delong_test(with_scores, without, labels)),
            "matched_specificity": specificity,
            "sensitivity_without": sensitivity_at_specificity(without, labels, specificity),
            "sensitivity_with": sensitivity_at_specificity(with_scores, labels, specificity)}


def contrast_augment(args: argparse.Namespace) -> int:
    """Run every seed's arms (resumable per arm), then write the report."""
    if not args.plaintext_simulation:
        raise SystemExit("contrast-augment runs its federated arms in the plaintext simulation "
                         "only (the same FedAvg as the services, tested); pass "
                         "--plaintext-simulation")
    unknown = sorted(set(args.arms) - set(ARMS))
    if unknown:
        raise SystemExit(f"unknown arms {unknown}; choose from {list(ARMS)}")
    set_compute_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / f"{REPORT_NAME}.partial.jsonl"
    if not args.resume:
        partial.unlink(missing_ok=True)
    done = [json.loads(line) for line in partial.read_text().splitlines()] \
        if partial.exists() else []
    runs = [r for r in done if r["seed"] in args.seeds and r["arm"] in args.arms]

    def save(run: dict[str, Any]) -> None:
        with partial.open("a") as handle:
            handle.write(json.dumps(run, default=float) + "\n")
        runs.append(run)

    for seed in args.seeds:
        run_seed(args, seed, {r["arm"] for r in runs if r["seed"] == seed}, save)
    for seed in args.seeds:
        _pair([r for r in runs if r["seed"] == seed])
    files = write_contrast_report(out, runs, {k: v for k, v in vars(args).items()
                                              if k != "func"})
    partial.unlink(missing_ok=True)
    print(f"wrote {', '.join(str(f) for f in files)}")
    return 0


def _stat(values: list[float]) -> dict[str, Any]:
    mean, sd, ci = mean_interval(values)
    return {"values": values, "mean": mean, "sd": sd, "ci95": ci}


def _fmt(stat: dict[str, Any], digits: int = 3, signed: bool = False) -> str:
    sign = "+" if signed else ""
    text = f"{stat['mean']:{sign}.{digits}f}"
    if not math.isnan(stat["sd"]):
        text += f" ± {stat['sd']:.{digits}f} (CI ±{stat['ci95']:.{digits}f})"
    return text


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm: AUC, sensitivity, specificity over seeds; per augmented arm: the paired
    differences over seeds."""
    arms = [a for a in ARMS if any(r["arm"] == a for r in runs)]
    summary: dict[str, Any] = {}
    for arm in arms:
        mine = sorted((r for r in runs if r["arm"] == arm), key=lambda r: r["seed"])
        row = {key: _stat([r["metrics"][key] for r in mine])
               for key in ("auc", "sensitivity", "specificity", "seconds")}
        row["seeds"] = [r["seed"] for r in mine]
        paired = [r["paired"] for r in mine if "paired" in r]
        if paired:
            row["paired"] = {key: _stat([p[key] for p in paired])
                             for key in ("auc_difference", "sensitivity_without",
                                         "sensitivity_with", "matched_specificity")}
            row["paired"]["delong_p"] = [p["delong_p"] for p in paired]
        summary[arm] = row
    return summary


def markdown(summary: dict[str, Any], runs: list[dict[str, Any]],
             settings: dict[str, Any]) -> str:
    """The report's text."""
    seeds = sorted({r["seed"] for r in runs})
    gan_epochs = settings["cyclegan_epochs"]
    cases = {r["seed"]: (r["test_cases"], r["test_covid"]) for r in runs}
    lines = [f"# `ucadi experiment {REPORT_NAME}`", "",
             f"Cohort `{settings['cohort']}`, model `densenet3d/{settings['preset']}`, seeds "
             f"{seeds}, budget {settings['budget']} epochs per arm (federated arms: "
             f"{settings['budget']} rounds of 1 local epoch, FedAvg, plaintext simulation), "
             f"arms {', '.join(summary)}, lr {settings['lr']}, "
             f"batch {settings['batch_size']}. CycleGAN `{settings['cyclegan_preset']}`"
             f"{'' if gan_epochs is None else f', {gan_epochs} epochs'}"
             f" trained on {settings['contrast_site']}'s own training studies; translation "
             f"probability {settings['probability']} per contrast study and epoch.", "",
             "Test set: the training sites' non-contrast test CTs ("
             + ", ".join(f"seed {s}: {n} CTs, {p} COVID-19" for s, (n, p) in
                         sorted(cases.items())) + "). Each cell: mean ± standard deviation "
             "over seeds (CI ±: half-width of the 95 % t-interval of the mean).", "",
             "| arm | AUC | sensitivity | specificity | wall time (s) |", "|---|---|---|---|---|"]
    for arm, row in summary.items():
        lines.append(f"| {arm} | {_fmt(row['auc'])} | {_fmt(row['sensitivity'])} | "
                     f"{_fmt(row['specificity'])} | {row['seconds']['mean']:.0f} |")
    lines += ["", "With against without the augmentation, paired on the same CTs per seed "
              "(sensitivity at the specificity the unaugmented model reaches at its "
              "validation threshold; DeLong p of the AUC difference per seed):", "",
              "| comparison | AUC difference | sensitivity without -> with | DeLong p per seed |",
              "|---|---|---|---|"]
    for arm, row in summary.items():
        if "paired" not in row:
            continue
        paired = row["paired"]
        lines.append(f"| {arm} vs {arm.removesuffix(' + CycleGAN')} | "
                     f"{_fmt(paired['auc_difference'], signed=True)} | "
                     f"{paired['sensitivity_without']['mean']:.3f} -> "
                     f"{paired['sensitivity_with']['mean']:.3f} | "
                     + ", ".join(f"{p:.3f}" for p in paired["delong_p"]) + " |")
    lines += ["", "Per seed (AUC / sensitivity / specificity):", "",
              "| arm | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|" + "---|" * len(seeds)]
    for arm in summary:
        cells = []
        for seed in seeds:
            run = next((r for r in runs if r["arm"] == arm and r["seed"] == seed), None)
            cells.append("–" if run is None else
                         f"{run['metrics']['auc']:.3f} / {run['metrics']['sensitivity']:.3f} / "
                         f"{run['metrics']['specificity']:.3f}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    command = (f"ucadi experiment {REPORT_NAME} --plaintext-simulation --cohort "
               f"{settings['cohort']} --seeds {' '.join(str(s) for s in seeds)} --budget "
               f"{settings['budget']} --cyclegan-preset {settings['cyclegan_preset']}"
               + ("" if settings["cyclegan_epochs"] is None
                  else f" --cyclegan-epochs {settings['cyclegan_epochs']}")
               + ("" if list(summary) == list(ARMS)
                  else " --arms " + " ".join(f"'{arm}'" for arm in summary)))
    lines += ["", f"Rerun: `{command}`", ""]
    return "\n".join(lines)


def plot(path: Path, summary: dict[str, Any]) -> None:
    """AUC and sensitivity per arm (mean, 95 % CI, each seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    names = list(summary)
    for axis, key, title in ((axes[0], "auc", "AUC"), (axes[1], "sensitivity",
                                                        "sensitivity (validation threshold)")):
        for i, arm in enumerate(names):
            stat = summary[arm][key]
            colour = "tab:orange" if arm.endswith("CycleGAN") else "tab:blue"
            axis.errorbar([i], [stat["mean"]], yerr=[0 if math.isnan(stat["ci95"])
                                                      else stat["ci95"]], fmt="o", capsize=4,
                          color=colour)
            axis.scatter([i] * len(stat["values"]), stat["values"], s=12, color="grey")
        axis.set_xticks(range(len(names)))
        axis.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
        axis.set(title=f"non-contrast test CTs: {title}\n(mean, 95 % CI over seeds, each seed)",
                 ylim=(0, 1.02))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_contrast_report(out: Path, runs: list[dict[str, Any]],
                          settings: dict[str, Any]) -> list[Path]:
    """contrast-augment.md, .png and .json under `out`."""
    summary = summarise(runs)
    files = [out / f"{REPORT_NAME}.md", out / f"{REPORT_NAME}.png", out / f"{REPORT_NAME}.json"]
    files[0].write_text(markdown(summary, runs, settings))
    plot(files[1], summary)
    files[2].write_text(json.dumps({"settings": settings, "summary": summary, "runs": runs},
                                   indent=2, default=float))
    return files


def register(studies: argparse._SubParsersAction, common: Any) -> None:
    """Add the `contrast-augment` study to `ucadi experiment`."""
    study = studies.add_parser(REPORT_NAME, help="CycleGAN contrast -> non-contrast "
                                                 "augmentation: local and federated models on "
                                                 "non-contrast test CTs",
                               description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    common(study, REPORT_NAME)
    study.add_argument("--contrast-site", default="nccid-uk",
                       help="the contrast-heavy site (default %(default)s)")
    study.add_argument("--cyclegan-preset", default="cpu-small",
                       help="CycleGAN preset (default %(default)s)")
    study.add_argument("--cyclegan-epochs", type=int, default=None,
                       help="shorten the CycleGAN preset's schedule")
    study.add_argument("--probability", type=float, default=0.5,
                       help="chance a contrast study's sampling is translated (default "
                            "%(default)s)")
    study.add_argument("--arms", nargs="+", default=list(ARMS),
                       help="arms to run (default: all four)")
    study.set_defaults(func=contrast_augment, budget=12)
