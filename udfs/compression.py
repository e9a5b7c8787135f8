"""Open dump files with transparent decompression (.gz, .bz2, .zst/.zstd, .xz)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from pathlib import Path
from typing import BinaryIO

COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd", ".xz": "xz"}


def split_compression(path: str | Path) -> tuple[str, str | None]:
    """("data.jsonl.zst") -> ("data.jsonl", "zstd")."""
    name = str(path)
    for ext, kind in COMPRESSIONS.items():
        if name.lower().endswith(ext):
            return name[: -len(ext)], kind
    return name, None


def open_binary(path: str | Path) -> BinaryIO:
    """A binary stream of the file's decompressed bytes."""
    _, kind = split_compression(path)
    if kind is None:
        return open(path, "rb")
    if kind == "gzip":
        return gzip.open(path, "rb")
    if kind == "bz2":
        return bz2.open(path, "rb")
    if kind == "xz":
        return lzma.open(path, "rb")
    import zstandard

    # Pushshift's .zst dumps use a 2 GiB window; the default limit (128 MiB) rejects them.
    dctx = zstandard.ZstdDecompressor(max_window_size=2**31)
    raw = open(path, "rb")
    return io.BufferedReader(dctx.stream_reader(raw, closefd=True), buffer_size=1 << 20)
