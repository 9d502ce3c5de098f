"""Replay policies: what the user asks for, parsed, checked and resolved per GPU.

A policy combines, in this order (DESIGN.md, Replay):

1. ``lock_mhz``: SM clock lock;
2. ``cap``: power cap per GPU, W or % of TDP, enforced over the controller window;
   or an *aggregate* cap on the summed power of each host, rack, row or the cluster
   (``rack:40kW``, ``cluster:500kW``, ``rack:80%`` of the summed TDP of the rack's
   GPUs), see below;
3. ``smoothing``: power floor (W or % of TDP) and ramp-up/down limits (W/s);
4. ``storage``: a battery per rack (energy J, power W) shaving the rack's draw toward
   its moving average.

``scope`` limits lock, cap and smoothing to part of the cluster (``rack=rack03``,
``host=node00,node01``, ``gpu=node00/0``; ``cluster`` = every GPU), and storage to the
racks holding the selected GPUs.  Caps and locks may be swept (``300:700:50``,
``rack:30kW:50kW:5kW``): each value becomes one policy with the other settings.

Aggregate caps (``LEVEL:VALUE``, LEVEL one of host, rack, row, cluster; ``gpu:350W``
is the plain per-GPU cap): over each controller window (``cap_window_s``, default
1 s) the group's power, the sum over its GPUs of each one's mean replayed power over
the window (the quantity a per-GPU cap bounds), must be at most the cap.  All GPUs of
the group run at one relative clock in that window (as a rack power manager would
set through per-GPU caps): the highest that meets the cap, with the same power/clock
model and phase stretch as the per-GPU cap (:mod:`tracekit.replay.model`); every
sample above idle is throttled.  Windows whose group power is within the cap are
unchanged, bitwise.  Windows are fixed on the recorded time axis (aligned to
multiples of the window), so, as with a real averaging power manager, single samples
and spans that straddle two windows may exceed the cap (the compute start in a
window that was under it); a grid of the window's length shows the bounded peak
best.  ``scope`` then picks which groups are capped and must select
whole groups (``--cap rack:40kW --scope row=row0`` caps every rack of row0 at 40 kW).
Synchronous training still couples the GPUs, so one capped rack slows the whole job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import numpy as np

from tracekit.errors import PolicyError
from tracekit.units import parse_duration_s

SCOPE_LEVELS = ("cluster", "row", "rack", "host", "gpu")
#: Levels a cap may name (``gpu`` = per GPU; the others cap the group's summed power).
CAP_LEVELS = ("gpu", "host", "rack", "row", "cluster")


@dataclass(frozen=True)
class Cap:
    """A power cap: per GPU (``level`` "gpu": ``value`` W, or ``value`` % of each GPU's
    TDP), or on the summed power of each group of ``level`` (host, rack, row,
    cluster: ``value`` W, or ``value`` % of the summed TDP of the group's GPUs)."""

    value: float
    unit: str = "W"  # "W" or "%"
    level: str = "gpu"

    @property
    def aggregate(self) -> bool:
        """True for a cap on a group's summed power."""
        return self.level != "gpu"

    def watts(self, tdp_w: float | None) -> float | None:
        """The cap in W for a GPU (or group) of TDP ``tdp_w`` (None: unknown)."""
        if self.unit == "W":
            return self.value
        return None if tdp_w is None else self.value / 100.0 * tdp_w

    @property
    def label(self) -> str:
        if not self.aggregate:
            return f"{self.value:g}%" if self.unit == "%" else f"{self.value:g}W"
        if self.unit == "%":
            return f"{self.level}:{self.value:g}%"
        if self.value >= 1e3:
            return f"{self.level}:{self.value / 1e3:.12g}kW"
        return f"{self.level}:{self.value:.12g}W"


@dataclass(frozen=True)
class Smoothing:
    """Power floor and ramp limits of GPU power smoothing.

    ``floor`` in W (``floor_unit`` "W") or % of TDP ("%"), 0 = none; ``up``/``down``
    in W/s ("W") or % of TDP per second ("%"), inf = no limit.
    """

    floor: float = 0.0
    floor_unit: str = "W"
    up: float = float("inf")
    up_unit: str = "W"
    down: float = float("inf")
    down_unit: str = "W"

    def resolve(self, tdp_w: float | None) -> tuple[float | None, float | None, float | None]:
        """(floor W, up W/s, down W/s) for a GPU; None where a % needs an unknown TDP."""
        def one(v, unit):
            if unit == "W" or not np.isfinite(v) or v == 0:
                return v
            return None if tdp_w is None else v / 100.0 * tdp_w
        return one(self.floor, self.floor_unit), one(self.up, self.up_unit), one(self.down, self.down_unit)

    @property
    def label(self) -> str:
        parts = []
        if self.floor:
            parts.append(f"floor={self.floor:g}{'%' if self.floor_unit == '%' else 'W'}")
        if np.isfinite(self.up):
            parts.append(f"up={self.up:g}{'%' if self.up_unit == '%' else 'W'}/s")
        if np.isfinite(self.down):
            parts.append(f"down={self.down:g}{'%' if self.down_unit == '%' else 'W'}/s")
        return "smooth(" + ",".join(parts) + ")"


@dataclass(frozen=True)
class Storage:
    """A battery per rack: capacity ``energy_j``, power rating ``power_w``; it shaves
    the rack draw toward its centred moving average over ``window_s``; charging stores
    ``efficiency`` of the energy drawn; it starts at ``soc0`` (share of capacity)."""

    energy_j: float
    power_w: float
    window_s: float = 10.0
    efficiency: float = 1.0
    soc0: float = 0.5

    @property
    def label(self) -> str:
        return f"storage({self.energy_j:g}J,{self.power_w:g}W)"


@dataclass(frozen=True)
class Scope:
    """Which GPUs a policy touches: every GPU (``cluster``, or a level without names)
    or the GPUs of the named groups of ``level``."""

    level: str = "cluster"
    names: tuple[str, ...] = ()

    @property
    def everything(self) -> bool:
        return not self.names

    @property
    def label(self) -> str:
        return "" if self.everything else f"@{self.level}={','.join(self.names)}"

    def select(self, topology, gpus: list[str]) -> np.ndarray:
        """Boolean mask over ``gpus``; PolicyError naming unknown groups."""
        if self.everything:
            return np.ones(len(gpus), dtype=bool)
        if self.level == "gpu":
            of = {g: g for g in gpus}
        else:
            cols = topology.select("gpu", self.level).to_dict(as_series=False)
            of = {g: (str(v) if v is not None else None) for g, v in zip(cols["gpu"], cols[self.level])}
        known = sorted({of.get(g) for g in gpus if of.get(g) is not None})
        missing = [n for n in self.names if n not in known]
        if missing:
            shown = ", ".join(known[:8]) + (f" ... ({len(known)} in all)" if len(known) > 8 else "")
            raise PolicyError(f"--scope: unknown {self.level} {', '.join(map(repr, missing))}; known: {shown}")
        wanted = set(self.names)
        return np.array([of.get(g) in wanted for g in gpus], dtype=bool)


@dataclass(frozen=True)
class Policy:
    """One what-if: lock -> cap -> smoothing -> storage on the GPUs of ``scope``."""

    lock_mhz: float | None = None
    cap: Cap | None = None
    smoothing: Smoothing | None = None
    storage: Storage | None = None
    scope: Scope = field(default_factory=Scope)
    name: str = ""

    @property
    def empty(self) -> bool:
        return self.lock_mhz is None and self.cap is None and self.smoothing is None and self.storage is None

    def label(self) -> str:
        if self.name:
            return self.name
        parts = []
        if self.lock_mhz is not None:
            parts.append(f"lock={self.lock_mhz:g}MHz")
        if self.cap is not None:
            parts.append(f"cap={self.cap.label}")
        if self.smoothing is not None:
            parts.append(self.smoothing.label)
        if self.storage is not None:
            parts.append(self.storage.label)
        return "+".join(parts) + self.scope.label if parts else "baseline"

    def to_dict(self) -> dict:
        """The policy as strict JSON (no limit = None)."""
        def clean(d: dict) -> dict:
            return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}

        return {
            "lock_mhz": self.lock_mhz,
            "cap": None if self.cap is None else {"value": self.cap.value, "unit": self.cap.unit,
                                                  "level": self.cap.level},
            "smoothing": None if self.smoothing is None else clean(self.smoothing.__dict__),
            "storage": None if self.storage is None else clean(self.storage.__dict__),
            "scope": {"level": self.scope.level, "names": list(self.scope.names)},
        }


# --------------------------------------------------------------------------- parsing

_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"


def _number(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise PolicyError(f"{what}: {text!r} is not a number") from None
    if not np.isfinite(v):
        raise PolicyError(f"{what}: {text!r} must be finite")
    return v


def _value_unit(text: str, what: str, units: dict[str, tuple[str, float]]) -> tuple[float, str]:
    """``"350W"`` -> (350.0, "W") using ``units`` {suffix: (unit, factor)}; a bare
    number takes the first unit."""
    t = text.strip()
    m = re.fullmatch(rf"({_NUM})\s*([A-Za-z%/]*)", t)
    if not m:
        raise PolicyError(f"{what}: cannot read {text!r}")
    v = _number(m.group(1), what)
    suffix = m.group(2)
    if suffix == "":
        unit, factor = next(iter(units.values()))
    elif suffix in units:
        unit, factor = units[suffix]
    else:
        lowered = {k.lower(): x for k, x in units.items()}
        if suffix.lower() not in lowered:
            raise PolicyError(f"{what}: unknown unit {suffix!r} in {text!r}; use {', '.join(k for k in units if k)}")
        unit, factor = lowered[suffix.lower()]
    return v * factor, unit


def _expand_range(text: str, what: str, parse_one) -> list:
    parts = text.split(":")
    if len(parts) == 1:
        return [parse_one(parts[0])]
    if len(parts) != 3:
        raise PolicyError(f"{what}: a sweep is START:STOP:STEP, e.g. 300:700:50; got {text!r}")
    start, stop, step = (parse_one(p) for p in parts)
    units = {getattr(x, "unit", None) for x in (start, stop, step)}
    if len(units) > 1:
        raise PolicyError(f"{what}: START, STOP and STEP of {text!r} must use the same unit")
    a, b, s = (getattr(x, "value", x) for x in (start, stop, step))
    if s <= 0 or b < a:
        raise PolicyError(f"{what}: sweep {text!r} needs STEP > 0 and STOP >= START")
    n = int(np.floor((b - a) / s + 1e-9)) + 1
    if n > 200:
        raise PolicyError(f"{what}: sweep {text!r} has {n} values; at most 200")
    values = [round(a + i * s, 9) for i in range(n)]
    if isinstance(start, Cap):
        return [Cap(v, start.unit) for v in values]
    return values


def parse_cap(text: str | float | int | Cap) -> list[Cap]:
    """``350``, ``"350W"``, ``"0.35kW"``, ``"50%"`` (of TDP), or a sweep
    ``"300:700:50"`` / ``"40%:90%:10%"`` -> list of :class:`Cap` per GPU; with a level
    prefix, caps on each group's summed power: ``"rack:40kW"``, ``"cluster:500kW"``,
    ``"rack:80%"`` (of the summed TDP), ``"rack:30kW:50kW:5kW"`` (a sweep)."""
    if isinstance(text, Cap):
        if text.level not in CAP_LEVELS:
            raise PolicyError(f"--cap: unknown level {text.level!r}; use {', '.join(CAP_LEVELS)}")
        return [_check_cap(text)]
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return [_check_cap(Cap(float(text), "W"))]
    t = str(text).strip()
    level = "gpu"
    m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\s*:(.*)", t, flags=re.DOTALL)
    if m:
        level = m.group(1).lower()
        if level not in CAP_LEVELS:
            raise PolicyError(f"--cap: unknown level {m.group(1)!r} in {t!r}; use {', '.join(CAP_LEVELS)} "
                              "(e.g. rack:40kW)")
        t = m.group(2).strip()
        if not t:
            raise PolicyError(f"--cap {text!r} gives no value after {level}:")

    def one(v_text: str) -> Cap:
        v, unit = _value_unit(v_text, "--cap", {"W": ("W", 1.0), "w": ("W", 1.0), "kW": ("W", 1e3), "MW": ("W", 1e6),
                                                "%": ("%", 1.0)})
        return Cap(v, unit, level)

    caps = _expand_range(t, "--cap", one)
    return [_check_cap(replace(c, level=level)) for c in caps]


def _check_cap(cap: Cap) -> Cap:
    if cap.value <= 0:
        raise PolicyError(f"--cap must be > 0, got {cap.label}")
    if cap.unit == "%" and cap.value > 1000:
        raise PolicyError(f"--cap {cap.label} of TDP is not a plausible cap")
    return cap


def check_cap_scope(cap: Cap, scope: Scope) -> None:
    """An aggregate cap covers whole groups: its scope must name groups of its own
    level or a coarser one (``--cap rack:40kW --scope row=row0``)."""
    if not cap.aggregate or scope.everything:
        return
    if SCOPE_LEVELS.index(scope.level) > SCOPE_LEVELS.index(cap.level):
        coarser = ", ".join(SCOPE_LEVELS[:SCOPE_LEVELS.index(cap.level) + 1])
        raise PolicyError(f"--cap {cap.label} caps whole {cap.level}s, but --scope {scope.level}=... selects part "
                          f"of a {cap.level}; scope it by {coarser}")


def parse_lock(text: str | float | int) -> list[float]:
    """``1410``, ``"1410MHz"``, ``"1.41GHz"`` or a sweep ``"1000:1900:100"`` -> MHz values."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        values = [float(text)]
    else:
        def one(t: str) -> float:
            return _value_unit(t, "--lock-mhz", {"MHz": ("MHz", 1.0), "mhz": ("MHz", 1.0), "GHz": ("MHz", 1e3)})[0]

        values = _expand_range(str(text), "--lock-mhz", one)
    for v in values:
        if v <= 0:
            raise PolicyError(f"--lock-mhz must be > 0, got {v:g}")
    return values


def _key_values(text: str, what: str) -> dict[str, str]:
    out = {}
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise PolicyError(f"{what}: expected KEY=VALUE items separated by commas, got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip().lower()
        if k in out:
            raise PolicyError(f"{what}: {k} given twice")
        out[k] = v.strip()
    if not out:
        raise PolicyError(f"{what}: nothing given")
    return out


def parse_smoothing(text: str | dict | Smoothing) -> Smoothing:
    """``"floor=90%,up=2000,down=10%/s"``: floor in W or % of TDP, ramp limits in W/s
    or % of TDP per second."""
    if isinstance(text, Smoothing):
        return _check_smoothing(text)
    kv = {k: str(v) for k, v in text.items()} if isinstance(text, dict) else _key_values(text, "--smooth")
    unknown = sorted(set(kv) - {"floor", "up", "down"})
    if unknown:
        raise PolicyError(f"--smooth: unknown key(s) {unknown}; use floor=, up=, down=")
    kw = {}
    if "floor" in kv:
        kw["floor"], kw["floor_unit"] = _value_unit(kv["floor"], "--smooth floor",
                                                    {"W": ("W", 1.0), "kW": ("W", 1e3), "%": ("%", 1.0)})
    for key in ("up", "down"):
        if key in kv:
            kw[key], kw[f"{key}_unit"] = _value_unit(
                kv[key], f"--smooth {key}",
                {"W/s": ("W", 1.0), "kW/s": ("W", 1e3), "%/s": ("%", 1.0), "%": ("%", 1.0)})
    return _check_smoothing(Smoothing(**kw))


def _check_smoothing(s: Smoothing) -> Smoothing:
    if s.floor < 0:
        raise PolicyError(f"--smooth floor must be >= 0, got {s.floor:g}")
    if s.floor_unit == "%" and s.floor > 100:
        raise PolicyError(f"--smooth floor={s.floor:g}% is above TDP; the floor is at most 100% of TDP")
    for name in ("up", "down"):
        if getattr(s, name) <= 0:
            raise PolicyError(f"--smooth {name} must be > 0 W/s, got {getattr(s, name):g}")
    return s


def parse_storage(text: str | dict | Storage) -> Storage:
    """``"energy_j=3.6e7,power_w=2e5[,window=30s][,efficiency=0.9][,soc0=0.5]"``
    (also ``energy_kwh=``, ``power_kw=``), per rack."""
    if isinstance(text, Storage):
        return _check_storage(text)
    kv = {k: str(v) for k, v in text.items()} if isinstance(text, dict) else _key_values(text, "--storage")
    known = {"energy_j", "energy_kwh", "power_w", "power_kw", "window", "window_s", "efficiency", "soc0"}
    unknown = sorted(set(kv) - known)
    if unknown:
        raise PolicyError(f"--storage: unknown key(s) {unknown}; use energy_j=, power_w=, window=, efficiency=, soc0=")
    if ("energy_j" in kv) == ("energy_kwh" in kv):
        raise PolicyError("--storage needs exactly one of energy_j= or energy_kwh=")
    if ("power_w" in kv) == ("power_kw" in kv):
        raise PolicyError("--storage needs exactly one of power_w= or power_kw=")
    energy = _number(kv["energy_j"], "--storage energy_j") if "energy_j" in kv else \
        _number(kv["energy_kwh"], "--storage energy_kwh") * 3.6e6
    power = _number(kv["power_w"], "--storage power_w") if "power_w" in kv else \
        _number(kv["power_kw"], "--storage power_kw") * 1e3
    kw = {"energy_j": energy, "power_w": power}
    if "window" in kv or "window_s" in kv:
        kw["window_s"] = parse_duration_s(kv.get("window", kv.get("window_s")), what="--storage window")
    if "efficiency" in kv:
        kw["efficiency"] = _number(kv["efficiency"], "--storage efficiency")
    if "soc0" in kv:
        kw["soc0"] = _number(kv["soc0"], "--storage soc0")
    return _check_storage(Storage(**kw))


def _check_storage(s: Storage) -> Storage:
    if not s.energy_j > 0:
        raise PolicyError(f"--storage energy must be > 0, got {s.energy_j:g} J")
    if not s.power_w > 0:
        raise PolicyError(f"--storage power must be > 0, got {s.power_w:g} W")
    if not s.window_s > 0:
        raise PolicyError(f"--storage window must be > 0, got {s.window_s:g} s")
    if not 0 < s.efficiency <= 1:
        raise PolicyError(f"--storage efficiency must be in (0, 1], got {s.efficiency:g}")
    if not 0 <= s.soc0 <= 1:
        raise PolicyError(f"--storage soc0 must be in [0, 1], got {s.soc0:g}")
    return s


def parse_scope(text: str | Scope | dict | None) -> Scope:
    """``"cluster"``, ``"rack"`` (every GPU), ``"rack=rack03"``, ``"host=node00,node01"``,
    ``"gpu=node00/0"`` or ``{"rack": ["rack03"]}``."""
    if text is None:
        return Scope()
    if isinstance(text, Scope):
        return text
    if isinstance(text, dict):
        if len(text) != 1:
            raise PolicyError(f"scope takes one level, got {sorted(text)}")
        level, names = next(iter(text.items()))
        names = (names,) if isinstance(names, str) else tuple(names)
    else:
        t = str(text).strip()
        if "=" in t:
            level, rest = t.split("=", 1)
            names = tuple(n.strip() for n in rest.split(",") if n.strip())
            if not names:
                raise PolicyError(f"--scope {t!r} names no {level.strip()}")
        else:
            level, names = t, ()
    level = level.strip().lower()
    if level not in SCOPE_LEVELS:
        raise PolicyError(f"--scope level must be one of {', '.join(SCOPE_LEVELS)}; got {level!r}")
    if level == "cluster" and names:
        raise PolicyError("--scope cluster takes no names (it is every GPU)")
    return Scope(level, tuple(str(n) for n in names))


def build_policies(*, cap=None, lock_mhz=None, smoothing=None, storage=None, scope=None) -> list[Policy]:
    """The policies to replay: one, or one per value of a swept cap or lock.

    ``cap`` and ``lock_mhz`` accept a value, a sweep string or a list of values; at
    most one of them may hold several values.
    """
    caps: list[Cap | None] = [None]
    if cap is not None:
        if isinstance(cap, (list, tuple, np.ndarray)):
            caps = [c for item in cap for c in parse_cap(item)]
        else:
            caps = parse_cap(cap)
    locks: list[float | None] = [None]
    if lock_mhz is not None:
        if isinstance(lock_mhz, (list, tuple, np.ndarray)):
            locks = [v for item in lock_mhz for v in parse_lock(item)]
        else:
            locks = parse_lock(lock_mhz)
    if len(caps) > 1 and len(locks) > 1:
        raise PolicyError("sweep one policy at a time: both --cap and --lock-mhz hold several values")
    if not caps or not locks:
        raise PolicyError("an empty sweep")
    sm = parse_smoothing(smoothing) if smoothing is not None else None
    st = parse_storage(storage) if storage is not None else None
    sc = parse_scope(scope)
    for c in caps:
        if c is not None:
            check_cap_scope(c, sc)
    return [Policy(lock_mhz=lk, cap=c, smoothing=sm, storage=st, scope=sc) for lk in locks for c in caps]
