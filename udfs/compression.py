"""Open dump files, local or in object storage (``lewin.udfs.fs``), with transparent
decompression (.gz, .bz2, .zst/.zstd, .xz).

Every compression checks the archive's integrity to its end: a file that stops inside a gzip
member, a bzip2 or xz stream or a zstd frame raises (``EOFError``; ``TruncatedArchive`` for zstd,
whose library would otherwise end the stream silently at the last complete block) after handing
on everything decoded before the fault. ``input_position`` says how far into the compressed file
the reader got, for the ``file_read_error`` row that reports it.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
from pathlib import Path
from typing import BinaryIO

from lewin.udfs import fs

COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd", ".xz": "xz"}
_ZSTD_INPUT = 1 << 17  # compressed bytes read at a time, and the largest step fed to the zstd decoder
_ZSTD_MIN_STEP = 1 << 10  # the smallest step (at most ~32 MiB of output, zstd's densest)
_ZSTD_OUTPUT = 8 << 20  # decoded bytes per step above which the step is halved


class TruncatedArchive(EOFError):
    """The compressed file ends inside a frame/stream: the bytes decoded before it were handed on."""


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
    raw = fs.open(str(path), "rb")
    if kind is None:
        return raw
    if kind == "gzip":
        stream = _owning(gzip.GzipFile(fileobj=raw, mode="rb"), raw)
    elif kind == "bz2":
        stream = _owning(bz2.BZ2File(raw, "rb"), raw)
    elif kind == "xz":
        stream = _owning(lzma.LZMAFile(raw, "rb"), raw)
    else:
        stream = io.BufferedReader(_ZstdFrames(raw), buffer_size=1 << 20)
    stream._lewin_raw = raw  # input_position() reads it
    return stream


def input_position(stream) -> tuple[int | None, int | None]:
    """(compressed bytes read so far, compressed file size) of a stream from ``open_binary``;
    None where unknown (an uncompressed stream's position is its own)."""
    raw = getattr(stream, "_lewin_raw", stream)
    pos = size = None
    try:
        pos = raw.tell()
    except Exception:  # closed or unseekable: unknown
        pass
    size = getattr(raw, "size", None)
    if not isinstance(size, int):
        try:
            size = os.fstat(raw.fileno()).st_size
        except Exception:
            size = None
    return pos, size


class _ZstdFrames(io.RawIOBase):
    """zstd decompression frame by frame (concatenated and skippable frames included) that raises
    ``TruncatedArchive`` when the input ends inside a frame. ``zstandard``'s stream reader ends
    such a stream silently; its ``decompressobj`` reports whether the frame was completed.

    A ``decompressobj`` returns all the output of the input it is given, so the input goes in
    steps sized by the output they give (1 KiB to 128 KiB): a frame of highly repetitive data (a
    decompression bomb: 16 KiB -> 512 MiB) is decoded a few MiB at a time."""

    def __init__(self, raw):
        import zstandard

        # Pushshift's .zst dumps use a 2 GiB window; the default limit (128 MiB) rejects them.
        self._dctx = zstandard.ZstdDecompressor(max_window_size=2**31)
        self._raw = raw
        self._obj = None  # decompressobj of the frame in progress
        self._frame_bytes = 0  # compressed bytes fed to the frame in progress
        self._frames = 0  # frames completed
        self._consumed = 0  # compressed bytes fed to the decoder
        self._in = b""  # compressed bytes read, not fed yet
        self._step = _ZSTD_MIN_STEP
        self._out = b""
        self._out_pos = 0
        self._eof = False
        self._fault: Exception | None = None  # raised once the output decoded before it is handed on

    def readable(self) -> bool:
        return True

    def _feed(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._obj is None:
                self._obj = self._dctx.decompressobj()
                self._frame_bytes = 0
            try:
                out.append(self._obj.decompress(data))
            except Exception as exc:  # corrupt data (or garbage after a frame)
                if not any(out):
                    raise
                self._fault, self._eof = exc, True
                break
            if self._obj.eof:  # frame complete: what follows belongs to the next one
                rest = self._obj.unused_data
                self._frame_bytes += len(data) - len(rest)
                self._consumed += len(data) - len(rest)
                self._frames += 1
                self._obj = None
                data = rest
            else:
                self._frame_bytes += len(data)
                self._consumed += len(data)
                data = b""
        return b"".join(out)

    def _fill(self) -> None:
        if self._out_pos >= len(self._out) and self._fault is not None:
            fault, self._fault = self._fault, None
            raise fault
        while self._out_pos >= len(self._out) and not self._eof:
            if not self._in:
                self._in = self._raw.read(_ZSTD_INPUT)
                if not self._in:
                    self._eof = True
                    if self._obj is not None:
                        raise TruncatedArchive(
                            f"zstd frame {self._frames + 1} is incomplete: the file ends {self._frame_bytes} bytes "
                            f"into it, at byte {self._consumed} ({self._frames} complete frames before it)")
                    return
            piece, self._in = self._in[: self._step], self._in[self._step:]
            self._out, self._out_pos = self._feed(piece), 0
            if len(self._out) > _ZSTD_OUTPUT and self._step > _ZSTD_MIN_STEP:
                self._step //= 2
            elif len(self._out) < _ZSTD_OUTPUT // 8 and self._step < _ZSTD_INPUT:
                self._step *= 2

    def readinto(self, b) -> int:
        self._fill()
        n = min(len(b), len(self._out) - self._out_pos)
        b[:n] = memoryview(self._out)[self._out_pos:self._out_pos + n]
        self._out_pos += n
        return n

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def _owning(stream, raw):
    """Close the underlying file with the decompressor (GzipFile over a fileobj leaves it open)."""
    close = stream.close

    def close_both():
        try:
            close()
        finally:
            raw.close()

    stream.close = close_both
    return stream
