"""`forget` (jobs/forget.py): a user leaves every table and file downstream of ingest, the erasure is
recorded without their id, a re-ingest of the same dump brings nothing of them back, a rerun
changes nothing.

Runs on a private copy of the shared sample run (``sample_run``: every stage, LLM included, so
ledger, synth/judged/gold, shards and MCQ sets hold the user), never on the run itself. The sample
does not produce two shapes forget must handle, so they are added to the copy first: another
user's training sample (with its MCQ item and distractor ledger row) built on one of the user's
posts, MCQ items of other users carrying the user's answer as an ``other_user`` option, and
quarantine rows naming the user. Tables are read with delta-rs, independently of the engine.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from lewin.jobs import forget as forget_job
from lewin.jobs.cli import bundled_sample
from lewin.jobs.ingest import ingest, sources_under
from lewin.jobs.tables import TableStore
from lewin.schemas import shards as S
from lewin.schemas import tables as T
from lewin.schemas.config import load_config

from .conftest import ENGINE

pytestmark = pytest.mark.skipif(ENGINE != "embedded", reason="reuses the CLI's sample run (default engine)")

LOU = "long_history_lou"  # the sample's Reddit user with the longest history: gold in every artifact
USER = "reddit:Long_History_Lou"  # as a request may spell it: matching ignores case
SALT = "leak-test-key"  # the key the shared sample run scrubbed with


# --- reading the copy, independently of the engine ---------------------------------------------
def _tables(root: Path) -> list[str]:
    """Lewin's tables (scratch tables aside: the file scan covers them)."""
    return sorted(p.name for p in root.iterdir() if (p / "_delta_log").is_dir() and not p.name.startswith("_"))


def _rows(root: Path, name: str) -> list[dict]:
    return DeltaTable(str(root / name)).to_pyarrow_table().to_pylist()


def _dump(rows) -> str:
    return json.dumps(rows, default=str, ensure_ascii=False, sort_keys=True)


def _canon(rows: list[dict]) -> list[str]:
    return sorted(_dump(r) for r in rows)


def _is_lou(r: dict) -> bool:
    return r.get("source") == "reddit" and (r.get("user_id") or "").lower() == LOU


def _file_text(f: Path) -> str:
    if f.suffix == ".parquet":  # compressed: the decoded rows (data files, shards, log checkpoints)
        return _dump(pq.read_table(f).to_pylist()).lower()
    return f.read_bytes().decode("utf-8", "replace").lower()


def _versions(root: Path) -> dict[str, int]:
    return {t: DeltaTable(str(root / t)).version() for t in _tables(root)}


def _shard_hashes(root: Path) -> dict[str, str]:
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted((root / "shards").rglob("*")) if f.is_file()}


def _sentences(texts) -> list[str]:
    out = []
    for t in texts:
        out += [s.strip() for s in re.split(r"(?<=[.!?])\s+", t or "") if len(s.strip()) >= 25]
    return sorted(set(out))


# --- what the sample does not produce, added to the copy ---------------------------------------
def _inject(store: TableStore, root: Path) -> dict:
    """Another user's commenting sample on one of LOU's posts (+ its MCQ item and a distractor
    ledger row); two MCQ items of other users with LOU's answer as an ``other_user`` option (one
    replaceable from the pool, one not); two quarantine rows, one naming LOU."""
    spark = store.spark
    samples = _rows(root, "shard_samples")
    bronze = _rows(root, "bronze_reddit")
    comments = _rows(root, "bronze_reddit_comments")
    lou_posts = {r["record_id"]: r for r in bronze if r["user_id"] == LOU}
    reply = sorted((c for c in comments if c["user_id"] != LOU and f"reddit:{c['parent_id']}" in lou_posts),
                   key=lambda c: c["record_id"])[0]
    post = lou_posts[f"reddit:{reply['parent_id']}"]
    dep_id = hashlib.sha256(f"injected-dependent-{reply['record_id']}".encode()).hexdigest()
    dependent = {**samples[0], "sample_id": dep_id, "task": "personalized_commenting", "source": "reddit",
                 "user_id": reply["user_id"], "split": "test",
                 "artifact_ids": [reply["record_id"], post["record_id"]],
                 "messages": [{"role": "system", "content": "You write the comment a specific person would write."},
                              {"role": "user", "content": f"The post you reply to:\n{post['title']}\n{post['text']}\n\nWrite your comment."},
                              {"role": "assistant", "content": reply["text"]}],
                 "public_prompt": f"The post:\n{post['title']}\n{post['text']}\n\nWrite a comment on it.",
                 "candidates": None, "answer_index": None, "prompt_head": None}
    store.append("shard_samples", spark.createDataFrame([dependent], S.SHARD_SAMPLES))

    # one of LOU's answers nobody else gave (scripted model replies repeat across users)
    others = {s["messages"][-1]["content"] for s in samples if s["user_id"] != LOU}
    lou_answer = min((s for s in samples if s["user_id"] == LOU and s["messages"][-1]["content"] not in others),
                     key=lambda s: s["sample_id"])["messages"][-1]["content"]
    fillers = [f"an engine's option number {k}" for k in range(6)]

    def item(mcq_id, task, source, user, answer, lou_answer):
        opts = [answer] + fillers + [lou_answer]
        return {"mcq_id": mcq_id, "task": task, "source": source, "user_id": user,
                "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
                "options": opts, "answer_index": 0, "origins": ["real"] + ["engine:x"] * 6 + ["other_user"]}

    # a task other users have answers to (the pool a replacement comes from), asked of a user with none
    pool_task = min(s["task"] for s in samples if s["user_id"] != LOU and s["task"] != "item_selection")
    replaceable = item("injected-replaceable", pool_task, "reddit", "injected_asker", "the asker's own answer", lou_answer)
    # a task nobody else answered: no replacement, the question goes
    droppable = item("injected-droppable", "injected_task", "reddit", reply["user_id"], "an answer", lou_answer)
    dep_item = item(dep_id, "personalized_commenting", "reddit", reply["user_id"], reply["text"], "another comment entirely")
    dep_item["origins"][-1] = "engine:x"
    store.append("mcq_items", spark.createDataFrame([replaceable, droppable, dep_item], S.MCQ_ITEM))

    ledger_template = _rows(root, "llm_ledger")[0]
    store.append("llm_ledger", spark.createDataFrame([{**ledger_template, "ledger_key": "injected-distractor",
                                                        "artifact": "distractor", "input_id": f"{dep_id}#0",
                                                        "user_id": reply["user_id"], "source": "reddit"}],
                                                      T.LLM_LEDGER))
    q = _rows(root, "quarantine")[0]
    store.append("quarantine", spark.createDataFrame([
        {**q, "quarantine_id": "injected-lou", "source": "reddit", "reason": "malformed_json",
         "raw": '{"author": "Long_History_Lou", "title": "half a rec', "detail": None},
        {**q, "quarantine_id": "injected-other", "source": "reddit", "reason": "malformed_json",
         "raw": '{"author": "someone_else", "title": "half a rec', "detail": None}], T.QUARANTINE))
    # what a crashed run leaves: a scratch table (an ingest batch) and the shards' staging folder
    store.overwrite("_scratch_00000000_1_00000000_batch", store.read("bronze_reddit"))
    (root / "shards.old" / "test" / "jsonl").mkdir(parents=True)
    shutil.copy(next((root / "shards" / "test" / "jsonl").glob("*.jsonl")), root / "shards.old" / "test" / "jsonl")
    return {"dependent": dep_id, "post": post, "reply_user": reply["user_id"], "pool_task": pool_task,
            "lou_answer": lou_answer}


# --- the run -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def erased(sample_run, engine, tmp_path_factory):
    cwd, _ = sample_run
    work = tmp_path_factory.mktemp("forget")
    root = work / "lewin-data"
    shutil.copytree(cwd / "lewin-data", root, ignore=shutil.ignore_patterns("_locks"))
    cfg = load_config(None, [f"storage.root={root}", f"storage.database=fg_{uuid.uuid4().hex[:10]}",
                             "llm.profile=demo", f"pii.salt={SALT}"])
    store = TableStore(engine, cfg.storage)
    injected = _inject(store, root)
    before = {t: _rows(root, t) for t in _tables(root)}
    manifest_before = json.loads((root / "shards" / "manifest.json").read_text())
    t0 = time.perf_counter()
    result = forget_job.forget(store, cfg, [USER], vacuum=True)
    print(f"forget: {time.perf_counter() - t0:.1f}s", result)
    # the state right after forget (later tests rerun it and re-ingest)
    after = {t: _rows(root, t) for t in _tables(root)}
    files = {str(f.relative_to(root)): _file_text(f) for f in sorted(root.rglob("*")) if f.is_file()}
    # other users' samples built on the user's rows (the injected one, and any the run made: a
    # comment replying to one of their posts), which forget removes with their MCQ items and
    # distractor ledger rows
    refs = {r[k] for rows in before.values() for r in rows if _is_lou(r) for k in ("record_id", "ledger_key") if r.get(k)}
    dependents = {s["sample_id"] for s in before["shard_samples"]
                  if not _is_lou(s) and set(s["artifact_ids"] or ()) & refs}
    assert injected["dependent"] in dependents
    return {"root": root, "work": work, "cfg": cfg, "store": store, "before": before, "result": result,
            "injected": injected, "manifest_before": manifest_before, "after": after, "files": files,
            "dependents": dependents}


def _of_dependents(r: dict, dependents: set) -> bool:
    """A row of a sample built on the erased user's rows: the sample, its MCQ item, a distractor."""
    return (r.get("sample_id") in dependents or r.get("mcq_id") in dependents
            or (r.get("artifact") == "distractor" and (r.get("input_id") or "").split("#")[0] in dependents))


@pytest.fixture(scope="module")
def needles(erased):
    """LOU's id and two texts only they wrote: an original sentence (bronze, silver) and a scrubbed
    one (the scrubbed table, their timeline), each checked to be absent from every other row."""
    before, inj = erased["before"], erased["injected"]
    others = []
    for t, rows in before.items():
        for r in rows:
            if _is_lou(r) or t in ("rejected", "quarantine", "runs"):
                continue
            if _of_dependents(r, erased["dependents"]):
                continue
            if r.get("sample_id") == inj["dependent"] or r.get("mcq_id") in (inj["dependent"], "injected-replaceable",
                                                                                "injected-droppable"):
                continue
            if r.get("ledger_key") == "injected-distractor":
                continue
            others.append(r)
    blob = _dump(others)
    unique = lambda s: s not in blob and s[:24] not in blob and '"' not in s and "\\" not in s  # noqa: E731
    original = next(s for s in _sentences(r["text"] for r in before["bronze_reddit"] if r["user_id"] == LOU) if unique(s))
    scrubbed = next(s for s in _sentences(r["text"] for r in before["silver_records_scrubbed"] if r["user_id"] == LOU)
                    if unique(s) and s not in original)
    for text, where in ((original, ("bronze_reddit", "silver_records")), (scrubbed, ("silver_records_scrubbed", "users"))):
        for t in where:
            assert text in _dump(before[t]), (t, "the check below could not fail")
    return [LOU, original, scrubbed]


def test_the_user_is_nowhere_in_any_table_or_file(erased, needles):
    result, before, after = erased["result"], erased["before"], erased["after"]
    assert result.newly_erased == 1 and result.users_found == 1 and result.shards_rewritten
    tables_with_lou = [t for t, rows in before.items() if any(_is_lou(r) for r in rows)]
    # mcq_items is not required: whether the user's questions survive depends on the tiny model's
    # distractors (a question short of distinct options is dropped), which vary from run to run
    assert len(tables_with_lou) >= 24 and {"bronze_reddit", "users", "llm_ledger", "gold_persona"} <= set(
        tables_with_lou)
    # every column of every table, as strings
    for t, rows in after.items():
        blob = _dump(rows).lower()
        assert not [n for n in needles if n.lower() in blob], t
    # every file under the storage root, vacuumed history included: data files, Delta logs and
    # checkpoints, shards, MCQ sets, manifest
    files = erased["files"]
    assert any(f.startswith("shards/mcq/") for f in files) and any(f.endswith(".checkpoint.parquet") for f in files)
    for f, text in files.items():
        assert not [n for n in needles if n.lower() in text], f
    # per table, the rows deleted are LOU's (and the injected rows built on LOU's post)
    for t in tables_with_lou:
        if t not in ("shard_samples", "mcq_items", "llm_ledger"):
            assert result.deleted[t] == sum(map(_is_lou, before[t])), t
    deps = erased["dependents"]
    of_deps = lambda t: sum(not _is_lou(r) and _of_dependents(r, deps) for r in before[t])  # noqa: E731
    assert result.deleted["llm_ledger"] == sum(map(_is_lou, before["llm_ledger"])) + of_deps("llm_ledger") >= 1  # + the dependents' distractors
    assert result.dependent_samples == len(deps) and result.deleted["shard_samples"] == sum(map(_is_lou, before["shard_samples"])) + len(deps)
    # + the dependents' items, the droppable
    assert result.deleted["mcq_items"] == sum(map(_is_lou, before["mcq_items"])) + of_deps("mcq_items") + 1 >= 2
    lou_records = {r["record_id"] for t in ("bronze_reddit", "bronze_reddit_comments") for r in before[t] if r["user_id"] == LOU}
    assert result.deleted["rejected"] == sum(r["record_id"] in lou_records for r in before["rejected"]) > 0
    assert result.deleted["quarantine"] == 1  # the injected row naming them
    assert sorted(result.leftovers_removed) == ["_scratch_00000000_1_00000000_batch", "shards.old"]
    assert not [f for f in files if f.startswith(("_scratch_", "shards.old"))]
    assert result.vacuumed and not result.not_vacuumed


def test_other_users_are_untouched(erased):
    before, after, inj, result = erased["before"], erased["after"], erased["injected"], erased["result"]
    lou_records = {r["record_id"] for t in ("bronze_reddit", "bronze_reddit_comments") for r in before[t] if r["user_id"] == LOU}
    injected_rows = {inj["dependent"], "injected-replaceable", "injected-droppable", "injected-distractor", "injected-lou"}
    assert set(after) == set(before) | {"erasures"}
    for t, rows in before.items():
        keep = [r for r in rows if not _is_lou(r) and not _of_dependents(r, erased["dependents"]) and not injected_rows & {
            r.get(k) for k in ("sample_id", "mcq_id", "ledger_key", "quarantine_id")}]
        if t == "rejected":  # LOU's rows go; a detail naming one of LOU's records keeps its rule, the id replaced
            expect, redacted = [], 0
            for r in keep:
                if r["record_id"] in lou_records:
                    continue
                detail = r["detail"]
                for rid in lou_records:
                    detail = re.sub(rf"{re.escape(rid)}(?![\w:.-])", "[erased]", detail) if detail else detail
                redacted += detail != r["detail"]
                expect.append({**r, "detail": detail})
            assert _canon(after[t]) == _canon(expect)
            assert result.updated["rejected"] == redacted > 0
        elif t == "runs":
            new = [r for r in after[t] if _dump(r) not in set(_canon(rows))]
            assert len(after[t]) == len(rows) + 1 and [r["stage"] for r in new] == ["forget"]
        else:  # (the injected MCQ item that stays, changed, is checked below)
            assert _canon([r for r in after[t] if r.get("mcq_id") != "injected-replaceable"]) == _canon(keep), t
    # the injected MCQ items: the replaceable option now holds the first other answer of emit's pool
    seed = erased["cfg"].emit.seed
    pool = sorted(((s["user_id"], s["messages"][-1]["content"]) for s in before["shard_samples"]
                   if s["task"] == inj["pool_task"] and not _is_lou(s) and s["sample_id"] not in erased["dependents"]),
                  key=lambda p: hashlib.sha256(f"{seed}:{p[0]}:{p[1]}".encode()).hexdigest())
    assert pool
    items = {i["mcq_id"]: i for i in after["mcq_items"]}
    assert "injected-droppable" not in items and inj["dependent"] not in items
    replaced = items["injected-replaceable"]
    assert replaced["options"][-1] == pool[0][1].strip() and replaced["origins"][-1] == "other_user"
    assert inj["lou_answer"] not in _dump(after["mcq_items"])
    assert result.mcq_options_replaced == 1 and result.mcq_items_dropped == 1
    # the quarantine row not naming LOU stays
    assert "injected-other" in {r["quarantine_id"] for r in after["quarantine"]}


def test_shards_are_rewritten_from_the_updated_tables(erased):
    root = erased["root"]
    shards = root / "shards"
    manifest = json.loads((shards / "manifest.json").read_text())
    samples = erased["after"]["shard_samples"]
    for split in ("train", "test"):
        n = sum(len(pq.read_table(f)) for f in (shards / split / "parquet").glob("*.parquet")) if (shards / split).is_dir() else 0
        assert n == sum(s["split"] == split for s in samples)
        assert sum(v for t in manifest["counts"].get(split, {}).values() for v in t.values()) == n
    for f in manifest["files"]:
        assert hashlib.sha256((shards / f["path"]).read_bytes()).hexdigest() == f["sha256"], f["path"]
    mcq = [json.loads(line) for f in (shards / "mcq").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert sorted(i["mcq_id"] for i in mcq) == sorted(i["mcq_id"] for i in erased["after"]["mcq_items"])
    assert manifest["mcq_dropped_too_few_options"] == erased["manifest_before"]["mcq_dropped_too_few_options"] + 1
    assert not (shards / forget_job.PENDING_MARKER).exists()


def test_the_erasure_is_recorded_without_the_id(erased):
    rows = erased["after"]["erasures"]
    assert len(rows) == 1
    r = rows[0]
    assert set(r) == set(T.ERASURES.fieldNames()) and r["source"] == "reddit" and re.fullmatch(r"[0-9a-f]{64}", r["erasure_id"])
    assert LOU not in _dump(rows).lower() and SALT not in _dump(rows)
    # keyed: the plain SHA-256 of the id (with or without the source) is not what is stored
    for plain in (LOU, f"reddit:{LOU}", f"reddit\x1f{LOU}"):
        assert hashlib.sha256(plain.encode()).hexdigest() != r["erasure_id"]
    # the runs row counts, names no one
    run = [x for x in erased["after"]["runs"] if x["stage"] == "forget"]
    assert len(run) == 1 and run[0]["rejected"] == 1 and LOU not in run[0]["detail"].lower()


def test_a_rerun_changes_nothing(erased):
    root, store, cfg = erased["root"], erased["store"], erased["cfg"]
    versions, shards = _versions(root), _shard_hashes(root)
    listing = sorted(str(p.relative_to(root)) for p in root.rglob("*") if "runs" not in p.parts)
    again = forget_job.forget(store, cfg, [f"reddit:{LOU}", f"  REDDIT:{LOU.upper()}  "], vacuum=True)
    assert again.requested == 1 and again.already_erased == 1 and not again.changed
    assert again.deleted == {} and again.vacuumed == {}
    assert {t: v for t, v in _versions(root).items() if t != "runs"} == {t: v for t, v in versions.items() if t != "runs"}
    assert _shard_hashes(root) == shards
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if "runs" not in p.parts) == listing


def test_reingesting_the_dump_brings_nothing_back(erased):
    """The same dump, copied to new paths (so the ingest log does not skip it), plus a file with
    three bad records: two of LOU's (a record without a time, a cut-off line naming them) and one of
    someone else. LOU's are dropped as erased_user and counted; the funnel reconciles."""
    root, store, cfg, before = erased["root"], erased["store"], erased["cfg"], erased["before"]
    dump = erased["work"] / "dump"
    shutil.copytree(bundled_sample(), dump, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (dump / "reddit" / "late.jsonl").write_text(
        json.dumps({"id": "late1", "author": LOU, "title": "no time", "selftext": "a record without its time"}) + "\n"
        + '{"author": "Long_History_Lou", "title": "cut off\n'
        + '{"author": "someone_else", "title": "cut off\n')
    first = {}
    for r in before["runs"]:
        if r["stage"] == "ingest":
            f = first.setdefault(r["source"], Counter())
            f.update({k: r[k] for k in ("records_in", "kept", "duplicates", "rejected", "quarantined")})
    lou_in_bronze = sum(r["user_id"] == LOU for t in ("bronze_reddit", "bronze_reddit_comments") for r in before[t])
    bronze_before = {t: _canon(_rows(root, t)) for t in _tables(root) if t.startswith("bronze_")}
    for source, paths in sources_under(str(dump)).items():
        res = ingest(store, cfg, source, paths)
        f = first[source]
        assert res.reconciles and res.kept == 0, (source, res)
        extra = 3 if source == "reddit" else 0
        assert res.records_in == f["records_in"] + extra
        assert res.quarantined == f["quarantined"] + (1 if source == "reddit" else 0)
        if source == "reddit":
            assert res.erased == lou_in_bronze + 2 and res.erased > 2
            assert res.funnel().rejected == res.erased and res.funnel().detail["erased_user"] == res.erased
        else:
            assert res.erased == 0
    assert {t: _canon(_rows(root, t)) for t in bronze_before} == bronze_before
    for t in ("quarantine", *bronze_before):
        assert LOU not in _dump(_rows(root, t)).lower(), t
    assert any("someone_else" in (q["raw"] or "") for q in _rows(root, "quarantine") if q["quarantine_id"] != "injected-other")
    again = forget_job.forget(store, cfg, [USER])
    assert again.users_found == 0 and again.deleted == {}


def test_ingest_refuses_erasures_recorded_under_another_key(erased, tmp_path):
    store = erased["store"]
    other = erased["cfg"].model_copy(update={"pii": erased["cfg"].pii.model_copy(update={"salt": "another-key"})})
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "x.jsonl").write_text(json.dumps({"id": "k1", "author": "a", "title": "t", "selftext": "x",
                                                        "created_utc": 1600000000}) + "\n")
    with pytest.raises(forget_job.ErasureKeyMismatch, match="another PII key"):
        ingest(store, other, "reddit", [str(tmp_path / "r")])
    with pytest.raises(forget_job.ErasureKeyMismatch):
        forget_job.forget(store, other, [USER])


# --- pure parts ----------------------------------------------------------------------------------
def test_user_ids_are_parsed_strictly_and_reported_by_position():
    assert forget_job.parse_user_ids(["reddit:a", "", "# comment", " Twitter:B ", "reddit:a"]) == [
        ("reddit", "a"), ("twitter", "B")]
    with pytest.raises(ValueError, match=r"entries 2, 3, 4$") as e:
        forget_job.parse_user_ids(["reddit:ok", "secret_name", "nosuchsource:x", "reddit:"])
    assert "secret_name" not in str(e.value)
    with pytest.raises(ValueError, match="no user"):
        forget_job.parse_user_ids(["", "# only comments"])


def test_erased_options_are_replaced_from_the_pool_or_the_question_dropped():
    from lewin.udfs.mcq import norm

    item = {"mcq_id": "q", "user_id": "u1", "options": ["real", "Gone answer!", "e1"], "origins": ["real", "other_user", "engine:m"]}
    erased = {norm("gone answer")}
    pool = [("u1", "mine"), ("u9", "gone answer"), ("u2", "E1"), ("u3", " fresh ")]
    new, n = forget_job.replace_erased_options(item, erased, pool)
    assert n == 1 and new["options"] == ["real", "fresh", "e1"] and new["origins"] == item["origins"]
    assert forget_job.replace_erased_options(item, erased, pool[:3]) == (None, 0)
    untouched = {**item, "origins": ["real", "engine:m", "engine:m"]}  # an engine's text equal to an erased answer stays
    assert forget_job.replace_erased_options(untouched, erased, []) == (untouched, 0)


def test_cli_refuses_bad_ids_by_position_never_echoing_them(tmp_path):
    """`lewin forget`: a bad entry is named by its option and position, exit 2, before any engine;
    the ids themselves are never printed."""
    import subprocess
    import sys

    ids = tmp_path / "ids.txt"
    ids.write_text("# erase these\nreddit:secret_person_a\nnot-an-id-secret_b\n")
    base = [sys.executable, "-m", "lewin.jobs.cli", "--set", f"storage.root={tmp_path / 'root'}", "forget"]
    for args, where in ((["--file", str(ids)], "--file"), (["--user", "secret_c"], "--user"), ([], "--user")):
        p = subprocess.run(base + args, capture_output=True, text=True, timeout=120)
        out = p.stdout + p.stderr
        assert p.returncode == 2 and where in out and "Traceback" not in out, out
        assert "secret" not in out, out
    assert not (tmp_path / "root").exists(), "nothing is created before the ids are valid"
