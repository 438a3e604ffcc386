"""Kill -9 chaos: a federation of real processes (tiny cohort, cpu-small model) runs its rounds
while the aggregator, the crypto service and trainers are killed with SIGKILL, at the named
crash windows (UCADI_CRASH_AT, ucadi/ops/faults.py) and at random moments, two at once too, and
restarted on the same port and state folder as Kubernetes restarts a pod.

What must hold: the run finishes; every round seals with each uploaded site counted once (the
weight global version r decrypts to is the sum of its uploaded sites' cases); every upload a
site was told was accepted is in its round; every site publishes the same model.safetensors
bytes for each global version; a restarted process stays up (no crash loop).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chaos.outcome import Check
from ucadi.ct.synth import generate_cohort, read_manifest
from ucadi.demo.federation import FederationPlan, LocalFederation
from ucadi.demo.processes import ServiceStartError
from ucadi.errors import UcadiError
from ucadi.model import read_card
from ucadi.ops.faults import CRASH_ENV, CRASH_EXIT_CODE
from ucadi.v1 import federation_pb2

PART = "kill"
FULL_ROUNDS, QUICK_ROUNDS = 20, 3
FULL_SITES = ("main-campus", "optical-valley", "sino-french")
QUICK_SITES = FULL_SITES[:2]
FULL_TIMEOUT_S, QUICK_TIMEOUT_S = 1800.0, 420.0
# Kubernetes restarts a crashed container after a back-off; a short one keeps the run short.
RESTART_BACKOFF_S = 1.0
POLL_S = 0.25
# A random kill lands up to this many seconds after its round was seen open (a round takes
# about 10 s here, so anywhere in it, the seal included; past its end, at the next one's start).
MAX_KILL_DELAY_S = 8.0
AGGREGATOR_WINDOWS = ("after_seal_before_open", "after_record_before_reply")
TRAINER_WINDOW = "after_sum_took_before_record"
# A masked round (the default): a trainer dies after advertising its round keys, before it
# gives its shares; restarted, it must advertise the same keys (or sit the round out).
MASK_WINDOW = "after_mask_keys_before_shares"
COMPLETED = federation_pb2.ROUND_STATE_COMPLETED
# Lines of a trainer log that say the federation holds the site's update of a round.
ACKNOWLEDGED = re.compile(r"trainer\[(?P<site>[^\]]+)\] (?:[A-Z]+ )?\S+: round (?P<round>\d+)"
                          r"(?: uploaded \(| upload was already stored|: the aggregator had "
                          r"recorded this update)")


@dataclass(frozen=True)
class Kill:
    """What to kill in a round: SIGKILL at a random moment, or a restart that dies at `window`."""

    round: int
    targets: tuple[str, ...]
    window: str = ""
    delay_s: float = 0.0

    def __str__(self) -> str:
        what = f"at {self.window}" if self.window else f"{self.delay_s:.1f} s into the round"
        return f"round {self.round}: {' + '.join(self.targets)} {what}"


def plan_kills(rounds: int, sites: tuple[str, ...], rng: np.random.Generator,
               quick: bool) -> list[Kill]:
    """The kills of a run: every named window, single random kills of each kind of process
    and pairs killed at once, spread over the rounds before the last."""
    trainers = [f"trainer-{site}" for site in sites]

    def trainer() -> str:
        return trainers[int(rng.integers(0, len(trainers)))]
    if quick:
        events: list[tuple[tuple[str, ...], str]] = [
            (("aggregator",), "after_record_before_reply"), (("crypto", trainer()), ""),
            (("aggregator",), "")]
    else:
        two_trainers = tuple(str(t) for t in rng.choice(trainers, 2, replace=False))
        events = [*((("aggregator",), window) for window in AGGREGATOR_WINDOWS * 2),
                  *(((trainer(),), TRAINER_WINDOW) for _ in range(2)),
                  *(((trainer(),), MASK_WINDOW) for _ in range(2)),
                  *((("aggregator",), "") for _ in range(2)),
                  *((("crypto",), "") for _ in range(2)),
                  *(((trainer(),), "") for _ in range(2)),
                  (("aggregator", "crypto"), ""), (("crypto", trainer()), ""),
                  (("aggregator", trainer()), ""), (two_trainers, "")]
    order = rng.permutation(len(events))
    slots = np.linspace(1, rounds - 1, len(events), endpoint=False).astype(int)
    return [Kill(int(slots[i]), tuple(events[j][0]), events[j][1],
                 float(rng.uniform(0, MAX_KILL_DELAY_S)))
            for i, j in enumerate(order)]


class Supervisor:
    """Restarts every process that died, on its port and state folder, after a back-off."""

    def __init__(self, federation: LocalFederation) -> None:
        self.federation = federation
        self.restart_at: dict[str, float] = {}
        self.restarts = 0
        # Exits nobody caused: neither our SIGKILL nor a named crash point.
        self.unexpected: list[str] = []

    def kill(self, name: str) -> None:
        """SIGKILL one process (it stays dead until tend() restarts it)."""
        self.federation.processes[name].kill()

    def start(self, name: str, window: str = "") -> None:
        """(Re)start a process; with `window`, it exits there (UCADI_CRASH_AT)."""
        if window:
            os.environ[CRASH_ENV] = window
        federation = self.federation
        port = federation.processes[name].port
        self.restarts += 1
        try:
            if name == "aggregator":
                federation.start_aggregator_on(port)
            elif name == "crypto":
                federation.start_crypto_on(port)
            else:
                federation.start_trainer(name.removeprefix("trainer-"))
        except ServiceStartError as exc:  # it exited while starting: try again later
            self.unexpected.append(f"{name} did not start: {exc}")
            self.restart_at[name] = time.monotonic() + RESTART_BACKOFF_S
            return
        finally:
            os.environ.pop(CRASH_ENV, None)
        self.restart_at.pop(name, None)

    def tend(self) -> None:
        """Notice deaths and restart what is due."""
        now = time.monotonic()
        for name, process in list(self.federation.processes.items()):
            if process.alive() or name in self.restart_at:
                continue
            code = process.process.returncode
            if code not in (-9, CRASH_EXIT_CODE):
                self.unexpected.append(f"{name} exited with {code}: {process.tail(5)}")
            self.restart_at[name] = now + RESTART_BACKOFF_S
        for name, due in list(self.restart_at.items()):
            if now >= due:
                self.start(name)

    def settle(self, timeout: float = 60.0) -> None:
        """Restart whatever is still down (a kill just before the run ended)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (self.restart_at or not all(
                p.alive() for p in self.federation.processes.values())):
            self.tend()
            time.sleep(POLL_S)


def crash_points_reached(federation: LocalFederation, name: str, window: str) -> int:
    """How often `name`'s log says it exited at `window`."""
    path = federation.logs / f"{name}.log"
    return path.read_text(errors="replace").count(f"crash point {window} reached") \
        if path.exists() else 0


def published(federation: LocalFederation, site: str) -> int:
    """The global version a site's model folder serves (0 before the first)."""
    current = federation.root / "sites" / site / "models" / "current"
    return read_card(current).version if current.exists() else 0


class ChaosRun:
    """One run: the federation, its supervisor, the planned kills and what became of them."""

    def __init__(self, federation: LocalFederation, kills: list[Kill], rounds: int) -> None:
        self.federation = federation
        self.supervisor = Supervisor(federation)
        self.pending = list(kills)
        self.done: list[tuple[Kill, int]] = []  # each kill, with its window's count before
        self.rounds = rounds

    def drive(self, timeout: float) -> Any:
        """Run until every site published the last version, killing as planned; the status."""
        opened: dict[int, float] = {}
        deadline = time.monotonic() + timeout
        sites = self.federation.plan.sites
        while time.monotonic() < deadline:
            self.supervisor.tend()
            try:
                status = self.federation.status()
            except Exception:  # the aggregator is down or restarting
                status = None
            if status is not None:
                current = status.current
                opened.setdefault(current.round, time.monotonic())
                if current.state == COMPLETED and all(
                        published(self.federation, s) >= self.rounds for s in sites):
                    return status
                while self.pending and (current.round > self.pending[0].round or (
                        current.round == self.pending[0].round and
                        time.monotonic() - opened[current.round] >= self.pending[0].delay_s)):
                    self.execute(self.pending.pop(0))
            time.sleep(POLL_S)
        return None

    def execute(self, kill: Kill) -> None:
        """SIGKILL the targets; a named window's target is started again set to die there."""
        print(f"  kill -9 {kill}", flush=True)
        for name in kill.targets:
            self.supervisor.kill(name)
        before = 0
        if kill.window:
            before = crash_points_reached(self.federation, kill.targets[0], kill.window)
            self.supervisor.start(kill.targets[0], kill.window)
        self.done.append((kill, before))

    def judge_kills(self) -> list[Check]:
        """Rows for the kills: each target back up at the end, never exiting on its own; a
        named window's target exited exactly there."""
        named = Check(PART, "kill -9 at a named crash window, restarted")
        single = Check(PART, "kill -9 at a random moment, restarted on the same port and state")
        pair = Check(PART, "two processes killed at once, both restarted")
        for kill in self.pending:
            (named if kill.window else single).record(f"{kill}: the run ended before it")
        processes = self.federation.processes
        for kill, before in self.done:
            problems = [f"{name} is down at the end" for name in kill.targets
                        if not processes[name].alive()]
            if kill.window and crash_points_reached(self.federation, kill.targets[0],
                                                    kill.window) <= before:
                problems.append(f"{kill.targets[0]} never reached {kill.window}")
            check = named if kill.window else pair if len(kill.targets) > 1 else single
            check.record(f"{kill}: {'; '.join(problems)}" if problems else None,
                         kill.window or " + ".join(t.split("-")[0] for t in kill.targets))
        stayed = Check(PART, "restarted processes stayed up (no exit on their own)")
        for _ in range(self.supervisor.restarts - len(self.supervisor.unexpected)):
            stayed.record(None)
        for exit_ in self.supervisor.unexpected:
            stayed.record(exit_)
        return [named, single, pair, stayed]


def train_cases(manifest: Path, sites: tuple[str, ...]) -> dict[str, int]:
    """Each site's training cases (its FedAvg weight per local epoch)."""
    records = read_manifest(manifest)
    return {site: sum(1 for r in records if r.site == site and r.split == "train")
            for site in sites}


def judge_rounds(federation: LocalFederation, status: Any, rounds: int,
                 cases: dict[str, int]) -> Check:
    """Every planned round sealed, its version's weight the sum of its uploaded sites' cases."""
    check = Check(PART, "rounds sealed, each uploaded site counted exactly once")
    sealed = {r.round: r for r in (status.rounds if status is not None else [])
              if r.sealed_unix}
    epochs = federation.plan.local_epochs
    for number in range(1, rounds + 1):
        summary = sealed.get(number)
        if summary is None:
            check.record(f"round {number} did not seal")
            continue
        uploaded = list(summary.uploaded_sites)
        want = sum(cases[s] for s in uploaded) * epochs
        try:
            weight = federation.decrypt_global(number)[1]
        except UcadiError as exc:
            check.record(f"round {number}: {exc}")
            continue
        problems = ([f"sites listed twice: {uploaded}"] if len(set(uploaded)) < len(uploaded)
                    else []) + ([f"weight {weight}, {want} expected from {sorted(uploaded)}"]
                                if weight != want else [])
        check.record(f"round {number}: {'; '.join(problems)}" if problems else None,
                     f"{len(uploaded)} sites")
    return check


def judge_acknowledged(federation: LocalFederation, status: Any) -> Check:
    """Every update a trainer logged as accepted is in its round's uploaded sites."""
    check = Check(PART, "uploads acknowledged to a site are in their round (none lost)")
    uploaded = {r.round: set(r.uploaded_sites) for r in (status.rounds if status else [])}
    seen: set[tuple[str, int]] = set()
    for log in sorted(federation.logs.glob("trainer-*.log")):
        for match in ACKNOWLEDGED.finditer(log.read_text(errors="replace")):
            seen.add((match["site"], int(match["round"])))
    for site, number in sorted(seen):
        check.record(None if site in uploaded.get(number, set())
                     else f"{site}'s update of round {number} was acknowledged, then lost")
    return check


def judge_models(federation: LocalFederation, rounds: int) -> Check:
    """For each global version, every site that published it wrote the same bytes."""
    check = Check(PART, "sites' published model.safetensors bit-identical per version")
    for version in range(1, rounds + 1):
        files = {site: federation.root / "sites" / site / "models" / "versions"
                 / f"{version:05d}" / "model.safetensors" for site in federation.plan.sites}
        found = {site: path.read_bytes() for site, path in files.items() if path.exists()}
        if version == rounds and len(found) < len(files):
            check.record(f"version {version} missing at {sorted(set(files) - set(found))}")
        elif len(set(found.values())) > 1:
            check.record(f"version {version} differs between {sorted(found)}")
        elif found:
            check.record(None, f"{len(found)} sites")
    return check


def run(quick: bool, seed: int = 0, work_dir: Path | None = None,
        manifest: Path | None = None) -> list[Check]:
    """Run the federation under kills; the table's kill rows."""
    rng = np.random.default_rng(seed)
    rounds = QUICK_ROUNDS if quick else FULL_ROUNDS
    sites = QUICK_SITES if quick else FULL_SITES
    with tempfile.TemporaryDirectory(prefix="ucadi-chaos-kill-", dir=work_dir) as scratch:
        root = Path(scratch)
        if manifest is None:
            manifest = generate_cohort(root / "cohort", preset="tiny", seed=0, workers=1,
                                       show_progress=False)
        federation = LocalFederation(FederationPlan(
            root=root / "federation", manifest=manifest, sites=list(sites), rounds=rounds,
            min_sites=len(sites), model_preset="cpu-small", round_timeout_s=3600.0,
            recipe={"total_epochs": rounds, "warmup_epochs": 0}))
        federation.provision()
        federation.create_key()
        chaos = ChaosRun(federation, plan_kills(rounds, sites, rng, quick), rounds)
        try:
            federation.start_crypto()
            federation.start_aggregator()
            for site in sites:
                federation.start_trainer(site)
            federation.approve_sites(list(sites))
            status = chaos.drive(QUICK_TIMEOUT_S if quick else FULL_TIMEOUT_S)
            chaos.supervisor.settle()
            if status is None:  # timed out: judge what the federation got done
                with contextlib.suppress(Exception):
                    status = federation.status()
            return [*chaos.judge_kills(),
                    judge_rounds(federation, status, rounds, train_cases(manifest, sites)),
                    judge_acknowledged(federation, status), judge_models(federation, rounds)]
        finally:
            federation.stop()
