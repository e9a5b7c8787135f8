"""Jobs of the second recipe (HumanLLM's psychological patterns; ``lewin patterns run``):

  pattern library (YAML/JSONL, or the LLM's summaries of a literature folder) -> ``patterns``
  -> bundles of 2-5 patterns with a relation and a framework, screened by the LLM -> ``pattern_bundles``
  -> Task 1 (design) and Task 2 (scene) per bundle, names from the bundle's candidates -> ``pattern_scenes``
  -> a conversation per scene (12-20 turns; thought, action, speech) -> ``pattern_conversations``
  -> dual-level checklists (per pattern, per scenario), the checklist judge and the holistic judge
     -> ``pattern_checklists``, ``pattern_judged`` (gold by the item pass rates)
  -> role-play records per character of a gold conversation -> ``roleplay_samples`` and shards.

Every LLM call goes through the first recipe's ledger (``lewin.jobs.llm.generate``): a rerun makes
no call, a crash loses at most one chunk, a reply that fails its validator (``lewin.udfs.pattern_replies``)
is retried with another seed and then kept as a dead letter with the validator's reasons. The
recipe's data is small (the paper: 244 patterns, 11,359 scenarios), so the prompts' contexts are
built on the driver from collected rows; tables are written only when their rows change.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from lewin.jobs.llm import ArtifactResult, generate, replace_if_changed
from lewin.jobs.stage import Funnel, RunContext, Stage
from lewin.schemas import tables as T
from lewin.schemas.config import LewinConfig
from lewin.udfs import fs
from lewin.udfs import pattern_replies as R
from lewin.udfs import patterns as P
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

SOURCE = "patterns"  # the ledger's source column for this recipe's prompts
_TYPE_LABEL = {"personality_trait": "personality trait", "social_cognitive_pattern": "social-cognitive pattern"}


def _seed(*parts) -> int:
    return int(hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:12], 16)


def _inputs(ctx: RunContext, rows: list[dict]) -> DataFrame:
    """Prompt inputs (input_id, user_id, source, context) from driver rows; user_id groups a
    bundle's prompts (one prefix group). ``tight`` (``patterns.tight_schemas``) rides in the
    context: it changes the reply schema, so it is part of the ledger key."""
    schema = "input_id string, user_id string, source string, context string"
    tight = {"tight": True} if ctx.cfg.patterns.tight_schemas else {}
    data = [(r["input_id"], r["group"], SOURCE, json.dumps({**r["context"], **tight}, ensure_ascii=False, sort_keys=True))
            for r in rows]
    return ctx.store.spark.createDataFrame(data, schema)


def _ask(ctx: RunContext, artifact: str, rows: list[dict], retry_dead: bool, results: list[ArtifactResult]
         ) -> tuple[dict[str, dict], dict[str, str]]:
    """Send ``rows`` for ``artifact`` through the ledger: (input_id -> parsed reply, input_id ->
    why it has none: the dead letter's error, or "pending")."""
    if not rows:
        return {}, {}
    inputs = _inputs(ctx, rows)
    res, ok = generate(ctx, artifact, inputs, retry_dead, stage=ctx.stage)
    results.append(res)
    replies = {r["input_id"]: json.loads(r["output"]) for r in ok.collect()}
    missing = [r["input_id"] for r in rows if r["input_id"] not in replies]
    errors: dict[str, str] = {}
    if missing:
        from lewin.jobs.llm import keyed_inputs

        keys = keyed_inputs(ctx.cfg, artifact, inputs.where(F.col("input_id").isin(missing))).select("ledger_key")
        dead = ctx.store.read("llm_ledger").join(keys, "ledger_key", "left_semi").select("input_id", "status", "error")
        errors = {r["input_id"]: f"{r['status']}: {r['error']}" for r in dead.collect()}
        errors = {i: errors.get(i, "pending: no reply yet") for i in missing}
    return replies, errors


def _llm_detail(results: list[ArtifactResult]) -> dict:
    return {r.artifact: {"calls": r.sent, "ok": r.ok, "dead": r.dead, "failed": r.failed, "tokens_in": r.tokens_in,
                         "tokens_out": r.tokens_out, "truncated": r.truncated} for r in results}


def _collect(store, table: str) -> list[dict]:
    return [r.asDict(recursive=True) for r in store.read(table).collect()] if store.exists(table) else []


def _pattern_brief(p: dict) -> dict:
    return {"name": p["name"], "definition": p["definition"], "manifestations": p["manifestations"]}


def _text(loc: str) -> str:
    return fs.read_bytes(loc).decode("utf-8", errors="replace")


# --- 1. the pattern library ----------------------------------------------------------------------------
def literature_corpora(cfg: LewinConfig) -> list[dict]:
    """The literature route's inputs: one per sub-folder of ``patterns.literature_dir`` with a
    ``pattern.yaml`` (name, type, references) and paper texts (``.txt``/``.md``), the texts joined
    in file-name order, each cut evenly to fit ``patterns.literature_max_chars``."""
    import yaml

    root = cfg.patterns.literature_dir
    out = []
    for folder in sorted({fs.parent(f.loc) for f in fs.walk(root) if not f.skip and fs.name(f.loc) == "pattern.yaml"}):
        meta = yaml.safe_load(_text(fs.join(folder, "pattern.yaml"))) or {}
        missing = [k for k in ("name", "type", "references") if not meta.get(k)]
        if missing:
            raise P.PatternLibraryError(f"{fs.join(folder, 'pattern.yaml')}: missing {', '.join(missing)}")
        texts = sorted(f.loc for f in fs.walk(folder) if not f.skip and f.loc.endswith((".txt", ".md")))
        if not texts:
            raise P.PatternLibraryError(f"{folder}: no paper texts (.txt/.md) beside pattern.yaml")
        share = cfg.patterns.literature_max_chars // len(texts)
        corpus = "\n\n".join(f"[{fs.name(t)}]\n{_text(t)[:share]}" for t in texts)
        out.append({"id": P.pattern_id(meta["name"]), "name": meta["name"], "type": meta["type"],
                    "references": list(meta["references"]), "corpus": corpus})
    return out


@dataclass
class LibraryResult:
    run_id: str
    entries: int = 0
    summarised: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    patterns: int = 0
    llm: list[ArtifactResult] = field(default_factory=list)


class PatternLibraryStage(Stage):
    name = "patterns_library"
    reads = ("llm_ledger",)
    writes = ("patterns", "llm_ledger")
    summary = "pattern library (YAML/JSONL, or LLM summaries of papers per pattern) -> patterns"

    def __init__(self, retry_dead: bool = False):
        self.retry_dead = retry_dead

    def run(self, ctx: RunContext) -> list[Funnel]:
        cfg = ctx.cfg
        r = self.result = LibraryResult(ctx.run_id)
        records = {p["id"]: dict(p, origin=f"library:{cfg.patterns.library or 'starter'}")
                   for p in P.load_library(cfg.patterns.library)}
        r.entries = len(records)
        if cfg.patterns.literature_dir:
            corpora = literature_corpora(cfg)
            rows = [{"input_id": f"pattern:{c['id']}", "group": c["id"],
                     "context": {"name": c["name"], "type": c["type"], "type_label": _TYPE_LABEL.get(c["type"], c["type"]),
                                 "references": c["references"], "corpus": c["corpus"]}} for c in corpora]
            replies, errors = _ask(ctx, "pattern_summary", rows, self.retry_dead, r.llm)
            r.entries += len(corpora)
            for c in corpora:
                got = replies.get(f"pattern:{c['id']}")
                if got is None:
                    r.failed[c["id"]] = errors[f"pattern:{c['id']}"][:300]
                    continue
                records[c["id"]] = dict(got["record"], origin=f"literature:{cfg.llm.engine.model}")
                r.summarised += 1
        rows = [(p["id"], p["name"], p["type"], p["definition"], p["core_mechanisms"], p["manifestations"],
                 p["references"], p["origin"]) for p in sorted(records.values(), key=lambda x: x["id"])]
        replace_if_changed(ctx, "patterns", ctx.store.spark.createDataFrame(rows, T.PATTERNS), T.PATTERNS, "pattern_id")
        r.patterns = len(rows)
        # in: library entries + literature folders; a folder's summary replacing a library entry of
        # the same id counts as a duplicate
        dup = r.entries - r.patterns - len(r.failed)
        return [Funnel(stage=self.name, source=SOURCE, records_in=r.entries, kept=r.patterns, duplicates=dup,
                       rejected=len(r.failed), detail={"failed": r.failed, "llm": _llm_detail(r.llm)})]


# --- 2. bundles -------------------------------------------------------------------------------------
@dataclass
class BundleResult:
    run_id: str
    sampled: int = 0
    ok: int = 0
    rejected: dict[str, str] = field(default_factory=dict)
    llm: list[ArtifactResult] = field(default_factory=list)


class BundleStage(Stage):
    name = "patterns_bundles"
    reads = ("patterns", "llm_ledger")
    writes = ("pattern_bundles", "llm_ledger")
    depends_on = ("patterns_library",)
    summary = "patterns -> seeded, balanced bundles of 2-5 with a relation and a framework, screened by the LLM"

    def __init__(self, retry_dead: bool = False):
        self.retry_dead = retry_dead

    def run(self, ctx: RunContext) -> list[Funnel]:
        pc = ctx.cfg.patterns
        r = self.result = BundleResult(ctx.run_id)
        patterns = {p["pattern_id"]: p for p in _collect(ctx.store, "patterns")}
        library = [{"id": k, "type": v["type"]} for k, v in sorted(patterns.items())]
        bundles = P.sample_bundles(library, pc.bundles, seed=pc.seed, sizes=pc.bundle_sizes,
                                   relations=tuple(pc.relations), frameworks=list(pc.frameworks)) if library else []
        r.sampled = len(bundles)
        for b in bundles:
            names = P.candidate_names(_seed(pc.seed, b["bundle_id"]), locales=tuple(pc.name_locales))
            b["candidate_names"] = names["male"] + names["female"]
        verdicts: dict[str, tuple[str, str | None]] = {b["bundle_id"]: ("ok", None) for b in bundles}
        if pc.screen_bundles and bundles:
            rows = [{"input_id": f"bundle:{b['bundle_id']}", "group": b["bundle_id"], "context": {
                "patterns": [_pattern_brief(patterns[i]) for i in b["pattern_ids"]], "relation": b["relation"],
                "framework": b["framework"]}} for b in bundles]
            replies, errors = _ask(ctx, "bundle_check", rows, self.retry_dead, r.llm)
            for b in bundles:
                key = f"bundle:{b['bundle_id']}"
                got = replies.get(key)
                if got is None:
                    verdicts[b["bundle_id"]] = ("rejected" if errors[key].startswith("dead") else "pending",
                                                f"screen_failed: {errors[key]}"[:300])
                elif not got["coherent"]:
                    verdicts[b["bundle_id"]] = ("rejected", f"incoherent: {got['reason']}"[:300])
        rows = [(b["bundle_id"], b["pattern_ids"], b["relation"], b["framework"], b["candidate_names"],
                 *verdicts[b["bundle_id"]]) for b in bundles]
        replace_if_changed(ctx, "pattern_bundles", ctx.store.spark.createDataFrame(rows, T.PATTERN_BUNDLES),
                           T.PATTERN_BUNDLES, "bundle_id")
        r.ok = sum(v[0] == "ok" for v in verdicts.values())
        r.rejected = {k: v[1] for k, v in verdicts.items() if v[0] != "ok"}
        usage: dict[str, int] = {}
        for b in bundles:
            for i in b["pattern_ids"]:
                usage[i] = usage.get(i, 0) + 1
        return [Funnel(stage=self.name, source=SOURCE, records_in=r.sampled, kept=r.ok, rejected=len(r.rejected),
                       detail={"rejected": r.rejected, "relations": _count(b["relation"] for b in bundles),
                               "sizes": _count(len(b["pattern_ids"]) for b in bundles),
                               "pattern_usage_min_max": [min(usage.values(), default=0), max(usage.values(), default=0)],
                               "llm": _llm_detail(r.llm)})]


def _count(xs) -> dict:
    out: dict = {}
    for x in xs:
        out[str(x)] = out.get(str(x), 0) + 1
    return dict(sorted(out.items()))


# --- 3. scenes (Task 1: design; Task 2: scene) ----------------------------------------------------------
@dataclass
class StepResult:
    run_id: str
    inputs: int = 0
    ok: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    llm: list[ArtifactResult] = field(default_factory=list)

    def funnel(self, stage: str, **detail) -> Funnel:
        return Funnel(stage=stage, source=SOURCE, records_in=self.inputs, kept=self.ok, rejected=len(self.failed),
                      detail={"failed": self.failed, "llm": _llm_detail(self.llm), **detail})


def _bundle_context(b: dict, patterns: dict[str, dict]) -> dict:
    return {"patterns": [_pattern_brief(patterns[i]) for i in b["pattern_ids"]], "relation": b["relation"],
            "framework": b["framework"], "candidate_names": b["candidate_names"]}


def _cast(cfg: LewinConfig, bundle_id: str, candidates: list[str]) -> list[str]:
    """With ``patterns.tight_schemas``, Lewin draws the cast from the candidates (seeded: a
    protagonist and one supporting character of either gender); otherwise the model picks it,
    as in the paper (empty list)."""
    if not cfg.patterns.tight_schemas:
        return []
    rng = random.Random(_seed(cfg.patterns.seed, "cast", bundle_id))
    return rng.sample(list(candidates), 2)


class SceneStage(Stage):
    name = "patterns_scenes"
    reads = ("patterns", "pattern_bundles", "llm_ledger")
    writes = ("pattern_scenes", "llm_ledger")
    depends_on = ("patterns_bundles",)
    summary = "bundles -> Task 1 design (rationale, catalysts, @-tendencies) and Task 2 scene (characters from the candidate names)"

    def __init__(self, retry_dead: bool = False):
        self.retry_dead = retry_dead

    def run(self, ctx: RunContext) -> list[Funnel]:
        r = self.result = StepResult(ctx.run_id)
        patterns = {p["pattern_id"]: p for p in _collect(ctx.store, "patterns")}
        bundles = [b for b in _collect(ctx.store, "pattern_bundles") if b["status"] == "ok"]
        r.inputs = len(bundles)
        base = {b["bundle_id"]: _bundle_context(b, patterns) for b in bundles}
        rows = [{"input_id": f"design:{k}", "group": k, "context": dict(c, min_supporting=1, max_supporting=3,
                                                                         cast=_cast(ctx.cfg, k, c["candidate_names"]))}
                for k, c in base.items()]
        designs, errors = _ask(ctx, "scene_design", rows, self.retry_dead, r.llm)
        rows = [{"input_id": f"scene:{k}", "group": k, "context": dict(c, design=designs[f"design:{k}"])}
                for k, c in base.items() if f"design:{k}" in designs]
        scenes, scene_errors = _ask(ctx, "scene", rows, self.retry_dead, r.llm)
        out = []
        for k in sorted(base):
            design, scene = designs.get(f"design:{k}"), scenes.get(f"scene:{k}")
            if scene is None:
                why = f"design {errors[f'design:{k}']}" if design is None else f"scene {scene_errors[f'scene:{k}']}"
                r.failed[k] = why[:300]
                out.append((k, "failed", why[:1000], json.dumps(design) if design else None, None, None, None))
                continue
            chars = [scene["protagonist"]["name"]] + [c["name"] for c in scene["supporting"]]
            out.append((k, "ok", None, json.dumps(design, ensure_ascii=False), json.dumps(scene, ensure_ascii=False),
                        chars[0], chars))
        r.ok = sum(1 for o in out if o[1] == "ok")
        replace_if_changed(ctx, "pattern_scenes", ctx.store.spark.createDataFrame(out, T.PATTERN_SCENES),
                           T.PATTERN_SCENES, "bundle_id")
        return [r.funnel(self.name)]


# --- 4. conversations -------------------------------------------------------------------------------------
class ConversationStage(Stage):
    name = "patterns_conversations"
    reads = ("patterns", "pattern_bundles", "pattern_scenes", "llm_ledger")
    writes = ("pattern_conversations", "llm_ledger")
    depends_on = ("patterns_scenes",)
    summary = "scenes -> conversations of 12-20 turns (inner thought, action, speech), checked by the validator"

    def __init__(self, retry_dead: bool = False):
        self.retry_dead = retry_dead

    def run(self, ctx: RunContext) -> list[Funnel]:
        pc = ctx.cfg.patterns
        r = self.result = StepResult(ctx.run_id)
        patterns = {p["pattern_id"]: p for p in _collect(ctx.store, "patterns")}
        bundles = {b["bundle_id"]: b for b in _collect(ctx.store, "pattern_bundles")}
        scenes = [s for s in _collect(ctx.store, "pattern_scenes") if s["status"] == "ok" and s["bundle_id"] in bundles]
        r.inputs = len(scenes)
        rows = []
        for s in scenes:
            k, b, scene = s["bundle_id"], bundles[s["bundle_id"]], json.loads(s["scene"])
            names = [c["name"] for c in scene["supporting"]]
            speakers = (R.plan_speakers(scene["protagonist"]["name"], names, pc.min_turns, pc.max_turns, seed=_seed(pc.seed, k))
                        if pc.turn_plan == "planned" else [])
            rows.append({"input_id": f"conversation:{k}", "group": k, "context": {
                "patterns": [_pattern_brief(patterns[i]) for i in b["pattern_ids"]],
                "pattern_names": [patterns[i]["name"] for i in b["pattern_ids"]],
                "scenario": scene["scenario"], "protagonist": scene["protagonist"], "supporting": scene["supporting"],
                "design": json.loads(s["design"]), "min_turns": pc.min_turns, "max_turns": pc.max_turns,
                "speakers": speakers}})
        replies, errors = _ask(ctx, "conversation", rows, self.retry_dead, r.llm)
        out = []
        for s in scenes:
            k = s["bundle_id"]
            got = replies.get(f"conversation:{k}")
            if got is None:
                r.failed[k] = errors[f"conversation:{k}"][:300]
                out.append((k, "failed", errors[f"conversation:{k}"][:2000], None, None, None))
            else:
                out.append((k, "ok", None, len(got["turns"]), json.dumps(got["turns"], ensure_ascii=False), got["transcript"]))
        r.ok = sum(1 for o in out if o[1] == "ok")
        replace_if_changed(ctx, "pattern_conversations", ctx.store.spark.createDataFrame(out, T.PATTERN_CONVERSATIONS),
                           T.PATTERN_CONVERSATIONS, "bundle_id")
        violations = _count(v.split(":")[0].strip() for e in r.failed.values() if "validation:" in e
                            for v in e.split("validation:", 1)[1].split(";"))
        return [r.funnel(self.name, turn_plan=pc.turn_plan, violations=violations)]


# --- 5. dual-level checklists and the judges ----------------------------------------------------------------
@dataclass
class JudgeResult(StepResult):
    gold: int = 0
    checklist_items: int = 0
    items_screened_out: int = 0
    holistic_mean: float | None = None


def judge_verdict(answers: list[dict], levels: list[str], holistic: int | None, cfg: LewinConfig) -> dict:
    """Item pass rates per level and the gold decision (``patterns.gold_individual_min`` and
    ``gold_dynamics_min``); the holistic score is recorded beside them and gates nothing."""
    pc = cfg.patterns
    out: dict = {"reasons": []}
    for level, key, floor in (("pattern", "individual", pc.gold_individual_min), ("dynamics", "dynamics", pc.gold_dynamics_min)):
        mine = [a for a, lv in zip(answers, levels) if lv == level]
        rate = sum(a["answer"] == "yes" for a in mine) / len(mine) if mine else None
        out[f"{key}_items"], out[f"{key}_pass"] = len(mine), rate
        if rate is None:
            out["reasons"].append(f"no {key} items")
        elif rate < floor:
            out["reasons"].append(f"{key}_pass {rate:.2f} < {floor}")
    out["holistic"] = holistic
    out["gold"] = not out["reasons"]
    return out


class PatternJudgeStage(Stage):
    name = "patterns_judge"
    reads = ("patterns", "pattern_bundles", "pattern_scenes", "pattern_conversations", "llm_ledger")
    writes = ("pattern_checklists", "pattern_judged", "llm_ledger")
    depends_on = ("patterns_conversations",)
    summary = "conversations -> dual-level checklists (per pattern, per scenario), checklist and holistic judges -> gold"

    def __init__(self, retry_dead: bool = False):
        self.retry_dead = retry_dead

    def run(self, ctx: RunContext) -> list[Funnel]:
        cfg, pc = ctx.cfg, ctx.cfg.patterns
        r = self.result = JudgeResult(ctx.run_id)
        patterns = {p["pattern_id"]: p for p in _collect(ctx.store, "patterns")}
        bundles = {b["bundle_id"]: b for b in _collect(ctx.store, "pattern_bundles")}
        scenes = {s["bundle_id"]: s for s in _collect(ctx.store, "pattern_scenes") if s["status"] == "ok"}
        convs = [c for c in _collect(ctx.store, "pattern_conversations")
                 if c["status"] == "ok" and c["bundle_id"] in scenes and c["bundle_id"] in bundles]
        r.inputs = len(convs)
        # individual level: one checklist per pattern a conversation uses, about "X"
        used = sorted({i for c in convs for i in bundles[c["bundle_id"]]["pattern_ids"]})
        rows = [{"input_id": f"checklist:pattern:{i}", "group": i, "context": {
            "level": "pattern", "pattern": _pattern_brief(patterns[i]), "n": pc.checklist_items}} for i in used]
        # dynamics level: one per conversation's bundle, on the interaction its relation implies
        for c in convs:
            k, b, scene = c["bundle_id"], bundles[c["bundle_id"]], json.loads(scenes[c["bundle_id"]]["scene"])
            rows.append({"input_id": f"checklist:dynamics:{k}", "group": k, "context": {
                "level": "dynamics", "patterns": [_pattern_brief(patterns[i]) for i in b["pattern_ids"]],
                "relation": b["relation"], "scenario": scene["scenario"], "characters": scenes[k]["characters"],
                "n": pc.checklist_items}})
        lists, list_errors = _ask(ctx, "checklist", rows, self.retry_dead, r.llm)
        items: list[tuple] = []
        for row in rows:
            got = lists.get(row["input_id"])
            if got is None:
                continue
            level, owner = row["input_id"].split(":")[1:3]
            for n, (q, screen) in enumerate(zip(got["questions"], got["screens"]), 1):
                items.append((f"{level}:{owner}:{n}", level, owner, q, screen))
        r.checklist_items = len(items)
        r.items_screened_out = sum(1 for it in items if it[4] is not None)
        replace_if_changed(ctx, "pattern_checklists", ctx.store.spark.createDataFrame(items, T.PATTERN_CHECKLISTS),
                           T.PATTERN_CHECKLISTS, "item_id")
        usable: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for item_id, level, owner, q, screen in items:
            if screen is None:
                usable.setdefault((level, owner), []).append((item_id, q))
        judge_rows, holistic_rows, asked = [], [], {}
        for c in convs:
            k = c["bundle_id"]
            turns = [P.render_turn(t) for t in json.loads(c["turns"])]
            protagonist = scenes[k]["protagonist"]
            mine = [(i, "pattern", q.replace("X", protagonist)) for p in bundles[k]["pattern_ids"]
                    for i, q in usable.get(("pattern", p), [])]
            mine += [(i, "dynamics", q) for i, q in usable.get(("dynamics", k), [])]
            asked[k] = mine
            if mine:
                judge_rows.append({"input_id": f"checklist_judge:{k}", "group": k,
                                   "context": {"turns": turns, "items": [q for _, _, q in mine]}})
            holistic_rows.append({"input_id": f"holistic_judge:{k}", "group": k,
                                  "context": {"scenario": json.loads(scenes[k]["scene"])["scenario"], "turns": turns}})
        verdicts, verdict_errors = _ask(ctx, "checklist_judge", judge_rows, self.retry_dead, r.llm)
        holistic, _ = _ask(ctx, "holistic_judge", holistic_rows, self.retry_dead, r.llm)
        out = []
        for c in convs:
            k = c["bundle_id"]
            got = verdicts.get(f"checklist_judge:{k}")
            score = holistic.get(f"holistic_judge:{k}", {}).get("anthropomorphism")
            if got is None:
                why = verdict_errors.get(f"checklist_judge:{k}") or "no usable checklist item"
                missing = [i for i in (f"checklist:pattern:{p}" for p in bundles[k]["pattern_ids"]) if i in list_errors]
                if missing:
                    why += f" (checklists without a reply: {', '.join(missing)})"
                r.failed[k] = why[:300]
                out.append((k, 0, None, 0, None, score, "[]", False, [f"not judged: {why}"[:300]]))
                continue
            answers = [dict(a, item_id=i, level=lv) for a, (i, lv, _) in zip(got["answers"], asked[k])]
            v = judge_verdict(answers, [lv for _, lv, _ in asked[k]], score, cfg)
            out.append((k, v["individual_items"], v["individual_pass"], v["dynamics_items"], v["dynamics_pass"], score,
                        json.dumps(answers, ensure_ascii=False), v["gold"], v["reasons"]))
        replace_if_changed(ctx, "pattern_judged", ctx.store.spark.createDataFrame(out, T.PATTERN_JUDGED),
                           T.PATTERN_JUDGED, "bundle_id")
        r.gold = sum(1 for o in out if o[7])
        r.ok = r.gold
        scores = [o[5] for o in out if o[5] is not None]
        r.holistic_mean = round(sum(scores) / len(scores), 3) if scores else None
        not_gold = {o[0]: "; ".join(o[8]) for o in out if not o[7] and o[0] not in r.failed}
        f = Funnel(stage=self.name, source=SOURCE, records_in=r.inputs, kept=r.gold, rejected=r.inputs - r.gold,
                   detail={"not_judged": r.failed, "not_gold": not_gold, "checklist_items": r.checklist_items,
                           "items_screened_out": r.items_screened_out, "holistic_mean": r.holistic_mean,
                           "llm": _llm_detail(r.llm)})
        return [f]


# --- 6. role-play shards ----------------------------------------------------------------------------------
def roleplay_out_dir(cfg: LewinConfig) -> str:
    return cfg.patterns.out_dir or fs.join(cfg.storage.root_location, "shards_roleplay")


@dataclass
class RoleplayResult:
    run_id: str
    conversations: int = 0
    samples: dict[str, int] = field(default_factory=dict)
    out_dir: str = ""


class RoleplayEmitStage(Stage):
    name = "patterns_emit"
    reads = ("pattern_scenes", "pattern_conversations", "pattern_judged")
    writes = ("roleplay_samples",)
    depends_on = ("patterns_judge",)
    summary = "gold conversations -> one role-play record per character (others' thoughts removed), shards, dataset_info"

    def run(self, ctx: RunContext) -> list[Funnel]:
        from lewin.jobs.emit import write_sharegpt_tree

        cfg = ctx.cfg
        r = self.result = RoleplayResult(ctx.run_id, out_dir=roleplay_out_dir(cfg))
        gold = {j["bundle_id"] for j in _collect(ctx.store, "pattern_judged") if j["gold"]}
        scenes = {s["bundle_id"]: s for s in _collect(ctx.store, "pattern_scenes") if s["status"] == "ok"}
        convs = [c for c in _collect(ctx.store, "pattern_conversations")
                 if c["status"] == "ok" and c["bundle_id"] in gold and c["bundle_id"] in scenes]
        r.conversations = len(convs)
        rows = []
        for c in sorted(convs, key=lambda x: x["bundle_id"]):
            k, scene = c["bundle_id"], json.loads(scenes[c["bundle_id"]]["scene"])
            # by conversation: every character of one conversation lands in the same split
            split = "test" if random.Random(_seed("split", k)).random() < cfg.patterns.test_share else "train"
            for s in P.roleplay_samples(json.loads(c["turns"]), [scene["protagonist"], *scene["supporting"]], scene["scenario"]):
                rows.append((f"{k}:{P.pattern_id(s['character'])}", k, s["character"], split,
                             [(m["role"], m["content"]) for m in s["messages"]]))
        replace_if_changed(ctx, "roleplay_samples", ctx.store.spark.createDataFrame(rows, T.ROLEPLAY_SAMPLES),
                           T.ROLEPLAY_SAMPLES, "sample_id")
        records = [{"sample_id": s, "task": "roleplay", "source": SOURCE, "user_id": k, "character": ch, "split": sp,
                    "messages": [{"role": ro, "content": co} for ro, co in msgs]} for s, k, ch, sp, msgs in rows]
        r.samples = _count(x["split"] for x in records)
        write_sharegpt_tree(r.out_dir, records, name="lewin_roleplay", manifest={
            "recipe": "patterns", "conversations": r.conversations, "samples": r.samples,
            "config": cfg.patterns.model_dump(mode="json")})
        return [Funnel(stage=self.name, source=SOURCE, records_in=r.conversations, kept=r.conversations,
                       detail={"samples": r.samples, "out_dir": r.out_dir})]


PATTERN_STAGES: tuple[type[Stage], ...] = (PatternLibraryStage, BundleStage, SceneStage, ConversationStage,
                                           PatternJudgeStage, RoleplayEmitStage)


def run_recipe(store, cfg: LewinConfig, retry_dead: bool = False, progress=None) -> list[Funnel]:
    """Every stage of the recipe in order (``lewin patterns run``)."""
    funnels = []
    for cls in PATTERN_STAGES:
        stage = cls() if cls is RoleplayEmitStage else cls(retry_dead)
        funnels += stage.execute(store, cfg, progress=progress)
    return funnels


def shipped_library() -> Path:
    return Path(P.SHIPPED_LIBRARY)
