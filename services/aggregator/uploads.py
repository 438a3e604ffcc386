"""Upload intake: validating an upload against the open round, storing it durably and
queueing it to the sum, or recording one a site added at the sum service itself. It changes
the round only under the shared round lock (core.py), and wakes the round machine when an
upload is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context

from services.aggregator import metrics
from services.aggregator.contracts import (
    COLLECTING,
    MAX_COUNT,
    CiphertextFacts,
    FederationConfig,
    RejectedUpload,
    SumBackend,
)
from services.aggregator.core import RoundCore
from services.aggregator.feeding import SumFeeder
from services.aggregator.membership import Membership
from services.aggregator.store import AggregatorStore, UploadRecord
from ucadi.errors import UcadiError
from ucadi.lwe.integrity import update_slot_count
from ucadi.wire import file_digest

log = logging.getLogger(__name__)


class UploadIntake:
    """Uploads into the open round; thread-safe."""

    def __init__(self, core: RoundCore, membership: Membership, backend: SumBackend,
                 feeder: SumFeeder, read_facts: Callable[..., CiphertextFacts]) -> None:
        self.core = core
        self.config: FederationConfig = core.config
        self.store: AggregatorStore = core.store
        self.membership = membership
        self.backend = backend
        self.feeder = feeder
        self.read_facts = read_facts

    def check_upload(self, site: str, header: Any) -> Path:
        """Validate an upload header against the open round; returns the partial file path."""
        self.membership.require_member(site)
        current = self.core.current()
        enc, model = self.config.encryption, self.config.model
        if current is None or current.state != COLLECTING or header.round != current.round:
            now_txt = f"round {current.round} ({current.state})" if current else "no round yet"
            raise RejectedUpload(f"round {header.round} is not open for uploads; current is "
                                 f"{now_txt}", "wrong_round", "FAILED_PRECONDITION")
        if header.base_version != current.base_version:
            raise RejectedUpload(f"update trained from version {header.base_version}, but round "
                                 f"{current.round} trains from version {current.base_version}",
                                 "wrong_base_version", "FAILED_PRECONDITION")
        if self.config.pairwise_masks and site not in (
                self.store.mask_round(current.round).participants or ()):
            raise RejectedUpload(f"round {current.round} is masked and {site!r} is not one of "
                                 "its participants (it shares its keys first)",
                                 "not_participant", "FAILED_PRECONDITION")
        if self.store.upload(current.round, site) is not None:
            raise RejectedUpload(f"site {site!r} already uploaded to round {current.round}",
                                 "duplicate", "ALREADY_EXISTS")
        for name, got, want in (("parameter set", header.parameter_set, enc["parameter_set"]),
                                ("key id", header.key_id, enc["key_id"]),
                                ("layout hash", header.layout_hash, model["layout_hash"]),
                                ("optimizer digest", header.optimizer_digest,
                                 model["optimizer_digest"])):
            if got != want:
                raise RejectedUpload(f"{name} {got!r} does not match the federation's {want!r}",
                                     "mismatch")
        for name, count in (("num_samples", header.num_samples),
                            ("local_epochs", header.local_epochs)):
            if not 1 <= count <= MAX_COUNT:
                raise RejectedUpload(f"{name} {count} is not a count an update can carry (1 to "
                                     "2^63-1): an update is trained on samples for epochs",
                                     "malformed")
        if header.total_size > self.config.max_upload_bytes:
            raise RejectedUpload(f"upload of {header.total_size} bytes exceeds the limit of "
                                 f"{self.config.max_upload_bytes} bytes", "oversize",
                                 "RESOURCE_EXHAUSTED")
        # Ciphertexts carry fresh randomness, so a repeated digest can only be a replay (two
        # plaintext updates may legitimately be identical in the encryption-off mode).
        if self.config.encryption["enabled"] and self.store.digest_seen(header.sha256):
            raise RejectedUpload("this exact ciphertext was already accepted once (replay)",
                                 "replay", "ALREADY_EXISTS")
        return self.store.partial_upload_path(current.round, site)

    def stream_upload(self, round_number: int, site: str, sha256: str) -> Any:
        """Start passing an arriving upload on to the sum service (or None): accept_upload
        then commits it, a rejection aborts it (SumBackend.stream). If the sum service cannot
        take it now, the stored file is fed after acceptance as usual."""
        try:
            return self.backend.stream(round_number, site, sha256)
        except UcadiError as exc:
            log.warning("round %d: %s's upload is not streamed to the sum (%s); its stored "
                        "file will be fed", round_number, site, exc)
            return None

    def accept_upload(self, site: str, header: Any, assembled: Path,
                      digest_checked: bool = False, streamed: Any = None) -> UploadRecord:
        """Check the assembled ciphertext's own header, store it durably and queue it to sum.
        `digest_checked`: the receiver verified the file's trailing digest as it arrived;
        `streamed`: the upload was passed on to the sum service as it arrived (stream_upload),
        and is aborted there if refused here."""
        try:
            record = self._accept(site, header, assembled, digest_checked)
        except BaseException:
            if streamed is not None:
                streamed.abort()
            raise
        # On to the sum, inside the upload's trace; the round loop waits for it to seal.
        self.feeder.start(record, streamed, otel_context.get_current())
        log.info("round %d: accepted update from %s (%d bytes)", record.round, site, record.size)
        return record

    def _accept(self, site: str, header: Any, assembled: Path,
                digest_checked: bool) -> UploadRecord:
        try:
            facts = self.read_facts(assembled, digest_checked=digest_checked)
        except UcadiError as exc:
            assembled.unlink(missing_ok=True)
            raise RejectedUpload(f"malformed ciphertext: {exc}", "malformed") from exc
        model, enc = self.config.model, self.config.encryption
        problems = [f"{what} {got!r} != {want!r}" for what, got, want in (
            ("round", facts.round, header.round),
            ("parameter set", facts.parameter_set, enc["parameter_set"]),
            ("key id", facts.key_id, enc["key_id"]),
            ("layout hash", facts.layout_hash, model["layout_hash"]),
            ("slot count", facts.value_count, update_slot_count(model["value_count"])))
            if got != want]
        if problems:
            assembled.unlink(missing_ok=True)
            raise RejectedUpload("ciphertext header disagrees with the federation: "
                                 + "; ".join(problems), "mismatch")
        with self.core.changed:
            self.check_upload(site, header)  # the round may have closed while bytes streamed
            record = UploadRecord(round=header.round, site=site, path=assembled,
                                  size=assembled.stat().st_size, sha256=file_digest(assembled),
                                  num_samples=header.num_samples, local_epochs=header.local_epochs,
                                  received=self.core.clock())
            self._record(record, assembled)
        return record

    def _record(self, record: UploadRecord, assembled: Path | None) -> None:
        """Commit an accepted upload (holding the round lock) and announce it."""
        self.store.commit_upload(assembled, record)
        metrics.UPLOAD_BYTES.labels(self.config.federation_id).inc(record.size)
        metrics.SITE_LAST_ROUND.labels(self.config.federation_id, record.site).set(record.round)
        self.core.publish_metrics()
        self.core.notify()

    def record_contribution(self, site: str, header: Any) -> UploadRecord:
        """Record an upload the site added at the sum service itself (header.contributed):
        validated like any upload, and only once the sum holds exactly this ciphertext."""
        if not self.backend.takes_site_contributions():
            raise RejectedUpload("this federation takes ciphertexts as UploadUpdate chunks "
                                 "(JoinResponse.contribute_to_sum is false); send them here",
                                 "malformed", "FAILED_PRECONDITION")
        self.check_upload(site, header)
        held = self.backend.contribution_digest(header.round, site)
        if held is None:
            raise RejectedUpload(f"the sum service holds no contribution from site {site!r} in "
                                 f"round {header.round}: send the ciphertext (sha256 "
                                 f"{header.sha256[:12]}…) with SumService.AddContribution "
                                 "first", "not_contributed", "FAILED_PRECONDITION")
        if held != header.sha256:
            raise RejectedUpload(f"the sum service already holds another ciphertext from site "
                                 f"{site!r} in round {header.round} (sha256 {held[:12]}…), not "
                                 f"sha256 {header.sha256[:12]}…; a site cannot replace it "
                                 "there: record the one it holds (SumService.GetRoundStatus "
                                 "names it), or upload this one here with its chunks, which "
                                 "replaces it", "not_contributed", "FAILED_PRECONDITION")
        with self.core.changed:
            self.check_upload(site, header)  # the round may have closed meanwhile
            record = UploadRecord(round=header.round, site=site, path=None,
                                  size=header.total_size, sha256=header.sha256,
                                  num_samples=header.num_samples,
                                  local_epochs=header.local_epochs, received=self.core.clock())
            self._record(record, None)
        log.info("round %d: recorded %s's update, added at the sum service (%d bytes)",
                 record.round, site, record.size)
        return record

    def reject(self, site: str, reason: str, error: Exception) -> None:
        """Count a refused upload and log it: one line naming the site, reason and message."""
        metrics.UPLOADS_REJECTED.labels(self.config.federation_id, reason).inc()
        log.warning("refused an upload from %s (%s): %s", site or "an unidentified caller",
                    reason, error)

