"""The site agent: joins the federation and, each round, decrypts the global model, trains E
local epochs on the site's own CT studies, encrypts the update and uploads it.

Its loop reads as the README's "A round" from a site's side: wait for the round's
announcement; adopt every newer global version (download, check and decrypt the sum, step the
global model, save, publish, evaluate); then, when the round awaits this site, train, encrypt
and upload. What it joined with is a `SiteSession` (session.py); the learning itself is a
`LocalLearner` (ucadi.learn.site_learner), so the agent knows nothing of torch.

Nothing leaves the site in plaintext except aggregate numbers (cases, epochs and, if the site
allows, validation AUC/sensitivity/specificity). Every decrypted global version is published to
the site's model folder (safetensors + card) for its own inference service.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays
from safetensors.torch import save_file

from services.trainer import metrics
from services.trainer.cipher import AnnouncedSum, RoundContext, SiteCipher
from services.trainer.client import FederationClient, FederationRejected
from services.trainer.keys import site_identity
from services.trainer.masking import SiteCredentials, SiteMasks
from services.trainer.publish import ModelPublisher
from services.trainer.session import RoundAnnouncement, SiteSession
from ucadi.ct.synth import read_manifest
from ucadi.durable import write_durably
from ucadi.errors import UcadiError
from ucadi.learn import predict_probabilities
from ucadi.learn.evaluate import site_validation
from ucadi.learn.recipe import SEVERITY_HINT
from ucadi.lwe.codec import site_weight
from ucadi.lwe.integrity import SumIntegrityError, update_slot_count
from ucadi.lwe.masking import unmasker
from ucadi.v1 import federation_pb2

log = logging.getLogger(__name__)
AGENT_VERSION = "ucadi-trainer/0.1"
HEARTBEAT_S = 5.0
# Validation while federating: one sampling per study (SPEC §1); tests use five.
VALIDATION_SAMPLES = 1
DECISION_THRESHOLD = 0.5
# How long a site waits before fetching a refused global version's round again.
REFUSED_RETRY_S = 10.0


@dataclass
class AgentSettings:
    """Where a site's data, model folder and working files are, and how it trains."""

    site: str
    manifest: Path
    model_dir: Path
    work_dir: Path
    device: str = "cpu"
    seed: int = 0
    share_metrics: bool = True
    max_download_bytes: int = 1 << 31
    # This site's own floor on a global sum's contributors, whatever the federation announces
    # (a sum of one other site's update would expose that update to every key holder).
    min_sum_sites: int = 2
    # The key custodian's public key: checks the other sites' identities when masking.
    custodian: Ed25519PublicKey | None = None
    # ucadi.augment.ContrastAugmentation of the training set (site.augment_contrast), or None.
    contrast_augment: Any = None


@dataclass
class AgentStatus:
    """What the agent is doing, for the TrainerService status RPC."""

    phase: str = "starting"
    round: int = 0
    published_version: int = 0
    train_cases: int = 0
    val_auc: float = math.nan
    val_sensitivity: float = math.nan
    val_specificity: float = math.nan
    last_error: str = ""
    leave_requested: threading.Event = field(default_factory=threading.Event)


class SiteAgent:
    """Runs the federation loop of one site until the federation completes or it leaves."""

    def __init__(self, settings: AgentSettings, federation: FederationClient, cipher: SiteCipher,
                 status: AgentStatus | None = None) -> None:
        self.settings = settings
        self.federation = federation
        self.cipher = cipher
        self.status = status or AgentStatus()
        records = [r for r in read_manifest(settings.manifest) if r.site == settings.site]
        self.train_records = [r for r in records if r.split == "train"]
        self.val_records = [r for r in records if r.split == "val"]
        if not self.train_records:
            raise UcadiError(f"manifest {settings.manifest} has no training cases for site "
                             f"{settings.site!r} (the site name comes from its certificate)")
        self.status.train_cases = len(self.train_records)
        self.publisher = ModelPublisher(settings.model_dir)
        self._stop_heartbeat = threading.Event()
        self.session: SiteSession | None = None  # made at join (run)
        self.masks: SiteMasks | None = None  # made at join, where the federation masks
        self._masking = ThreadPoolExecutor(max_workers=1, thread_name_prefix="masking")
        self.version = 0  # the newest global version adopted
        # The largest min_sites the federation has announced: a sum must have at least as
        # many contributors (and at least settings.min_sum_sites), whatever it says later.
        self.announced_min_sites = 1

    def _phase(self, phase: str, round_number: int | None = None) -> None:
        self.status.phase = phase
        if round_number is not None:
            self.status.round = round_number

    @property
    def joined(self) -> SiteSession:
        """The session made at join (the agent's methods run after `run` joined)."""
        if self.session is None:
            raise UcadiError("the site has not joined a federation yet")
        return self.session

    def run(self) -> None:
        """Join, then train each round we are expected in, until the federation completes."""
        self._phase("joining")
        joined = self.federation.join(len(self.train_records), AGENT_VERSION)
        self.session = SiteSession.from_join(joined, self.train_records, self.val_records,
                                             device=self.settings.device,
                                             seed=self.settings.seed,
                                             contrast_augment=self.settings.contrast_augment)
        usable = self.session.train_cases
        if not usable:
            # E.g. a severity federation and a site without graded COVID-19 cases: it has
            # nothing to train on, so it leaves rather than stall every round it is expected in.
            reason = (f"no training case of site {self.settings.site!r} is usable for the "
                      f"federation's task {self.session.recipe.task!r} "
                      f"({len(self.train_records)} training cases in the manifest)")
            self.federation.leave(reason)
            self._phase("left")
            hint = SEVERITY_HINT if self.session.recipe.task == "severity" else ""
            raise UcadiError(f"{reason}; the site left the federation{hint}")
        self.status.train_cases = usable
        self.version = self._resume_local_version()
        if joined.pairwise_masks:
            if self.settings.custodian is None:
                raise UcadiError("the federation uses pairwise masks, which need the key "
                                 "custodian's public key (site.custodian_key)")
            identity_keys, identity = site_identity(self.settings.work_dir)
            self.masks = SiteMasks(self.settings.work_dir / "masking", self.settings.site,
                                   joined.federation_id, bytes.fromhex(self.cipher.key_id),
                                   SiteCredentials(identity_keys.private_key, identity,
                                                   self.settings.custodian))
        spec = self.session.spec
        log.info("%s joined %s: %d training cases, model %s/%s, %d local epoch(s) per round, "
                 "%s", self.settings.site, self.session.federation_id, len(self.train_records),
                 spec.arch, spec.preset, self.session.local_epochs,
                 self.session.optimization.describe())
        heartbeat = threading.Thread(target=self._heartbeat, daemon=True)
        heartbeat.start()
        try:
            self._loop()
        finally:
            self._stop_heartbeat.set()

    def _loop(self) -> None:
        """Until the federation completes or the operator asks the site to leave: hear the
        round's announcement, adopt newer global versions, train and upload when awaited."""
        known_round, known_state = 0, 0
        uploaded_rounds: set[int] = set()
        answered_rounds: set[int] = set()
        while not self.status.leave_requested.is_set():
            self._phase("idle")
            info = self.federation.get_round(known_round, known_state, wait_s=10.0)
            known_round, known_state = info.round, info.state
            announced = RoundAnnouncement.from_round_info(info)
            self._check_announcement(announced)
            if self.masks is not None and announced.unmasking \
                    and self.settings.site in announced.survivors \
                    and announced.round not in answered_rounds:
                self._phase("unmasking", announced.round)
                self.masks.answer(self.federation, announced.round, list(announced.survivors),
                                  list(announced.dropped))
                answered_rounds.add(announced.round)
            if announced.latest_version > self.version \
                    and not self._adopt_checked(announced.latest_version):
                continue
            if announced.completed:
                self._phase("completed")
                log.info("%s: federation completed at version %d", self.settings.site,
                         self.version)
                return
            if announced.awaiting_caller and announced.round not in uploaded_rounds \
                    and announced.base_version == self.version:
                self._train_and_upload(announced)
                uploaded_rounds.add(announced.round)
        self.federation.leave("requested by the site operator")
        self._phase("left")

    def _check_announcement(self, announced: RoundAnnouncement) -> None:
        """Remember the quorum the federation announced; refuse to go on under another
        server optimisation than the site joined with (it would silently differ)."""
        self.announced_min_sites = max(self.announced_min_sites, announced.min_sites)
        optimization = self.joined.optimization
        if announced.optimizer_digest and announced.optimizer_digest != optimization.digest:
            raise UcadiError(
                f"the federation now announces optimizer configuration "
                f"{announced.optimizer_digest[:12]}, but this site joined under "
                f"{optimization.digest[:12]} ({optimization.describe()}): "
                "restart the site to join the changed federation")

    def _heartbeat(self) -> None:
        while not self._stop_heartbeat.wait(HEARTBEAT_S):
            try:
                self.federation.get_round(wait_s=0.0)
            except UcadiError as exc:
                log.warning("heartbeat failed: %s", exc)

    @property
    def _state_path(self) -> Path:
        return self.settings.work_dir / "global-state.safetensors"

    def _resume_local_version(self) -> int:
        """After a restart, continue from the global state this site saved last (the global
        model and server-optimiser state it held after its newest decrypted version)."""
        if not self._state_path.exists():
            return 0
        self.joined.learner.restore(load_arrays(self._state_path.read_bytes()))
        version = self.joined.learner.version
        log.info("%s: resuming from global version %d", self.settings.site, version)
        latest = self.publisher.latest()
        if latest is None or latest[0] < version:
            self._publish(version)  # saved, but the crash came before publishing
        return version

    def _save_state(self) -> None:
        """Durably, before publishing: a restart resumes here instead of replaying."""
        self.settings.work_dir.mkdir(parents=True, exist_ok=True)
        write_durably(self._state_path, save_arrays(self.joined.learner.saved_state(),
                                                    metadata={"site": self.settings.site}))

    def _adopt_checked(self, latest: int) -> bool:
        """Adopt global versions up to `latest`, or refuse one that fails its checks: it is
        not published and not trained on, the metric and the status say why, and the site
        waits for the federation to publish a sum that passes (retrying at each poll)."""
        try:
            self._adopt_global(latest)
        except SumIntegrityError as exc:
            metrics.SUMS_REFUSED.labels(exc.reason).inc()
            if self.status.last_error != str(exc):
                log.error("%s: global version refused, not published or trained on: %s",
                          self.settings.site, exc)
            self.status.last_error = str(exc)
            self._phase("refused-sum")
            self.status.leave_requested.wait(REFUSED_RETRY_S)
            return False
        self.status.last_error = ""
        return True

    def _announced_sum(self, version: int) -> AnnouncedSum:
        """The central side's account of global version `version` (round `version`'s sum)."""
        sites = self.federation.round_sites(version)
        contributors, known = sites.uploaded, set(sites.known)
        return AnnouncedSum(
            federation=self.joined.federation_id, round_number=version, site=self.settings.site,
            contributors=contributors, other_sites=tuple(sorted(known - set(contributors))),
            min_contributors=max(self.announced_min_sites, self.settings.min_sum_sites))

    def _adopt_global(self, latest: int) -> None:
        """Download and decrypt each global version up to `latest` (only the latest when the
        server optimiser keeps no state), step the global model, then publish and evaluate."""
        first = self.version + 1 if self.joined.optimization.stateful else latest
        for version in range(first, latest + 1):
            self.joined.learner.adopt(self._decrypt_version(version), version)
            self.version = version
            self._save_state()
        self._publish(latest)

    def _decrypt_version(self, version: int) -> np.ndarray:
        self._phase("downloading")
        path = self.settings.work_dir / "downloads" / f"global-v{version:05d}.lwe"
        downloaded = self.federation.download_global(version, path,
                                                     self.settings.max_download_bytes)
        unmask = (unmasker(self.federation.unmasking_terms(version), self.cipher.secret.params)
                  if self.masks is not None else None)
        self._phase("decrypting")
        started = time.perf_counter()
        vector = self.cipher.decrypt_average(path, self.joined.spec.layout_hash,
                                             self._announced_sum(version),
                                             digest_checked=downloaded.trailer_ok,
                                             unmask=unmask)
        metrics.DECRYPT_SECONDS.observe(time.perf_counter() - started)
        path.unlink(missing_ok=True)
        if self.masks is not None:
            self.masks.forget(version)
        return vector

    def _publish(self, version: int) -> None:
        session = self.joined
        self.status.published_version = version
        self._phase("evaluating")
        evaluation = self._evaluate(version)
        self.publisher.publish(session.learner.model, version=version, spec=session.spec,
                               recipe=session.recipe, preprocess=session.preprocess,
                               metrics=evaluation, train_cases=len(self.train_records),
                               optimization=session.optimization)
        if evaluation and self.settings.share_metrics:
            self.federation.report_metrics({"version": version, "split": "val",
                                            "cases": len(self.joined.val_set), **evaluation})

    def _evaluate(self, version: int) -> dict[str, float]:
        """The global version on the site's own validation studies, at the decision threshold
        (one sampling per study while federating)."""
        session = self.joined
        if not len(session.val_set):
            return {}
        probs = predict_probabilities(session.learner.model, session.val_set.records,
                                      session.preprocess, samples=VALIDATION_SAMPLES,
                                      seed=self.settings.seed, device=self.settings.device,
                                      stack_of=session.val_set.stack)
        result = site_validation(probs, session.val_set.labels, session.recipe.task,
                                 DECISION_THRESHOLD)
        self.status.val_auc = result["auc"]
        self.status.val_sensitivity = result["sensitivity"]
        self.status.val_specificity = result["specificity"]
        log.info("%s: global version %d on local validation (%d studies): AUC %.3f, "
                 "sensitivity %.3f, specificity %.3f", self.settings.site, version,
                 len(session.val_set), result["auc"], result["sensitivity"],
                 result["specificity"])
        return result

    def _keep_local_update(self, round_number: int, update: Any) -> None:
        """The site's own audit copy of what it contributed (never leaves the site)."""
        folder = self.settings.work_dir / "local-updates"
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in update.state.items()},
                  str(folder / f"round-{round_number:05d}.safetensors"),
                  metadata={"num_samples": str(update.num_samples), "epochs": str(update.epochs)})

    def _train_and_upload(self, announced: RoundAnnouncement) -> None:
        session, round_number = self.joined, announced.round
        self._phase("training", round_number)
        # The encryption mask and the round sum's decryption product, made while training.
        self.cipher.prepare(session.learner.layout.value_count, RoundContext(
            session.federation_id, round_number, self.settings.site, announced.expected_sites,
            round_seed_unused=not self.federation.central_holds_bytes(round_number)))
        # Pairwise masks: keys, shares and the mask itself, on their own thread while the
        # site trains (none of it depends on the update).
        masking = (self._masking.submit(
            self.masks.prepare, self.federation, round_number,
            lambda: self._still_collecting(round_number),
            update_slot_count(session.learner.layout.value_count), self.cipher.secret.params)
            if self.masks is not None else None)
        started = time.perf_counter()
        update = session.learner.fit(announced.start_epoch, announced.local_epochs)
        metrics.TRAIN_SECONDS.observe(time.perf_counter() - started)
        self._keep_local_update(round_number, update)
        self._phase("encrypting")
        vector = session.learner.upload_vector(update)
        path = self.settings.work_dir / "uploads" / f"round-{round_number:05d}.lwe"
        started = time.perf_counter()
        weight = site_weight(update.num_samples, session.weight_unit)
        pairwise = None
        if masking is not None:
            self._phase("masking", round_number)
            prepared = masking.result()
            if prepared is None:
                log.warning("%s: round %d went on without this site's masking keys; sitting "
                            "it out", self.settings.site, round_number)
                return
            masked, total = prepared
            pairwise = masked.masker(self.cipher.secret.params, total)
            self._phase("encrypting", round_number)
        self.cipher.encrypt_to_file(vector, weight=weight, round_number=round_number,
                                    layout_hash=session.spec.layout_hash, path=path,
                                    site=self.settings.site, pairwise=pairwise)
        metrics.ENCRYPT_SECONDS.observe(time.perf_counter() - started)
        self._phase("uploading")
        header = federation_pb2.UpdateHeader(
            round=round_number, base_version=announced.base_version,
            parameter_set=self.cipher.parameter_set, key_id=self.cipher.key_id,
            layout_hash=session.spec.layout_hash,
            num_samples=update.num_samples // update.epochs, local_epochs=update.epochs,
            optimizer_digest=session.optimization.digest)
        try:
            receipt = self.federation.upload_update(header, path)
            log.info("%s: round %d uploaded (%d bytes, loss %.4f, %.1f samples/s)",
                     self.settings.site, round_number, receipt.stored_bytes,
                     update.metrics.get("train_loss", math.nan),
                     update.metrics.get("samples_per_second", math.nan))
            counted = True
        except FederationRejected as exc:
            if exc.code.name == "ALREADY_EXISTS":
                log.info("%s: round %d upload was already stored (acknowledgement lost)",
                         self.settings.site, round_number)
                counted = True
            elif exc.code.name == "FAILED_PRECONDITION":
                counted = self._counted_after_refusal(round_number, exc)
            else:  # the federation's settings refuse this site's updates: no retry fixes that
                raise
        path.unlink(missing_ok=True)
        if counted:
            metrics.ROUNDS_COMPLETED.inc()
            metrics.LAST_ROUND.set(round_number)

    def _still_collecting(self, round_number: int) -> bool:
        """Whether round `round_number` still collects (a masking phase may still finish)."""
        info = self.federation.get_round(wait_s=0.0)
        return info.round == round_number and info.state == \
            federation_pb2.ROUND_STATE_COLLECTING

    def _counted_after_refusal(self, round_number: int, refusal: FederationRejected) -> bool:
        """Whether the round holds this site's update although its upload was refused for the
        round's state (FAILED_PRECONDITION: the round closed, say, while the aggregator
        restarted after recording it but before replying). Either way the site goes on with
        the next global version."""
        recorded = self.settings.site in self.federation.round_sites(round_number).uploaded
        if recorded:
            log.info("%s: round %d: the aggregator had recorded this update before its reply "
                     "was lost (%s)", self.settings.site, round_number, refusal)
        else:
            log.warning("%s: round %d: update not counted (%s); sitting this round out and "
                        "going on with the next global version", self.settings.site,
                        round_number, refusal)
        return recorded
