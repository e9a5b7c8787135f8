"""Erasure: ``lewin forget --user SOURCE:ID`` deletes a user from every table and file downstream of
ingest, records the erasure without the id, and keeps the user out of later ingests.

**Who.** A user is ``<source>:<user_id>``: the key of ``users`` (``source``, ``user_id``) and the
LLM ledger's per-user ``input_id``. ``user_id`` is what bronze holds: the author name (Reddit), the
author id or screen name (Twitter, as the dump gives it), the blogger id, the reviewer id
(Amazon). Matching ignores case (Reddit and Twitter names are case-insensitive; the other sources'
ids have one case).

**What is recorded.** One ``erasures`` row per user: ``erasure_id`` = ``stable_id`` (the project's
SHA-256 recipe, ``lewin.udfs.ids``) over the erasure key, the source and the user id (lower case);
the source, the key's fingerprint, the run, the time. Never the id. The erasure key is derived by
HMAC from the PII surrogate key (``pii.salt`` / ``$LEWIN_PII_SALT`` / ``<root>/_secrets/pii_salt``,
``lewin.jobs.scrub.resolve_salt``), so the PII key itself never enters a Spark plan, and without it
nobody can test a guessed id against the table.

**What is deleted** (every erasure in the table is applied, so a rerun, or a run after restoring a
backup, finishes the job):

* every table with ``source`` and ``user_id`` columns, found under the storage root rather than
  listed, so a new artifact's table is covered: ``bronze_*``, ``silver_records``,
  ``silver_amazon_pool``, ``near_dup_signatures``, ``silver_records_scrubbed``, ``record_labels``,
  ``users``, ``llm_ledger`` (labels, notes, synthesis, judges and MCQ distractors of their
  questions), ``synth_*``, ``judged_*``, ``gold_*``, ``shard_samples``, ``mcq_items``;
* ``rejected``: the rows of their records; other rows whose detail names one of their records
  ("duplicate of …") keep their rule, with the id replaced by ``[erased]``;
* ``quarantine``: rows of their source whose raw text or detail holds the user id as a token, or
  whose file name starts with it (a Blogger file is named by its blogger). Quarantine has no user
  column (its rows could not be parsed), so this match is textual and may also remove a bad
  record of someone else that names them;
* other users' training samples built on their records (personalized commenting on one of their
  posts), those samples' MCQ items and distractor ledger rows; MCQ options that are their answers
  (origin ``other_user``, ``emit.distractor_fill_other_users``) are replaced by another user's
  answer from the same pool emit draws from, and the question is dropped when none is left;
* the shard files: rewritten from the updated ``shard_samples`` and ``mcq_items`` (no rebalancing
  and no LLM call, so every other user's samples and questions stay as they are);
* what crashed runs left behind: scratch tables and the shards' staging folders (with every
  stage's lock held, no run is live).

Deletions run derived tables first and bronze last, and the erasure rows are written before any
deletion: a run killed at any point is finished by a rerun (a marker in the shards folder makes
the rerun rewrite the files if the kill came between the tables and the files).

**Ingest** (``erasure_guard``): the records of an erased user, and quarantine-bound records that
name them, are dropped with the reason ``erased_user`` and counted in the ingest funnel
(``rejected``), never written to bronze or quarantine. Ingest refuses to run when ``erasures``
was recorded under another key (it could not recognise those users).

**History** (``vacuum=True``): deleted rows stay in the tables' older files and in the Delta log's
per-file statistics (min/max values of every column, so the id) until vacuumed. Vacuum removes
the unreferenced files with retention 0, on every table forget handles (a rerun after a crash
then also covers what the crashed run changed), and compacts the log: a checkpoint at the current
version, the older commit files deleted. Time travel before the erasure is gone on those tables.
On the embedded engine (Sail has no VACUUM statement) both go through delta-rs; on Spark, Spark
Connect and Databricks vacuum is ``REORG TABLE … APPLY (PURGE)`` (rows soft-deleted by deletion
vectors) then ``VACUUM … RETAIN 0 HOURS`` with the retention check off for the call, and the log
is compacted by delta-rs when the tables live at paths. Tables addressed by name only (Unity
Catalog) keep their old log files until Delta's log retention (``delta.logRetentionDuration``, 30
days by default) expires them; ``ForgetResult.not_vacuumed`` says so per table.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import reduce
from typing import Iterable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lewin.jobs.stage import Funnel, RunContext, new_run_id, record_funnels
from lewin.jobs.tables import TableStore
from lewin.schemas import shards as S
from lewin.schemas import tables as T
from lewin.schemas.config import LewinConfig
from lewin.udfs import fs
from lewin.udfs.ids import stable_id

log = logging.getLogger(__name__)

ERASED_REASON = "erased_user"
"""The ingest funnel's reason for a dropped record of an erased user."""
PENDING_MARKER = ".forget_pending"
"""Written into the shards folder before the shard tables change; gone once the files are rewritten."""
ERASED_REF = "[erased]"
_KEY_INFO = b"lewin-erasure-key-v1"
_FP_INFO = b"lewin-erasure-fingerprint-v1"
# user ids are made of these (Reddit: letters, digits, _ and -; Twitter, Amazon, Blogger: a subset)
_TOKEN_SPLIT = r"[^a-z0-9_-]+"
# tables handled by their own step (derived rows of other users, option replacement)
_OWN_STEP = ("shard_samples", "mcq_items")


class ErasureKeyMismatch(RuntimeError):
    """``erasures`` holds hashes made with another key: they cannot be matched."""


# --- ids, keys, hashes ------------------------------------------------------------------------------
def parse_user_ids(values: Iterable[str]) -> list[tuple[str, str]]:
    """``SOURCE:ID`` entries -> (source, user_id), in order, duplicates removed. Blank lines and
    lines starting with ``#`` are skipped (a ``--file``); a bad entry is reported by its position
    (1-based, blank lines counted: the line number of a file), never by its value."""
    from lewin.udfs import sources

    known = sources.names()
    out: list[tuple[str, str]] = []
    bad: list[int] = []
    for i, v in enumerate(values, 1):
        s = (v or "").strip()
        if not s or s.startswith("#"):
            continue
        src, sep, uid = s.partition(":")
        src, uid = src.strip().lower(), uid.strip()
        if not sep or src not in known or not uid:
            bad.append(i)
            continue
        if (src, uid) not in out:
            out.append((src, uid))
    if bad:
        more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise ValueError(f"expected SOURCE:ID with SOURCE one of {', '.join(known)}: entries "
                         f"{', '.join(map(str, bad[:20]))}{more}")
    if not out:
        raise ValueError("no user to forget")
    return out


def read_user_file(path: str) -> list[str]:
    """The lines of a ``--file`` (one ``SOURCE:ID`` per line; any location ``lewin.udfs.fs`` reads)."""
    return fs.read_bytes(fs.location(path)).decode("utf-8-sig").splitlines()


def _keys(cfg: LewinConfig) -> tuple[str, str]:
    """(erasure key, its fingerprint), both derived from the PII key by HMAC."""
    from lewin.jobs.scrub import resolve_salt

    salt = resolve_salt(cfg)
    return (hmac.new(salt, _KEY_INFO, hashlib.sha256).hexdigest(),
            hmac.new(salt, _FP_INFO, hashlib.sha256).hexdigest()[:16])


def erasure_hash(key: str, source: Column | str, user_id: Column | str) -> Column:
    """The erasure id of (source, user id): the one recipe forget and ingest both use."""
    s = F.col(source) if isinstance(source, str) else source
    u = F.col(user_id) if isinstance(user_id, str) else user_id
    return stable_id(F.lit(key), F.lower(s), F.lower(u))


def quarantine_tokens(raw: Column | str, detail: Column | str, file: Column | str) -> Column:
    """array<string>: the lower-case tokens of a quarantined record's raw text and detail, and the
    first token of its file name, a user id candidate each."""
    c = lambda x: F.col(x) if isinstance(x, str) else x  # noqa: E731
    text = lambda x: F.split(F.lower(F.coalesce(c(x), F.lit(""))), _TOKEN_SPLIT)  # noqa: E731
    base = F.regexp_extract(F.lower(F.coalesce(c(file), F.lit(""))), r"([^/\\]+)$", 1)
    return F.concat(text(raw), text(detail), F.array(F.split(base, _TOKEN_SPLIT).getItem(0)))


def _check_key(store: TableStore, fp: str) -> None:
    if not store.exists("erasures"):
        return
    other = [r["key_fingerprint"] for r in store.read("erasures").select("key_fingerprint").distinct().collect()
             if r["key_fingerprint"] != fp]
    if other:
        raise ErasureKeyMismatch(
            "the erasures table was recorded under another PII key (fingerprint "
            f"{', '.join(sorted(other))}; this run's is {fp}): its users could not be recognised. Run with "
            "the key they were recorded under (pii.salt, $LEWIN_PII_SALT or pii.salt_file)")


# --- the ingest hook --------------------------------------------------------------------------------
class ErasureGuard:
    """Marks the staged ingest rows of erased users: ``_reason`` becomes ``erased_user`` for a row
    whose (source, user_id) is erased, and for a quarantine-bound row whose raw text names an
    erased user of the source (``quarantine_tokens``)."""

    def __init__(self, key: str, source: str, hashes: DataFrame):
        self.key, self.source, self.hashes = key, source, hashes

    def mark(self, ctx: RunContext, staged: DataFrame) -> DataFrame:
        src = F.lit(self.source)
        users = staged.where(F.col("user_id").isNotNull()).select("user_id").distinct()
        hit_users = (users.withColumn("erasure_id", erasure_hash(self.key, src, F.col("user_id")))
                     .join(self.hashes, "erasure_id", "left_semi").select("user_id", F.lit(True).alias("_erased_user")))
        bad = staged.where(F.col("_reason").isNotNull() & (F.col("_reason") != "blank_line"))
        toks = (bad.select("file", "line", "item", F.explode(quarantine_tokens("raw", "_detail", "file")).alias("_tok"))
                .where(F.length("_tok") > 0).distinct())
        hit_rows = (toks.withColumn("erasure_id", erasure_hash(self.key, src, F.col("_tok")))
                    .join(self.hashes, "erasure_id", "left_semi").select("file", "line", "item").distinct()
                    .withColumn("_erased_raw", F.lit(True)))
        marked = staged.join(hit_users, "user_id", "left").join(hit_rows, ["file", "line", "item"], "left")
        erased = (F.coalesce(F.col("_erased_user"), F.lit(False)) | F.coalesce(F.col("_erased_raw"), F.lit(False))) & (
            F.coalesce(F.col("_reason"), F.lit("")) != "blank_line")
        marked = marked.withColumn("_reason", F.when(erased, F.lit(ERASED_REASON)).otherwise(F.col("_reason")))
        return ctx.materialize("batch_erasure", marked.select(*staged.columns))


def erasure_guard(store: TableStore, cfg: LewinConfig, source: str) -> ErasureGuard | None:
    """The ingest hook for ``source``: None when no user of the source is erased (then ingest does
    no extra work). Raises ``ErasureKeyMismatch`` when the erasures were hashed with another key."""
    if not store.exists("erasures"):
        return None
    hashes = store.read("erasures").where(F.col("source") == source).select("erasure_id")
    if hashes.limit(1).count() == 0:
        return None
    key, fp = _keys(cfg)
    _check_key(store, fp)
    return ErasureGuard(key, source, hashes)


# --- MCQ options ------------------------------------------------------------------------------------
def replace_erased_options(item: dict, erased: set[str], pool: list[tuple[str, str]]) -> tuple[dict | None, int]:
    """An MCQ item with its ``other_user`` options that are erased answers (``erased``: their
    ``lewin.udfs.mcq.norm``) replaced in place by the first answers of ``pool`` ((user_id, answer)
    in emit's seeded order) that are not the item's user's, not erased and not already an option.
    Returns (item, options replaced), or (None, 0) when the pool runs out (the question goes)."""
    from lewin.udfs.mcq import norm

    options, origins = list(item["options"]), list(item["origins"])
    hit = [i for i, (o, g) in enumerate(zip(options, origins)) if g == "other_user" and norm(o) in erased]
    if not hit:
        return item, 0
    seen = {norm(o) for i, o in enumerate(options) if i not in hit}
    fills: list[str] = []
    for u, a in pool:
        k = norm(a)
        if u == item["user_id"] or not k or k in seen or k in erased:
            continue
        seen.add(k)
        fills.append(a.strip())
        if len(fills) == len(hit):
            break
    if len(fills) < len(hit):
        return None, 0
    for i, a in zip(hit, fills):
        options[i] = a
    return {**item, "options": options, "origins": origins}, len(hit)


# --- the result -------------------------------------------------------------------------------------
@dataclass
class ForgetResult:
    run_id: str
    requested: int = 0
    """Distinct users asked for (case ignored)."""
    newly_erased: int = 0
    already_erased: int = 0
    users_found: int = 0
    """Distinct (source, user_id) of erased users found in the tables this run (every erasure is applied)."""
    deleted: dict[str, int] = field(default_factory=dict)
    """Table -> rows deleted (tables with none are left out)."""
    updated: dict[str, int] = field(default_factory=dict)
    """Table -> other users' rows changed: ``rejected`` details naming an erased record, MCQ items
    whose options were replaced."""
    dependent_samples: int = 0
    """Other users' training samples built on an erased user's records (deleted)."""
    mcq_options_replaced: int = 0
    mcq_items_dropped: int = 0
    """Other users' questions left without enough options once the erased answers went."""
    shards_rewritten: bool = False
    report: str | None = None
    """What happened to ``<storage.root>/report.html``: rewritten, removed, or None (there was none)."""
    leftovers_removed: list[str] = field(default_factory=list)
    """Scratch tables and shard staging folders crashed runs left (copies of records and samples)."""
    vacuumed: dict[str, str] = field(default_factory=dict)
    """Table -> what vacuum did (files removed, log compacted)."""
    not_vacuumed: dict[str, str] = field(default_factory=dict)
    """Table -> what vacuum could not do, and why."""
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.newly_erased or self.deleted or self.updated or self.shards_rewritten)

    def funnel(self) -> Funnel:
        # in = users asked for; rejected = newly erased; duplicates = erased before
        return Funnel(stage="forget", source="all", records_in=self.requested, duplicates=self.already_erased,
                      rejected=self.newly_erased,
                      detail={"users_found": self.users_found, "deleted": self.deleted, "updated": self.updated,
                              "dependent_samples": self.dependent_samples,
                              "mcq_options_replaced": self.mcq_options_replaced,
                              "mcq_items_dropped": self.mcq_items_dropped, "shards_rewritten": self.shards_rewritten,
                              "leftovers_removed": len(self.leftovers_removed),
                              "vacuumed": sorted(self.vacuumed), "not_vacuumed": self.not_vacuumed,
                              "seconds": self.seconds})


# --- the job ----------------------------------------------------------------------------------------
def _lock_keys() -> list[str]:
    """Every stage's run lock (per source for ingest) and forget's own: no stage runs meanwhile."""
    from lewin.jobs.registry import STAGES
    from lewin.udfs import sources

    keys = {"forget"}
    for s in STAGES:
        keys |= {f"{s.name}-{src}" for src in sources.names()} if s.per_source else {s.name}
    return sorted(keys)


def forget(store: TableStore, cfg: LewinConfig, user_ids: Iterable[str], vacuum: bool = False,
           run_id: str | None = None) -> ForgetResult:
    """Erase ``user_ids`` (``SOURCE:ID`` each) from every table and file downstream of ingest and
    record them in ``erasures`` (hashed); ``vacuum``: also remove the tables' older files and Delta
    log history. Holds every stage's run lock meanwhile (``RunLockHeld`` when a stage is running).
    Writes one ``runs`` row (stage ``forget``). A rerun deletes nothing more and writes no table."""
    from lewin.jobs.run_lock import RunLock

    ids = parse_user_ids(user_ids)
    run_id = run_id or new_run_id("forget")
    rc = cfg.run
    with ExitStack() as locks:
        for key in _lock_keys():
            locks.enter_context(RunLock(cfg.storage.root_location, key, run_id, wait_seconds=rc.lock_wait_seconds,
                                        stale_seconds=rc.lock_stale_seconds,
                                        heartbeat_seconds=rc.lock_heartbeat_seconds))
        ctx = RunContext(store, cfg, "forget", run_id)
        swept = _drop_leftovers(store, cfg)
        store.ensure("runs", T.RUNS)
        try:
            result = _forget(ctx, ids, vacuum)
            result.leftovers_removed = swept
        finally:
            ctx.drop_scratch()
            ctx.progress.close()
        funnel = result.funnel()
        funnel.detail["seconds_by_step"] = dict(ctx.seconds_by_step)
        record_funnels(store, run_id, ctx.started, [funnel])
    return result


def _drop_leftovers(store: TableStore, cfg: LewinConfig) -> list[str]:
    """With every stage's lock held no run is live, so every scratch table and shard staging folder
    is a crashed run's leftover: each may hold copies of the user's records or samples."""
    from lewin.jobs.emit import out_dir
    from lewin.jobs.stage import SCRATCH_PREFIX

    gone = []
    for name in store.list_tables(prefix=SCRATCH_PREFIX):
        store.drop(name)
        gone.append(name)
    out = out_dir(cfg)
    for loc in (out + ".tmp", out + ".old"):
        if fs.exists(loc):
            fs.rm(loc)
            gone.append(fs.name(loc))
    if gone:
        log.info("forget: removed %d leftovers of crashed runs", len(gone))
    return gone


def _union(frames: list[DataFrame]) -> DataFrame | None:
    return reduce(lambda a, b: a.unionByName(b), frames) if frames else None


def _count_then_delete(store: TableStore, name: str, keys: DataFrame, on: list[str], result: ForgetResult) -> int:
    n = store.read(name).join(keys.select(*on).distinct(), on, "left_semi").count()
    if n:
        store.delete_keys(name, keys, on)
        result.deleted[name] = result.deleted.get(name, 0) + n
    return n


def _forget(ctx: RunContext, ids: list[tuple[str, str]], vacuum: bool) -> ForgetResult:
    store, cfg = ctx.store, ctx.cfg
    clock = time.perf_counter()
    result = ForgetResult(ctx.run_id)
    key, fp = _keys(cfg)
    store.ensure("erasures", T.ERASURES)
    _check_key(store, fp)

    # 1. the erasure rows, before anything is deleted: ingest drops these users from now on, and a
    # rerun after a crash finds them and finishes
    with ctx.step("erasures"):
        asked = store.spark.createDataFrame(ids, "source string, user_id string").select(
            erasure_hash(key, "source", "user_id").alias("erasure_id"), F.lower("source").alias("source")).distinct()
        asked = ctx.materialize("asked", asked)
        result.requested = asked.count()
        new = asked.join(store.read("erasures").select("erasure_id"), "erasure_id", "left_anti")
        new = ctx.materialize("new_erasures", new.select(
            "erasure_id", "source", F.lit(fp).alias("key_fingerprint"), F.lit(ctx.run_id).alias("run_id"),
            F.lit(ctx.started).cast("timestamp").alias("erased_at")))
        result.newly_erased = new.count()
        result.already_erased = result.requested - result.newly_erased
        if result.newly_erased:
            store.insert_new("erasures", new, ["erasure_id"], T.ERASURES)
    hashes = ctx.materialize("hashes", store.read("erasures").select("erasure_id"))

    # 2. who and what, read before any deletion (scratch tables: later steps read these, not the tables)
    tables = [n for n in store.list_tables() if not n.startswith("_") and n != "erasures"]
    columns = {n: set(store.read(n).columns) for n in tables}
    user_tables = [n for n in tables if {"source", "user_id"} <= columns[n]]
    with ctx.step("find"):
        found = _union([store.read(n).where(F.col("user_id").isNotNull()).select("source", "user_id").distinct()
                        for n in user_tables])
        if found is None:
            erased_users = store.spark.createDataFrame([], "source string, user_id string")
        else:
            erased_users = (found.distinct().withColumn("erasure_id", erasure_hash(key, "source", "user_id"))
                            .join(hashes, "erasure_id", "left_semi").select("source", "user_id"))
        erased_users = ctx.materialize("erased_users", erased_users)
        result.users_found = erased_users.count()
        mine = lambda n: store.read(n).join(erased_users, ["source", "user_id"], "left_semi")  # noqa: E731
        refs = None
        if result.users_found:
            rec = [mine(n).where(F.col("record_id").isNotNull()).select(F.col("record_id").alias("ref"))
                   for n in user_tables if "record_id" in columns[n]]
            keys_ = [mine(n).where(F.col("ledger_key").isNotNull()).select(F.col("ledger_key").alias("ref"))
                     for n in user_tables if "ledger_key" in columns[n]]
            refs = ctx.materialize("refs", _union(rec + keys_).distinct()) if rec + keys_ else None

    # 3. derived rows of other users, MCQ items and shard samples (before the tables they come from)
    with ctx.step("shards"):
        if "shard_samples" in columns:
            _forget_samples(ctx, erased_users, refs, result)
    with ctx.step("rejected"):
        if "rejected" in columns and refs is not None:
            _forget_rejected(ctx, refs, result)
    with ctx.step("quarantine"):
        if "quarantine" in columns:
            toks = (store.read("quarantine").select(
                "quarantine_id", "source", F.explode(quarantine_tokens("raw", "detail", "file")).alias("_tok"))
                .where(F.length("_tok") > 0).distinct())
            hit = (toks.withColumn("erasure_id", erasure_hash(key, "source", "_tok")).join(hashes, "erasure_id", "left_semi")
                   .select("quarantine_id").distinct())
            _count_then_delete(store, "quarantine", ctx.materialize("quarantine_hits", hit), ["quarantine_id"], result)

    # 4. every table keyed by user: downstream first, bronze last
    with ctx.step("user_tables"):
        if result.users_found:
            order = sorted((n for n in user_tables if n not in _OWN_STEP), key=lambda n: (n.startswith("bronze_"), n))
            task = ctx.progress.task("forget", "tables", len(order))
            for n in order:
                _count_then_delete(store, n, erased_users, ["source", "user_id"], result)
                task.advance()

    # 5. the shard files, from the updated tables
    with ctx.step("rewrite_shards"):
        result.shards_rewritten = _rewrite_shards(ctx, result)
    # 6. the run report at its default place lists ids (failing signal rows): rewritten from the
    # updated tables, or removed when it cannot be (a report written elsewhere is the caller's)
    with ctx.step("rewrite_report"):
        _rewrite_report(store, ctx.cfg, result)
    if vacuum:
        with ctx.step("vacuum"):
            handled = [n for n in tables if n in user_tables or n in ("rejected", "quarantine")]
            _vacuum(store, handled, result)
    result.seconds = round(time.perf_counter() - clock, 3)
    log.info("forget: %d users asked (%d new), %d found; rows deleted per table: %s; updated: %s; shards rewritten: %s",
             result.requested, result.newly_erased, result.users_found, result.deleted, result.updated,
             result.shards_rewritten)
    return result


def _rewrite_report(store: TableStore, cfg: LewinConfig, result: ForgetResult) -> None:
    from lewin.jobs.report import default_path, write_report

    path = default_path(cfg)
    if not result.changed or not fs.exists(path):  # a rerun that deleted nothing leaves it as it is
        return
    try:
        write_report(store, cfg, path)
        result.report = "rewritten"
    except Exception as exc:  # never leave the old page, which may name them
        log.warning("forget: the report could not be rewritten (%s): removing %s", type(exc).__name__, path)
        fs.rm(path)
        result.report = "removed"


def _mark_shards_pending(cfg: LewinConfig) -> None:
    from lewin.jobs.emit import out_dir

    out = out_dir(cfg)
    if fs.isdir(out):
        fs.write_bytes(fs.join(out, PENDING_MARKER), b"lewin forget: shard tables changed, files not rewritten yet\n")


def _forget_samples(ctx: RunContext, erased_users: DataFrame, refs: DataFrame | None, result: ForgetResult) -> None:
    """Training samples and MCQ items of the erased users and of other users' samples built on
    their records; distractor ledger rows of the latter; ``other_user`` MCQ options that are the
    erased users' answers."""
    store, cfg = ctx.store, ctx.cfg
    samples = store.read("shard_samples")
    own = samples.join(erased_users, ["source", "user_id"], "left_semi").select("sample_id")
    if refs is not None:
        dependents = (samples.join(erased_users, ["source", "user_id"], "left_anti")
                      .select("sample_id", F.explode("artifact_ids").alias("ref")).join(refs, "ref", "left_semi")
                      .select("sample_id").distinct())
    else:
        dependents = samples.limit(0).select("sample_id")
    dependents = ctx.materialize("dependent_samples", dependents)
    gone = ctx.materialize("gone_samples", own.unionByName(dependents).distinct())
    result.dependent_samples = dependents.count()
    # the erased users' answers, as other questions may carry them as options
    erased_answers = {r["a"] for r in samples.join(own, "sample_id", "left_semi")
                      .select(F.element_at("messages", -1)["content"].alias("a")).collect() if r["a"]}
    from lewin.udfs.mcq import norm

    erased = {norm(a) for a in erased_answers} - {""}

    # which MCQ items go or change
    mcq_gone = None
    changed: list[dict] = []
    if store.exists("mcq_items"):
        items = store.read("mcq_items")
        mcq_gone = items.join(gone.select(F.col("sample_id").alias("mcq_id")), "mcq_id", "left_semi").select("mcq_id")
        mcq_gone = mcq_gone.unionByName(items.join(erased_users, ["source", "user_id"], "left_semi").select("mcq_id"))
        dropped: list[str] = []
        if erased:
            candidates = [r.asDict(recursive=True) for r in
                          items.join(mcq_gone, "mcq_id", "left_anti").where(F.array_contains("origins", "other_user")).collect()]
            pools: dict[str, list[tuple[str, str]]] = {}
            for it in sorted(candidates, key=lambda x: x["mcq_id"]):
                if it["task"] not in pools:
                    pools[it["task"]] = _answer_pool(store, cfg, gone, it["task"])
                new_item, n = replace_erased_options(it, erased, pools[it["task"]])
                if new_item is None:
                    dropped.append(it["mcq_id"])
                elif n:
                    changed.append(new_item)
                    result.mcq_options_replaced += n
        result.mcq_items_dropped = len(dropped)
        if dropped:
            mcq_gone = mcq_gone.unionByName(store.spark.createDataFrame([(d,) for d in dropped], "mcq_id string"))
        mcq_gone = ctx.materialize("mcq_gone", mcq_gone.distinct())

    n_samples = samples.join(gone, "sample_id", "left_semi").count()
    n_mcq = store.read("mcq_items").join(mcq_gone, "mcq_id", "left_semi").count() if mcq_gone is not None else 0
    if not (n_samples or n_mcq or changed or result.dependent_samples):
        return
    _mark_shards_pending(cfg)
    # distractor prompts of other users' questions built on the erased records (the erased users'
    # own distractor rows carry their user_id: deleted with the ledger below)
    if result.dependent_samples and store.exists("llm_ledger"):
        ledger = store.read("llm_ledger").where(F.col("artifact") == "distractor")
        hit = ledger.join(dependents.select(F.col("sample_id").alias("_sid")),
                          F.substring_index(ledger["input_id"], "#", 1) == F.col("_sid"), "left_semi").select("ledger_key")
        _count_then_delete(store, "llm_ledger", ctx.materialize("dependent_ledger", hit), ["ledger_key"], result)
    if mcq_gone is not None and n_mcq:
        _count_then_delete(store, "mcq_items", mcq_gone, ["mcq_id"], result)
    if changed:
        store.upsert("mcq_items", store.spark.createDataFrame(changed, S.MCQ_ITEM), ["mcq_id"], S.MCQ_ITEM)
        result.updated["mcq_items"] = len(changed)
    if n_samples:
        _count_then_delete(store, "shard_samples", gone, ["sample_id"], result)


def _answer_pool(store: TableStore, cfg: LewinConfig, gone: DataFrame, task: str) -> list[tuple[str, str]]:
    """Other users' real answers to ``task`` in emit's fill order (``emit.build_mcq``), without the
    samples that go."""
    ec = cfg.emit
    rows = (store.read("shard_samples").join(gone, "sample_id", "left_anti").where(F.col("task") == task)
            .select("user_id", F.element_at("messages", -1)["content"].alias("a"))
            .orderBy(F.sha2(F.concat_ws(":", F.lit(ec.seed), "user_id", "a"), 256)).limit(500).collect())
    return [(r["user_id"], r["a"]) for r in rows]


def _forget_rejected(ctx: RunContext, refs: DataFrame, result: ForgetResult) -> None:
    """Rejected rows of the erased records go; other rows naming one of them in their detail
    ("duplicate of <id>", "near-duplicate of earlier <id> (jaccard …)") keep their rule with the id
    replaced."""
    store = ctx.store
    _count_then_delete(store, "rejected", refs.select(F.col("ref").alias("record_id")), ["record_id"], result)
    rej = store.read("rejected").where(F.col("detail").isNotNull())
    named = (rej.select("record_id", "detail", F.explode(F.split("detail", r"[\s,()]+")).alias("ref"))
             .join(refs, "ref", "left_semi").collect())
    if not named:
        return
    by_row: dict[str, tuple[str, set[str]]] = {}
    for r in named:
        by_row.setdefault(r["record_id"], (r["detail"], set()))[1].add(r["ref"])
    fixed = []
    for rid, (detail, gone) in sorted(by_row.items()):
        for ref in sorted(gone, key=len, reverse=True):
            detail = re.sub(rf"(?<![\w:.-]){re.escape(ref)}(?![\w:.-])", ERASED_REF, detail)
        fixed.append((rid, detail))
    new = store.spark.createDataFrame(fixed, "record_id string, _detail string")
    rows = store.read("rejected").join(new, "record_id").withColumn("detail", F.col("_detail"))
    rows = ctx.materialize("rejected_fixed", rows.select(*[F.col(f.name).cast(f.dataType) for f in T.REJECTED.fields]))
    store.upsert("rejected", rows, ["record_id"], T.REJECTED)
    result.updated["rejected"] = len(fixed)


def _rewrite_shards(ctx: RunContext, result: ForgetResult) -> bool:
    """Rewrite the shard files from ``shard_samples`` and ``mcq_items`` when forget changed them
    (the marker says so, also after a crash). The manifest's figures that emit computes before
    balancing (candidates, the distractor plan) are carried over from the previous manifest."""
    from lewin.jobs import emit as emit_job

    store, cfg = ctx.store, ctx.cfg
    out = emit_job.out_dir(cfg)
    if not fs.isfile(fs.join(out, PENDING_MARKER)) or not store.exists("shard_samples"):
        return False
    manifest = fs.join(out, "manifest.json")
    prev = json.loads(fs.read_bytes(manifest)) if fs.isfile(manifest) else {}
    res = emit_job.EmitResult(ctx.run_id)
    counts: dict = defaultdict(lambda: defaultdict(dict))
    for r in store.read("shard_samples").groupBy("split", "task", "source").agg(F.count(F.lit(1)).alias("n")).collect():
        counts[r["split"]][r["task"]][r["source"]] = r["n"]
    res.counts = {s: {t: dict(sorted(v.items())) for t, v in sorted(d.items())} for s, d in sorted(counts.items())}
    res.kept = sum(n for t in res.counts.values() for s in t.values() for n in s.values())
    res.candidates = prev.get("candidates_before_balance", res.kept)
    res.mcq_dropped = prev.get("mcq_dropped_too_few_options", 0) + result.mcq_items_dropped
    res.distractor_plan = prev.get("distractor_plan", [])
    items = [r.asDict(recursive=True) for r in store.read("mcq_items").collect()] if store.exists("mcq_items") else []
    emit_job.write_files(store, cfg, items, res)  # a fresh folder swapped in: the marker goes with the old one
    fs.rm(fs.join(out, PENDING_MARKER))  # an object store's folder is replaced file by file
    return True


# --- vacuum -----------------------------------------------------------------------------------------
_RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
_LOG_FILE = re.compile(r"^\.?(\d{20})\.")  # commits, checkpoints, checksums (and Hadoop's hidden .crc twins)


def _vacuum(store: TableStore, names: list[str], result: ForgetResult) -> None:
    if store.fmt != "delta":
        for n in names:
            result.not_vacuumed[n] = "Parquet table: deletes rewrite the folder, there is no history to vacuum"
        return
    for n in names:
        if not store.exists(n):
            continue
        done: list[str] = []
        try:
            if store.engine.kind == "embedded":
                removed = _vacuum_delta_rs(store.path(n))
                if removed:
                    done.append(f"{removed} unreferenced files removed (delta-rs)")
            else:
                done.append(_vacuum_sql(store, n))
        except Exception as exc:  # noqa: BLE001 - reported per table, the others go on
            result.not_vacuumed[n] = f"vacuum failed: {str(exc).splitlines()[0][:300]}"
            continue
        if store.uses_paths:
            try:
                dropped = _compact_log(store.path(n))
                if dropped:
                    done.append(f"log compacted: {dropped} older log files removed")
            except Exception as exc:  # noqa: BLE001
                result.not_vacuumed[n] = f"log not compacted: {str(exc).splitlines()[0][:300]}"
        else:
            result.not_vacuumed[n] = ("table addressed by name: its older Delta log files (per-file statistics) "
                                      "stay until delta.logRetentionDuration expires them")
        if done:
            result.vacuumed[n] = "; ".join(done)


def _delta_table(path: str):
    from deltalake import DeltaTable

    return DeltaTable(path)


def _vacuum_delta_rs(path: str) -> int:
    """Remove every file the table no longer references (retention 0, ``full``: also files no
    remove action names). Nothing left to remove writes nothing: delta-rs' vacuum adds two commits,
    and it lists the removed files its checkpoint still holds tombstones of even once they are gone."""
    dt = _delta_table(path)
    opts = dict(retention_hours=0, enforce_retention_duration=False, full=True)
    listed = dt.vacuum(dry_run=True, **opts)
    present = [f for f in listed if fs.exists(f if fs.scheme(f) or f.startswith("/") else fs.join(path, f))]
    if not present:
        return 0
    dt.vacuum(dry_run=False, **opts)
    return len(present)


def _vacuum_sql(store: TableStore, name: str) -> str:
    spark = store.spark
    ref = store.ref(name)
    notes = []
    try:  # rows a DELETE/MERGE only marked in a deletion vector are still in their files
        spark.sql(f"REORG TABLE {ref} APPLY (PURGE)").collect()
        notes.append("REORG … APPLY (PURGE)")
    except Exception as exc:  # noqa: BLE001 - an engine without deletion vectors (or REORG)
        log.info("%s: REORG not run (%s)", name, str(exc).splitlines()[0][:200])
    try:
        old = spark.conf.get(_RETENTION_CHECK)
    except Exception:  # noqa: BLE001 - unset
        old = None
    spark.conf.set(_RETENTION_CHECK, "false")
    try:
        spark.sql(f"VACUUM {ref} RETAIN 0 HOURS").collect()
    finally:
        if old is None:
            spark.conf.unset(_RETENTION_CHECK)
        else:
            spark.conf.set(_RETENTION_CHECK, old)
    return " then ".join(notes + ["VACUUM RETAIN 0 HOURS"])


def _compact_log(path: str) -> int:
    """Checkpoint the table at its current version and delete the older log files (commits, their
    checksums, older checkpoints): their add actions carry per-file min/max statistics, so deleted
    values. Readers start from the checkpoint. Returns the files deleted (0: already compact)."""
    log_dir = fs.join(path, "_delta_log")
    dt = _delta_table(path)
    v = dt.version()
    old = [f for f in fs.list_files(log_dir) if (m := _LOG_FILE.match(f)) and int(m.group(1)) < v]
    if not old:
        return 0
    if not any(f.startswith(f"{v:020d}.checkpoint") for f in fs.list_files(log_dir)):
        dt.create_checkpoint()
    for f in old:
        fs.rm(fs.join(log_dir, f))
    return len(old)
