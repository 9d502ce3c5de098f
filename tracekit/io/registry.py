"""The list of input formats, in detection order, and content-based detection."""

from __future__ import annotations

import gzip
import importlib
from dataclasses import dataclass
from pathlib import Path

from tracekit.errors import InputError
from tracekit.io.base import (
    ARROW_MAGIC,
    GZIP_MAGIC,
    PARQUET_MAGIC,
    SNIFF_BYTES,
    ZSTD_MAGIC,
    ReadOptions,
    SourceFrame,
)


@dataclass(frozen=True)
class Format:
    """One input format: a reader module with ``sniff_<x>`` / ``read_<x>`` functions."""

    name: str
    module: str
    sniff: str
    read: str
    binary: bool = False
    description: str = ""

    def _fn(self, attr: str):
        return getattr(importlib.import_module(self.module), attr)

    def sniff_text(self, head: str, path: Path) -> bool:
        return bool(self._fn(self.sniff)(head, path))

    def read_file(self, path: Path, opts: ReadOptions) -> SourceFrame:
        return self._fn(self.read)(path, opts)


#: Text formats are tried in this order; the first whose sniffer says yes reads the file.
FORMATS: list[Format] = [
    Format("parquet", "tracekit.io.generic", "sniff_parquet", "read_parquet", binary=True,
           description="Parquet file (canonical columns or a --column mapping)"),
    Format("arrow", "tracekit.io.generic", "sniff_arrow", "read_arrow", binary=True,
           description="Arrow IPC file (canonical columns or a --column mapping)"),
    Format("dcgm_exporter", "tracekit.io.prometheus", "sniff", "read",
           description="dcgm-exporter Prometheus text scrape"),
    Format("zeus_json", "tracekit.io.zeus", "sniff", "read",
           description="Zeus / ML.ENERGY JSON power timeline"),
    Format("dcgmi_dmon", "tracekit.io.dmon", "sniff_dcgmi", "read_dcgmi",
           description="dcgmi dmon table"),
    Format("nvsmi_dmon", "tracekit.io.dmon", "sniff_nvsmi", "read_nvsmi",
           description="nvidia-smi dmon table"),
    Format("nvsmi_csv", "tracekit.io.nvsmi", "sniff", "read",
           description="nvidia-smi --query-gpu CSV"),
    Format("generic_csv", "tracekit.io.generic", "sniff_csv", "read_csv",
           description="generic CSV with a time and a power column"),
]

FORMATS_BY_NAME = {f.name: f for f in FORMATS}


def read_head(path: Path, n: int = SNIFF_BYTES) -> bytes:
    """The first ``n`` bytes of the (decompressed) file."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(n)
            if raw[:2] == GZIP_MAGIC:
                fh.seek(0)
                try:
                    with gzip.GzipFile(fileobj=fh) as gz:
                        return gz.read(n)
                except (OSError, EOFError) as exc:
                    raise InputError(f"corrupt gzip file ({exc})", path=str(path)) from None
            if raw[:4] == ZSTD_MAGIC:
                import zstandard

                fh.seek(0)
                try:
                    with zstandard.ZstdDecompressor().stream_reader(fh) as zs:
                        return zs.read(n)
                except zstandard.ZstdError as exc:
                    raise InputError(f"corrupt zstd file ({exc})", path=str(path)) from None
            return raw
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", path=str(path)) from None


def detect_format(path: Path, opts: ReadOptions | None = None) -> Format:
    """The format of a file, by content (``opts.format`` forces one)."""
    if opts is not None and opts.format:
        if opts.format not in FORMATS_BY_NAME:
            raise InputError(
                f"unknown format {opts.format!r}; known: {', '.join(FORMATS_BY_NAME)}", path=str(path)
            )
        return FORMATS_BY_NAME[opts.format]
    head = read_head(path)
    if not head.strip():
        raise InputError("empty file", path=str(path))
    if head[:4] == PARQUET_MAGIC:
        return FORMATS_BY_NAME["parquet"]
    if head[:6] == ARROW_MAGIC:
        return FORMATS_BY_NAME["arrow"]
    if b"\x00" in head:
        raise InputError("binary data that is not Parquet or Arrow IPC (unrecognized format)", path=str(path))
    text = head.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    for fmt in FORMATS:
        if not fmt.binary and fmt.sniff_text(text, path):
            return fmt
    first = text.splitlines()[0][:80] if text.splitlines() else ""
    raise InputError(
        f"unrecognized format (first line: {first!r}); expected nvidia-smi CSV, dmon, dcgmi, "
        "dcgm-exporter, Zeus JSON, or a CSV/Parquet with time and power columns (see --format, --column)",
        path=str(path),
    )
