"""The one recipe for ids derived from data: SHA-256 over the parts joined by the unit separator.

Ids must be stable across runs and engines (they are MERGE keys and ledger keys), so the exact
byte recipe lives here only. ``concat_ws`` skips null parts; ``nulls_as_empty`` keeps their
position instead (two rows differing only in which field is null get different ids)."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

SEPARATOR = "\u001f"


def stable_id(*parts: Column | str, chars: int | None = None, nulls_as_empty: bool = False) -> Column:
    cols = [F.col(p) if isinstance(p, str) else p for p in parts]
    if nulls_as_empty:
        cols = [F.coalesce(c.cast("string"), F.lit("")) for c in cols]
    digest = F.sha2(F.concat_ws(SEPARATOR, *cols), 256)
    return F.substring(digest, 1, chars) if chars else digest
