"""What a chaos check tried and what held, and the one table `make chaos` prints."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# Failures listed per check in the printed report (the count is always complete).
SHOWN_FAILURES = 5


@dataclass
class Check:
    """One row of the table: a property tried many times, and every time it did not hold."""

    part: str
    name: str
    tried: int = 0
    held: int = 0
    failures: list[str] = field(default_factory=list)
    # How the tries ended (e.g. "refused: CorruptSliceError"), for the detailed report.
    outcomes: Counter[str] = field(default_factory=Counter)

    def record(self, failure: str | None, outcome: str = "") -> None:
        """Count one try: `failure` says what did not hold (None: it held)."""
        self.tried += 1
        if outcome:
            self.outcomes[outcome] += 1
        if failure is None:
            self.held += 1
        else:
            self.failures.append(failure)

    @property
    def ok(self) -> bool:
        """Whether every try held (and there was at least one)."""
        return self.tried > 0 and self.held == self.tried


def table(checks: list[Check]) -> str:
    """The markdown table 'part | tried | held | failures'."""
    lines = ["| part | tried | held | failures |", "|---|---:|---:|---:|"]
    lines += [f"| {c.part}: {c.name} | {c.tried} | {c.held} | {len(c.failures)} |"
              for c in checks]
    return "\n".join(lines)


def details(checks: list[Check]) -> str:
    """Each check's outcomes and its first failures, for reading after the table."""
    lines: list[str] = []
    for check in checks:
        lines.append(f"{check.part}: {check.name}")
        lines += [f"    {count:5d}  {outcome}" for outcome, count in
                  sorted(check.outcomes.items(), key=lambda item: -item[1])]
        lines += [f"    FAILED: {failure}" for failure in check.failures[:SHOWN_FAILURES]]
        if len(check.failures) > SHOWN_FAILURES:
            lines.append(f"    ... and {len(check.failures) - SHOWN_FAILURES} more failures")
    return "\n".join(lines)
