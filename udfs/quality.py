"""Quality heuristics from datatrove (Gopher repetition and quality, C4 line rules, FineWeb),
reused as taggers: each text gets the names of the heuristics it fails (``"<filter>:<reason>"``),
and configuration decides whether any of them drops the record."""

from __future__ import annotations

from functools import lru_cache

FLAGS = ("gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality")


@lru_cache(maxsize=1)
def _filters():
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    return (
        ("gopher_repetition", GopherRepetitionFilter()),
        ("gopher_quality", GopherQualityFilter()),
        # social posts are short and informal: C4's terminal-punctuation line rule would flag most
        ("c4_quality", C4QualityFilter(filter_no_terminal_punct=False)),
        ("fineweb_quality", FineWebQualityFilter()),
    )


def quality_flags(texts: list[str | None]) -> list[list[str]]:
    from datatrove.data import Document

    filters = _filters()
    out: list[list[str]] = []
    for i, t in enumerate(texts):
        flags: list[str] = []
        if t:
            doc = Document(text=t, id=str(i))
            for name, f in filters:
                res = f.filter(doc)
                ok, reason = (res, None) if isinstance(res, bool) else (res[0], res[1])
                if not ok:
                    flags.append(f"{name}:{reason}" if reason else name)
        out.append(flags)
    return out
