"""The power/clock model of replay, per GPU model, with every parameter overridable.

Power at SM clock ``f`` of a sample observed at ``P_obs`` (at the reference clock
``f0``)::

    P(f) = P_idle + (P_obs - P_idle) * r(f / f0),   r(x) = a*x + (1 - a)*x**g

and the time a phase takes at clock ``f``::

    s = 1 + beta * (f0 / f - 1)

Defaults and where they come from:

- ``idle_w``, ``f0_mhz`` (max SM clock) and ``tdp_w``: the spec table
  (:mod:`tracekit.specs`, vendor data sheets; H100 idle 75 W and A100 63 W are the
  simulator constants of Splitwise, Patel et al., ISCA 2024).  With ``sm_clock_mhz``
  in the trace, ``f0`` is the observed clock instead (the clock ``P_obs`` was drawn
  at; see :func:`tracekit.kernels.replay.clock_windows`).
- ``a = 0``, ``g = 3``: dynamic power ``~ C V^2 f`` with voltage roughly proportional
  to frequency in the DVFS range gives a cubic law.  With these defaults an H100
  prompt phase at 700 W capped at 350 W runs at ``f/f0 = ((350-75)/(700-75))**(1/3)
  = 0.7606`` and stretches 1/0.7606 = 1.315x, the ~1.30x reported for prompt phases
  under a 350 W cap (DESIGN.md, Facts; Splitwise).  ``a > 0`` adds a share linear in
  ``f`` (leakage and clock-tree power that does not scale with voltage).
- ``beta``: compute and prompt (prefill) are compute-bound, ``beta = 1``; token
  (decode) is memory-bound and barely follows the SM clock: ``beta = 0.2``, the
  middle of the 0.1-0.3 range in DESIGN.md, which leaves H100 token phases at
  <= 1.02x under a 350 W cap as reported (Splitwise; POLCA, Patel et al., ASPLOS
  2024, find decode nearly insensitive to frequency); communication and idle wait on
  the network or on requests, ``beta = 0``.

Override any of them with ``model_params={"a": 0.1}`` (every GPU) or
``{"H100-SXM": {"idle_w": 70}}`` (one model); on the command line ``--model-param
a=0.1`` or ``--model-param H100-SXM:idle_w=70``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from tracekit.errors import PolicyError
from tracekit.specs import find_gpu_spec

#: Stretch sensitivity per phase (see the module docstring).
DEFAULT_BETA: dict[str, float] = {
    "compute": 1.0,
    "prompt": 1.0,
    "token": 0.2,
    "communication": 0.0,
    "idle": 0.0,
}
DEFAULT_A = 0.0
DEFAULT_G = 3.0

#: Per-GPU-model overrides of the defaults above (none needed yet: every model uses
#: the cubic law and the phase betas; idle, f0 and TDP come from the spec table).
MODEL_DEFAULTS: dict[str, dict[str, float]] = {}

PARAM_NAMES = ("idle_w", "f0_mhz", "tdp_w", "a", "g") + tuple(f"beta_{p}" for p in DEFAULT_BETA)


@dataclass(frozen=True)
class PowerModel:
    """Model parameters of one GPU (model).

    Attributes
    ----------
    model
        Spec-table name, or None when unknown.
    idle_w
        Power at which nothing scales with the clock, W.
    f0_mhz
        Reference (max) SM clock, MHz; None when unknown.
    tdp_w
        TDP, W (for caps and floors in % of TDP); None when unknown.
    a, g
        ``r(x) = a*x + (1-a)*x**g``.
    beta
        Stretch sensitivity per phase name.
    idle_source
        Where ``idle_w`` came from: ``spec``, ``param`` or ``data`` (the GPU's lowest
        detected power level, for models the spec table does not know).
    """

    model: str | None
    idle_w: float
    f0_mhz: float | None
    tdp_w: float | None
    a: float = DEFAULT_A
    g: float = DEFAULT_G
    beta: dict = field(default_factory=lambda: dict(DEFAULT_BETA))
    idle_source: str = "spec"

    def ratio(self, x):
        """``r(x)``: share of the above-idle power drawn at clock ratio ``x``."""
        x = np.asarray(x, dtype=np.float64)
        return self.a * x + (1.0 - self.a) * x ** self.g

    def power_w(self, observed_w, x):
        """Power at clock ratio ``x`` of samples observed at ``observed_w`` (W)."""
        p = np.asarray(observed_w, dtype=np.float64)
        return np.where(p > self.idle_w, self.idle_w + (p - self.idle_w) * self.ratio(x), p)

    def stretch(self, phase: str, x):
        """Duration factor of ``phase`` at clock ratio ``x``."""
        return 1.0 + self.beta.get(phase, 0.0) * (1.0 / np.asarray(x, dtype=np.float64) - 1.0)

    def ratio_for_power(self, observed_w: float, target_w: float) -> float:
        """The clock ratio at which a phase observed at ``observed_w`` draws
        ``target_w`` (1 when it already draws no more)."""
        if observed_w <= target_w:
            return 1.0
        if target_w <= self.idle_w:
            raise PolicyError(f"{target_w:g} W is not above the idle power {self.idle_w:g} W")
        want = (target_w - self.idle_w) / (observed_w - self.idle_w)
        if self.a == 0.0:
            return float(want ** (1.0 / self.g))
        lo, hi = 0.0, 1.0
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            if float(self.ratio(mid)) > want:
                hi = mid
            else:
                lo = mid
        return lo

    def to_dict(self) -> dict:
        return {"model": self.model, "idle_w": self.idle_w, "f0_mhz": self.f0_mhz, "tdp_w": self.tdp_w,
                "a": self.a, "g": self.g, "beta": dict(self.beta), "idle_source": self.idle_source}


def _check_value(name: str, value, where: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise PolicyError(f"model parameter {name}{where} must be a number, got {value!r}") from None
    if not np.isfinite(v):
        raise PolicyError(f"model parameter {name}{where} must be finite, got {value!r}")
    if name == "a" and not 0.0 <= v <= 1.0:
        raise PolicyError(f"model parameter a{where} must be in [0, 1], got {v:g}")
    if name == "g" and v <= 0:
        raise PolicyError(f"model parameter g{where} must be > 0, got {v:g}")
    if name in ("f0_mhz", "tdp_w") and v <= 0:
        raise PolicyError(f"model parameter {name}{where} must be > 0, got {v:g}")
    if (name == "idle_w" or name.startswith("beta_")) and v < 0:
        raise PolicyError(f"model parameter {name}{where} must be >= 0, got {v:g}")
    return v


def normalize_params(model_params: dict | None) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(global overrides, per-model overrides) from ``{"a": 0.1, "H100-SXM": {...}}``.

    Model names are resolved through the spec table (``H100`` -> ``H100-SXM``); an
    unknown parameter or model name is a :class:`PolicyError`.
    """
    glob: dict[str, float] = {}
    per_model: dict[str, dict[str, float]] = {}
    for key, value in (model_params or {}).items():
        if isinstance(value, dict):
            spec = find_gpu_spec(key)
            name = spec.name if spec else key
            out = per_model.setdefault(name, {})
            for k, v in value.items():
                if k not in PARAM_NAMES:
                    raise PolicyError(f"unknown model parameter {k!r} (for {key}); known: {', '.join(PARAM_NAMES)}")
                out[k] = _check_value(k, v, f" of {key}")
        else:
            if key not in PARAM_NAMES:
                raise PolicyError(f"unknown model parameter {key!r}; known: {', '.join(PARAM_NAMES)}")
            glob[key] = _check_value(key, value, "")
    return glob, per_model


def parse_model_param(text: str) -> tuple[str | None, str, str]:
    """``"a=0.1"`` -> (None, "a", "0.1"); ``"H100-SXM:idle_w=70"`` -> ("H100-SXM", ...)."""
    if "=" not in text:
        raise PolicyError(f"--model-param takes NAME=VALUE or MODEL:NAME=VALUE, got {text!r}")
    left, value = text.split("=", 1)
    model = None
    if ":" in left:
        model, left = left.split(":", 1)
        model = model.strip()
    return model, left.strip(), value.strip()


def params_from_cli(items) -> dict:
    """``--model-param`` strings as the ``model_params`` dict of :func:`tracekit.replay`."""
    out: dict = {}
    for item in items or ():
        model, name, value = parse_model_param(item)
        if model:
            out.setdefault(model, {})[name] = value
        else:
            out[name] = value
    return out


def gpu_models(topology, gpus: list[str], model_params: dict | None,
               lowest_level_w: dict[str, float] | None = None) -> tuple[list[PowerModel], list[str]]:
    """The :class:`PowerModel` of each GPU (in ``gpus`` order) and warnings.

    A GPU whose model the spec table does not know takes ``idle_w`` from
    ``model_params`` or else from its lowest detected power level
    (``lowest_level_w``), and has no ``f0`` or TDP unless given.
    """
    glob, per_model = normalize_params(model_params)
    cols = topology.select("gpu", "model", "tdp_w").to_dict(as_series=False)
    info = {g: (m, t) for g, m, t in zip(cols["gpu"], cols["model"], cols["tdp_w"])}
    cache: dict = {}
    out: list[PowerModel] = []
    unknown: list[str] = []
    for gpu in gpus:
        model_name, tdp = info.get(gpu, (None, None))
        spec = find_gpu_spec(model_name) if model_name else None
        key = (spec.name if spec else model_name, tdp, spec is None and gpu)
        if key in cache:
            out.append(cache[key])
            continue
        name = spec.name if spec else model_name
        p = {**MODEL_DEFAULTS.get(name or "", {}), **glob, **per_model.get(name or "", {})}
        beta = dict(DEFAULT_BETA)
        for k, v in p.items():
            if k.startswith("beta_"):
                beta[k[len("beta_"):]] = v
        idle_source = "spec"
        if "idle_w" in p:
            idle, idle_source = p["idle_w"], "param"
        elif spec is not None:
            idle = spec.idle_w
        else:
            idle = (lowest_level_w or {}).get(gpu)
            idle_source = "data"
            unknown.append(gpu)
            if idle is None or not np.isfinite(idle):
                idle = 0.0
        f0 = p.get("f0_mhz", spec.max_sm_mhz if spec else None)
        tdp_w = p.get("tdp_w", tdp if tdp is not None and np.isfinite(tdp) else (spec.tdp_w if spec else None))
        pm = PowerModel(model=name, idle_w=float(idle), f0_mhz=f0, tdp_w=tdp_w, a=p.get("a", DEFAULT_A),
                        g=p.get("g", DEFAULT_G), beta=beta, idle_source=idle_source)
        cache[key] = pm
        out.append(pm)
    warnings = []
    if unknown:
        warnings.append(
            f"{len(unknown)} GPU(s) of a model the spec table does not know ({unknown[0]}...): idle power taken "
            "from each GPU's lowest power level; pass --gpu-model or --model-param idle_w=/f0_mhz=/tdp_w= "
            "to set it")
    return out, warnings


def with_params(model: PowerModel, **changes) -> PowerModel:
    """A copy of ``model`` with fields changed."""
    return replace(model, **changes)
