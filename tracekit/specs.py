"""Built-in GPU spec table: TDP, typical idle power and max SM clock.

Sources (vendor data sheets; idle power is typical measured idle of a bare GPU
and is only a default for the power model):

- H100 SXM5 / PCIe: NVIDIA H100 Tensor Core GPU datasheet (2023): TDP 700 W (SXM),
  350 W (PCIe); max boost clock 1980 MHz (SXM), 1755 MHz (PCIe).  Idle 75 W (SXM)
  follows the inference simulator constants cited in DESIGN.md.
- H200 SXM: NVIDIA H200 datasheet (2024): up to 700 W, boost 1980 MHz.
- A100 SXM4 40/80 GB: NVIDIA A100 datasheet (2021): 400 W, boost 1410 MHz; idle 63 W
  (simulator constants).  A100 PCIe 80 GB: 300 W.
- B200: NVIDIA DGX B200 / HGX B200 datasheet (2024): 1000 W per GPU.
- GB200 (per Blackwell GPU in NVL72): 1200 W.
- L40S: NVIDIA L40S datasheet (2023): 350 W, boost 2520 MHz.
- MI300X: AMD Instinct MI300X datasheet (2023): 750 W, peak engine clock 2100 MHz.
- V100 SXM2: NVIDIA V100 datasheet (2018): 300 W, boost 1530 MHz.
- Titan X (Pascal): 250 W, boost 1531 MHz.
"""

from __future__ import annotations

from dataclasses import dataclass

from tracekit.errors import ParameterError


@dataclass(frozen=True)
class GpuSpec:
    """Static facts of one GPU model."""

    name: str
    tdp_w: float
    idle_w: float
    max_sm_mhz: float
    #: True when NVML ``power.draw`` is an instantaneous reading on this model
    #: (A100/GA100 and older); False when it is a 1 s average (Hopper and newer).
    instant_power_draw: bool
    vendor: str = "NVIDIA"


GPU_SPECS: dict[str, GpuSpec] = {
    s.name: s
    for s in [
        GpuSpec("H100-SXM", 700.0, 75.0, 1980.0, False),
        GpuSpec("H100-PCIe", 350.0, 50.0, 1755.0, False),
        GpuSpec("H200", 700.0, 75.0, 1980.0, False),
        GpuSpec("A100-SXM-40GB", 400.0, 63.0, 1410.0, True),
        GpuSpec("A100-SXM-80GB", 400.0, 63.0, 1410.0, True),
        GpuSpec("A100-PCIe-80GB", 300.0, 50.0, 1410.0, True),
        GpuSpec("B200", 1000.0, 140.0, 1965.0, False),
        GpuSpec("GB200", 1200.0, 160.0, 2062.0, False),
        GpuSpec("L40S", 350.0, 35.0, 2520.0, False),
        GpuSpec("MI300X", 750.0, 140.0, 2100.0, True, vendor="AMD"),
        GpuSpec("V100-SXM2", 300.0, 40.0, 1530.0, True),
        GpuSpec("TitanX", 250.0, 15.0, 1531.0, True),
    ]
}

_ALIASES = {
    "H100": "H100-SXM",
    "H100SXM": "H100-SXM",
    "H100SXM5": "H100-SXM",
    "H10080GBHBM3": "H100-SXM",
    "H100PCIE": "H100-PCIe",
    "H200SXM": "H200",
    "A100": "A100-SXM-80GB",
    "A100SXM": "A100-SXM-80GB",
    "A100SXM440GB": "A100-SXM-40GB",
    "A100SXM480GB": "A100-SXM-80GB",
    "A100SXM40GB": "A100-SXM-40GB",
    "A100SXM80GB": "A100-SXM-80GB",
    "A100PCIE80GB": "A100-PCIe-80GB",
    "A100PCIE": "A100-PCIe-80GB",
    "A10080GBPCIE": "A100-PCIe-80GB",
    "B200": "B200",
    "GB200": "GB200",
    "L40S": "L40S",
    "MI300X": "MI300X",
    "INSTINCTMI300X": "MI300X",
    "V100": "V100-SXM2",
    "V100SXM216GB": "V100-SXM2",
    "V100SXM232GB": "V100-SXM2",
    "TITANX": "TitanX",
    "TITANXPASCAL": "TitanX",
}


def _key(name: str) -> str:
    key = "".join(ch for ch in name.upper() if ch.isalnum())
    for prefix in ("NVIDIA", "AMD", "TESLA", "GEFORCE"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def find_gpu_spec(name: str | None) -> GpuSpec | None:
    """The spec for a model name as users or drivers write it, or None if unknown.

    Accepts table names (``H100-SXM``) and driver names (``NVIDIA H100 80GB HBM3``).
    """
    if not name:
        return None
    if name in GPU_SPECS:
        return GPU_SPECS[name]
    key = _key(name)
    for spec_name in GPU_SPECS:
        if _key(spec_name) == key:
            return GPU_SPECS[spec_name]
    if key in _ALIASES:
        return GPU_SPECS[_ALIASES[key]]
    # Driver names carry memory sizes and form factors: match the longest alias prefix.
    best = None
    for alias, target in _ALIASES.items():
        if key.startswith(alias) and (best is None or len(alias) > len(best[0])):
            best = (alias, target)
    return GPU_SPECS[best[1]] if best else None


def gpu_spec(name: str) -> GpuSpec:
    """The spec for a model name; raises ParameterError naming the known models."""
    spec = find_gpu_spec(name)
    if spec is None:
        known = ", ".join(GPU_SPECS)
        raise ParameterError(f"unknown GPU model {name!r}; known models: {known}")
    return spec
