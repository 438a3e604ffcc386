"""`ucadi train`, `ucadi evaluate` and `ucadi explain`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ucadi.errors import CommandError
from ucadi.learn.recipe import TASKS
from ucadi.threads import set_compute_threads

ARCH_CHOICES = ("densenet3d", "resnet3d18", "resnet3d50", "xception3d")
PRESET_CHOICES = ("cpu-small", "cpu-medium", "paper")
# The paper warms up 5 of 100 epochs; shorter runs keep that fraction.
WARMUP_FRACTION = 0.05


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the train, evaluate and explain commands."""
    train = subparsers.add_parser("train", help="train a model on a site's (or all sites') data")
    train.add_argument("--data", type=Path, required=True, help="cohort folder (manifest.csv)")
    where = train.add_mutually_exclusive_group(required=True)
    where.add_argument("--site", action="append", help="train on this site (repeatable)")
    where.add_argument("--all-sites", action="store_true", help="pool every training site")
    train.add_argument("--arch", choices=ARCH_CHOICES, default="densenet3d")
    train.add_argument("--preset", choices=PRESET_CHOICES, default="cpu-small")
    train.add_argument("--task", choices=TASKS, default="binary",
                       help="binary (COVID-19 vs not), four_class (healthy, COVID-19, other "
                            "viral, bacterial) or severity (grade I/II/III of the COVID-19 "
                            "cases that have one; other cases are left out)")
    train.add_argument("--epochs", type=int, default=100, help="total epochs (paper: 100)")
    train.add_argument("--warmup-epochs", type=int, default=None,
                       help="linear warm-up epochs (default 5 %% of --epochs, the paper's 5/100)")
    train.add_argument("--lr", type=float, default=0.01)
    train.add_argument("--weight-decay", type=float, default=1e-4,
                       help="paper: 1e-4 centralised, 5e-4 federated clients")
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    train.add_argument("--cv", type=int, default=0, metavar="K",
                       help="K-fold cross-validation by patient on train+val; keeps the best fold")
    train.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    train.add_argument("--augment-contrast", type=Path, default=None, metavar="MODEL_DIR",
                       help="CycleGAN folder (`ucadi augment cyclegan train`): contrast-enhanced "
                            "training studies are translated to non-contrast at random")
    train.add_argument("--augment-contrast-probability", type=float, default=0.5,
                       help="chance a contrast study's sampling is translated each epoch "
                            "(default %(default)s)")
    train.add_argument("--no-progress", action="store_true")
    train.add_argument("--out", type=Path, required=True, help="model folder to write")
    train.set_defaults(func=_train)

    evaluate = subparsers.add_parser("evaluate", help="clinical statistics, ROC, confusion")
    evaluate.add_argument("--model", type=Path, required=True, help="model folder")
    evaluate.add_argument("--data", type=Path, required=True, help="cohort folder")
    evaluate.add_argument("--split", default="test", help="test, val or holdout")
    evaluate.add_argument("--site", action="append", help="only this site (repeatable)")
    evaluate.add_argument("--threshold", type=float, default=None,
                          help="override the card's validation-chosen threshold (COVID-19 "
                               "models; a severity model calls the most probable grade)")
    evaluate.add_argument("--samples", type=int, default=5, help="samplings per CT (paper: 5)")
    evaluate.add_argument("--bootstrap", type=int, default=0, metavar="N",
                          help="also a bootstrap AUC CI with N resamples (also the resamples "
                               "of the four-class and severity macro-AUC CI; default 2000)")
    evaluate.add_argument("--compare", type=Path, default=None,
                          help="second model folder: DeLong test between the two AUCs")
    evaluate.add_argument("--readers", type=Path, default=None,
                          help="CSV reader,sensitivity,specificity plotted on the ROC")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--out", type=Path, required=True, help="report folder")
    evaluate.set_defaults(func=_evaluate)

    explain = subparsers.add_parser("explain", help="Grad-CAM heatmaps for a study")
    explain.add_argument("study", type=Path, help="DICOM folder, zip or NIfTI")
    explain.add_argument("--model", type=Path, required=True)
    explain.add_argument("--target", default=None, help="class name (default: predicted class)")
    explain.add_argument("--layer", default=None, help="model layer (default: the last block)")
    explain.add_argument("--seed", type=int, default=0, help="which sampling of the study")
    explain.add_argument("--out", type=Path, required=True)
    explain.set_defaults(func=_explain)


def _train(args: argparse.Namespace) -> int:
    from ucadi.learn.cohort import load_records, select, training_sites
    from ucadi.learn.recipe import TrainingRecipe
    from ucadi.learn.session import completed_epochs
    from ucadi.learn.workflow import cross_validate, resolve_device, train_model

    if args.threads:
        set_compute_threads(args.threads)
    warmup = (round(WARMUP_FRACTION * args.epochs) if args.warmup_epochs is None
              else args.warmup_epochs)
    recipe = TrainingRecipe(lr=args.lr, weight_decay=args.weight_decay,
                            batch_size=args.batch_size, warmup_epochs=warmup,
                            total_epochs=args.epochs, task=args.task)
    records = load_records(args.data)
    sites = training_sites(records) if args.all_sites else args.site
    device = resolve_device(args.device)
    def report_epoch(epoch: int, metrics: dict[str, float]) -> None:
        val = f", validation AUC {metrics['val_auc']:.3f}" if "val_auc" in metrics else ""
        print(f"epoch {epoch + 1}/{args.epochs}: loss {metrics['train_loss']:.4f}, accuracy "
              f"{metrics['train_accuracy']:.3f}{val}", flush=True)

    common = dict(arch=args.arch, preset=args.preset, recipe=recipe, out_dir=args.out,
                  seed=args.seed, device=device, progress=not args.no_progress,
                  on_epoch_end=report_epoch)
    if args.augment_contrast is not None:
        from ucadi.augment import ContrastAugmentation, load_translator

        augment = ContrastAugmentation(load_translator(args.augment_contrast),
                                       args.augment_contrast_probability,
                                       str(args.augment_contrast))
        if args.cv:
            raise CommandError("--augment-contrast applies to a single training run; drop --cv")
        common["contrast_augment"] = augment
        print(f"contrast augmentation: {args.augment_contrast}, probability "
              f"{augment.probability}")
    if args.cv:
        pool = select(records, sites=sites, splits=["train", "val"])
        print(f"{args.cv}-fold cross-validation on {len(pool)} CTs of {', '.join(sites)}")
        _, card = cross_validate(pool, args.cv, **common)  # type: ignore[arg-type]
        cv = card.metrics["cross_validation"]
        print(f"validation AUC per fold: {', '.join(f'{a:.3f}' for a in cv['val_auc_per_fold'])}"
              f" (mean {cv['val_auc_mean']:.3f}); kept fold {cv['chosen_fold']}")
    else:
        done = completed_epochs(args.out)
        if done:
            state = "is complete" if done >= args.epochs else "resumes"
            print(f"the run in {args.out} {state} after epoch {done}/{args.epochs}")
        train = select(records, sites=sites, splits=["train"])
        val = [r for r in records if r.split == "val" and r.site in set(sites)]
        print(f"training {args.arch}/{args.preset} ({args.task}) on {len(train)} CTs of "
              f"{', '.join(sites)}, validating on {len(val)}, device {device}")
        _, card = train_model(train, val, **common)  # type: ignore[arg-type]
    validation = card.metrics.get("validation")
    if validation and "macro_auc" in validation:
        print(f"validation ({validation['cases']} graded CTs): macro AUC "
              f"{validation['macro_auc']:.3f} (95 % CI {validation['macro_auc_ci_low']:.3f}-"
              f"{validation['macro_auc_ci_high']:.3f}), quadratic-weighted kappa "
              f"{validation['quadratic_kappa']:.3f}, accuracy {validation['accuracy']:.3f}")
    elif validation:
        print(f"validation: AUC {validation['auc']:.3f} (95 % CI {validation['auc_ci_low']:.3f}-"
              f"{validation['auc_ci_high']:.3f}), sensitivity {validation['sensitivity']:.3f}, "
              f"specificity {validation['specificity']:.3f} at threshold "
              f"{card.metrics['threshold']:.3f}")
    print(f"model written to {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from ucadi.ct import PreprocessConfig
    from ucadi.learn.cohort import load_records, select
    from ucadi.learn.evaluate import ORDINAL_TASKS, card_task, clinical_report
    from ucadi.learn.predict import predict_probabilities
    from ucadi.learn.report import read_readers, write_report
    from ucadi.learn.workflow import resolve_device
    from ucadi.model import load_checkpoint

    device = resolve_device(args.device)
    model, card = load_checkpoint(args.model, device=device)
    task = card_task(card)
    config = PreprocessConfig.from_dict(card.preprocess)
    records = select(load_records(args.data), sites=args.site, splits=[args.split])
    if task in ORDINAL_TASKS:
        return _evaluate_grades(args, model, card, config, records, device)
    readers = read_readers(args.readers) if args.readers else []
    threshold = args.threshold if args.threshold is not None else card.metrics.get("threshold")
    if threshold is None:
        raise CommandError(f"{args.model}/card.json records no threshold; pass --threshold")
    probs = predict_probabilities(model, records, config, samples=args.samples, seed=args.seed,
                                  device=device, progress=True)
    compare = None
    if args.compare:
        other, other_card = load_checkpoint(args.compare, device=device)
        compare = predict_probabilities(other, records, PreprocessConfig.from_dict(
            other_card.preprocess), samples=args.samples, seed=args.seed, device=device)
    report = clinical_report(probs, records, card.class_names, float(threshold),
                             bootstrap=args.bootstrap, compare_probs=compare)
    report["model"] = _model_summary(args, card)
    labels = np.array([int(r.binary_label) for r in records])
    files = write_report(args.out, report, probs[:, 1], labels,
                         f"{card.arch}/{card.preset} on {args.split}", readers, probs=probs,
                         records=records)
    ct = report["ct_level"]
    print(f"{len(records)} CTs: sensitivity {ct['sensitivity']:.3f}, specificity "
          f"{ct['specificity']:.3f}, AUC {ct['auc']:.3f} ({ct['auc_ci_low']:.3f}-"
          f"{ct['auc_ci_high']:.3f}) at threshold {ct['threshold']:.3f}")
    four = report.get("four_class", {})
    if "macro_auc" in four:
        print(f"four classes ({four['cases']} CTs): accuracy {four['accuracy']:.3f}, macro AUC "
              f"{four['macro_auc']:.3f} ({four['macro_auc_ci_low']:.3f}-"
              f"{four['macro_auc_ci_high']:.3f})")
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _model_summary(args: argparse.Namespace, card: Any) -> dict[str, Any]:
    return {"dir": str(args.model), "arch": card.arch, "preset": card.preset,
            "task": card.task, "version": card.version, "samples_per_ct": args.samples}


def _evaluate_grades(args: argparse.Namespace, model: Any, card: Any, config: Any,
                     records: list[Any], device: str) -> int:
    """`ucadi evaluate` of a severity model: its graded COVID-19 CTs only."""
    import numpy as np

    from ucadi.learn.data import usable_records
    from ucadi.learn.evaluate import severity_report
    from ucadi.learn.predict import predict_probabilities
    from ucadi.learn.report import write_report

    for option in ("threshold", "compare", "readers"):
        if getattr(args, option) is not None:
            raise CommandError(f"--{option} applies to COVID-19 models; {args.model} is a "
                               "severity model (grade I/II/III, most probable grade called)")
    graded = usable_records(records, "severity")
    if not graded:
        raise CommandError(f"no COVID-19 case with a severity grade (1-3) in split "
                           f"{args.split!r} of site(s) {args.site or 'all'}: a severity model "
                           "is evaluated on graded COVID-19 cases only")
    probs = predict_probabilities(model, graded, config, samples=args.samples, seed=args.seed,
                                  device=device, progress=True)
    report = severity_report(probs, graded, card.class_names, bootstrap=args.bootstrap)
    report["excluded_cases"] = len(records) - len(graded)
    report["model"] = _model_summary(args, card)
    files = write_report(args.out, report, np.zeros(0), np.zeros(0), f"{card.arch}/"
                         f"{card.preset} severity on {args.split}", probs=probs,
                         records=graded)
    grades = report["severity"]
    print(f"{len(graded)} graded COVID-19 CTs ({report['excluded_cases']} other CTs left out): "
          f"accuracy {grades['accuracy']:.3f}, macro AUC {grades['macro_auc']:.3f} "
          f"({grades['macro_auc_ci_low']:.3f}-{grades['macro_auc_ci_high']:.3f}), "
          f"quadratic-weighted kappa {grades['quadratic_kappa']:.3f}")
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _explain(args: argparse.Namespace) -> int:
    from ucadi.ct import PreprocessConfig
    from ucadi.learn.explain import explain_study, save_explanation
    from ucadi.model import load_checkpoint

    model, card = load_checkpoint(args.model)
    target = None
    if args.target is not None:
        if args.target not in card.class_names:
            raise CommandError(f"--target {args.target!r} is not a class of this model; "
                               f"choose one of {card.class_names}")
        target = card.class_names.index(args.target)
    config = PreprocessConfig.from_dict(card.preprocess)
    explanation = explain_study(model, args.study, config, target_class=target, seed=args.seed,
                                layer=args.layer)
    files = save_explanation(args.out, explanation, card.class_names, config.window_hu)
    probs = ", ".join(f"{n} {p:.3f}" for n, p in zip(card.class_names,
                                                        explanation.probabilities, strict=True))
    print(f"{probs}; heatmap for {card.class_names[explanation.target_class]}")
    print("wrote " + ", ".join(str(f) for f in files))
    return 0
