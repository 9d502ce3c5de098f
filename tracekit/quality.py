"""Data-quality accounting: every row read is used or excluded for a named reason.

The invariant ``rows_read == rows_used + sum(rows_excluded.values())`` holds for every
file and for their sum.  Repairs that keep a row (sorting, a gap marked as missing)
are counted separately in ``repairs``.  Each kind keeps a few example locations
(``file:line``) so a user can look at the raw input.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tracekit.errors import StrictError

#: Kinds of excluded rows (rows_excluded keys).
EXCLUDE_KINDS = (
    "unparsable_row",
    "missing_value",
    "negative_power",
    "implausible_power",
    "duplicate_ts",
    "clock_jump",
    "unknown_gpu",
    "nonexistent_local_time",
)
#: Kinds of repairs that keep rows.
REPAIR_KINDS = ("non_monotonic_ts", "gap", "dst_ambiguous", "null_field")

MAX_EXAMPLES = 5


@dataclass
class DataQuality:
    """Counts of rows read, used, excluded by kind; repairs; failed files; warnings."""

    rows_read: int = 0
    rows_used: int = 0
    rows_excluded: Counter = field(default_factory=Counter)
    repairs: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    files_failed: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    # -- recording -------------------------------------------------------------------
    def exclude(self, kind: str, n: int, examples: list[str] | tuple = ()) -> None:
        if n <= 0:
            return
        self.rows_excluded[kind] += int(n)
        self._add_examples(kind, examples)

    def repair(self, kind: str, n: int, examples: list[str] | tuple = ()) -> None:
        if n <= 0:
            return
        self.repairs[kind] += int(n)
        self._add_examples(kind, examples)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def fail(self, path: str, error: str) -> None:
        self.files_failed.append({"file": str(path), "error": error})

    def _add_examples(self, kind: str, examples) -> None:
        have = self.examples.setdefault(kind, [])
        for ex in examples:
            if len(have) >= MAX_EXAMPLES:
                break
            have.append(str(ex))

    # -- combining -------------------------------------------------------------------
    def merge(self, other: "DataQuality") -> "DataQuality":
        """Add another accounting into this one (append/combine for distributed runs)."""
        self.rows_read += other.rows_read
        self.rows_used += other.rows_used
        self.rows_excluded.update(other.rows_excluded)
        self.repairs.update(other.repairs)
        for kind, exs in other.examples.items():
            self._add_examples(kind, exs)
        self.files_failed.extend(other.files_failed)
        for w in other.warnings:
            self.warn(w)
        return self

    @property
    def n_excluded(self) -> int:
        return sum(self.rows_excluded.values())

    def check_balance(self, where: str = "") -> None:
        """Raise if a row went unaccounted (a bug in tracekit, not in the input)."""
        if self.rows_read != self.rows_used + self.n_excluded:
            raise AssertionError(
                f"row accounting broken{(' in ' + where) if where else ''}: read "
                f"{self.rows_read} != used {self.rows_used} + excluded {self.n_excluded}"
            )

    def raise_if_strict(self, path: str) -> None:
        """Under ``--strict``: the first anomaly becomes a StrictError."""
        for kinds, counter in ((EXCLUDE_KINDS, self.rows_excluded), (REPAIR_KINDS, self.repairs)):
            for kind in list(kinds) + sorted(set(counter) - set(kinds)):
                n = counter.get(kind, 0)
                if n:
                    ex = self.examples.get(kind, [])
                    at = f" (first at {ex[0]})" if ex else ""
                    raise StrictError(f"--strict: {n} row(s) with {kind}{at}", path=path)

    def to_dict(self) -> dict:
        return {
            "rows_read": self.rows_read,
            "rows_used": self.rows_used,
            "rows_excluded": dict(sorted(self.rows_excluded.items())),
            "repairs": dict(sorted(self.repairs.items())),
            "examples": {k: v for k, v in sorted(self.examples.items())},
            "files_failed": list(self.files_failed),
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "DataQuality":
        return cls(
            rows_read=int(d.get("rows_read", 0)),
            rows_used=int(d.get("rows_used", 0)),
            rows_excluded=Counter(d.get("rows_excluded", {})),
            repairs=Counter(d.get("repairs", {})),
            examples={k: list(v) for k, v in d.get("examples", {}).items()},
            files_failed=list(d.get("files_failed", [])),
            warnings=list(d.get("warnings", [])),
        )
