"""Human audit of the synthesised data, as the paper ran it (a sample rated 1–5 per criterion by
several people; it reports a mean of 4.65/5 and Krippendorff's α of 0.65).

``sample`` draws a stratified, seeded sample of gold rows (source × artifact), ``write_sheet``
writes it as a CSV with one blank 1–5 column per judge criterion (``-`` where a criterion does
not apply to the artifact), and ``score_sheets`` reads two or more filled copies back and
computes the mean per criterion and Krippendorff's α over all (item, criterion) units.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from lewin.schemas.llm import JUDGE_METRICS

CRITERIA: tuple[str, ...] = tuple(dict.fromkeys(m for ms in JUDGE_METRICS.values() for m in ms))
"""Every judge criterion, in the order the artifacts first name them."""
ID_COLUMNS = ("audit_id", "source", "artifact", "user_id", "record_id", "ledger_key", "output")
NOT_APPLICABLE = "-"


def allocate(sizes: dict, n: int) -> dict:
    """Rows per stratum: as equal as the strata allow (water-filling: one row at a time to the
    open strata holding the fewest, ties in sorted order), never more than a stratum holds, ``n``
    in all when the strata hold that many. Deterministic."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    quota = {k: 0 for k in sizes}
    left = min(n, sum(sizes.values()))
    while left:
        open_ = sorted(k for k in sizes if quota[k] < sizes[k])
        low = min(quota[k] for k in open_)
        for k in open_:
            if left and quota[k] == low:
                quota[k] += 1
                left -= 1
    return quota


def sample(gold: DataFrame, n: int, seed: int = 0) -> DataFrame:
    """A stratified sample of ``gold`` (columns ``artifact, source, user_id, record_id, ledger_key,
    output``): ``allocate`` rows per (source, artifact), the rows of a stratum in a seeded hash
    order. Only the stratum sizes reach the driver."""
    sizes = {(r["source"], r["artifact"]): r["n"] for r in
             gold.groupBy("source", "artifact").agg(F.count(F.lit(1)).alias("n")).collect()}
    quota = allocate(sizes, n)
    if not quota:
        return gold.limit(0).withColumn("audit_id", F.lit(None).cast("string"))
    quotas = gold.sparkSession.createDataFrame([(s, a, q) for (s, a), q in sorted(quota.items())],
                                               "source string, artifact string, _quota int")
    w = Window.partitionBy("source", "artifact").orderBy(F.xxhash64(F.lit(seed), "ledger_key"), "ledger_key")
    ranked = gold.join(quotas, ["source", "artifact"]).withColumn("_rank", F.row_number().over(w))
    picked = ranked.where(F.col("_rank") <= F.col("_quota"))
    return picked.select(
        F.concat_ws("-", "source", "artifact", F.lpad(F.col("_rank").cast("string"), 4, "0")).alias("audit_id"),
        "source", "artifact", "user_id", "record_id", "ledger_key", "output")


def write_sheet(rows: Iterable[dict], path: Path) -> int:
    """One CSV row per sampled item: its ids and output, then a blank 1–5 cell per criterion of
    its artifact (``-`` for the others) and a blank comment. Returns the rows written."""
    written = 0
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([*ID_COLUMNS, *CRITERIA, "comment"])
        for r in sorted(rows, key=lambda r: r["audit_id"]):
            applies = JUDGE_METRICS[r["artifact"]]
            w.writerow([r.get(c) or "" for c in ID_COLUMNS]
                       + ["" if c in applies else NOT_APPLICABLE for c in CRITERIA] + [""])
            written += 1
    return written


# --- scoring ---------------------------------------------------------------------------------------
def krippendorff_alpha(units: Iterable[Sequence[float | None]],
                       metric: Literal["interval", "nominal", "ordinal"] = "interval") -> float | None:
    """Krippendorff's α over units (one value per rater, None where a rater gave none); units
    with fewer than two values are not pairable and left out. None when nothing varies (no
    expected disagreement)."""
    from collections import Counter

    pairable = [[v for v in u if v is not None] for u in units]
    pairable = [u for u in pairable if len(u) >= 2]
    # coincidence counts o[c, k] (Krippendorff 2011, "Computing Krippendorff's alpha-reliability")
    o: Counter = Counter()
    for u in pairable:
        m = len(u)
        for i, c in enumerate(u):
            for j, k in enumerate(u):
                if i != j:
                    o[(c, k)] += 1 / (m - 1)
    n_c: Counter = Counter()
    for (c, _k), v in o.items():
        n_c[c] += v
    n = sum(n_c.values())
    if n <= 1:
        return None
    values = sorted(n_c)

    def delta(c: float, k: float) -> float:
        if metric == "nominal":
            return 0.0 if c == k else 1.0
        if metric == "interval":
            return (c - k) ** 2
        lo, hi = sorted((c, k))  # ordinal: the ranks between c and k, weighted by their counts
        between = sum(n_c[g] for g in values if lo <= g <= hi)
        return (between - (n_c[c] + n_c[k]) / 2) ** 2

    observed = sum(v * delta(c, k) for (c, k), v in o.items())
    expected = sum(n_c[c] * n_c[k] * delta(c, k) for c in values for k in values) / (n - 1)
    if expected == 0:
        return None
    return 1 - observed / expected


@dataclass
class AuditScore:
    raters: int
    items: int
    mean: float | None
    """Mean of every rating given, over raters, items and criteria (1–5)."""
    mean_by_criterion: dict[str, float] = field(default_factory=dict)
    alpha: float | None = None
    """Krippendorff's α (interval) over the (item, criterion) units."""


def read_sheet(path: Path) -> dict[tuple[str, str], int]:
    """(audit_id, criterion) -> rating from one filled sheet; blank and ``-`` cells are skipped;
    anything else outside 1–5 is an error naming the file, row and column."""
    out: dict[tuple[str, str], int] = {}
    with Path(path).open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("audit_id", *CRITERIA) if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not an audit sheet (missing columns {missing})")
        for line, row in enumerate(reader, start=2):
            for c in CRITERIA:
                cell = (row.get(c) or "").strip()
                if cell in ("", NOT_APPLICABLE):
                    continue
                if cell not in {"1", "2", "3", "4", "5"}:
                    raise ValueError(f"{path}:{line}: {c} must be 1-5, blank or '-', got {cell!r}")
                out[(row["audit_id"], c)] = int(cell)
    return out


def score_sheets(paths: Sequence[Path]) -> AuditScore:
    """Means and Krippendorff's α from two or more filled copies of one sheet."""
    if len(paths) < 2:
        raise ValueError("Krippendorff's alpha needs two or more rated sheets")
    sheets = [read_sheet(p) for p in paths]
    units = sorted(set().union(*sheets))
    ratings = [v for s in sheets for v in s.values()]
    by_criterion = {}
    for c in CRITERIA:
        vals = [v for s in sheets for (_, crit), v in s.items() if crit == c]
        if vals:
            by_criterion[c] = sum(vals) / len(vals)
    return AuditScore(
        raters=len(sheets), items=len({u[0] for u in units}),
        mean=sum(ratings) / len(ratings) if ratings else None, mean_by_criterion=by_criterion,
        alpha=krippendorff_alpha([[s.get(u) for s in sheets] for u in units], "interval"))
