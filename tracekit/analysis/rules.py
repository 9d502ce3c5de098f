"""Grid rules from a small TOML file, checked on aggregate power series.

Example rules file::

    [[rule]]
    name = "5 s window change"
    kind = "window_change"      # max - min within any sliding window
    window = "5s"
    limit_w = 10e6              # 10 MW
    level = "cluster"           # gpu, host, rack, row or cluster (default cluster)

    [[rule]]
    kind = "ramp"               # |P(t + window) - P(t)| / window
    window = "1s"
    limit_w_per_s = 2e6

    [[rule]]
    kind = "band"               # spectral component share in a band
    low_hz = 0.1
    high_hz = 20
    max_component_share = 0.2

References: the window-change proposal (no repeated change > 10 MW within any 5 s
window) and the band rule (no component above 20 % of the 0.1-20 Hz energy) are the
examples quoted in DESIGN.md from the literature on AI-datacenter grid impact.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from tracekit.errors import InputError, ParameterError
from tracekit.units import parse_duration_s

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RULE_KINDS = ("window_change", "ramp", "band")
LEVELS = ("gpu", "host", "rack", "row", "cluster")


@dataclass
class Rule:
    name: str
    kind: str
    level: str = "cluster"
    window_s: float | None = None
    limit_w: float | None = None
    limit_w_per_s: float | None = None
    low_hz: float = 0.1
    high_hz: float = 20.0
    max_component_share: float | None = None


@dataclass
class Violation:
    rule: str
    level: str
    group: str
    start: str | None
    end: str | None
    value: float
    limit: float
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "level": self.level,
            "group": self.group,
            "start": self.start,
            "end": self.end,
            "value": self.value,
            "limit": self.limit,
            **self.extra,
        }


def load_rules(path: Path | str) -> list[Rule]:
    """Parse a rules file; every problem is an InputError naming the file and rule."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read rules file ({exc.strerror or exc})", path=str(p)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid TOML ({exc})", path=str(p)) from None
    items = data.get("rule")
    if not isinstance(items, list) or not items:
        raise InputError("no [[rule]] tables found", path=str(p))
    rules = []
    for i, item in enumerate(items, 1):
        try:
            rules.append(_rule(item, i))
        except ParameterError as exc:
            raise InputError(f"rule {i}: {exc}", path=str(p)) from None
    return rules


def _rule(item: dict, i: int) -> Rule:
    kind = item.get("kind")
    if kind not in RULE_KINDS:
        raise ParameterError(f"kind must be one of {RULE_KINDS}, got {kind!r}")
    level = item.get("level", "cluster")
    if level not in LEVELS:
        raise ParameterError(f"level must be one of {LEVELS}, got {level!r}")
    rule = Rule(name=str(item.get("name", f"{kind} #{i}")), kind=kind, level=level)
    if kind in ("window_change", "ramp"):
        if "window" not in item:
            raise ParameterError(f"{kind} needs a window (e.g. window = \"5s\")")
        rule.window_s = parse_duration_s(str(item["window"]), what="window")
        if rule.window_s <= 0:
            raise ParameterError("window must be positive")
    if kind == "window_change":
        rule.limit_w = _positive(item, "limit_w")
    elif kind == "ramp":
        rule.limit_w_per_s = _positive(item, "limit_w_per_s")
    else:
        rule.low_hz = float(item.get("low_hz", 0.1))
        rule.high_hz = float(item.get("high_hz", 20.0))
        if not 0 <= rule.low_hz < rule.high_hz:
            raise ParameterError("need 0 <= low_hz < high_hz")
        share = _positive(item, "max_component_share")
        if share > 1:
            raise ParameterError("max_component_share is a fraction (0..1)")
        rule.max_component_share = share
    return rule


def _positive(item: dict, key: str) -> float:
    if key not in item:
        raise ParameterError(f"missing {key}")
    try:
        v = float(item[key])
    except (TypeError, ValueError):
        raise ParameterError(f"{key} must be a number, got {item[key]!r}") from None
    if not v > 0:
        raise ParameterError(f"{key} must be positive, got {v}")
    return v
