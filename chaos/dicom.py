"""DICOM mutation fuzzing: damaged slices in otherwise good series, through `ucadi ct inspect`,
training-data loading (StudyDataset) and a real inference server's Diagnose over mutual TLS.

What must hold for every mutated series: `ct inspect` ends with exit 0 or with one error line
and exit 1 naming the damaged file or its series (never a traceback); the training set either
loads the study or skips it with a warning naming the case, and agrees with `ct inspect` on
which; Diagnose answers OK with finite probabilities or a status a client can act on (never
INTERNAL or UNKNOWN), and a series `ct inspect` accepts is diagnosed.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import torch

from chaos.dicom_mutations import MUTATIONS, contradict_tag
from chaos.outcome import Check
from services.inference.client import diagnose
from services.inference.server import InferenceService, ServiceConfig
from ucadi.cli import main as ucadi_main
from ucadi.ct import PreprocessConfig
from ucadi.ct.synth import generate_case, plan_cohort
from ucadi.ct.synth.manifest import CaseRecord
from ucadi.learn.data import StudyDataset
from ucadi.model import ModelCard, build_model, save_checkpoint
from ucadi.ops.pki import create_ca, issue_certificate
from ucadi.ops.tls import TLSFiles, secure_channel
from ucadi.threads import set_compute_threads

PART = "dicom"
FULL_SERIES = 500
QUICK_SERIES = 21
# Good series the damage is done to: tiny-cohort cases from different scanners (file naming,
# localizers, rescale conventions differ).
BASE_CASES = 3
# Share of series sent as one zip instead of a folder; of slices damaged, how many per series.
ZIP_SHARE = 0.25
SLICES_DAMAGED = (1, 1, 1, 2, 3)
EVERY_SLICE_SHARE = 0.1
CONFIG = PreprocessConfig(slices=16, size=(32, 32))
CLASSES = ["non_covid", "covid"]
# Statuses a client can act on; anything else (INTERNAL, UNKNOWN...) is a server fault.
ACTIONABLE = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
              grpc.StatusCode.RESOURCE_EXHAUSTED}


def base_series(folder: Path, count: int = BASE_CASES) -> list[Path]:
    """`count` good synthetic series (DICOM folders) from differently behaving scanners."""
    chosen, scanners = [], set()
    for plan in plan_cohort("tiny", seed=0):
        if plan.scanner not in scanners and len(chosen) < count:
            scanners.add(plan.scanner)
            chosen.append(plan)
    return [folder / str(generate_case(plan, "tiny", 0, folder)["series_path"])
            for plan in chosen]


def damage_series(base: Path, target: Path, rng: np.random.Generator) -> tuple[list[str],
                                                                                 list[str]]:
    """Copy `base` to `target` with a few slices damaged; (mutation kinds, damaged names)."""
    target.mkdir(parents=True)
    files = sorted(p for p in base.iterdir() if p.is_file())
    for file in files:
        (target / file.name).hardlink_to(file)
    if rng.random() < EVERY_SLICE_SHARE:
        # One tag damaged alike in every slice: what a misconfigured exporter writes.
        same = int(rng.integers(0, 2**32))
        for file in files:
            _replace(target / file.name, contradict_tag(file.read_bytes(),
                                                         np.random.default_rng(same)))
        return ["contradictory tag in every slice"], [file.name for file in files]
    count = int(rng.choice(SLICES_DAMAGED))
    victims = rng.choice(len(files), size=count, replace=False)
    kinds, names = [], []
    for index in victims:
        kind = str(rng.choice(list(MUTATIONS)))
        file = files[int(index)]
        _replace(target / file.name, MUTATIONS[kind](file.read_bytes(), rng))
        kinds.append(kind)
        names.append(file.name)
    return kinds, names


def _replace(link: Path, data: bytes) -> None:
    """Write `data` where a hard link to the good file was (the good file stays intact)."""
    link.unlink()
    link.write_bytes(data)


def as_zip(folder: Path) -> Path:
    """The folder's files in one zip next to it (what a PACS export often is)."""
    archive = folder.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w") as bundle:
        for file in sorted(folder.iterdir()):
            bundle.write(file, file.name)
    return archive


def run_inspect(study: Path) -> tuple[int, str]:
    """`ucadi ct inspect STUDY --json` in this process: (exit code, what it wrote to stderr)."""
    errors = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(errors), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's own notes on odd values are not errors
        code = ucadi_main(["ct", "inspect", str(study), "--json"])
    return code, errors.getvalue().strip()


def check_inspect(check: Check, study: Path, kinds: list[str], names: list[str]) -> bool | None:
    """Run and judge `ct inspect`; True when it accepted the series, None when it crashed."""
    try:
        code, stderr = run_inspect(study)
    except Exception as exc:  # a traceback is exactly what this check looks for
        check.record(f"{kinds}: traceback {type(exc).__name__}: {exc}", "traceback")
        return None
    last = stderr.splitlines()[-1] if stderr else ""
    kind = kinds[0] if len(set(kinds)) == 1 else "several kinds"
    if code == 0:
        check.record(None, f"{kind}: accepted")
        return True
    if code != 1 or "Traceback" in stderr or not last.startswith("ucadi ct: error:"):
        check.record(f"{kinds}: exit {code}: {stderr[-300:]}", f"{kind}: exit {code}")
        return None
    names_file = any(name in last for name in names)
    if names_file or "series " in last:
        check.record(None, f"{kind}: refused, naming the damaged file" if names_file
                     else f"{kind}: refused, naming the series")
    else:
        check.record(f"{kinds}: names neither file nor series: {last}", f"{kind}: unnamed")
    return False


def check_training(check: Check, study: Path, case_id: str, kinds: list[str],
                   inspected: bool | None) -> None:
    """Load the study as a one-case training set; it must load or be skipped by name."""
    record = CaseRecord(case_id=case_id, patient_id="P", site="chaos", split="train",
                        label="covid", binary_label=1, severity=1, contrast=0, slices=0,
                        series_path="", mask_path="", series_dir=study, mask_file=study)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dataset = StudyDataset([record], CONFIG, "binary", train=True, seed=0)
            if len(dataset):
                _ = dataset[0]  # one training sample, drawn as an epoch draws it
    except Exception as exc:
        check.record(f"{kinds}: traceback {type(exc).__name__}: {exc}", "traceback")
        return
    loaded = len(dataset) == 1
    said = [str(w.message) for w in caught if case_id in str(w.message)]
    if not loaded and not said:
        check.record(f"{kinds}: skipped without a warning naming {case_id}", "silent skip")
    elif inspected is not None and loaded != inspected:
        check.record(f"{kinds}: training {'loaded' if loaded else 'skipped'} a series "
                     f"`ct inspect` {'accepted' if inspected else 'refused'}", "disagrees")
    else:
        check.record(None, "loaded" if loaded else "skipped by name")


def check_diagnose(check: Check, channel: grpc.Channel, study: Path, kinds: list[str],
                   inspected: bool | None, seed: int) -> None:
    """Diagnose over mTLS: OK with finite probabilities, or an actionable status."""
    try:
        response = diagnose(channel, study, samples=2, seed=seed, timeout=120)
    except grpc.RpcError as exc:
        code = exc.code()
        if code not in ACTIONABLE:
            check.record(f"{kinds}: {code.name}: {exc.details()}", code.name)
        elif inspected:
            check.record(f"{kinds}: refused a series `ct inspect` accepts: {exc.details()}",
                         "refused a good series")
        else:
            check.record(None, code.name)
        return
    probabilities = [p.probability for p in response.probabilities]
    if not np.all(np.isfinite(probabilities)):
        check.record(f"{kinds}: non-finite probabilities {probabilities}", "non-finite")
    else:
        check.record(None, "OK")


@contextlib.contextmanager
def inference_channel(folder: Path) -> Iterator[grpc.Channel]:
    """A real inference server (cpu-small model, mutual TLS) and a client channel to it."""
    create_ca(folder / "ca", "chaos-ca")
    server_tls = issue_certificate(folder / "ca", folder / "server", "inference", "service")
    client_tls: TLSFiles = issue_certificate(folder / "ca", folder / "client", "radiology",
                                             "operator")
    torch.manual_seed(0)
    model = build_model("densenet3d", "cpu-small", num_classes=len(CLASSES))
    save_checkpoint(folder / "model", model,
                    ModelCard.for_model(model, CLASSES, CONFIG.to_dict(), version=1))
    service = InferenceService(ServiceConfig(model_dir=folder / "model"))
    running = service.start(tls=server_tls, metrics_address=None)
    channel = secure_channel(running.target, client_tls,
                             options=(("grpc.max_receive_message_length", 64 << 20),))
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield channel
    finally:
        channel.close()
        service.stop(0)


def run(quick: bool, seed: int = 0, work_dir: Path | None = None) -> list[Check]:
    """Mutate QUICK_SERIES or FULL_SERIES series and judge the three entry points on each."""
    checks = [Check(PART, name) for name in ("ct inspect", "training-data loading",
                                              "Diagnose (mTLS)")]
    inspect, training, diagnosing = checks
    series = QUICK_SERIES if quick else FULL_SERIES
    rng = np.random.default_rng(seed)
    set_compute_threads(1)
    with tempfile.TemporaryDirectory(prefix="ucadi-chaos-dicom-", dir=work_dir) as scratch:
        root = Path(scratch)
        bases = base_series(root / "base")
        with inference_channel(root / "server") as channel:
            for index in range(series):
                folder = root / "series" / f"s{index:04d}"
                kinds, names = damage_series(bases[index % len(bases)], folder, rng)
                study = as_zip(folder) if rng.random() < ZIP_SHARE else folder
                inspected = check_inspect(inspect, study, kinds, names)
                check_training(training, study, f"case-{index:04d}", kinds, inspected)
                check_diagnose(diagnosing, channel, study, kinds, inspected, index)
                shutil.rmtree(folder)
                study.unlink(missing_ok=True)
    return checks
