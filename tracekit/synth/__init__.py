"""Synthetic GPU power traces with ground truth.

``training(...)`` and ``inference(...)`` generate canonical samples with the true
phase beside every sample (``truth_phase``; ``truth_iteration`` / ``truth_batch``)
and record the injected events in the result's ``truth`` (``manifest.json["synth"]``
when written to disk).  ``write_raw`` renders samples in the raw formats users hold
(nvidia-smi CSV, dcgmi dmon, dcgm-exporter, Zeus JSON), and ``read_truth`` loads the
truth of a written dataset.
"""

from __future__ import annotations

from tracekit.synth._common import SynthResult, read_truth
from tracekit.synth.inference import inference
from tracekit.synth.raw import RAW_FORMATS, write_raw
from tracekit.synth.training import training

__all__ = ["RAW_FORMATS", "SynthResult", "inference", "read_truth", "training", "write_raw"]
