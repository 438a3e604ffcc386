"""`ucadi augment cyclegan train|apply`: the contrast -> non-contrast CycleGAN of one site."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ucadi.errors import CommandError
from ucadi.threads import set_compute_threads


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `ucadi augment`."""
    augment = subparsers.add_parser("augment", help="data augmentation models")
    kinds = augment.add_subparsers(dest="kind", metavar="KIND", required=True)
    cyclegan = kinds.add_parser("cyclegan", help="contrast CT -> non-contrast CycleGAN")
    actions = cyclegan.add_subparsers(dest="action", metavar="ACTION", required=True)

    train = actions.add_parser("train", help="train on one site's own contrast and "
                                             "non-contrast training studies")
    train.add_argument("--data", type=Path, required=True, help="cohort folder (manifest.csv)")
    train.add_argument("--site", default=None,
                       help="the site whose studies are used (default: the manifest's only "
                            "site); images of other sites are never read")
    train.add_argument("--preset", default="cpu-small", help="paper or cpu-small (default "
                                                             "%(default)s)")
    train.add_argument("--epochs", type=int, default=None,
                       help="shorten the preset's schedule (same constant/decay proportions)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    train.add_argument("--out", type=Path, required=True, help="model folder to write")
    train.set_defaults(func=_train)

    apply = actions.add_parser("apply", help="translate contrast studies; before/after PNG")
    apply.add_argument("--model", type=Path, required=True, help="CycleGAN model folder")
    source = apply.add_mutually_exclusive_group(required=True)
    source.add_argument("--study", type=Path, action="append",
                        help="a DICOM folder, zip or NIfTI (repeatable)")
    source.add_argument("--data", type=Path, help="cohort folder: its contrast studies")
    apply.add_argument("--site", action="append", help="with --data: only this site")
    apply.add_argument("--split", default="test", help="with --data: split (default test)")
    apply.add_argument("--limit", type=int, default=4, help="with --data: at most N studies")
    apply.add_argument("--out", type=Path, required=True,
                       help="folder for CASE.npy (translated HU stacks), the PNG, summary.json")
    apply.set_defaults(func=_apply)


def _train(args: argparse.Namespace) -> int:
    from ucadi.augment.presets import get_preset
    from ucadi.augment.workflow import FIGURE_NAME, train_site_translator
    from ucadi.learn.cohort import load_records

    if args.threads:
        set_compute_threads(args.threads)
    preset = get_preset(args.preset)
    records = load_records(args.data)
    site = _one_site(records, args.site)
    train = [r for r in records if r.site == site and r.split == "train"]
    print(f"CycleGAN {preset.name}: reading {len(train)} training studies of {site}", flush=True)
    epochs = args.epochs or preset.epochs

    def report(epoch: int, row: dict[str, float]) -> None:
        print(f"epoch {epoch + 1}/{epochs}: lr {row['lr']:.2e}, generator {row['generator']:.3f}"
              f", cycle {row['cycle']:.4f}, identity {row['identity']:.4f}, discriminator "
              f"{row['discriminator']:.3f}", flush=True)

    card = train_site_translator(train, site, preset, args.out, epochs=args.epochs,
                                 seed=args.seed, log=lambda line: print(line, flush=True),
                                 on_epoch_end=report)
    print(f"model written to {args.out} ({card['parameters']} generator parameters), "
          f"figure {args.out / FIGURE_NAME}")
    return 0


def _one_site(records: list[Any], site: str | None) -> str:
    sites = sorted({r.site for r in records if r.split == "train"})
    if site is None:
        if len(sites) != 1:
            raise CommandError(f"the manifest has training studies of {len(sites)} sites "
                               f"({', '.join(sites)}); name the one to use with --site")
        return sites[0]
    if site not in sites:
        raise CommandError(f"--site {site!r} has no training studies in the manifest; sites: "
                           f"{', '.join(sites)}")
    return site


def _apply(args: argparse.Namespace) -> int:
    import numpy as np

    from ucadi.augment.checkpoint import load_translator
    from ucadi.augment.figure import before_after_figure, hu_summary
    from ucadi.augment.workflow import FIGURE_NAME
    from ucadi.ct import PreprocessConfig, load_stack
    from ucadi.learn.cohort import load_records, select

    translator = load_translator(args.model)
    config = PreprocessConfig(size=(translator.size, translator.size),
                              window_hu=translator.window_hu)
    if args.study:
        studies = [(path.name.split(".")[0] or "study", path) for path in args.study]
    else:
        if args.limit < 1:
            raise CommandError(f"--limit must be >= 1; got {args.limit}")
        records = [r for r in select(load_records(args.data), sites=args.site,
                                     splits=[args.split]) if int(r.contrast)]
        if not records:
            raise CommandError(f"no contrast-enhanced studies in split {args.split!r}"
                               f"{' of ' + ', '.join(args.site) if args.site else ''}")
        studies = [(r.case_id, r.series_dir) for r in records[:args.limit]]
    args.out.mkdir(parents=True, exist_ok=True)
    befores, afters, written = [], [], []
    for name, path in studies:
        stack = load_stack(path, config)
        translated = translator.translate(stack)
        np.save(args.out / f"{name}.npy", translated)
        written.append(str(args.out / f"{name}.npy"))
        middle = len(stack) // 2
        befores.append(stack[middle:middle + 1])
        afters.append(translated[middle:middle + 1])
        print(f"{name}: {len(stack)} slices translated", flush=True)
    before, after = np.concatenate(befores), np.concatenate(afters)
    summary = {"model": str(args.model), "studies": [n for n, _ in studies],
               **hu_summary(before, after)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    figure = before_after_figure(args.out / FIGURE_NAME, before, after, translator.window_hu,
                                 "contrast -> non-contrast (middle slice of each study)")
    print(f"soft-tissue mean HU {summary['soft_tissue_mean_hu_before']:.0f} -> "
          f"{summary['soft_tissue_mean_hu_after']:.0f}; wrote {len(written)} stacks, {figure}")
    return 0
