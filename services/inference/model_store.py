"""The model a site serves: load the published global model and hot-reload new versions.

The site trainer publishes into MODEL_DIR in one of two layouts, both atomic for a reader:
  * a plain checkpoint folder (`model.safetensors` + `card.json`), replaced by renaming a
    finished `MODEL_DIR.tmp-...` over it;
  * `versions/<n>/` checkpoint folders plus a `current` pointer (a symlink to `versions/<n>`,
    or a text file naming it), switched by replacing the pointer.
A watcher thread polls the resolved checkpoint's file identities (inode, size, mtime) about
once a second; on a change it loads the new version beside the old one and swaps a single
reference. Batches already running keep the `ServedModel` they started with, so in-flight
requests finish on the old version and every answer names the version that produced it.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from services.inference.metrics import MODEL_VERSION
from ucadi.ct import PreprocessConfig
from ucadi.errors import UcadiError
from ucadi.model import ModelCard, load_checkpoint

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
VERSIONS_DIR = "versions"
CURRENT_POINTER = "current"
POLL_INTERVAL_S = 1.0
# Smallest batch run on a CPU (see ServedModel.predict).
MIN_CPU_BATCH_ROWS = 2


class ModelUnavailableError(UcadiError):
    """No model has been published (or loaded) yet."""

    status = "UNAVAILABLE"


class ModelDirectoryError(UcadiError):
    """The model directory does not hold a checkpoint in either accepted layout."""

    status = "FAILED_PRECONDITION"


@dataclass(eq=False)
class ServedModel:
    """One loaded model version: the network in eval mode, its card and what it expects."""

    model: nn.Module
    card: ModelCard
    version: str
    source: Path
    device: torch.device
    preprocess: PreprocessConfig
    class_names: tuple[str, ...]
    _explainer: nn.Module | None = field(default=None, repr=False)
    explain_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sampling as the model takes it: (1, 16, H, W)."""
        return (1, *(int(n) for n in self.card.input_shape))

    def explainer(self) -> nn.Module:
        """A private copy for Grad-CAM, whose hooks must not touch batches run concurrently.

        Call with `explain_lock` held; the copy is made on first use.
        """
        if self._explainer is None:
            self._explainer = copy.deepcopy(self.model).eval()
        return self._explainer

    @torch.inference_mode()
    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities [B, classes] for a batch [B, 1, 16, H, W] on the model's device."""
        rows = batch.shape[0]
        if self.device.type == "cpu" and rows < MIN_CPU_BATCH_ROWS:
            # PyTorch's CPU conv3d falls back to its slow reference kernel for a batch of one
            # small volume (a 3-4x slower forward for the cpu-small preset); eval-mode rows are
            # independent, so padding with copies and dropping them changes no result.
            batch = batch.repeat(MIN_CPU_BATCH_ROWS, 1, 1, 1, 1)[:MIN_CPU_BATCH_ROWS]
        logits = self.model(batch.to(self.device))[:rows]
        return torch.softmax(logits.float(), dim=1).cpu()


def numeric_version(version: str) -> int:
    """The trailing integer of a version string ('global-12' -> 12), or 0 when there is none."""
    match = re.search(r"(\d+)$", version)
    return int(match.group(1)) if match else 0


def resolve_checkpoint(model_dir: Path) -> Path:
    """The checkpoint folder to serve now, in either published layout."""
    model_dir = Path(model_dir)
    pointer = model_dir / CURRENT_POINTER
    if pointer.is_symlink() or pointer.is_dir():
        return pointer.resolve()
    if pointer.is_file():
        named = pointer.read_text().strip()
        beside = model_dir / named
        return (beside if beside.is_dir() else model_dir / VERSIONS_DIR / named).resolve()
    if (model_dir / WEIGHTS_FILE).is_file():
        return model_dir.resolve()
    versions = model_dir / VERSIONS_DIR
    numbered = sorted((p for p in versions.iterdir() if p.name.isdigit() and
                       (p / WEIGHTS_FILE).is_file()), key=lambda p: int(p.name)) \
        if versions.is_dir() else []
    if numbered:
        return numbered[-1].resolve()
    raise ModelDirectoryError(
        f"{model_dir} holds no model: expected {WEIGHTS_FILE} + {CARD_FILE} there, or "
        f"{VERSIONS_DIR}/<n>/ folders with a {CURRENT_POINTER!r} pointer")


def checkpoint_fingerprint(checkpoint: Path) -> tuple[object, ...]:
    """What changes whenever a new version is published: the files' identity, size and mtime."""
    parts: list[object] = [str(checkpoint)]
    for name in (WEIGHTS_FILE, CARD_FILE):
        stat = (checkpoint / name).stat()
        parts.extend((stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(parts)


def load_served_model(checkpoint: Path, device: str = "cpu") -> ServedModel:
    """Load one checkpoint folder with the model package's validating loader."""
    model, card = load_checkpoint(checkpoint, device=device)
    model.eval()
    return ServedModel(model=model, card=card, version=str(card.version), source=checkpoint,
                       device=torch.device(device),
                       preprocess=PreprocessConfig.from_dict(card.preprocess),
                       class_names=tuple(card.class_names))


class ModelStore:
    """Holds the served model, polls the model directory and swaps in new versions."""

    def __init__(self, model_dir: Path, device: str = "cpu",
                 poll_interval_s: float = POLL_INTERVAL_S,
                 on_change: Callable[[ServedModel], None] | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.device = device
        self.poll_interval_s = poll_interval_s
        self._on_change = on_change
        self._current: ServedModel | None = None
        self._fingerprint: tuple[object, ...] | None = None
        self._rejected: tuple[object, ...] | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._reload_lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """True once a model is loaded."""
        return self._current is not None

    def current(self) -> ServedModel:
        """The model to use for the next batch; ModelUnavailableError before the first load."""
        served = self._current
        if served is None:
            raise ModelUnavailableError(
                f"no model is loaded yet: waiting for the site trainer to publish one in "
                f"{self.model_dir}")
        return served

    def reload_if_changed(self) -> bool:
        """Load the published version if it differs from the served one; True when swapped.

        A half-published or invalid checkpoint is logged and skipped; the old version stays.
        """
        with self._reload_lock:
            try:
                checkpoint = resolve_checkpoint(self.model_dir)
                fingerprint = checkpoint_fingerprint(checkpoint)
            except (OSError, ModelDirectoryError) as exc:
                if self._current is None:
                    log.info("no model to serve yet: %s", exc)
                return False
            if fingerprint in (self._fingerprint, self._rejected):
                return False
            try:
                served = load_served_model(checkpoint, self.device)
            except (OSError, ValueError, RuntimeError, UcadiError) as exc:
                # Remembered so a bad publish is reported once, not every poll; any change to
                # its files gives a new fingerprint and another try.
                self._rejected = fingerprint
                log.warning("not serving %s: %s (keeping version %s)", checkpoint, exc,
                            self._current.version if self._current else "none")
                return False
            previous = self._current
            self._current, self._fingerprint = served, fingerprint
        MODEL_VERSION.set(numeric_version(served.version))
        log.info("serving model version %s from %s (was %s)", served.version, checkpoint,
                 previous.version if previous else "none")
        if self._on_change is not None:
            self._on_change(served)
        return True

    def start(self) -> None:
        """Load what is published now and start the watcher thread."""
        self.reload_if_changed()
        self._watcher = threading.Thread(target=self._watch, name="model-store-watcher",
                                         daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        """Stop the watcher thread."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            self.reload_if_changed()
