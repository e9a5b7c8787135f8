"""Training shards and MCQ sets: task builders on a fixture with known answers, user-disjoint split,
balance, byte-identical reruns, MCQ construction (options, distractors, positions), loaders."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from lewin.jobs.emit import cell_caps, emit
from lewin.jobs.engine import Engine
from lewin.jobs.llm import backend_spec
from lewin.jobs.tables import TableStore
from lewin.schemas import shards as S
from lewin.schemas import tables as T
from lewin.udfs import mcq
from lewin.udfs.llm_backends import Response, register_backend

from .conftest import ENGINE

pytestmark = pytest.mark.skipif(ENGINE != "embedded", reason="emit is exercised end to end on the embedded engine")

T0 = datetime(2021, 3, 1, 12, 0, 0)
N_WRITERS = 24  # reddit/blogger/twitter users with 3 posts each
N_BUYERS = 6  # amazon users with 4 purchases each, from a 30-item catalogue
CATALOGUE = [f"B{i:03d}" for i in range(30)]
GOLD_USERS = [f"w{i:02d}" for i in range(6)]  # reddit writers with gold persona, profile, scenarios, QA
STYLE_USERS = GOLD_USERS[:3]
COMMENTERS = [f"c{i}" for i in range(4)]  # 3 comments each, answering posts in the data


def _row(schema, **values):
    """A tuple for ``schema``; required fields the test does not care about get a filler."""
    from pyspark.sql.types import BooleanType, IntegerType, LongType, TimestampType

    def filler(f):
        if f.nullable:
            return None
        return {TimestampType: T0, LongType: 0, IntegerType: 0, BooleanType: False}.get(type(f.dataType), "x")

    return tuple(values[f.name] if f.name in values else filler(f) for f in schema.fields)


def _timeline(source, user, n, items=None):
    recs = []
    for k in range(n):
        recs.append(_row(T.TIMELINE_RECORD, event_ts=T0 + timedelta(days=k), record_id=f"{source}:{user}:{k}",
                         title=f"Title {user} {k}" if source == "reddit" else None,
                         text=f"Post {k} by {user}: yesterday I walked to the harbour and watched the fishing boats come in.",
                         item_id=items[k] if items else None, rating=4.0 if items else None))
    return _row(T.USERS, source=source, user_id=user, n_records=n, first_ts=recs[0][0], last_ts=recs[-1][0],
                mean_chars=80.0, active_days=n, records=recs, records_checksum=1, _users_run_id="r")


def _gold(artifact, source, user, output, record_id=None, key=None, input_id=None):
    return _row(T.JUDGED, artifact=artifact, input_id=input_id or record_id or f"{source}:{user}", user_id=user, source=source,
                record_id=record_id, output=json.dumps(output), prompt_version="v1", model="m",
                ledger_key=key or f"{artifact}-{user}-{record_id}", judge_model="m", judge_prompt_version="j1",
                scores={"overall": 9}, overall=9, reasons="", accepted=True)


def seed_fixture(store: TableStore, spark) -> None:
    sources = ["reddit", "blogger", "twitter"]
    users = [_timeline(sources[i % 3] if f"w{i:02d}" not in GOLD_USERS else "reddit", f"w{i:02d}", 3) for i in range(N_WRITERS)]
    for b in range(N_BUYERS):
        users.append(_timeline("amazon", f"a{b}", 4, items=CATALOGUE[b * 4:b * 4 + 4]))
    store.overwrite("users", spark.createDataFrame(users, T.USERS))
    persona, profile, scen, qa, style = [], [], [], [], []
    for u in GOLD_USERS:
        persona.append(_gold("persona", "reddit", u, {"persona": f"{u} is a harbour-town baker."}))
        profile.append(_gold("profile", "reddit", u, {"profile": f"{u} bakes bread at dawn and writes about the sea."}))
        rid = f"reddit:{u}:2"
        scen.append(_gold("scenario", "reddit", u, {"background": f"A storm hits {u}'s town.", "characters": [u, "a neighbour"],
                                                    "plots": f"{u} shelters the neighbour and they bake together."}, rid))
        # gold keeps QA items (each judged on its own): one row per item, input_id "<record>#<n>"
        for n, item in enumerate([
                {"type": "action", "scenario": "A storm hits.", "question": "What does the baker do?", "answer": f"{u} opens the bakery."},
                {"type": "inner_state", "scenario": "A storm hits.", "question": "How does the baker feel?", "answer": f"{u} feels calm."}]):
            qa.append(_gold("social_qa", "reddit", u, item, rid, key=f"social_qa-{u}-{rid}", input_id=f"{rid}#{n}"))
    for u in STYLE_USERS:
        style.append(_gold("writing_style", "reddit", u, {"style": "short, warm sentences about the sea"}))
    for name, rows in [("gold_persona", persona), ("gold_profile", profile), ("gold_scenario", scen),
                       ("gold_social_qa", qa), ("gold_writing_style", style)]:
        store.overwrite(name, spark.createDataFrame(rows, T.JUDGED))
    # comments: each commenter answers three posts written by the reddit writers (in silver)
    scrubbed = []
    for i in range(N_WRITERS):
        scrubbed.append(_row(T.SILVER_RECORDS_SCRUBBED, record_id=f"reddit:t3_p{i}", source="reddit", user_id=f"w{i:02d}",
                             event_ts=T0, title=f"Post title {i}", text=f"A post about boats number {i}.",
                             text_hash=str(i), scrub_version="s", _scrub_run_id="r", _bronze_run_id="b", _curate_run_id="c"))
    for c, user in enumerate(COMMENTERS):
        for k in range(3):
            rid = f"reddit:t1_{user}{k}"
            # silver carries which post a comment answers (parent_id); emit reads no bronze table
            scrubbed.append(_row(T.SILVER_RECORDS_SCRUBBED, record_id=rid, source="reddit", user_id=user,
                                 event_ts=T0 + timedelta(hours=k), text=f"Comment {k} by {user}: lovely boats!",
                                 parent_id=f"t3_p{(c * 3 + k) % N_WRITERS}",
                                 text_hash=rid, scrub_version="s", _scrub_run_id="r", _bronze_run_id="b", _curate_run_id="c"))
    store.overwrite("silver_records_scrubbed", spark.createDataFrame(scrubbed, T.SILVER_RECORDS_SCRUBBED))
    names = T.SILVER_RECORDS_SCRUBBED.fieldNames()
    labels = [_row(T.RECORD_LABELS, **{k: r[names.index(k)] for k in ("record_id", "source", "user_id")}, keep=True,
                   gate="kept", _label_run_id="l") for r in scrubbed]
    store.overwrite("record_labels", spark.createDataFrame(labels, T.RECORD_LABELS))
    items = [_row(T.SILVER_ITEMS, item_id=i, source="amazon", title=f"Product {i}", _bronze_run_id="b",
                  _curate_run_id="c") for i in CATALOGUE]
    store.overwrite("silver_items", spark.createDataFrame(items, T.SILVER_ITEMS))


DISTRACTOR_MODELS = ("scripted-a", "scripted-b", "scripted-c")  # 3 engines for 7 slots: rounds 0, 1, 2


class _DistractorDouble:
    """One scripted distractor engine: answers from the request alone, with as many words as the
    prompt's length budget asks for (its lower bound + 2), naming its model and seed. ``scripted-b``
    fails on every writing-imitation request, ``scripted-c`` answers social QA far over budget in
    its second round, so those questions lack distinct options and are dropped."""

    name = "scripted"
    context_tokens = 4096

    def __init__(self, model):
        self.model = model
        self.calls = 0
        self.requests = []
        self.max_tokens = []  # (the request, its reply budget)

    def count_tokens(self, messages):
        return sum(len(m["content"]) for m in messages) // 4

    def generate(self, requests, sampling):
        import re

        self.calls += len(requests)
        out = []
        for r in requests:
            self.requests.append((self.model, r.sampling.seed, r.messages))
            user = r.messages[1]["content"]
            self.max_tokens.append((user, r.sampling.max_tokens))
            m = re.search(r"Reply in (?:at most (\d+)|(\d+)-(\d+)) words", user)
            words = int(m.group(2)) + 2 if m.group(2) else 3
            if self.model == "scripted-b" and "Write a new post" in user:
                out.append(Response(r.key, error="engine error: simulated"))
                continue
            if self.model == "scripted-c" and r.sampling.seed == 1 and "Question (" in user:
                words = 150
            text = " ".join([f"{self.model}-s{r.sampling.seed}"] + [f"w{i}" for i in range(words - 1)])
            out.append(Response(r.key, json.dumps({"text": text}), 5, 5, 1))
        return out


class _Doubles:
    def __init__(self, doubles):
        self.by_model = {d.model: d for d in doubles}

    @property
    def calls(self):
        return sum(d.calls for d in self.by_model.values())

    @property
    def requests(self):
        return [x for d in self.by_model.values() for x in d.requests]


def _emit_fixture(tmp, engine, **emit_overrides):
    """The seeded tables and one emit over them, in a store and database of their own."""
    import uuid

    from lewin.jobs.emit import slot_config
    from lewin.schemas.config import LewinConfig, LlmEngineConfig, StorageConfig

    cfg = LewinConfig(storage=StorageConfig(root=tmp / "tables", database=f"t_{uuid.uuid4().hex[:10]}"))
    inline = Engine(engine.spark, engine.kind, 1, engine.table_format)  # one process: the doubles are visible
    store = TableStore(inline, cfg.storage)
    seed_fixture(store, engine.spark)
    cfg.llm.engine.model = "scripted"
    cfg.llm.max_attempts = 2
    cfg.emit.test_fraction = 0.4
    cfg.emit.seed = 7
    cfg.emit.max_per_task = 10_000
    cfg.emit.mcq_max_per_task = 4
    cfg.emit.out_dir = tmp / "shards"
    cfg.emit.distractor_engines = [LlmEngineConfig(model=m) for m in DISTRACTOR_MODELS]
    for k, v in emit_overrides.items():
        setattr(cfg.emit, k, v)
    doubles = _Doubles([_DistractorDouble(m) for m in DISTRACTOR_MODELS])
    for e in cfg.emit.distractor_engines:
        register_backend(backend_spec(slot_config(cfg, e, 0)), doubles.by_model[e.model])
    result = emit(store, cfg)
    return store, cfg, result, doubles


@pytest.fixture(scope="module")
def emitted(tmp_path_factory, engine):
    """Built once for the module: the tests that use it only read its tables and files."""
    return _emit_fixture(tmp_path_factory.mktemp("emitted"), engine)


@pytest.fixture
def emitted_private(tmp_path, engine):
    """For a test that writes (reruns emit, changes the seed)."""
    return _emit_fixture(tmp_path, engine)


def _files(root):
    root = Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_task_is_built_with_the_expected_counts(emitted):
    store, cfg, r, _ = emitted
    per_task = Counter()
    for split in r.counts.values():
        for task, by_src in split.items():
            per_task[task] += sum(by_src.values())
    assert dict(per_task) == {
        "profile_generation": len(GOLD_USERS),
        "scenario_generation": len(GOLD_USERS),
        "social_qa": 2 * len(GOLD_USERS),
        "writing_imitation": N_WRITERS + N_BUYERS,
        "personalized_commenting": len(COMMENTERS) * 2,  # every comment but each user's first has a history
        "item_selection": N_BUYERS,
    }
    rows = {(x["task"], x["user_id"]): x for x in store.read("shard_samples").collect()}
    wi = rows[("writing_imitation", "w06")]
    assert wi["messages"][2]["content"].startswith("Post 2 by w06"), "the latest post is the answer"
    assert "Post 0 by w06" in wi["messages"][1]["content"] and "Post 2 by w06" not in wi["messages"][1]["content"]
    assert "Write a new post about: Title w06 2" in wi["messages"][1]["content"]
    qa = [x for (t, u), x in rows.items() if t == "social_qa"][0]
    assert "harbour-town baker" in qa["messages"][1]["content"] and "harbour-town" not in qa["public_prompt"]
    item = rows[("item_selection", "a2")]
    assert len(item["candidates"]) == 20 and len(set(item["candidates"])) == 20
    assert item["candidates"][item["answer_index"]] == item["messages"][2]["content"] == "Product B011 [item B011]"
    owned_before = {"B008", "B009", "B010"}
    assert not any(f"[item {i}]" in c for c in item["candidates"] for i in owned_before), "no candidate from the history"
    com = [x for (t, u), x in rows.items() if t == "personalized_commenting"][0]
    assert "The post you reply to:" in com["messages"][1]["content"] and com["messages"][1]["content"].count("Comment ") >= 1
    for x in rows.values():
        S.ShardRecord.model_validate({k: x[k] for k in S.ShardRecord.model_fields} | {
            "messages": [m.asDict() for m in x["messages"]]})


def test_split_is_by_user_and_files_are_loadable(emitted):
    store, cfg, r, _ = emitted
    root = Path(r.out_dir)
    users = {s: {(x["source"], x["user_id"]) for x in store.read("shard_samples").where(F.col("split") == s).collect()}
             for s in ("train", "test")}
    assert users["train"] and users["test"] and not users["train"] & users["test"]
    manifest = json.loads((root / "manifest.json").read_text())
    info = json.loads((root / "dataset_info.json").read_text())
    assert info["lewin_train"] == {"file_name": "train/parquet", "formatting": "sharegpt", "columns": {"messages": "messages"},
                                   "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                            "assistant_tag": "assistant", "system_tag": "system"}}
    import hashlib

    for f in manifest["files"]:
        assert hashlib.sha256((root / f["path"]).read_bytes()).hexdigest() == f["sha256"]
    assert set(manifest["upstream_delta_versions"]) >= {"users", "gold_persona"}
    datasets = pytest.importorskip("datasets")
    train = datasets.load_dataset("parquet", data_dir=str(root / "train" / "parquet"), split="train")
    train_json = datasets.load_dataset("json", data_dir=str(root / "train" / "jsonl"), split="train")
    assert len(train) == len(train_json) == sum(sum(v.values()) for v in r.counts["train"].values())
    assert train[0]["messages"][0]["role"] == "system" and train[0]["messages"][-1]["role"] == "assistant"


def test_same_input_and_seed_give_byte_identical_files_and_a_rerun_changes_no_table(emitted_private):
    store, cfg, r, double = emitted_private
    first = _files(r.out_dir)
    versions = {t: store.version(t) for t in ("shard_samples", "mcq_items")}
    calls = double.calls
    r2 = emit(store, cfg)
    assert _files(r2.out_dir) == first
    assert {t: store.version(t) for t in versions} == versions, "a rerun writes no new table version"
    assert double.calls == calls, "distractors come from the ledger on a rerun"
    cfg.emit.seed = 8
    emit(store, cfg)
    assert _files(r.out_dir) != first, "another seed, another split and sample"


def _mcq_items(r):
    return [json.loads(line) for p in sorted((Path(r.out_dir) / "mcq").glob("*.jsonl")) for line in p.read_text().splitlines()]


def test_mcq_items_options_positions_and_distractors(emitted):
    store, cfg, r, double = emitted
    items = _mcq_items(r)
    by_task = Counter(i["task"] for i in items)
    assert by_task["item_selection"] >= 1 and len(by_task) >= 3
    real_answers = {(x["task"], x["sample_id"]): x["messages"][2]["content"] for x in store.read("shard_samples").collect()}
    for it in items:
        S.McqRecord.model_validate(it)
        n = 20 if it["task"] == "item_selection" else 8
        assert len(it["options"]) == n and len(set(o.lower() for o in it["options"])) == n
        assert it["options"][it["answer_index"]] == real_answers[(it["task"], it["mcq_id"])]
        assert it["origins"][it["answer_index"]] == "real" and it["origins"].count("real") == 1
        if it["task"] == "item_selection":
            numbered = it["messages"][1]["content"].split(mcq.CANDIDATES_HEADER)[1]
            assert f"{it['answer_index'] + 1}. {it['options'][it['answer_index']]}" in numbered
    for task in by_task:
        pos = Counter(i["answer_index"] for i in items if i["task"] == task)
        per_position = [pos.get(k, 0) for k in range(20 if task == "item_selection" else 8)]
        assert max(per_position) - min(per_position) <= 1, (task, per_position)
    # distractor prompts never carry the user's own history, persona or style
    for _, _, messages in double.requests:
        text = messages[1]["content"]
        assert "earlier posts" not in text and "About the person" not in text and "writing style" not in text


def test_an_8_way_item_gets_one_option_per_engine_slot_within_the_task_budget(emitted):
    """7 slots over 3 configured engines: a, b, c, a#1, b#1, c#1, a#2 — each a different engine
    or seed, each answering the task's own request (its system prompt + public_prompt) with the
    task's length budget, and each option within that budget."""
    from lewin.jobs.emit import distractor_budgets

    store, cfg, r, double = emitted
    slots = [(s["model"], s["round"], s["seed"], s["origin"]) for s in r.distractor_plan]
    assert slots == [("scripted-a", 0, 0, "engine:scripted-a#0"), ("scripted-b", 0, 0, "engine:scripted-b#0"),
                     ("scripted-c", 0, 0, "engine:scripted-c#0"), ("scripted-a", 1, 1, "engine:scripted-a#1"),
                     ("scripted-b", 1, 1, "engine:scripted-b#1"), ("scripted-c", 1, 1, "engine:scripted-c#1"),
                     ("scripted-a", 2, 2, "engine:scripted-a#2")]
    budgets = distractor_budgets(cfg)
    assert budgets["profile_generation"] == (cfg.llm.profile_min_words, cfg.llm.profile_max_words) == (100, 400)
    eight_way = [it for it in _mcq_items(r) if it["task"] != "item_selection"]
    assert {it["task"] for it in eight_way} >= {"profile_generation", "scenario_generation"}
    expected_origins = {o for *_, o in slots}
    for it in eight_way:
        others = [(o, t) for o, t in zip(it["origins"], it["options"]) if o != "real"]
        assert {o for o, _ in others} == expected_origins, it["origins"]  # one option from every slot
        lo, hi = budgets[it["task"]]
        for origin, text in others:
            model, seed = text.split()[0].rsplit("-s", 1)
            assert origin.startswith(f"engine:{model}#") and lo <= len(text.split()) <= hi
    profile = next(it for it in eight_way if it["task"] == "profile_generation")
    assert all(len(t.split()) >= 100 for t, o in zip(profile["options"], profile["origins"]) if o != "real")
    # the request each engine answered: the task's system prompt and its public prompt, with the budget
    samples = {x["sample_id"]: x for x in store.read("shard_samples").collect()}
    asked = [(m, seed, msgs) for m, seed, msgs in double.requests if msgs[1]["content"].startswith("Write a person's profile")]
    assert {(m, seed) for m, seed, _ in asked} >= {(m, s) for m, _, s, _ in slots}
    system = samples[profile["mcq_id"]]["messages"][0]["content"]
    assert all(msgs[0]["content"].startswith(system) and "Reply in 100-400 words" in msgs[1]["content"]
               for _, _, msgs in asked)
    # each request's reply budget is its own task's words, not the longest task's (a failed
    # 100-word answer does not ramble on to a profile's length)
    from lewin.schemas.llm import _text_tokens

    budgets_asked = [(user, n) for d in double.by_model.values() for user, n in d.max_tokens]
    assert {n for user, n in budgets_asked if user.startswith("Write a person's profile")} == {_text_tokens(words=400)}
    qa = {n for user, n in budgets_asked if "Question (" in user}
    assert qa == {_text_tokens(words=budgets["social_qa"][1])} and max(qa) < _text_tokens(words=400)


def test_a_question_without_enough_distinct_options_is_dropped_not_filled(emitted):
    store, cfg, r, double = emitted
    items = _mcq_items(r)
    # writing imitation: scripted-b failed its 2 slots -> 5 options; social QA: scripted-c#1 was over budget -> 6
    assert not any(it["task"] in ("writing_imitation", "social_qa") for it in items)
    assert not any("other_user" in it["origins"] for it in items)
    assert r.mcq_dropped_by_task["writing_imitation"] >= 1 and r.mcq_dropped_by_task["social_qa"] >= 1
    assert r.mcq_dropped == sum(r.mcq_dropped_by_task.values())
    assert r.distractors_out_of_budget == {"social_qa": r.mcq_dropped_by_task["social_qa"]}
    manifest = json.loads((Path(r.out_dir) / "manifest.json").read_text())
    assert manifest["mcq_dropped_too_few_options"] == r.mcq_dropped
    assert manifest["config"]["distractor_fill_other_users"] is False
    assert [e["model"] for e in manifest["config"]["distractor_engines"]] == list(DISTRACTOR_MODELS)
    assert "engine:scripted-a#2" in manifest["mcq"]["profile_generation"]["origins"]  # the repeats are named


def test_filling_with_other_users_answers_is_an_opt_in(tmp_path, engine):
    store, cfg, r, _ = _emit_fixture(tmp_path, engine, distractor_fill_other_users=True)
    items = _mcq_items(r)
    filled = [it for it in items if it["task"] == "writing_imitation"]
    assert filled and all("other_user" in it["origins"] for it in filled)
    assert r.mcq_dropped_by_task.get("writing_imitation", 0) == 0


def test_balance_gives_tasks_equal_budgets_split_over_sources():
    from lewin.schemas.config import LewinConfig

    counts = {("social_qa", "reddit"): 100, ("social_qa", "twitter"): 4, ("item_selection", "amazon"): 10,
              ("writing_imitation", "blogger"): 30, ("writing_imitation", "reddit"): 30, ("writing_imitation", "amazon"): 3}
    cfg = LewinConfig()
    caps = cell_caps(counts, cfg)  # task totals 104, 10, 63: the budget is the median, 63
    assert caps[("social_qa", "twitter")] == 4 and caps[("social_qa", "reddit")] == 59
    assert caps[("item_selection", "amazon")] == 10  # fewer than the budget: all of them
    assert caps[("writing_imitation", "amazon")] == 3 and caps[("writing_imitation", "blogger")] == 30
    cfg.emit.max_per_task = 10
    cfg.emit.task_weights = {"social_qa": 2.0}
    caps = cell_caps(counts, cfg)
    assert (caps[("social_qa", "reddit")], caps[("social_qa", "twitter")]) == (16, 4)
    assert [caps[("writing_imitation", s)] for s in ("amazon", "blogger", "reddit")] == [3, 4, 3]


def test_mcq_helpers():
    pos = mcq.balanced_positions([f"q{i}" for i in range(17)], 8, 1)
    c = Counter(pos.values())
    assert len(c) == 8 and max(c.values()) - min(c.values()) <= 1
    # a one-question set's answer is not always at A (a model that always answers A scores chance)
    singles = Counter(mcq.balanced_positions([f"only{i}"], 8, 1)[f"only{i}"] for i in range(40))
    assert len(singles) >= 6 and singles[0] < 15, singles
    opts, origins = mcq.choose_options("Yes.", [("yes. ", "engine:m"), ("No.", "engine:m"), ("no", "engine:m")],
                                       [("Maybe.", "other_user"), ("Later.", "other_user")], 3, 2)
    assert opts == ["No.", "Maybe.", "Yes."] and origins == ["engine:m", "other_user", "real"]
    assert mcq.choose_options("Yes.", [("No.", "e")], [], 3, 0) is None
    assert mcq.slot_plan(3, 7, 10) == [(0, 0, 10), (1, 0, 10), (2, 0, 10), (0, 1, 11), (1, 1, 11), (2, 1, 11), (0, 2, 12)]
    assert mcq.length_phrase((100, 400)) == "100-400 words" and mcq.length_phrase((1, 100)) == "at most 100 words"
    assert mcq.in_budget("a b c", (1, 3)) and not mcq.in_budget("a b c d", (1, 3)) and not mcq.in_budget("a", (2, 3))
