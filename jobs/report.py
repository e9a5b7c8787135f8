"""``lewin report``: one self-contained HTML file describing the current tables.

Every figure is aggregated by Spark (``groupBy``/``agg``; histograms are binned in Spark), and only
the aggregates reach the driver: a few rows per source, stage, rule, artifact or bin, whatever
the size of the tables. The shard folder's ``manifest.json`` is read through ``lewin.udfs.fs``.
Rendering (SVG charts, the page) is ``lewin.udfs.report_html``; this module only queries.

A section whose tables are absent still renders and names what is missing and the command that
produces it. A section whose query fails (a table of an unexpected shape) renders that error
instead of its content, and the error is in ``ReportResult.errors``: the rest of the page stands.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lewin.jobs.tables import TableStore
from lewin.schemas import tables as T
from lewin.schemas.config import LLM_ARTIFACTS, LewinConfig
from lewin.schemas.llm import JUDGE_METRICS
from lewin.udfs import fs
from lewin.udfs import report_html as R

log = logging.getLogger(__name__)

SOURCE_ORDER = ("reddit", "twitter", "blogger", "amazon")
# bronze tables that hold user records (bronze_amazon_items is the item catalogue)
RECORD_TABLES = tuple(t for t in T.BRONZE_TABLES if t != "bronze_amazon_items")
# which command writes each table (what a missing-table note tells the reader to run)
PRODUCER = {
    "runs": "lewin run (every stage writes its funnel rows)",
    "quarantine": "lewin ingest", "ingest_log": "lewin ingest",
    **{t: "lewin ingest" for t in T.BRONZE_TABLES},
    "silver_records": "lewin curate", "rejected": "lewin curate", "kcore_rounds": "lewin curate",
    "silver_records_scrubbed": "lewin scrub",
    "record_labels": "lewin label",
    "users": "lewin users",
    "llm_ledger": "lewin label / lewin llm",
    **{f"{k}_{a}": "lewin llm" for a in LLM_ARTIFACTS for k in ("synth", "judged", "gold")},
    "bronze_*": "lewin ingest", "synth_*": "lewin llm", "judged_*": "lewin llm", "gold_*": "lewin llm",
    "shards/manifest.json": "lewin emit",
    "shard_samples": "lewin emit", "mcq_items": "lewin emit",
    # long-format quality signals of the synthesised outputs (one row per artifact x input x signal)
    "synth_signals": "lewin llm",
}
# a missing family (``gold_*``) is one line: none of its tables exists
FAMILIES = {"bronze_*": RECORD_TABLES,
            **{f"{k}_*": tuple(f"{k}_{a}" for a in LLM_ARTIFACTS) for k in ("synth", "judged", "gold")}}
ARTIFACT_ORDER = ("quality", "clean_rewrite", "user_notes", *LLM_ARTIFACTS, *(f"judge_{a}" for a in LLM_ARTIFACTS),
                  "distractor")
MAX_FAILING_ROWS = 1000
"""Failing quality-signal rows listed by id (the count of the rest is given)."""


@dataclass
class ReportResult:
    path: str
    sections: list[str] = field(default_factory=list)
    """Section ids, in page order (every section renders, with or without its tables)."""
    charts: dict[str, int] = field(default_factory=dict)
    """Chart id -> data points drawn (each chart's ``data-points`` in the page)."""
    missing_tables: list[str] = field(default_factory=list)
    """Tables (or files) a section wanted and did not find, sorted."""
    errors: dict[str, str] = field(default_factory=dict)
    """Section id -> the error its queries raised (empty when every section rendered)."""
    bytes: int = 0
    seconds: float = 0.0


class _Section:
    """One section under construction: its blocks and the tables it lacks."""

    def __init__(self, rep: "_Report", sid: str, title: str, intro: str = ""):
        self.rep, self.id, self.title, self.intro = rep, sid, title, intro
        self.blocks: list[dict] = []
        self.missing: list[dict] = []

    def need(self, name: str, what: str = "", note: bool = True) -> bool:
        """True when ``name`` exists (a ``*`` family: any of its tables); otherwise it is listed as
        missing with its producing command, and (``note``) a line says so where its content would be."""
        if self.rep.exists(name):
            return True
        command = PRODUCER.get(name, "lewin run")
        if not any(m["table"] == name for m in self.missing):
            self.missing.append({"table": name, "command": command, "what": what})
            self.rep.missing.add(name)
        if note:
            self.note(f"Not available: {name} is missing (run `{command}`).")
        return False

    def chart(self, spec: dict) -> None:
        self.blocks.append({"type": "chart", "chart": spec})

    def table(self, columns: list[str], rows: list[list], title: str = "") -> None:
        self.blocks.append({"type": "table", "title": title, "columns": columns, "rows": rows})

    def note(self, text: str) -> None:
        self.blocks.append({"type": "note", "text": text})

    def heading(self, text: str) -> None:
        self.blocks.append({"type": "heading", "text": text})

    def as_dict(self) -> dict:
        return {"id": self.id, "title": self.title, "intro": self.intro, "missing": self.missing, "blocks": self.blocks}


class _Report:
    def __init__(self, store: TableStore, cfg: LewinConfig):
        self.store, self.cfg = store, cfg
        self.missing: set[str] = set()
        self._exists: dict[str, bool] = {}
        self.cards: dict[str, int] = {}
        self._manifest: dict | None | bool = False

    def exists(self, name: str) -> bool:
        if name == "shards/manifest.json":
            return self.manifest() is not None
        if name.endswith("_*"):
            fam = FAMILIES[name]
            return any(self.exists(t) for t in fam)
        if name not in self._exists:
            self._exists[name] = self.store.exists(name)
        return self._exists[name]

    def read(self, name: str) -> DataFrame:
        return self.store.read(name)

    def manifest(self) -> dict | None:
        if self._manifest is False:
            from lewin.jobs.emit import out_dir

            loc = fs.join(out_dir(self.cfg), "manifest.json")
            try:
                self._manifest = json.loads(fs.read_bytes(loc)) if fs.exists(loc) else None
            except (OSError, ValueError) as exc:
                log.warning("report: cannot read %s: %s", loc, exc)
                self._manifest = None
        return self._manifest  # type: ignore[return-value]


# --- small helpers ---------------------------------------------------------------------------------------
def _sources(*dicts) -> list[str]:
    seen = {s for d in dicts for s in d}
    return [s for s in SOURCE_ORDER if s in seen] + sorted(seen - set(SOURCE_ORDER))


def _artifact_key(a: str) -> tuple:
    return (ARTIFACT_ORDER.index(a), a) if a in ARTIFACT_ORDER else (len(ARTIFACT_ORDER), a)


def _union(frames: list[DataFrame]) -> DataFrame | None:
    if not frames:
        return None
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out


def _log_bins(df: DataFrame, value: str, group: str, per_decade: int) -> dict[str, dict[int, int]]:
    """Counts per group and log bin (bin b holds values in [10^(b/k), 10^((b+1)/k)); values < 1 go
    to bin 0), computed by Spark."""
    v = F.greatest(F.col(value).cast("double"), F.lit(1.0))
    b = F.floor(F.log10(v) * per_decade).cast("int")
    rows = (df.where(F.col(value).isNotNull()).groupBy(F.col(group).alias("g"), b.alias("b"))
            .agg(F.count(F.lit(1)).alias("n")).collect())
    out: dict[str, dict[int, int]] = defaultdict(dict)
    for r in rows:
        out[r["g"]][r["b"]] = r["n"]
    return out


def _log_hist_panel(binned: dict[str, dict[int, int]], per_decade: int, names: dict[str, str] | None = None) -> dict:
    """``hist`` spec over the union of the bins of every series, edges 10^(b/k)."""
    bins = sorted({b for d in binned.values() for b in d})
    if not bins:
        return {"kind": "hist", "edges": [1, 10], "series": {}, "logx": True}
    lo, hi = bins[0], bins[-1]
    edges = [10 ** (b / per_decade) for b in range(lo, hi + 2)]
    series = {(names or {}).get(k, k): [d.get(b, 0) for b in range(lo, hi + 1)] for k, d in binned.items()}
    return {"kind": "hist", "edges": edges, "series": series, "logx": True}


def _pctl(col: str, q: float):
    """An approximate percentile (one quantile per call, of a double: what every engine accepts)."""
    return F.percentile_approx(F.col(col).cast("double"), q)


def _pct(a: int, b: int) -> float | None:
    return round(100.0 * a / b, 1) if b else None


# --- sections ---------------------------------------------------------------------------------------------
def _funnel(rep: _Report) -> _Section:
    sec = _Section(rep, "funnel", "Funnel: raw records to shard samples",
                   "Records per source at each stage, from the current tables, and every reason a record left: "
                   "quarantine reasons (ingest), duplicates, each curation rule, language, quality, exact and near "
                   "dedup, k-core, the label gate, the judge and the shard balance. Units change after the "
                   "timelines: the LLM stages count gold artifact items, emit counts training samples.")
    steps: dict[str, dict[str, int]] = {}  # step -> source -> n (insertion order = funnel order)
    losses: list[tuple[str, str, str, int]] = []  # (step the loss happened at, stage, reason, source, n)
    store = rep.store

    def loss(stage: str, reason: str, source: str, n: int) -> None:
        if n:
            losses.append((stage, reason, source, int(n)))

    # ingest: raw records from the funnel rows (runs), quarantine reasons from the quarantine table
    if sec.need("runs", "the ingest funnel: records read", note=False):
        # item metadata (bronze_amazon_items) is read by ingest but holds no user record
        items = F.coalesce(F.get_json_object("detail", "$.kept_by_table.bronze_amazon_items").cast("long"), F.lit(0))
        ing = (rep.read("runs").where(F.col("stage") == "ingest").groupBy("source")
               .agg(F.sum(F.col("records_in") - items).alias("raw"), F.sum("duplicates").alias("dups")).collect())
        raw = {r["source"]: r["raw"] or 0 for r in ing}
        dups = {r["source"]: r["dups"] or 0 for r in ing}
        if raw:
            steps["raw records"] = dict(raw)
            for s, n in dups.items():
                loss("ingest", "duplicate of a bronze record", s, n)
    if sec.need("quarantine", "records that could not be used, by reason", note=False):
        for r in rep.read("quarantine").groupBy("source", "reason").count().collect():
            loss("ingest", f"quarantine: {r['reason']}", r["source"], r["count"])
    bronze = [store.read(t).select("source") for t in RECORD_TABLES if rep.exists(t)]
    if not bronze:
        sec.need("bronze_*", "bronze record tables", note=False)
    else:
        steps["bronze"] = {r["source"]: r["count"] for r in _union(bronze).groupBy("source").count().collect()}
    # curate
    if sec.need("rejected", "the rule each dropped row failed", note=False):
        for r in rep.read("rejected").groupBy("source", "stage", "rule").count().collect():
            loss("curate", f"{r['stage']}: {r['rule']}", r["source"], r["count"])
    if sec.need("silver_records", note=False):
        steps["silver"] = {r["source"]: r["count"] for r in rep.read("silver_records").groupBy("source").count().collect()}
    if sec.need("silver_records_scrubbed", note=False):
        steps["PII-scrubbed"] = {r["source"]: r["count"] for r in
                                 rep.read("silver_records_scrubbed").groupBy("source").count().collect()}
        for s, n in steps.get("silver", {}).items():
            loss("scrub", "not scrubbed yet", s, max(0, n - steps["PII-scrubbed"].get(s, 0)))
    if sec.need("record_labels", "the label gate", note=False):
        kept: dict[str, int] = defaultdict(int)
        for r in rep.read("record_labels").groupBy("source", "gate").count().collect():
            if r["gate"] in ("kept", "unlabelled"):
                kept[r["source"]] += r["count"]
            else:
                loss("label", f"label gate: {r['gate']}", r["source"], r["count"])
        steps["label gate: kept"] = dict(kept)
    if sec.need("users", "per-user timelines", note=False):
        tl = {r["source"]: r["n"] for r in rep.read("users").groupBy("source").agg(F.sum("n_records").alias("n")).collect()}
        steps["in timelines"] = tl
        for s, n in steps.get("label gate: kept", {}).items():
            loss("users", "not in a timeline yet", s, max(0, n - tl.get(s, 0)))
    # LLM: gold items per source; judge rejections and dead letters as the reasons
    gold = [rep.read(f"gold_{a}").select("source") for a in LLM_ARTIFACTS if rep.exists(f"gold_{a}")]
    judged = [rep.read(f"judged_{a}").select(F.lit(a).alias("artifact"), "source", "accepted", "reasons")
              for a in LLM_ARTIFACTS if rep.exists(f"judged_{a}")]
    if not gold and not judged:
        sec.need("gold_*", "gold artifacts", note=False)
    if judged:
        # a unit held back by a quality-signal gate says so at the end of its reasons ("gate: <signal>=…")
        gate = F.regexp_extract(F.coalesce(F.col("reasons"), F.lit("")), r"gate: ([A-Za-z0-9_]+)=", 1)
        for r in (_union(judged).where(~F.col("accepted")).groupBy("artifact", gate.alias("gate"), "source")
                  .count().collect()):
            why = f"signal gate {r['gate']}" if r["gate"] else "judge"
            loss("llm", f"{why}: {r['artifact']} not accepted", r["source"], r["count"])
    if rep.exists("llm_ledger"):
        for r in (rep.read("llm_ledger").where((F.col("status") == "dead") & F.col("artifact").isin(*LLM_ARTIFACTS))
                  .groupBy("artifact", "source").count().collect()):
            loss("llm", f"dead letter: {r['artifact']}", r["source"] or "all", r["count"])
    if gold:
        steps["gold items (LLM)"] = {r["source"]: r["count"] for r in _union(gold).groupBy("source").count().collect()}
    # emit: samples per source from the manifest; the balance's cut is counted for all sources
    man = rep.manifest() if sec.need("shards/manifest.json", "training shards", note=False) else None
    if man:
        per_source: dict[str, int] = defaultdict(int)
        for split in man.get("counts", {}).values():
            for by_src in split.values():
                for s, n in by_src.items():
                    per_source[s] += n
        steps["shard samples"] = dict(per_source)
        cut = int(man.get("candidates_before_balance", 0)) - sum(per_source.values())
        loss("emit", "left out by the per-task balance (all sources)", "all", max(0, cut))

    if not steps:
        sec.note("No stage has written anything yet: run `lewin run` (or `lewin ingest`).")
        return sec
    sources = _sources(*steps.values(), {s: 1 for _, _, s, _ in losses if s != "all"})
    rep.cards.update({"raw records": sum(steps.get("raw records", {}).values()),
                      "silver records": sum(steps.get("silver", {}).values()),
                      "kept by the label gate": sum(steps.get("label gate: kept", {}).values()),
                      "gold items": sum(steps.get("gold items (LLM)", {}).values()),
                      "shard samples": sum(steps.get("shard samples", {}).values())})
    panels = []
    for s in sources:
        cats = [st for st in steps if s in steps[st]]
        panels.append({"kind": "bars", "title": s, "categories": cats, "series": {s: [steps[c][s] for c in cats]},
                       "stacked": True})
    sec.chart({"id": "funnel", "title": "Records at each stage, per source", "kind": "facets", "panels": panels,
               "ncols": 2, "caption": "Bars: rows in each stage's table (raw: records read by ingest, item metadata "
                                      "excluded); after the timelines the unit is gold items, then samples."})
    losses = _ordered(losses)
    if losses:
        reasons = list(dict.fromkeys(f"{st} · {reason}" for st, reason, _, _ in losses))
        by = defaultdict(int)
        for st, reason, s, n in losses:
            by[(f"{st} · {reason}", s)] += n
        loss_sources = [s for s in sources + ["all"] if any(k[1] == s for k in by)]
        sec.chart({"id": "funnel_reasons", "title": "Why records left, by stage and reason", "kind": "bars",
                   "categories": reasons, "series": {s: [by.get((r, s), 0) for r in reasons] for s in loss_sources},
                   "stacked": True, "xlabel": "records (gold items / samples for llm and emit)"})
    rows = []
    for st in steps:
        rows.append([st, "(in the table)"] + [steps[st].get(s) for s in sources] + [sum(steps[st].values())])
    for st, reason in dict.fromkeys((st, reason) for st, reason, _, _ in losses):
        vals = {s: n for (a, b, s, n) in losses if (a, b) == (st, reason)}
        rows.append([st, reason] + [vals.get(s) for s in sources] + [sum(vals.values())])
    sec.table(["stage / step", "reason"] + sources + ["total"], rows, "Counts per source: stage sizes, then every reason")
    if rep.exists("runs"):
        _runs_table(rep, sec)
    if rep.exists("kcore_rounds"):
        kr = rep.read("kcore_rounds").orderBy(F.desc("run_id"), "round").limit(200).collect()
        if kr:
            sec.blocks.append({"type": "details", "summary": f"k-core rounds ({len(kr)} rows, newest run first)",
                               "blocks": [{"type": "table", "title": "", "columns": ["run", "round", "users", "items",
                                                                                    "interactions", "dropped"],
                                           "rows": [[r["run_id"], r["round"], r["users"], r["items"], r["interactions"],
                                                     r["dropped"]] for r in kr]}]})
    return sec


STAGE_ORDER = ("ingest", "curate", "scrub", "label", "users", "llm", "emit")
CURATE_ORDER = ("rules", "language", "quality", "dedup", "kcore")


def _ordered(losses: list[tuple[str, str, str, int]]) -> list[tuple[str, str, str, int]]:
    """Losses in pipeline order: by stage, curation's by step (rules, language, quality, dedup,
    k-core), then the largest first."""
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for st, reason, _, n in losses:
        totals[(st, reason)] += n

    def key(x):
        st, reason = x[0], x[1]
        sub = reason.split(":", 1)[0]
        return (STAGE_ORDER.index(st) if st in STAGE_ORDER else len(STAGE_ORDER),
                CURATE_ORDER.index(sub) if st == "curate" and sub in CURATE_ORDER else len(CURATE_ORDER),
                -totals[(st, reason)], reason, x[2])
    return sorted(losses, key=key)


def _runs_table(rep: _Report, sec: _Section) -> None:
    from lewin.jobs.registry import STAGES

    order = {s.name: i for i, s in enumerate(STAGES)}
    rows = (rep.read("runs").groupBy("stage", "source")
            .agg(F.count(F.lit(1)).alias("runs"), F.sum("records_in").alias("i"), F.sum("kept").alias("k"),
                 F.sum("duplicates").alias("d"), F.sum("rejected").alias("r"), F.sum("quarantined").alias("q"))
            .collect())
    rows = sorted(rows, key=lambda r: (order.get(r["stage"], len(order)), r["source"]))
    body = [[r["stage"], r["source"], r["runs"], r["i"], r["k"], r["d"], r["r"], r["q"],
             "yes" if r["i"] == r["k"] + r["d"] + r["r"] + r["q"] else "NO"] for r in rows]
    sec.blocks.append({"type": "details", "summary": "The funnel rows of every run (runs table, as `lewin status` prints them)",
                       "blocks": [{"type": "table", "title": "", "rows": body,
                                   "columns": ["stage", "source", "runs", "in", "kept", "dup", "rejected", "quarantined",
                                               "reconciles"]}]})


def _distributions(rep: _Report) -> _Section:
    sec = _Section(rep, "distributions", "Distributions",
                   "Text lengths before (bronze) and after (silver) curation, records and active days per user "
                   "(timelines), language-ID scores, and PII replacements by type.")
    store = rep.store
    # text lengths: bronze vs silver, per source
    sec.heading("Text length per source, bronze vs silver")
    bronze = [store.read(t).select("source", F.length("text").alias("n")) for t in RECORD_TABLES if rep.exists(t)]
    if not bronze:
        sec.need("bronze_*", "bronze record tables")
    has_silver = sec.need("silver_records")
    per_decade = 10
    stats = []
    if bronze or has_silver:
        b_bins = _log_bins(_union(bronze), "n", "source", per_decade) if bronze else {}
        s_df = rep.read("silver_records").select("source", F.length("text").alias("n")) if has_silver else None
        s_bins = _log_bins(s_df, "n", "source", per_decade) if has_silver else {}
        panels = []
        for s in _sources(b_bins, s_bins):
            spec = _log_hist_panel({k: v for k, v in (("bronze", b_bins.get(s)), ("silver", s_bins.get(s))) if v},
                                   per_decade)
            spec.update(title=s, xlabel="characters (log)", colors={"bronze": "#8c8c8c", "silver": R.color_for(s, 0)})
            panels.append(spec)
        if panels:
            sec.chart({"id": "text_lengths", "title": "Text length (characters), bronze vs silver", "kind": "facets",
                       "panels": panels, "ncols": 2, "caption": "Bronze: the raw text of every ingested record; "
                                                                "silver: the cleaned text of the records curation kept."})
        for label, df in (("bronze", _union(bronze) if bronze else None), ("silver", s_df)):
            if df is None:
                continue
            for r in (df.where(F.col("n").isNotNull()).groupBy("source")
                      .agg(F.count(F.lit(1)).alias("rows"), *[_pctl("n", q).alias(f"p{i}") for i, q in enumerate((0.1, 0.5, 0.9))],
                           F.max("n").alias("max")).collect()):
                stats.append([r["source"], label, r["rows"], *[int(r[f"p{i}"]) for i in range(3)], r["max"]])
        stats.sort(key=lambda x: (SOURCE_ORDER.index(x[0]) if x[0] in SOURCE_ORDER else len(SOURCE_ORDER), x[0], x[1]))
        sec.table(["source", "table", "rows", "p10", "median", "p90", "max"], stats, "Text length (characters)")
    # per user
    sec.heading("Records and active days per user")
    if sec.need("users", "per-user timelines (kept records)"):
        users = rep.read("users")
        rec = _log_bins(users, "n_records", "source", 5)
        days = _log_bins(users, "active_days", "source", 5)
        if rec:
            p1 = _log_hist_panel(rec, 5)
            p1.update(title="records per user", xlabel="records (log)", ylabel="users",
                      colors={s: R.color_for(s, i) for i, s in enumerate(rec)})
            p2 = _log_hist_panel(days, 5)
            p2.update(title="active days per user", xlabel="days with a record (log)", ylabel="users",
                      colors={s: R.color_for(s, i) for i, s in enumerate(days)})
            sec.chart({"id": "per_user", "title": "Records and active days per user", "kind": "facets",
                       "panels": [p1, p2], "ncols": 2})
        rows = (users.groupBy("source").agg(F.count(F.lit(1)).alias("users"), F.sum("n_records").alias("records"),
                                            _pctl("n_records", 0.5).alias("med"), F.max("n_records").alias("mx"),
                                            _pctl("active_days", 0.5).alias("dmed"),
                                            F.max("active_days").alias("dmx")).collect())
        rep.cards["users"] = sum(r["users"] for r in rows)
        by = {r["source"]: r for r in rows}
        sec.table(["source", "users", "records", "median records", "max records", "median active days", "max active days"],
                  [[s, by[s]["users"], by[s]["records"], by[s]["med"], by[s]["mx"], by[s]["dmed"], by[s]["dmx"]]
                   for s in _sources(by)])
    # language ID
    sec.heading("Language-ID scores")
    if has_silver:
        silver = rep.read("silver_records")
        nb = 50  # bins of 0.02
        b = F.least(F.floor(F.col("lang_score") * nb), F.lit(nb - 1)).cast("int")
        kept = defaultdict(dict)
        for r in silver.where(F.col("lang_score").isNotNull()).groupBy("source", b.alias("b")).count().collect():
            kept[r["source"]][r["b"]] = r["count"]
        series = {f"kept: {s}": [kept[s].get(i, 0) for i in range(nb)] for s in _sources(kept)}
        colors = {f"kept: {s}": R.color_for(s, i) for i, s in enumerate(_sources(kept))}
        if rep.exists("rejected"):
            score = F.regexp_extract("detail", r"score=([0-9.]+)", 1)
            rej = (rep.read("rejected").where(F.col("rule").startswith("language"))
                   .select(F.when(score != "", score.cast("double")).alias("s")).where(F.col("s").isNotNull())
                   .groupBy(F.least(F.floor(F.col("s") * nb), F.lit(nb - 1)).cast("int").alias("b")).count().collect())
            if rej:
                d = {r["b"]: r["count"] for r in rej}
                series["rejected by the language rule"] = [d.get(i, 0) for i in range(nb)]
                colors["rejected by the language rule"] = "#222222"
        if any(any(v) for v in series.values()):
            sec.chart({"id": "lang_scores", "title": "Language-ID score (fastText lid.176) of silver records",
                       "kind": "hist", "edges": [i / nb for i in range(nb + 1)], "series": series, "colors": colors,
                       "xlabel": "score of the detected language", "ylabel": "records",
                       "caption": "Kept records per source; the rejected series is parsed from the language rule's "
                                  "detail (lang=… score=…) in `rejected`."})
        langs = silver.groupBy("source", "lang").count().orderBy("source", F.desc("count")).collect()
        sec.table(["source", "language", "records"], [[r["source"], r["lang"], r["count"]] for r in langs],
                  "Detected language of silver records")
    # PII
    sec.heading("PII replacements by type")
    if sec.need("silver_records_scrubbed", "PII spans"):
        sc = rep.read("silver_records_scrubbed")
        spans = (sc.select("source", F.explode("pii_spans").alias("p"))
                 .groupBy("source", F.col("p.type").alias("type")).count().collect())
        with_pii = {r["source"]: (r["n"], r["w"]) for r in sc.groupBy("source").agg(
            F.count(F.lit(1)).alias("n"), F.sum(F.when(F.size("pii_spans") > 0, 1).otherwise(0)).alias("w")).collect()}
        if spans:
            by = defaultdict(int)
            for r in spans:
                by[(r["type"], r["source"])] += r["count"]
            types = sorted({t for t, _ in by}, key=lambda t: -sum(n for (tt, _), n in by.items() if tt == t))
            srcs = _sources({s: 1 for _, s in by})
            sec.chart({"id": "pii_types", "title": "PII replaced, by type and source", "kind": "bars",
                       "categories": types, "series": {s: [by.get((t, s), 0) for t in types] for s in srcs},
                       "xlabel": "replacements (pii_spans)"})
        else:
            sec.note("No PII replacement in any scrubbed record.")
        sec.table(["source", "scrubbed records", "records with a replacement", "%"],
                  [[s, n, w, _pct(w or 0, n)] for s, (n, w) in ((s, with_pii[s]) for s in _sources(with_pii))])
    return sec


def _llm(rep: _Report) -> _Section:
    sec = _Section(rep, "llm", "LLM stages",
                   "The ledger (every prompt: label, notes, synthesis, judges, distractors): prompts by status and tokens "
                   "per artifact; judge scores per artifact and metric; gold yield; why dead letters died.")
    if sec.need("llm_ledger", "every LLM prompt and its status"):
        led = rep.read("llm_ledger")
        rows = (led.groupBy("artifact", "status").agg(F.count(F.lit(1)).alias("n"), F.sum("tokens_in").alias("ti"),
                                                     F.sum("tokens_out").alias("to")).collect())
        arts = sorted({r["artifact"] for r in rows}, key=_artifact_key)
        statuses = [s for s in ("ok", "failed", "dead", "superseded") if any(r["status"] == s for r in rows)]
        statuses += sorted({r["status"] for r in rows} - set(statuses))
        by = {(r["artifact"], r["status"]): r for r in rows}
        if arts:
            sec.chart({"id": "ledger_status", "title": "Prompts per artifact, by status", "kind": "bars",
                       "categories": arts, "series": {s: [by[(a, s)]["n"] if (a, s) in by else 0 for a in arts]
                                                      for s in statuses}, "xlabel": "prompts (ledger rows)"})
            tin = {a: sum((by[(a, s)]["ti"] or 0) for s in statuses if (a, s) in by) for a in arts}
            tout = {a: sum((by[(a, s)]["to"] or 0) for s in statuses if (a, s) in by) for a in arts}
            sec.chart({"id": "ledger_tokens", "title": "Tokens per artifact", "kind": "bars", "categories": arts,
                       "series": {"tokens in": [tin[a] for a in arts], "tokens out": [tout[a] for a in arts]},
                       "stacked": False, "colors": {"tokens in": "#4c72b0", "tokens out": "#dd8452"}, "xlabel": "tokens"})
            sec.table(["artifact"] + statuses + ["tokens in", "tokens out"],
                      [[a] + [by[(a, s)]["n"] if (a, s) in by else 0 for s in statuses] + [tin[a], tout[a]] for a in arts],
                      "Ledger: prompts by status, tokens")
        else:
            sec.note("The ledger is empty: no prompt sent yet.")
        # dead letters: the stable reason code before ':'
        sec.heading("Dead-letter reasons")
        code = F.coalesce(F.nullif(F.trim(F.substring_index(F.col("error"), ":", 1)), F.lit("")), F.lit("(no error)"))
        dead = (led.where(F.col("status") == "dead").groupBy("artifact", code.alias("code"))
                .agg(F.count(F.lit(1)).alias("n"), F.first("error").alias("example")).collect())
        if dead:
            codes = sorted({r["code"] for r in dead}, key=lambda c: -sum(r["n"] for r in dead if r["code"] == c))
            darts = sorted({r["artifact"] for r in dead}, key=_artifact_key)
            dby = {(r["artifact"], r["code"]): r for r in dead}
            sec.chart({"id": "dead_letters", "title": "Dead letters by reason code and artifact", "kind": "bars",
                       "categories": codes, "series": {a: [dby[(a, c)]["n"] if (a, c) in dby else 0 for c in codes]
                                                       for a in darts}, "xlabel": "dead letters"})
            sec.table(["artifact", "reason code", "dead letters", "an example error"],
                      [[r["artifact"], r["code"], r["n"], (r["example"] or "")[:200]] for r in
                       sorted(dead, key=lambda r: (_artifact_key(r["artifact"]), -r["n"]))])
        else:
            sec.note("No dead letter in the ledger.")
    # judge scores
    sec.heading("Judge scores per artifact and metric")
    judged = [a for a in LLM_ARTIFACTS if rep.exists(f"judged_{a}")]
    if not judged:
        sec.need("judged_*", "judged outputs with their scores")
    else:
        frames = [rep.read(f"judged_{a}").select(F.lit(a).alias("artifact"), F.explode("scores").alias("metric", "score"))
                  for a in judged]
        hist = _union(frames).groupBy("artifact", "metric", "score").count().collect()
        panels = []
        for a in judged:
            metrics = [m for m in JUDGE_METRICS.get(a, ()) if any(r["artifact"] == a and r["metric"] == m for r in hist)]
            metrics += sorted({r["metric"] for r in hist if r["artifact"] == a} - set(metrics))
            if not metrics:
                continue
            cell = {(r["metric"], r["score"]): r["count"] for r in hist if r["artifact"] == a}
            panels.append({"kind": "heatmap", "title": a, "rows": metrics, "cols": list(range(1, 11)),
                           "values": [[cell.get((m, s), 0) for s in range(1, 11)] for m in metrics], "xlabel": "score"})
        if panels:
            sec.chart({"id": "judge_scores", "title": "Judge score histograms (count of judged items per score)",
                       "kind": "facets", "panels": panels, "ncols": 2,
                       "caption": "One row per metric the artifact is judged on (A.3), scores 1-10."})
        else:
            sec.note("The judged tables hold no scores yet.")
    # gold yield
    sec.heading("Gold yield per artifact")
    if judged:
        rows = []
        for a in LLM_ARTIFACTS:
            if not rep.exists(f"judged_{a}"):
                continue
            synth = rep.store.count(f"synth_{a}") if rep.exists(f"synth_{a}") else None
            j = rep.read(f"judged_{a}").agg(F.count(F.lit(1)).alias("n"),
                                             F.sum(F.col("accepted").cast("int")).alias("acc")).collect()[0]
            g = rep.store.count(f"gold_{a}") if rep.exists(f"gold_{a}") else 0
            rows.append([a, synth, j["n"], j["acc"] or 0, g, _pct(g, j["n"])])
        if any(r[2] for r in rows):
            cats = [r[0] for r in rows]
            sec.chart({"id": "gold_yield", "title": "Judged items and gold items per artifact", "kind": "bars",
                       "categories": cats, "series": {"judged": [r[2] for r in rows], "gold": [r[4] for r in rows]},
                       "stacked": False, "colors": {"judged": "#8c8c8c", "gold": "#ccb974"}, "xlabel": "items"})
        sec.table(["artifact", "synth rows", "judged items", "accepted", "gold items", "yield % (gold / judged)"], rows)
    else:
        sec.need("synth_*", "synthesised outputs", note=False)
        sec.need("gold_*", "gold outputs")
    return sec


def _shards(rep: _Report) -> _Section:
    sec = _Section(rep, "shards", "Training shards and MCQ sets",
                   "From the shard folder's manifest.json: samples per task, source and split; the achieved mix against "
                   "the target (emit.max_per_task x emit.task_weights, split evenly over a task's sources); the MCQ sets.")
    if not sec.need("shards/manifest.json", "the training shards"):
        return sec
    man = rep.manifest() or {}
    counts = man.get("counts", {})
    tasks = sorted({t for split in counts.values() for t in split})
    sources = _sources({s: 1 for split in counts.values() for by in split.values() for s in by})
    panels = []
    for split in sorted(counts):
        panels.append({"kind": "bars", "title": split, "categories": tasks,
                       "series": {s: [counts[split].get(t, {}).get(s, 0) for t in tasks] for s in sources}})
    if tasks:
        sec.chart({"id": "shard_counts", "title": "Samples per task, source and split", "kind": "facets",
                   "panels": panels, "ncols": 2})
        rows = [[split, t] + [counts[split].get(t, {}).get(s) for s in sources]
                + [sum(counts[split].get(t, {}).values())] for split in sorted(counts) for t in tasks
                if sum(counts[split].get(t, {}).values())]
        sec.table(["split", "task"] + sources + ["total"], rows, "Samples (manifest counts)")
    else:
        sec.note("The shards hold no sample.")
    # mix: achieved vs target
    ecfg = man.get("config") or rep.cfg.emit.model_dump(mode="json")
    weights = ecfg.get("task_weights") or {}
    per_task = defaultdict(int)
    per_task_source: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for split in counts.values():
        for t, by in split.items():
            for s, n in by.items():
                per_task[t] += n
                per_task_source[t][s] += n
    total = sum(per_task.values())
    if total:
        wsum = sum(weights.get(t, 1.0) for t in tasks) or 1.0
        target = {t: weights.get(t, 1.0) / wsum for t in tasks}
        achieved = {t: per_task[t] / total for t in tasks}
        sec.chart({"id": "mix", "title": "Task mix: achieved share against the target", "kind": "bars",
                   "categories": tasks, "series": {"achieved": [round(achieved[t], 4) for t in tasks]},
                   "markers": {"target": [round(target[t], 4) for t in tasks]}, "colors": {"achieved": "#4c72b0"},
                   "xlabel": "share of all samples", "legend": True,
                   "caption": "Target: each task gets max_per_task x its weight (default 1); a task with fewer "
                              "candidates than its budget falls short of it, which raises the others' shares."})
        rows = []
        for t in tasks:
            srcs = [s for s in sources if per_task_source[t].get(s)]
            for s in srcs:
                rows.append([t, s, per_task_source[t][s], round(per_task_source[t][s] / per_task[t], 4),
                             round(1 / len(srcs), 4)])
        sec.table(["task", "source", "samples", "share of the task", "target share (even)"], rows,
                  f"Mix within each task (max_per_task: {ecfg.get('max_per_task') or 'median task'}; "
                  f"weights: {json.dumps(weights) if weights else 'all 1'})")
        sec.table(["task", "achieved share", "target share"],
                  [[t, round(achieved[t], 4), round(target[t], 4)] for t in tasks], "Task mix")
    # MCQ sets
    sec.heading("MCQ sets")
    mcq = man.get("mcq") or {}
    if mcq:
        mtasks = sorted(mcq)
        rep.cards["MCQ questions"] = sum(int(v.get("questions", 0)) for v in mcq.values())
        origins = sorted({o for v in mcq.values() for o in (v.get("origins") or {})})
        sec.chart({"id": "mcq_origins", "title": "MCQ options per task, by origin", "kind": "bars", "categories": mtasks,
                   "series": {o: [int((mcq[t].get("origins") or {}).get(o, 0)) for t in mtasks] for o in origins},
                   "xlabel": "options (questions x options per question)"})
        sec.table(["task", "questions", "options each", "answer positions (position: questions)", "origins"],
                  [[t, mcq[t].get("questions"), mcq[t].get("options"),
                    ", ".join(f"{k}: {v}" for k, v in (mcq[t].get("answer_positions") or {}).items()),
                    ", ".join(f"{k}: {v}" for k, v in (mcq[t].get("origins") or {}).items())] for t in mtasks])
    else:
        sec.note("No MCQ set in the manifest (no held-out user with a sample, or every question was dropped).")
    dropped = man.get("mcq_dropped_too_few_options")
    if dropped:
        sec.note(f"{dropped} MCQ question(s) dropped for want of distinct in-budget distractors.")
    files = man.get("files") or []
    if files:
        sec.blocks.append({"type": "details", "summary": f"Files ({len(files)}) with their sha256",
                           "blocks": [{"type": "table", "title": "", "columns": ["path", "rows", "bytes", "sha256"],
                                       "rows": [[f.get("path"), f.get("rows"), f.get("bytes"), f.get("sha256")]
                                                for f in files]}]})
    return sec


def _signals(rep: _Report) -> _Section:
    sec = _Section(rep, "signals", "Quality signals of the synthesised outputs",
                   "From synth_signals (one row per artifact, input and signal; input * is the artifact's aggregate "
                   "over all users): the pass rate of every signal per artifact with its bound, and every failing row "
                   "by id. A signal without a bound is reported only (passed is null) and has no pass rate.")
    if not sec.need("synth_signals", "per-output quality signals", note=False):
        sec.note("The synth_signals table is absent: this table set has no quality signals yet.")
        return sec
    df = rep.read("synth_signals")
    units = df.where(F.col("input_id") != "*")
    agg = (units.groupBy("artifact", "signal")
           .agg(F.count(F.lit(1)).alias("n"), F.sum(F.col("passed").cast("int")).alias("passed"),
                F.sum(F.when(F.col("passed").isNull(), 1).otherwise(0)).alias("na"),
                F.max(F.col("gate").cast("int")).alias("gate"),
                F.array_sort(F.collect_set("bound")).alias("bounds"), F.avg("value").alias("mean"))
           .collect())
    aggregates = df.where(F.col("input_id") == "*").select("artifact", "signal", "value", "bound", "passed", "gate").collect()
    if not agg and not aggregates:
        sec.note("synth_signals is empty.")
        return sec
    agg = sorted(agg, key=lambda r: (_artifact_key(r["artifact"]), r["signal"]))
    cats, gate_rates, info_rates, rows = [], [], [], []
    for r in agg:
        bounded = r["n"] - r["na"]
        passed = r["passed"] or 0
        rate = passed / bounded if bounded else None
        if rate is not None:
            cats.append(f"{r['artifact']} · {r['signal']}")
            gate_rates.append(rate if r["gate"] else 0)
            info_rates.append(0 if r["gate"] else rate)
        rows.append([r["artifact"], r["signal"], " | ".join(r["bounds"] or []) or "(none: reported only)",
                     "gate" if r["gate"] else "report", r["n"], passed, bounded - passed, r["na"],
                     None if rate is None else round(100 * rate, 1), r["mean"]])
    if cats:
        sec.chart({"id": "signal_pass_rates", "title": "Pass rate per artifact and signal (bounded rows)", "kind": "bars",
                   "categories": cats, "series": {"gate": gate_rates, "report only": info_rates}, "xmax": 1.1,
                   "percent": True, "points": len(cats),
                   "colors": {"gate": "#4c72b0", "report only": "#8c8c8c"}, "xlabel": "share of rows that pass",
                   "caption": "gate: a unit failing the signal is kept out of gold (llm.signals.<signal>.mode: gate); "
                              "report only: measured, not enforced."})
    elif agg:
        sec.note("No signal has a bound on these rows: every one is reported only.")
    if rows:
        sec.table(["artifact", "signal", "bound", "mode", "rows", "passed", "failed", "no bound", "pass %", "mean value"],
                  rows, "Per unit and per user (every row but the * aggregates)")
    if aggregates:
        aggregates = sorted(aggregates, key=lambda r: (_artifact_key(r["artifact"]), r["signal"]))
        sec.table(["artifact", "signal", "value", "bound", "passed", "mode"],
                  [[r["artifact"], r["signal"], r["value"], r["bound"], r["passed"], "gate" if r["gate"] else "report"]
                   for r in aggregates], "Across all users (input_id *)")
    failing = df.where(F.col("passed") == F.lit(False))
    n_fail = failing.count()
    if n_fail:
        shown = (failing.select("artifact", "signal", "input_id", "user_id", "source", "value", "bound", "gate",
                                F.substring("detail", 1, 300).alias("detail"))
                 .orderBy("artifact", "signal", "input_id").limit(MAX_FAILING_ROWS).collect())
        more = f" (the first {MAX_FAILING_ROWS} listed)" if n_fail > MAX_FAILING_ROWS else ""
        sec.blocks.append({"type": "details", "summary": f"Failing rows: {n_fail}{more}",
                           "blocks": [{"type": "table", "title": "", "rows": [list(r) for r in shown],
                                       "columns": ["artifact", "signal", "input_id", "user_id", "source", "value",
                                                   "bound", "gate", "detail"]}]})
    else:
        sec.note("No row fails any signal.")
    return sec


def _tables(rep: _Report) -> _Section:
    sec = _Section(rep, "tables", "Tables", "Every table under the storage root: rows and Delta version.")
    names = list(dict.fromkeys(
        list(T.BRONZE_TABLES) + list(T.OPS_TABLES) + list(T.SILVER_TABLES) + list(T.PII_TABLES)
        + ["llm_ledger", "label_models"] + [f"{k}_{a}" for a in LLM_ARTIFACTS for k in ("synth", "judged", "gold")]
        + ["synth_signals", "shard_samples", "mcq_items"]
        + [n for n in rep.store.list_tables() if not n.startswith("_")]))
    rows = []
    for n in names:
        if rep.exists(n):
            rows.append([n, rep.store.count(n), rep.store.version(n)])
    if rows:
        sec.table(["table", "rows", "version"], rows)
    else:
        sec.note("No table under the storage root yet: run `lewin run`.")
    return sec


SECTIONS = (_funnel, _distributions, _llm, _shards, _signals, _tables)


def default_path(cfg: LewinConfig) -> str:
    """``<storage.root>/report.html`` (any location ``lewin.udfs.fs`` writes)."""
    return fs.join(cfg.storage.root_location, "report.html")


def write_report(store: TableStore, cfg: LewinConfig, out_path: str | os.PathLike | None = None) -> ReportResult:
    """Query the current tables, render the report, write it to ``out_path`` (default
    ``<storage.root>/report.html``; a local path or an object-store URL). Reads only."""
    t0 = time.perf_counter()
    path = fs.location(out_path) if out_path is not None else default_path(cfg)
    rep = _Report(store, cfg)
    result = ReportResult(path=path)
    sections = []
    for build in SECTIONS:
        sid = build.__name__.lstrip("_")
        ts = time.perf_counter()
        try:
            sec = build(rep)
        except Exception as exc:  # one bad table does not cost the rest of the report
            log.exception("report: section %s failed", sid)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
            result.errors[sid] = first
            sec = _Section(rep, sid, sid.capitalize())
            sec.note(f"This section could not be built: {type(exc).__name__}: {first}")
        log.debug("report: %s in %.2fs", sid, time.perf_counter() - ts)
        sections.append(sec)
    order = ("raw records", "silver records", "kept by the label gate", "users", "gold items", "shard samples",
             "MCQ questions")
    cards = [{"label": k, "value": f"{rep.cards[k]:,}"} for k in order if rep.cards.get(k)]
    try:
        version = metadata.version("lewin")
    except metadata.PackageNotFoundError:
        version = "unknown"
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    meta = [("storage root", cfg.storage.root_location), ("generated", generated), ("engine", store.engine.kind)]
    if rep.missing:
        meta.append(("missing", f"{len(rep.missing)} table(s)"))
    page = R.render_page("Lewin report", meta, cards, [s.as_dict() for s in sections],
                         footer=f"lewin {version} · lewin report · charts: matplotlib, inline SVG · no network needed")
    data = page.html.encode("utf-8")
    fs.write_bytes(path, data)
    result.sections = [s.id for s in sections]
    result.charts = {c.id: c.points for c in page.charts}
    result.missing_tables = sorted(rep.missing)
    result.bytes = len(data)
    result.seconds = round(time.perf_counter() - t0, 2)
    log.info("report: %s (%d sections, %d charts, %d missing tables) in %.1fs", path, len(sections), len(page.charts),
             len(rep.missing), result.seconds)
    return result
