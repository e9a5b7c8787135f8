"""The second recipe (``lewin patterns``) end to end on a scripted OpenAI-compatible server
(tests/fake_openai.py answers each artifact from its per-request schema, with scripted faults),
plus the real tiny CPU model through ``lewin patterns run`` (slow).

One module-scoped run is shared by the checks; a SIGKILLed run is resumed in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from lewin.jobs.patterns import PATTERN_STAGES, judge_verdict, run_recipe
from lewin.jobs.tables import TableStore
from lewin.schemas.config import LewinConfig, StorageConfig
from lewin.udfs import pattern_replies as R
from lewin.udfs import patterns as P

from .conftest import CPU_SHARE
from .fake_openai import FakeOpenAI

CHUNK = 2


def _literature(tmp: Path) -> str:
    """The literature route's input for one pattern the starter library lacks: its papers' texts
    and its pattern.yaml."""
    lit = tmp / "literature" / "anchoring"
    lit.mkdir(parents=True)
    (lit / "pattern.yaml").write_text("name: Anchoring\ntype: social_cognitive_pattern\nreferences:\n"
                                      "  - 'Tversky, A., & Kahneman, D. (1974). Judgment under uncertainty. Science, 185, 1124-1131.'\n")
    (lit / "01_tversky.txt").write_text("Estimates start from an initial value and are adjusted insufficiently. " * 50)
    (lit / "02_review.md").write_text("Anchors bias numeric judgements even when they are arbitrary. " * 50)
    return str(tmp / "literature")


def _cfg(tmp: Path, url: str, db: str) -> LewinConfig:
    cfg = LewinConfig(storage=StorageConfig(root=tmp / "root", database=db))
    cfg.patterns.literature_dir = _literature(tmp)
    cfg.llm.engine.kind, cfg.llm.engine.model, cfg.llm.engine.base_url = "openai", "scripted", url
    cfg.llm.engine.timeout_s, cfg.llm.engine.max_retries = 5.0, 1
    cfg.llm.chunk_size, cfg.llm.max_attempts = CHUNK, 3
    pc = cfg.patterns
    pc.bundles, pc.bundle_sizes, pc.checklist_items = 8, {2: 1.0}, 2
    # the scripted screen rejects the bundles placed in the framework marked INCOHERENT
    pc.frameworks = ["a project post-mortem at work", "a family dinner about an ageing parent",
                     "a neighbourhood meeting about noise (INCOHERENT)"]
    pc.gold_individual_min, pc.gold_dynamics_min = 0.75, 0.75
    return cfg


@pytest.fixture(scope="module")
def recipe(engine, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("patterns")
    with FakeOpenAI() as srv:
        cfg = _cfg(tmp, srv.url, "patterns_" + tmp.name[-10:].replace("-", "_"))
        store = TableStore(engine, cfg.storage)
        funnels = run_recipe(store, cfg)
        first_calls = srv.total
        versions = {t: store.version(t) for t in ("patterns", "pattern_bundles", "pattern_scenes", "pattern_conversations",
                                                 "pattern_checklists", "pattern_judged", "roleplay_samples")}
        rerun = run_recipe(store, cfg)
        yield {"cfg": cfg, "store": store, "funnels": funnels, "rerun": rerun, "srv": srv, "first_calls": first_calls,
               "versions": versions, "rerun_calls": srv.total - first_calls,
               "rerun_versions": {t: store.version(t) for t in versions}}


def _rows(store, table):
    return [r.asDict(recursive=True) for r in store.read(table).collect()]


def test_every_stage_reports_a_reconciling_funnel_row(recipe):
    f = {x.stage: x for x in recipe["funnels"]}
    assert list(f) == [s.name for s in PATTERN_STAGES]
    assert all(x.reconciles for x in recipe["funnels"]), recipe["funnels"]
    assert f["patterns_library"].kept >= 25 and f["patterns_library"].records_in == f["patterns_library"].kept
    assert f["patterns_bundles"].records_in == 8


def test_the_literature_route_summarises_a_corpus_into_a_pattern_record(recipe):
    rows = {p["pattern_id"]: p for p in _rows(recipe["store"], "patterns")}
    lit = rows["anchoring"]
    assert lit["origin"] == "literature:scripted" and lit["name"] == "Anchoring"
    assert lit["references"][0].startswith("Tversky, A., & Kahneman, D. (1974)")
    assert lit["definition"].startswith("A tendency studied in the corpus")
    assert lit["core_mechanisms"] == ["a driver named in the corpus"]
    assert all(p["origin"].startswith("library:") for k, p in rows.items() if k != "anchoring")
    prompt = next(t for t in recipe["srv"].texts if "[START_CORPUS]" in t)
    assert "Strict Source Adherence" in prompt and "[01_tversky.txt]" in prompt and "[02_review.md]" in prompt


def test_bundles_are_balanced_and_an_incoherent_one_is_rejected_with_its_reason(recipe):
    bundles = _rows(recipe["store"], "pattern_bundles")
    assert len(bundles) == 8
    assert max(Counter(b["relation"] for b in bundles).values()) - min(Counter(b["relation"] for b in bundles).values()) <= 1
    rejected = [b for b in bundles if b["status"] == "rejected"]
    marked = [b for b in bundles if "INCOHERENT" in b["framework"]]
    assert len(marked) >= 2 and rejected == marked, "exactly the bundles the screen judged incoherent"
    assert Counter(b["framework"] for b in bundles).most_common()[-1][1] >= 2, "frameworks are balanced"
    assert all(b["reason"].startswith("incoherent: ") for b in rejected)
    assert all(len(b["candidate_names"]) == 10 and len(set(b["candidate_names"])) == 10 for b in bundles)


def test_a_scene_naming_someone_outside_the_candidates_is_retried_through_the_ledger(recipe):
    store = recipe["store"]
    scenes = [s for s in _rows(store, "pattern_scenes") if s["status"] == "ok"]
    bundles = {b["bundle_id"]: b for b in _rows(store, "pattern_bundles")}
    assert scenes and all(set(s["characters"]) <= set(bundles[s["bundle_id"]]["candidate_names"]) for s in scenes)
    ledger = store.read("llm_ledger").where(F.col("artifact") == "scene").collect()
    # the scripted first reply names "Zorblax": a failed attempt, then a valid scene
    assert ledger and all(r["status"] == "ok" and r["attempts"] == 2 for r in ledger)


def test_conversations_pass_the_validator_after_a_retry(recipe):
    store, cfg = recipe["store"], recipe["cfg"]
    convs = [c for c in _rows(store, "pattern_conversations") if c["status"] == "ok"]
    scenes = {s["bundle_id"]: s for s in _rows(store, "pattern_scenes")}
    patterns = {p["pattern_id"]: p["name"] for p in _rows(store, "patterns")}
    bundles = {b["bundle_id"]: b for b in _rows(store, "pattern_bundles")}
    assert convs
    for c in convs:
        s = scenes[c["bundle_id"]]
        assert P.validate_conversation(c["transcript"], protagonist=s["protagonist"], supporting=s["characters"][1:],
                                       pattern_names=[patterns[i] for i in bundles[c["bundle_id"]]["pattern_ids"]],
                                       min_turns=cfg.patterns.min_turns, max_turns=cfg.patterns.max_turns) == []
        assert c["transcript"].splitlines()[0].startswith(s["characters"][1] + ": [")
    ledger = store.read("llm_ledger").where(F.col("artifact") == "conversation").collect()
    assert all(r["attempts"] == 2 for r in ledger), "the first reply (opened by the protagonist) failed the validator"


def test_checklists_are_dual_level_and_the_gold_cut_follows_the_pass_rates(recipe):
    store, cfg = recipe["store"], recipe["cfg"]
    items = _rows(store, "pattern_checklists")
    assert {i["level"] for i in items} == {"pattern", "dynamics"}
    assert all(i["screen"] is None for i in items)
    assert all("X" in i["question"] for i in items if i["level"] == "pattern")
    judged = {j["bundle_id"]: j for j in _rows(store, "pattern_judged")}
    bundles = {b["bundle_id"]: b for b in _rows(store, "pattern_bundles")}
    assert judged
    for k, j in judged.items():
        # the scripted judge answers the "conflict" dynamics items "no": those conversations are not gold
        conflict = bundles[k]["relation"] == "conflict"
        assert j["individual_pass"] == 1.0 and j["dynamics_pass"] == (0.0 if conflict else 1.0)
        assert j["gold"] is (not conflict)
        assert j["holistic"] == 7, "the holistic score is recorded beside the checklist"
        if conflict:
            assert j["reasons"] == [f"dynamics_pass 0.00 < {cfg.patterns.gold_dynamics_min}"]
        answers = json.loads(j["answers"])
        assert len(answers) == j["individual_items"] + j["dynamics_items"]
    assert any(j["gold"] for j in judged.values()) and not all(j["gold"] for j in judged.values())


def test_judge_verdict_thresholds():
    cfg = LewinConfig()
    cfg.patterns.gold_individual_min, cfg.patterns.gold_dynamics_min = 0.75, 0.5
    yes, no = {"answer": "yes"}, {"answer": "no"}
    levels = ["pattern"] * 4 + ["dynamics"] * 2
    assert judge_verdict([yes, yes, yes, no, yes, no], levels, 5, cfg)["gold"] is True  # 0.75 and 0.5: at the floor
    v = judge_verdict([yes, yes, no, no, yes, yes], levels, 9, cfg)
    assert v["gold"] is False and v["reasons"] == ["individual_pass 0.50 < 0.75"], "a high holistic score gates nothing"
    v = judge_verdict([yes, yes, yes, yes, no, no], levels, None, cfg)
    assert v["gold"] is False and v["reasons"] == ["dynamics_pass 0.00 < 0.5"]
    assert judge_verdict([yes] * 4, ["pattern"] * 4, 5, cfg)["reasons"] == ["no dynamics items"]


def test_roleplay_records_strip_other_characters_thoughts_and_are_trainable(recipe):
    store, cfg = recipe["store"], recipe["cfg"]
    samples = _rows(store, "roleplay_samples")
    judged = {j["bundle_id"]: j for j in _rows(store, "pattern_judged")}
    convs = {c["bundle_id"]: json.loads(c["turns"]) for c in _rows(store, "pattern_conversations") if c["turns"]}
    assert samples and {s["bundle_id"] for s in samples} == {k for k, j in judged.items() if j["gold"]}
    for s in samples:
        msgs = s["messages"]
        assert msgs[0]["role"] == "system" and msgs[0]["content"].startswith(f"You are {s['character']}. ==About {s['character']}==")
        roles = [m["role"] for m in msgs[1:]]
        assert roles[-1] == "assistant" and all(a != b for a, b in zip(roles, roles[1:]))
        others = [t for t in convs[s["bundle_id"]] if t["speaker"] != s["character"]]
        mine = [t for t in convs[s["bundle_id"]] if t["speaker"] == s["character"]]
        user_text = "\n".join(m["content"] for m in msgs if m["role"] == "user")
        assistant_text = "\n".join(m["content"] for m in msgs if m["role"] == "assistant")
        assert not any(f"[{t['thought']}]" in user_text for t in others), "another character's inner thought leaked"
        assert all(f"[{t['thought']}]" in assistant_text for t in mine)
    out = Path(cfg.patterns.out_dir or Path(str(cfg.storage.root_location)) / "shards_roleplay")
    info = json.loads((out / "dataset_info.json").read_text())
    assert "lewin_roleplay_train" in info and info["lewin_roleplay_train"]["formatting"] == "sharegpt"
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(f["rows"] for f in manifest["files"] if f["path"].endswith(".parquet")) == len(samples)
    from lewin.trainer.data import load_records as load  # the trainer module's reader (lewin-train)

    train = load(out, "train")
    assert train and all(r["task"] == "roleplay" and r["messages"][-1]["role"] == "assistant" for r in train)


def test_a_rerun_sends_nothing_and_writes_nothing(recipe):
    assert recipe["rerun_calls"] == 0
    assert recipe["rerun_versions"] == recipe["versions"]
    assert [(f.stage, f.records_in, f.kept) for f in recipe["rerun"]] == [(f.stage, f.records_in, f.kept) for f in recipe["funnels"]]


_RUN = """
import sys
from lewin.jobs.engine import get_engine
from lewin.jobs.patterns import run_recipe
from lewin.jobs.tables import TableStore
from lewin.schemas.config import LewinConfig
cfg = LewinConfig.model_validate_json(open(sys.argv[1]).read())
engine = get_engine(cfg.engine)
run_recipe(TableStore(engine, cfg.storage), cfg)
"""


def test_killed_then_rerun_makes_no_duplicate_calls(tmp_path, recipe):
    """SIGKILL after the first chunk of conversations was written, then a rerun: no prompt is sent
    more often than the ledger counts attempts (a reply lost to the kill would be sent again), no
    ledger key twice, and the judged and role-play tables equal the uninterrupted run's."""
    with FakeOpenAI() as srv:
        cfg = _cfg(tmp_path, srv.url, "patterns_kill")
        cfg.engine.python_workers = 1
        path = tmp_path / "cfg.json"
        path.write_text(cfg.model_dump_json())
        env = dict(os.environ, LEWIN_FAILPOINT="patterns_conversations.after_chunk")
        p = subprocess.run([sys.executable, "-c", _RUN, str(path)], env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == -9, p.stderr[-2000:]
        killed_calls = srv.total
        env.pop("LEWIN_FAILPOINT")
        p = subprocess.run([sys.executable, "-c", _RUN, str(path)], env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        total = srv.total
    from lewin.jobs.engine import get_engine

    store = TableStore(get_engine(cfg.engine), cfg.storage)
    ledger = store.read("llm_ledger")
    assert ledger.groupBy("ledger_key").count().where("count > 1").count() == 0
    attempts = ledger.agg(F.sum("attempts")).first()[0]
    assert 0 < killed_calls < total == attempts, (killed_calls, total, attempts)
    assert ledger.where("status != 'ok'").count() == 0
    done = recipe["store"]
    for table, cols in (("pattern_judged", ["bundle_id", "gold", "individual_pass", "dynamics_pass", "holistic"]),
                        ("roleplay_samples", ["sample_id", "split", "messages"])):
        assert sorted(map(tuple, store.read(table).select(*cols).collect())) == \
            sorted(map(tuple, done.read(table).select(*cols).collect())), table


def test_reply_schema_pins_names_speakers_and_items():
    scene = R.reply_schema("scene", {"candidate_names": ["Ana", "Ben"]})
    assert scene["properties"]["protagonist"]["properties"]["name"]["enum"] == ["Ana", "Ben"]
    plan = R.plan_speakers("Ana", ["Ben", "Cleo"], 12, 20, seed=3)
    assert plan[0] != "Ana" and plan[-1] == "Ana" and all(a != b for a, b in zip(plan, plan[1:]))
    assert 12 <= len(plan) <= 20
    for seed in range(40):  # one supporting character: strict alternation, an even length
        p = R.plan_speakers("Ana", ["Ben"], 12, 13, seed=seed)
        assert len(p) == 12 and p == ["Ben", "Ana"] * 6
    ctx = {"protagonist": {"name": "Ana"}, "supporting": [{"name": "Ben"}], "speakers": ["Ben", "Ana"],
           "min_turns": 2, "max_turns": 2}
    conv = R.reply_schema("conversation", ctx)
    assert [t["properties"]["speaker"]["const"] for t in conv["properties"]["turns"]["prefixItems"]] == ["Ben", "Ana"]
    judge = R.reply_schema("checklist_judge", {"items": ["a?", "b?", "c?"], "turns": []})
    assert [a["properties"]["item"]["const"] for a in judge["properties"]["answers"]["prefixItems"]] == [1, 2, 3]


def test_validate_refuses_a_name_outside_the_candidates_and_an_evaluative_checklist():
    design = {"rationale": "One. Two.", "catalysts": ["x"], "tendencies": "@ [Ana]: 1. a; 2. b; 3. c\n@ [Ben]: 1. a; 2. b; 3. c"}
    scene = {"scenario": "s", "protagonist": {"name": "Zed", "about_self": {"descriptors": ["a", "b", "c", "d"],
             "background": "B.", "motivation": "m"}, "about_others": [{"name": "Ben", "relation": "r"}]},
             "supporting": [{"name": "Ben", "about_self": {"descriptors": ["a", "b", "c", "d"], "background": "B.",
                             "motivation": "m"}, "about_others": [{"name": "Zed", "relation": "r"}]}]}
    parsed, why = R.validate("scene", json.dumps(scene), {"candidate_names": ["Ana", "Ben"], "design": design})
    assert parsed is None and "name_not_candidate: Zed" in why
    scene["protagonist"]["name"] = "Ana"
    scene["supporting"][0]["about_others"][0]["name"] = "Ana"
    parsed, why = R.validate("scene", json.dumps(scene), {"candidate_names": ["Ana", "Ben"], "design": design})
    assert why is None and parsed["protagonist"]["name"] == "Ana"
    parsed, why = R.validate("checklist", json.dumps({"questions": ["Is X likeable?"]}), {"level": "pattern"})
    assert parsed is None and "evaluative" in why
    parsed, why = R.validate("checklist", json.dumps({"questions": ["Does X blame the weather?", "Does Y sulk?"]}),
                             {"level": "pattern"})
    assert parsed["screens"] == [None, "no_subject: the question does not name X"]


@pytest.mark.slow
def test_lewin_patterns_run_on_the_cpu_model(tmp_path):
    """The acceptance run: ``lewin patterns run`` on the starter library with the embedded CPU
    engine (the demo profile) makes at least one gold conversation and its role-play shards.

    One bundle instead of the demo's two: each bundle is about 5 minutes of the CPU model on one
    busy core (scene design, scene, a 12-turn conversation, checklists, two judges), and one gold
    conversation is what is checked; a bundle that fails its three attempts fails the test."""
    pytest.importorskip("llama_cpp")
    env = dict(os.environ, LEWIN_CONFIG="")
    root = tmp_path / "lewin-data"
    # threads of this worker's share of the cores: llama.cpp's spin at every barrier like torch's
    # (conftest.CPU_SHARE); on 2 cores under xdist that is two 1-thread processes
    p = subprocess.run([sys.executable, "-m", "lewin.jobs.cli", "--set", f"storage.root={root}",
                        "--set", f"llm.engine.threads_per_worker={CPU_SHARE}", "--set", "patterns.bundles=1",
                        "patterns", "run"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    manifest = json.loads((root / "shards_roleplay" / "manifest.json").read_text())
    assert manifest["conversations"] >= 1 and sum(manifest["samples"].values()) >= 2, p.stdout[-3000:]


def test_tight_schemas_compile_to_grammars_llama_cpp_accepts():
    """The demo profile's word-bounded schemas become GBNF through llama-cpp-python's converter;
    llama.cpp refuses escapes it does not know (a "\\." in a literal crashed the worker), so every
    escape in the grammar must be one GBNF defines."""
    pytest.importorskip("llama_cpp")
    import re

    from llama_cpp.llama_grammar import LlamaGrammar

    names = ["Ana", "Ben", "Cleo", "Dan", "Eve", "Finn", "Gil", "Hal", "Ida", "Stéphanie"]
    design = {"rationale": "One two three four. Five six seven eight.", "catalysts": ["x"],
              "tendencies": "@ [Ana]: 1. a b; 2. c d; 3. e f\n@ [Ben]: 1. a b; 2. c d; 3. e f"}
    contexts = {
        "bundle_check": {}, "scene_design": {"candidate_names": names},
        "scene": {"candidate_names": names, "design": design},
        "conversation": {"protagonist": {"name": "Ana"}, "supporting": [{"name": "Ben"}], "speakers": ["Ben", "Ana"] * 6,
                         "min_turns": 12, "max_turns": 12},
        "checklist": {"n": 3, "level": "pattern"}, "holistic_judge": {},
        "checklist_judge": {"items": ["a?", "b?"], "turns": ["t"] * 12}}
    for artifact, ctx in contexts.items():
        gbnf = LlamaGrammar.from_json_schema(json.dumps(R.reply_schema(artifact, dict(ctx, tight=True))), verbose=False)._grammar
        bad = re.findall(r'\\[^\\"nrt\[\]\-xu]', gbnf)
        assert not bad, (artifact, bad[:5])
