"""`ucadi ct inspect|preprocess`: look at a CT study the way the pipeline will see it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ucadi.ct.loader import open_study
from ucadi.ct.preprocess import MODEL_SIZE_PX, SAMPLED_SLICES, PreprocessConfig, preprocess_study
from ucadi.errors import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `ct` command with its `inspect` and `preprocess` subcommands."""
    parser = subparsers.add_parser("ct", help="inspect and preprocess chest CT studies")
    commands = parser.add_subparsers(dest="ct_command", metavar="SUBCOMMAND")
    inspect = commands.add_parser("inspect", help="series chosen, slices, spacing, HU range...")
    inspect.add_argument("path", type=Path, help="DICOM folder, zip, DICOM file or NIfTI volume")
    inspect.add_argument("--series", default=None, help="SeriesInstanceUID to use")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.set_defaults(func=run_inspect)
    prep = commands.add_parser("preprocess", help="write (K, 16, H, W) float32 model inputs")
    prep.add_argument("path", type=Path, help="DICOM folder, zip, DICOM file or NIfTI volume")
    prep.add_argument("--out", type=Path, required=True, help="output .npy file")
    prep.add_argument("--samples", type=int, default=1, help="independent samplings K")
    prep.add_argument("--seed", type=int, default=0, help="sampling seed")
    prep.add_argument("--slices", type=int, default=SAMPLED_SLICES, help="slices per sampling")
    prep.add_argument("--size", type=int, nargs=2, default=list(MODEL_SIZE_PX),
                      metavar=("H", "W"), help="in-plane output size")
    prep.add_argument("--series", default=None, help="SeriesInstanceUID to use")
    prep.set_defaults(func=run_preprocess)
    importer = commands.add_parser(
        "import", help="fill a site's data folder from a PACS export and a labels CSV",
        description="Check each labelled study of a PACS export (decodable CT, at least 40 "
                    "slices), copy it under OUT/studies/ and write OUT/manifest.csv for the "
                    "trainer. Refused studies are listed one per line; exit 1 if any.")
    importer.add_argument("--export", type=Path, required=True,
                          help="the PACS export: one folder of DICOM files per study")
    importer.add_argument("--labels", type=Path, required=True,
                          help="CSV with columns study (folder relative to --export), "
                               "patient_id, label (healthy, covid, other_viral, bacterial), "
                               "split (train, val, test, holdout); optional severity")
    importer.add_argument("--site", required=True, help="the site's name (its certificate's)")
    importer.add_argument("--out", type=Path, required=True, help="the site's data folder")
    importer.set_defaults(func=run_import)
    parser.set_defaults(func=lambda args: _missing_subcommand(parser))


def run_import(args: argparse.Namespace) -> int:
    """`ucadi ct import`: exit 0 when every labelled study was imported, 1 if any refused."""
    from ucadi.ct.importer import import_export

    result = import_export(args.export, args.labels, args.site, args.out)
    for line in result.refused:
        print(f"refused {line}")
    print(f"{result.cases} cases in {args.out / 'manifest.csv'} ({result.copied} copied now, "
          f"{len(result.refused)} refused)")
    return 1 if result.refused else 0


def _missing_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def inspect_report(path: Path, series_uid: str | None = None) -> dict:
    """What `ct inspect` reports: the chosen series, its geometry, HU range, skipped series."""
    with open_study(path, series_uid) as study:
        volume = study.load().volume_hu
        meta = study.meta
    return {
        "source": meta.source, "source_kind": meta.source_kind, "modality": meta.modality,
        "series_uid": meta.series_uid, "series_description": meta.series_description,
        "slices": meta.num_slices, "shape_zyx": list(volume.shape),
        "spacing_mm_zyx": [round(v, 4) for v in study.spacing_mm],
        "hu_min": float(volume.min()), "hu_max": float(volume.max()),
        "hu_p1_p99": [float(v) for v in np.percentile(volume, [1, 99])],
        "manufacturer": meta.manufacturer, "model": meta.model,
        "slice_thickness_mm": meta.slice_thickness_mm, "contrast": meta.contrast,
        "contrast_agent": meta.contrast_agent, "transfer_syntax": meta.transfer_syntax,
        "skipped_series": [{"series_uid": s.series_uid, "description": s.description,
                            "slices": s.slices, "reason": s.reason} for s in meta.skipped_series],
        "stray_files": meta.stray_files, "non_image_objects": meta.non_image_objects,
        "warnings": list(meta.warnings),
    }


def run_inspect(args: argparse.Namespace) -> int:
    """Print the inspection report (text or JSON)."""
    report = inspect_report(args.path, args.series)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    contrast = {True: f"yes ({report['contrast_agent']})", False: "no",
                None: "not recorded"}[report["contrast"]]
    z, y, x = report["spacing_mm_zyx"]
    lines = [
        f"source        {report['source']} ({report['source_kind']})",
        f"series        {report['series_uid']}  {report['series_description'] or ''}".rstrip(),
        f"modality      {report['modality']}  {report['manufacturer'] or '?'} "
        f"{report['model'] or ''}".rstrip(),
        f"slices        {report['slices']}  matrix {report['shape_zyx'][1]}x"
        f"{report['shape_zyx'][2]}",
        f"spacing       {z} mm between slices, {y} x {x} mm pixels; thickness "
        f"{report['slice_thickness_mm']} mm",
        f"HU range      {report['hu_min']:.0f} .. {report['hu_max']:.0f} "
        f"(1st-99th percentile {report['hu_p1_p99'][0]:.0f} .. {report['hu_p1_p99'][1]:.0f})",
        f"contrast      {contrast}",
        f"encoding      {report['transfer_syntax']}",
    ]
    for skipped in report["skipped_series"]:
        lines.append(f"skipped       {skipped['series_uid']} {skipped['description']} "
                     f"({skipped['slices']} slices): {skipped['reason']}")
    if report["stray_files"] or report["non_image_objects"]:
        lines.append(f"ignored       {report['stray_files']} non-DICOM file(s), "
                     f"{report['non_image_objects']} non-image DICOM object(s)")
    lines += [f"warning       {w}" for w in report["warnings"]]
    print("\n".join(lines))
    return 0


def run_preprocess(args: argparse.Namespace) -> int:
    """Write the (K, slices, H, W) float32 array for a study."""
    if args.samples < 1:
        raise CommandError(f"--samples must be at least 1; got {args.samples}")
    config = PreprocessConfig(slices=args.slices, size=(args.size[0], args.size[1]))
    tensor = preprocess_study(args.path, config, samples=args.samples, seed=args.seed,
                              series_uid=args.series)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, tensor)
    print(f"wrote {args.out}: shape {tuple(tensor.shape)} {tensor.dtype}")
    return 0
