"""`ucadi experiment`: the federation's learning studies as commands anyone can rerun.

- `sync-interval`: the papers' Fig. 5 trade-off: E local epochs per round at a fixed budget of
  local epochs, beside local-only models (and the pooled model for reference).
- `optimizers`: FedAvg, FedAvgM, FedAdam, FedProx and FedBN side by side at one budget.
- `contrast-augment`: the contrast site's local model and the federation, without and with
  the CycleGAN contrast -> non-contrast augmentation, on non-contrast test CTs.
- `goal`: the demo's federation against every local-only model and the pooled model, with
  issue 17's goal checked seed by seed (`ucadi experiment goal --seeds ...` on seeds anyone
  picks), at a chosen operating point (`--operating-point`); `--rescore` recomputes a finished
  run's report at another operating point from the per-CT scores its JSON keeps.
- `goal-evidence`: every finished goal run's seeds together, without training: how often each
  part of the goal holds, how the federated minus pooled AUC spreads over seeds and how much
  of it the test set explains, and the federation's curves over rounds seed by seed.

Each arm runs on every seed's own synthetic cohort (cohort, initial weights and the sites'
randomness all follow the seed); federated arms run encrypted through the real services by
default, or with `--plaintext-simulation` in-process (the same numbers: tested). Results go to
markdown, PNG and JSON, as mean, standard deviation and a 95 % t-interval over seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ucadi.experiments.arms import (
    CENTRALISED,
    FEDERATED,
    GOAL_FEDERATED,
    LOCAL_ONLY,
    Arm,
    ArmResult,
    Cohort,
    run_arm,
)
from ucadi.experiments.report import write_report
from ucadi.experiments.rescore import RescoreError, load_runs, rescore_result
from ucadi.experiments.simulate import FederationSetup
from ucadi.learn.evaluate import YOUDEN, OperatingPoint
from ucadi.learn.server_opt import FederatedOptimization
from ucadi.learn.stats import StatisticsError
from ucadi.threads import set_compute_threads

TRAINING_SITES = ("main-campus", "optical-valley", "sino-french", "nccid-uk")


def optimizer_arms(local_epochs: int) -> dict[str, Arm]:
    """The optimiser study's arms (server settings from Reddi et al. 2021's search space)."""
    def arm(name: str, **options: object) -> Arm:
        return Arm(name, FEDERATED, local_epochs, FederatedOptimization(**options))  # type: ignore[arg-type]

    return {
        "fedavg": arm("fedavg"),
        # Momentum 0.5 (a steady-state step of 2x the average's): 0.9 multiplies it by 10.
        "fedavgm": arm("fedavgm", server="fedavgm", server_lr=1.0, beta1=0.5),
        "fedadam": arm("fedadam", server="fedadam", server_lr=0.01, beta1=0.9, beta2=0.99,
                       tau=1e-3),
        "fedyogi": arm("fedyogi", server="fedyogi", server_lr=0.01, beta1=0.9, beta2=0.99,
                       tau=1e-3),
        "fedprox": arm("fedprox", proximal_mu=0.01),
        "fedbn": arm("fedbn", local_batchnorm=True),
    }


def cohort_for(preset: str, seed: int, root: Path) -> Path:
    """The seed's synthetic cohort (generated once, then reused)."""
    from ucadi.ct.synth import generate_cohort

    folder = root / f"{preset}-seed{seed}"
    manifest = folder / "manifest.csv"
    if not manifest.exists():
        print(f"generating the '{preset}' cohort for seed {seed} in {folder} ...", flush=True)
        generate_cohort(folder, preset=preset, seed=seed)
    return manifest


def run_experiment(args: argparse.Namespace, name: str, arms: list[tuple[Arm, int]]) -> int:
    """Every (arm, budget) on every seed, then the report. Each finished run is appended to
    `name`.partial.jsonl at once; `--resume` keeps those and runs only the missing ones."""
    set_compute_threads(args.threads)  # as each trainer service runs: no oversubscription
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / f"{name}.partial.jsonl"
    if not args.resume:
        partial.unlink(missing_ok=True)
    results: list[ArmResult] = []
    for seed in args.seeds:
        manifest = cohort_for(args.cohort, seed, Path(args.work) / "cohorts")
        cohort = Cohort.load(manifest, TRAINING_SITES)
        base = FederationSetup(manifest=manifest, sites=TRAINING_SITES, rounds=1,
                               preset=args.preset, init_seed=seed, site_seed=seed,
                               recipe={"warmup_epochs": args.warmup_epochs, "lr": args.lr,
                                       "batch_size": args.batch_size})
        for arm, epochs in arms:
            result = _finished_runs(partial).get((arm.name, seed))
            if result is None:
                result = run_arm(arm, cohort, base, epochs, seed,
                                 encrypted=not args.plaintext_simulation,
                                 workdir=Path(args.work) / name, curve=args.curves)
                result.extra.update(epochs=epochs, describe=arm.describe())
                with partial.open("a") as handle:
                    handle.write(json.dumps({"arm": result.arm, "seed": seed,
                                             "metrics": result.metrics, "curve": result.curve,
                                             "extra": result.extra}, default=float) + "\n")
            results.append(result)
            m = result.metrics
            print(f"seed {seed} | {arm.name:<14} | pooled AUC {m['pooled_auc']:.3f} "
                  f"({m['pooled_auc_ci_low']:.2f}-{m['pooled_auc_ci_high']:.2f}) | hold-out "
                  f"sensitivity {m['holdout_sensitivity']:.3f} | {m['seconds']:.0f} s",
                  flush=True)
    settings = vars(args)
    if getattr(args, "operating_point", None) is not None:
        # Thresholds by the chosen rule from each model's saved scores (Youden's J: the
        # numbers above, bit for bit), with the thresholds added to the report.
        results = [rescore_result(r, args.operating_point) for r in results]
        settings = {**settings, "operating_point": str(args.operating_point)}
    files = write_report(out, name, results, settings)
    partial.unlink(missing_ok=True)
    print(f"wrote {', '.join(str(f) for f in files)}")
    return 0


def _finished_runs(partial: Path) -> dict[tuple[str, int], ArmResult]:
    """Runs an interrupted experiment already finished, by (arm, seed)."""
    if not partial.exists():
        return {}
    runs = {}
    for line in partial.read_text().splitlines():
        row = json.loads(line)
        runs[(row["arm"], row["seed"])] = ArmResult(row["arm"], row["seed"], row["metrics"],
                                                    row["curve"], row["extra"])
    return runs


def sync_interval(args: argparse.Namespace) -> int:
    """E local epochs per round at a fixed budget, plus local-only and pooled models."""
    arms: list[tuple[Arm, int]] = [
        (Arm(f"E={e}", FEDERATED, e, FederatedOptimization.from_dict(_optimizer(args))),
         args.budget) for e in args.intervals]
    arms += [(Arm(LOCAL_ONLY, LOCAL_ONLY), args.budget),
             (Arm(CENTRALISED, CENTRALISED), central_budget(args))]
    return run_experiment(args, "sync-interval", arms)


def optimizers(args: argparse.Namespace) -> int:
    """Server optimisers, FedProx and FedBN side by side."""
    known = optimizer_arms(args.local_epochs)
    unknown = sorted(set(args.arms) - set(known))
    if unknown:
        raise SystemExit(f"unknown arms {unknown}; choose from {sorted(known)}")
    arms = [(known[name], args.budget) for name in args.arms]
    arms.append((Arm(CENTRALISED, CENTRALISED), central_budget(args)))
    return run_experiment(args, "optimizers", arms)


def goal(args: argparse.Namespace) -> int:
    """Issue 17's goal, per seed: the demo's federation (FedBN, one local epoch a round) against
    every local-only model and the pooled model, at the demo's budgets; with `--rescore`, the
    report of finished runs recomputed at `--operating-point` from their saved scores."""
    if args.rescore:
        return rescore_goal(args)
    demo = FederatedOptimization.from_dict({"local_batchnorm": True})
    arms = [(Arm(GOAL_FEDERATED, FEDERATED, 1, demo), args.budget),
            (Arm(LOCAL_ONLY, LOCAL_ONLY), args.budget),
            (Arm(CENTRALISED, CENTRALISED), central_budget(args))]
    return run_experiment(args, "goal", arms)


def goal_evidence(args: argparse.Namespace) -> int:
    """Issue 17's goal over every finished goal run (no training)."""
    from ucadi.experiments.evidence import EvidenceError, write_evidence

    try:
        files = write_evidence(Path(args.out), args.goal_runs, args.beyond)
    except EvidenceError as error:
        raise SystemExit(str(error)) from None
    print(f"wrote {', '.join(str(f) for f in files)}")
    return 0


def rescore_goal(args: argparse.Namespace) -> int:
    """The goal report of finished goal runs (one or more goal.json, e.g. one per seed) at
    another operating point, from their saved per-CT scores: nothing is retrained."""
    out = Path(args.out)
    sources = [Path(p) for p in args.rescore]
    if any((out / "goal.json").resolve() == p.resolve() for p in sources):
        raise SystemExit(f"--out {out} would overwrite the run being re-scored; choose another "
                         "folder")
    try:
        settings, results = load_runs(sources)
        if settings.get("study") != "goal":
            raise RescoreError(f"{sources[0]} is a '{settings.get('study')}' experiment, not "
                               "a goal run")
        results = [rescore_result(r, args.operating_point) for r in results]
    except RescoreError as error:
        raise SystemExit(str(error)) from None
    settings["operating_point"] = str(args.operating_point)
    out.mkdir(parents=True, exist_ok=True)
    files = write_report(out, "goal", results, settings)
    print(f"re-scored {len(results)} runs (seeds {settings['seeds']}) at "
          f"{args.operating_point}; wrote {', '.join(str(f) for f in files)}")
    return 0


def _operating_point(text: str) -> OperatingPoint:
    try:
        return OperatingPoint.parse(text)
    except StatisticsError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def central_budget(args: argparse.Namespace) -> int:
    """Epochs of the pooled model: as given, or half the federation's (the papers' ratio)."""
    return args.central_budget or max(1, args.budget // 2)


def _optimizer(args: argparse.Namespace) -> dict[str, object]:
    return json.loads(args.optimizer) if args.optimizer else {}


def _common(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--cohort", default="small",
                        help="synthetic cohort preset: tiny, small (demo), medium, "
                             "small-eval4x (small's training, 4x its evaluation sets), paper "
                             "(default %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds: cohort, initial weights and the sites' randomness "
                             "(default %(default)s)")
    parser.add_argument("--budget", type=int, default=24,
                        help="local epochs each federated site trains in all (default "
                             "%(default)s)")
    parser.add_argument("--central-budget", type=int, default=0,
                        help="epochs of the pooled model (default: half the federation's "
                             "budget, as the papers' 200 rounds against 100 epochs)")
    parser.add_argument("--preset", default="cpu-small", help="model preset (default "
                                                              "%(default)s)")
    parser.add_argument("--lr", type=float, default=0.05, help="initial learning rate")
    parser.add_argument("--batch-size", type=int, default=8, help="training batch size")
    parser.add_argument("--warmup-epochs", type=int, default=1, help="LR warm-up epochs")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for in-process training (default %(default)s)")
    parser.add_argument("--plaintext-simulation", action="store_true",
                        help="run federated arms in-process without encryption (same numbers, "
                             "far faster) instead of through the real services")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs an interrupted experiment finished (OUT/NAME."
                             "partial.jsonl) and run only the others")
    parser.add_argument("--curves", action="store_true",
                        help="also record the pooled-test AUC after every round (simulation)")
    parser.add_argument("--out", default=f"reports/experiments/{name}",
                        help="where the markdown, PNG and JSON go (default %(default)s)")
    parser.add_argument("--work", default="runs/experiments",
                        help="cohorts and federation state (default %(default)s)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ucadi experiment`."""
    experiment = sub.add_parser("experiment", help="federated-learning studies (sync interval, "
                                                   "optimisers)", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    studies = experiment.add_subparsers(dest="study", metavar="STUDY", required=True)
    sync = studies.add_parser("sync-interval", help="local epochs per round at a fixed budget")
    _common(sync, "sync-interval")
    sync.add_argument("--intervals", type=int, nargs="+", default=[1, 2, 4],
                      help="local epochs per round to compare (default %(default)s)")
    sync.add_argument("--optimizer", default="",
                      help="federation.optimizer as JSON for every interval (default: "
                           "plain FedAvg; the demo runs FedBN)")
    sync.set_defaults(func=sync_interval)
    target = studies.add_parser("goal", help="the demo's federation against local-only and "
                                             "pooled models, with the goal checked per seed")
    _common(target, "goal")
    target.add_argument("--operating-point", type=_operating_point, default=YOUDEN,
                        metavar="RULE",
                        help="how each model's threshold is chosen on its validation CTs: "
                             "'youden' (Youden's J, default) or 'specificity:T' (the lowest "
                             "cut whose validation specificity is >= T, e.g. specificity:0.90)")
    target.add_argument("--rescore", nargs="+", metavar="GOAL_JSON", default=[],
                        help="recompute the report of finished goal runs (goal.json files, "
                             "e.g. one per seed) at --operating-point from their saved "
                             "per-CT scores, without training; writes to --out")
    target.set_defaults(func=goal)
    evidence = studies.add_parser(
        "goal-evidence", help="every finished goal run's seeds together: pass rates, the "
                              "AUC difference's spread, curves over rounds (no training)")
    evidence.add_argument("goal_runs", nargs="+", type=Path, metavar="GOAL_JSON",
                          help="goal.json files of `ucadi experiment goal` (one rule)")
    evidence.add_argument("--beyond", nargs="+", type=Path, default=[], metavar="JSON",
                          help="experiment JSONs with federated or pooled runs outside the "
                               "goal's budgets on the same seeds (e.g. `optimizers --budget "
                               "48`)")
    evidence.add_argument("--out", default="reports/experiments/goal-evidence",
                          help="where evidence.md, .png and .json go (default %(default)s)")
    evidence.set_defaults(func=goal_evidence)
    opt = studies.add_parser("optimizers", help="FedAvg, FedAvgM, FedAdam, FedProx, FedBN")
    _common(opt, "optimizers")
    opt.add_argument("--arms", nargs="+", default=["fedavg", "fedavgm", "fedadam", "fedprox",
                                                   "fedbn"],
                     help="arms to run (default %(default)s)")
    opt.add_argument("--local-epochs", type=int, default=1, help="local epochs per round")
    opt.set_defaults(func=optimizers)
    from ucadi.experiments.contrast import register as register_contrast

    register_contrast(studies, _common)
