"""One filesystem layer for every location Lewin's Python code reads or writes.

A location is a string: a local path (relative or absolute), a ``file:`` URL, or any fsspec URL
(``s3://``, ``s3a://``, ``gs://``, ``abfss://``, ``az://`` …). Databricks' ``dbfs:/Volumes/…``
and ``dbfs:/…`` are read through their FUSE mounts (``/Volumes/…``, ``/dbfs/…``); a bare
``/Volumes/…`` path is already local. Spark is always given the location as written; this module
is for the driver and the Python workers (dump readers, the users table, shards, the salt file).

Credentials come from each filesystem's standard environment (``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL``, ``AZURE_STORAGE_*``, ``GOOGLE_APPLICATION_CREDENTIALS`` …): the same
variables Sail's object store and the Hadoop connectors read, so one setting serves both.
"""

from __future__ import annotations

import os
import posixpath
import re
from datetime import datetime, timezone
from typing import IO, Any, Iterator, NamedTuple

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "abfs": "azure", "abfss": "azure", "az": "azure",
           "adl": "azure"}


def scheme(location: str | os.PathLike) -> str | None:
    """The URL scheme (``"s3"``), or None for a local path (a Windows drive letter is not one)."""
    m = _SCHEME.match(os.fspath(location))
    return m.group(1).lower() if m else None


def is_local(location: str | os.PathLike) -> bool:
    return scheme(location) in (None, "file") or _dbfs_local(os.fspath(location)) is not None


def _dbfs_local(s: str) -> str | None:
    if scheme(s) != "dbfs":
        return None
    rest = "/" + s[len("dbfs:"):].lstrip("/")
    return rest if rest.startswith("/Volumes/") else "/dbfs" + rest


def location(value: str | os.PathLike) -> str:
    """The canonical form of a location: local paths absolute (``file:`` stripped), URLs as given
    without a trailing slash."""
    s = os.fspath(value)
    sch = scheme(s)
    if sch is None:
        return os.path.abspath(s)
    if sch == "file":
        rest = s[len("file:"):]
        if rest.startswith("//"):
            rest = rest[2:]
            rest = rest[rest.index("/"):] if "/" in rest else "/"  # file://host/path
        return os.path.abspath(rest)
    return s.rstrip("/") if not s.endswith(":/") and not s.endswith("://") else s


def join(base: str | os.PathLike, *parts: str) -> str:
    base = location(base)
    if scheme(base) is None:
        return os.path.join(base, *parts)
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def name(loc: str) -> str:
    return posixpath.basename(location(loc).rstrip("/"))


def parent(loc: str) -> str:
    loc = location(loc)
    if scheme(loc) is None:
        return os.path.dirname(loc)
    head, _, _ = loc.rstrip("/").rpartition("/")
    return head if not head.endswith(":/") and not head.endswith(":") else loc  # a bucket is its own parent


def with_name(loc: str, new_name: str) -> str:
    return join(parent(loc), new_name)


def _resolve(loc: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for a location."""
    import fsspec

    loc = location(loc)
    local = loc if scheme(loc) is None else _dbfs_local(loc)
    if local is not None:
        return fsspec.filesystem("file"), local
    try:
        from fsspec.core import url_to_fs

        return url_to_fs(loc)
    except ImportError as exc:
        sch = scheme(loc)
        extra = _EXTRAS.get(sch or "")
        hint = f" (pip install 'lewin[{extra}]')" if extra else ""
        raise ImportError(f"{loc}: no filesystem for {sch}:// installed{hint}: {exc}") from None
    except ValueError as exc:  # fsspec: "Protocol not known"
        raise ValueError(f"{loc}: {exc}") from None


def _is_local_fs(fs) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _to_url(root_loc: str, root_path: str, path: str) -> str:
    """A path the filesystem returned, as a location in the form the caller wrote ``root_loc``."""
    if scheme(root_loc) is None:
        return path
    if _dbfs_local(root_loc) is not None:
        return root_loc.rstrip("/") + path[len(root_path.rstrip("/")):]
    rp = root_path.rstrip("/")
    if path == rp:
        return root_loc
    return root_loc.rstrip("/") + path[len(rp):] if path.startswith(rp + "/") else root_loc.split("://")[0] + "://" + path


def mtime_ns(info: dict, local_path: str | None = None) -> int:
    """A file's modification time in ns from an fsspec ``info`` dict (local files: ``os.stat``)."""
    if local_path is not None:
        return os.stat(local_path).st_mtime_ns
    for key in ("LastModified", "last_modified", "mtime", "updated", "modificationTime", "created"):
        v = info.get(key)
        if v is None:
            continue
        if isinstance(v, datetime):
            v = v if v.tzinfo else v.replace(tzinfo=timezone.utc)
            return int(v.timestamp() * 1_000_000) * 1000
        if isinstance(v, (int, float)):
            return int(v * 1_000_000_000) if v < 1e12 else int(v) * 1_000_000  # s or ms
        if isinstance(v, str):
            try:
                return mtime_ns({key: datetime.fromisoformat(v.replace("Z", "+00:00"))})
            except ValueError:
                continue
    return 0


def exists(loc: str) -> bool:
    fs, p = _resolve(loc)
    return fs.exists(p)


def isdir(loc: str) -> bool:
    fs, p = _resolve(loc)
    return fs.isdir(p)


def isfile(loc: str) -> bool:
    fs, p = _resolve(loc)
    return fs.isfile(p)


class Listed(NamedTuple):
    """One file under an input location; ``skip`` says why it is not to be read (None: read it)."""

    loc: str
    size: int
    mtime_ns: int
    skip: str | None = None


def hidden(rel_path: str) -> bool:
    """A path (relative to the listed location) with a component named ``.x`` or ``_x``: the
    convention Spark's and Hadoop's file listings hide (``.git``, ``_SUCCESS``, ``_delta_log``,
    ``_temporary``), so the embedded engine and a cluster see the same files."""
    return any(part[:1] in (".", "_") for part in rel_path.replace("\\", "/").split("/") if part)


def walk(loc: str, *, follow_symlinks: bool = True, include_hidden: bool = False) -> Iterator[Listed]:
    """Every file under ``loc`` (recursive; ``loc`` itself when it is a file), in path order, each
    with the reason it is skipped, if it is: ``hidden`` (see ``hidden``), ``symlink`` (a link, when
    links are not followed), ``broken_symlink`` (its target is missing, or a loop of links),
    ``symlink_cycle`` (a linked folder already listed: an ancestor, or reached twice), ``same_file``
    (a link to a file already listed). Raises FileNotFoundError when nothing is at ``loc``."""
    loc = location(loc)
    fsys, p = _resolve(loc)
    if _is_local_fs(fsys):
        yield from _walk_local(loc, follow_symlinks, include_hidden)
        return
    if not fsys.exists(p):
        raise FileNotFoundError(f"input path does not exist: {loc}")
    if fsys.isfile(p):
        info = fsys.info(p)
        yield Listed(loc, int(info["size"]), mtime_ns(info))
        return
    for path, info in sorted(fsys.find(p, detail=True).items()):
        if info.get("type") == "directory":
            continue
        url = _to_url(loc, p, path)
        rel = url[len(loc):] if url.startswith(loc) else path
        skip = None if include_hidden or not hidden(rel) else "hidden"
        yield Listed(url, int(info["size"]), mtime_ns(info), skip)


def _walk_local(root: str, follow: bool, include_hidden: bool) -> Iterator[Listed]:
    import stat as st

    if not os.path.lexists(root):
        raise FileNotFoundError(f"input path does not exist: {root}")
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: dict[tuple[int, int], str] = {}

    def entry(path: str, rel: str) -> Iterator[Listed]:
        try:
            lst = os.lstat(path)
        except OSError:
            return
        link = st.S_ISLNK(lst.st_mode)
        if rel and not include_hidden and hidden(rel):
            yield Listed(path, lst.st_size, lst.st_mtime_ns, "hidden")
            return
        if link and not follow and rel:
            yield Listed(path, lst.st_size, lst.st_mtime_ns, "symlink")
            return
        try:
            s = os.stat(path)  # follows the link; a dangling link or a loop of links raises
        except OSError:
            yield Listed(path, 0, lst.st_mtime_ns, "broken_symlink")
            return
        key = (s.st_dev, s.st_ino)
        if st.S_ISDIR(s.st_mode):
            if key in seen_dirs:
                yield Listed(path, 0, s.st_mtime_ns, "symlink_cycle")
                return
            seen_dirs.add(key)
            try:
                names = sorted(os.listdir(path))
            except OSError:
                return
            for n in names:
                yield from entry(os.path.join(path, n), f"{rel}/{n}" if rel else n)
        elif st.S_ISREG(s.st_mode):
            if key in seen_files:
                yield Listed(path, s.st_size, s.st_mtime_ns, "same_file")
                return
            seen_files[key] = path
            yield Listed(path, s.st_size, s.st_mtime_ns)

    yield from entry(root, "")


def find(loc: str) -> Iterator[tuple[str, int, int]]:
    """(location, size, mtime_ns) of every file under ``loc`` (recursive, hidden names included,
    links followed), or of ``loc`` itself when it is a file. Raises FileNotFoundError when nothing
    is there."""
    for f in walk(loc, include_hidden=True):
        if f.skip is None:
            yield f.loc, f.size, f.mtime_ns


def list_files(loc: str) -> list[str]:
    """Names of the files directly under ``loc`` ([] when ``loc`` is missing)."""
    fs, p = _resolve(loc)
    if not fs.isdir(p):
        return []
    return sorted(posixpath.basename(e["name"].rstrip("/")) for e in fs.ls(p, detail=True) if e.get("type") == "file")


def list_dirs(loc: str) -> list[str]:
    """Names of the folders directly under ``loc`` ([] when ``loc`` is missing)."""
    fs, p = _resolve(loc)
    if not fs.isdir(p):
        return []
    return sorted(posixpath.basename(e["name"].rstrip("/")) for e in fs.ls(p, detail=True) if e.get("type") == "directory")


def open(loc: str, mode: str = "rb", **kwargs) -> IO:  # noqa: A001 - the filesystem verb
    fs, p = _resolve(loc)
    if "w" in mode and _is_local_fs(fs):
        fs.makedirs(fs._parent(p), exist_ok=True)
    return fs.open(p, mode, **kwargs)


def read_bytes(loc: str) -> bytes:
    fs, p = _resolve(loc)
    return fs.cat_file(p)


def write_bytes(loc: str, data: bytes) -> None:
    with open(loc, "wb") as f:
        f.write(data)


def rm(loc: str) -> None:
    """Remove a file or a folder tree; nothing there is fine."""
    fs, p = _resolve(loc)
    if fs.exists(p):
        fs.rm(p, recursive=True)


def move(src: str, dst: str) -> None:
    """Rename (local: atomic) or copy-then-delete (object stores have no rename)."""
    fs, p = _resolve(src)
    _, q = _resolve(dst)
    fs.mv(p, q, recursive=True)


def put_tree(local_dir: str, dst: str) -> None:
    """Upload a local folder's files under ``dst`` (same relative paths)."""
    fs, q = _resolve(dst)
    for root, _dirs, files in os.walk(local_dir):
        for f in files:
            src = os.path.join(root, f)
            rel = os.path.relpath(src, local_dir).replace(os.sep, "/")
            fs.put_file(src, f"{q.rstrip('/')}/{rel}")
