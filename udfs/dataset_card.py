"""The dataset card: emit's manifest (a dict) -> ``README.md`` in the Hugging Face dataset-card
format, so the shards folder can be published as it is.

Pure rendering, no Spark and no I/O: ``lewin.jobs.emit`` gathers the figures into the manifest
(counts, files, the funnel, PII and LLM provenance) and writes the card before the manifest.

* YAML header (the Hub's dataset-card metadata): ``configs`` — ``default`` (the samples, train
  and test) and one ``mcq_<task>`` per MCQ set — each with ``data_files`` per split as relative
  globs over the files the manifest lists. Every config points at the JSONL files: the ``datasets``
  loader picks one builder for a whole repository, from the first config's file extensions, so
  configs cannot mix Parquet and JSON (the MCQ sets are JSONL only). The Parquet shards hold the
  same samples and are described in the body;
  ``dataset_info`` per config (features from ``lewin.schemas.shards``, splits with
  ``num_examples`` and ``num_bytes``); ``language``, ``license`` (``license_name`` /
  ``license_link`` for ``other``), ``task_categories``, ``tags``, ``size_categories``,
  ``pretty_name``.
* Body: what the samples are, sources, the filtering funnel, PII method, synthesis and judging,
  known limitations, intended and out-of-scope use, licensing, provenance.

Options come from ``manifest["config"]["card"]`` (``emit.card``) when present; every key has a
default here, so a manifest without them renders too.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import jinja2
import yaml
from pyspark.sql.types import ArrayType, BooleanType, DataType, DoubleType, IntegerType, LongType, StringType, StructType

from lewin.schemas import shards as S

CARD_FILE = "README.md"

DEFAULT_OPTIONS: dict[str, Any] = {
    "license": "other",
    # the Hub wants a slug for license "other"; the card's Licensing section says what it means
    "license_name": "source-terms",
    "license_link": None,
    "pretty_name": None,
    "source_terms": {},
}

# What applies to the text of each built-in source. Lewin does not relicense anything: these are
# the notes a publisher has to check, not a grant.
SOURCE_TERMS = {
    "reddit": "Posts and comments belong to their authors under Reddit's User Agreement; the terms of the dump "
              "ingested (Pushshift export, a Hugging Face mirror, …) apply.",
    "twitter": "Tweets are governed by X's Developer Agreement and Policy, which restricts redistributing tweet "
               "content; the terms of the dump ingested apply.",
    "blogger": "The Blog Authorship Corpus (Schler et al., 2006) may be used for non-commercial research "
               "purposes, per its authors.",
    "amazon": "Amazon review dumps (McAuley lab, 2018 / 2023 releases) are distributed for research use under "
              "their own terms.",
}

TASK_NOTES = {
    "profile_generation": "persona → the user's profile (both judged gold)",
    "scenario_generation": "characters + background → the plots of a scenario from the user's own post",
    "social_qa": "persona (else profile) + a scenario and question → the user's answer",
    "writing_imitation": "earlier posts (or the writing-style description) + a topic → the user's next post",
    "personalized_commenting": "earlier comments + the post answered → the user's comment (Reddit only)",
    "item_selection": "purchase history (+ persona) + 20 candidates → the item bought next (Amazon)",
}

FIELD_NOTES = {
    "sample_id": "sha256 of task, source, user and what the sample is built from",
    "task": "one of the six tasks below",
    "source": "reddit, twitter, blogger, amazon",
    "user_id": "the account's id or name as the dump has it (not scrubbed: see Known limitations)",
    "split": "train or test: every sample of a user is in one split",
    "messages": "ShareGPT conversation: system, user, assistant (the user's real behaviour or gold text)",
    "artifact_ids": "gold ledger keys and record ids the sample was built from",
    "prompt_version": "the task template's version",
}

ORIGIN_NOTES = {
    "real": "the user's own answer",
    "pool": "a candidate item from the pool, item selection",
    "other_user": "another user's real answer to the same task",
}

_STAGE_ORDER = ("rules", "language", "quality", "dedup", "kcore")
_SIZE_BUCKETS = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                 (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
                 (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T")]


# --- metadata ------------------------------------------------------------------------------------------
def size_category(n: int) -> str:
    for bound, name in _SIZE_BUCKETS:
        if n < bound:
            return name
    return "n>1T"


def hf_features(schema: StructType) -> list[dict]:
    """A Spark schema as the Hub's YAML feature list (``datasets.Features._to_yaml_list``)."""
    return [{"name": f.name, **_hf_type(f.dataType)} for f in schema.fields]


def _hf_type(dt: DataType) -> dict:
    simple = {StringType: "string", IntegerType: "int32", LongType: "int64", DoubleType: "float64", BooleanType: "bool"}
    if type(dt) in simple:
        return {"dtype": simple[type(dt)]}
    if isinstance(dt, ArrayType):
        inner = _hf_type(dt.elementType)
        return {"list": inner["dtype"] if "dtype" in inner else inner.get("struct", inner)}
    if isinstance(dt, StructType):
        return {"struct": hf_features(dt)}
    raise ValueError(f"no dataset-card type for {dt}")


def options(manifest: dict) -> dict:
    given = (manifest.get("config") or {}).get("card") or {}
    return {**DEFAULT_OPTIONS, **{k: v for k, v in given.items() if v is not None}}


def _file_groups(manifest: dict) -> dict[tuple[str, str], list[dict]]:
    """(config, split) -> the manifest's file entries: the JSONL shards, the MCQ sets by task."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for f in manifest.get("files", []):
        parts = f["path"].split("/")
        if len(parts) == 3 and parts[0] in ("train", "test") and parts[1] == "jsonl":
            groups[("default", parts[0])].append(f)
        elif len(parts) == 2 and parts[0] == "mcq" and parts[1].endswith(".jsonl"):
            groups[(f"mcq_{parts[1][:-len('.jsonl')]}", "test")].append(f)
    return groups


def _glob(config: str, split: str) -> str:
    if config == "default":
        return f"{split}/jsonl/part-*.jsonl"
    return f"mcq/{config[len('mcq_'):]}.jsonl"


def metadata(manifest: dict) -> dict:
    """The YAML header as a dict (key order kept)."""
    opts = options(manifest)
    groups = _file_groups(manifest)
    configs, infos = [], []
    config_names = ["default"] if any(k[0] == "default" for k in groups) else []
    config_names += sorted({c for c, _ in groups if c.startswith("mcq_")})
    for name in config_names:
        splits = [s for s in ("train", "test") if (name, s) in groups]
        entry: dict[str, Any] = {"config_name": name}
        if name == "default":
            entry["default"] = True
        entry["data_files"] = [{"split": s, "path": _glob(name, s)} for s in splits]
        configs.append(entry)
        split_info = [{"name": s, "num_bytes": sum(f["bytes"] for f in groups[(name, s)]),
                       "num_examples": sum(f["rows"] for f in groups[(name, s)])} for s in splits]
        size = sum(x["num_bytes"] for x in split_info)
        infos.append({"config_name": name,
                      "features": hf_features(S.MCQ_ITEM if name.startswith("mcq_") else S.SHARD_RECORD),
                      "splits": split_info, "download_size": size, "dataset_size": size})
    counts = manifest.get("counts", {})
    samples = sum(n for split in counts.values() for by_src in split.values() for n in by_src.values())
    tasks = {t for split in counts.values() for t in split}
    categories = ["text-generation"] + (["question-answering"] if "social_qa" in tasks else []) + (
        ["multiple-choice"] if manifest.get("mcq") else [])
    meta: dict[str, Any] = {"pretty_name": opts["pretty_name"] or "Lewin per-user behaviour dataset",
                            "language": ["en"], "license": opts["license"]}
    if opts["license"] == "other":
        meta["license_name"] = opts["license_name"]
        if opts["license_link"]:
            meta["license_link"] = opts["license_link"]
    meta.update({
        "task_categories": categories,
        "tags": ["lewin", "humanllm", "user-modeling", "personalization", "human-behavior", "synthetic",
                 "llm-judged", "pii-scrubbed", "sharegpt"],
        "size_categories": [size_category(samples)],
        "annotations_creators": ["machine-generated"],
        "language_creators": ["found", "machine-generated"],
        "multilinguality": ["monolingual"],
        "configs": configs,
        "dataset_info": infos,
    })
    return meta


# --- body ------------------------------------------------------------------------------------------------
def _context(manifest: dict, meta: dict) -> dict:
    opts = options(manifest)
    counts = manifest.get("counts", {})
    per_task: dict[str, Counter] = defaultdict(Counter)
    per_source: dict[str, Counter] = defaultdict(Counter)
    for split, by_task in counts.items():
        for task, by_src in by_task.items():
            for src, n in by_src.items():
                per_task[task][split] += n
                per_source[src][split] += n
    funnel = manifest.get("funnel") or {}
    sources = sorted(set(funnel) | set(per_source))
    stages = [s for s in _STAGE_ORDER if any(s in (funnel.get(x) or {}).get("rejected", {}) for x in sources)]
    stages += sorted({s for x in sources for s in (funnel.get(x) or {}).get("rejected", {})} - set(stages))
    gates = sorted({g for x in sources for g in (funnel.get(x) or {}).get("label_gates", {})})
    llm = manifest.get("llm") or {}
    terms = {**SOURCE_TERMS, **opts.get("source_terms", {})}
    mcq = manifest.get("mcq") or {}
    origins = sorted({o.split("#")[0] for t in mcq.values() for o in t.get("origins", {})})
    distractor_models = sorted({d.get("model") for d in manifest.get("distractor_plan", []) if d.get("model")})
    small_mcq = sorted(t for t, v in mcq.items() if v.get("questions", 0) < 100)
    split_rows = {i["config_name"]: {s["name"]: s for s in i["splits"]} for i in meta["dataset_info"]}
    llm_on = bool(llm) and llm.get("enabled", True)
    self_judged = llm_on and llm.get("judge_model") in (None, llm.get("writer_model"))
    relaxed = llm_on and (llm.get("judge_overall_gt", 8) < 8 or llm.get("judge_others_gt", 7) < 7
                          or bool(set(llm.get("quality_keep", ["high"])) - {"high"}))
    return {
        "m": manifest, "meta": meta, "opts": opts, "per_task": per_task, "per_source": per_source,
        "sources": sources, "funnel": funnel, "stages": stages, "gates": gates, "llm": llm, "pii": manifest.get("pii") or {},
        "terms": terms, "mcq": mcq, "origins": origins, "origin_notes": ORIGIN_NOTES, "distractor_models": distractor_models,
        "small_mcq": small_mcq, "split_rows": split_rows, "task_notes": TASK_NOTES, "field_notes": FIELD_NOTES,
        "samples": {s: sum(c[s] for c in per_task.values()) for s in ("train", "test")},
        "parquet_bytes": sum(f["bytes"] for f in manifest.get("files", []) if f["path"].endswith(".parquet")),
        "llm_on": llm_on, "self_judged": self_judged, "z": 0 if funnel else None,
        "limitations": limitations(manifest, llm_on, self_judged, relaxed, small_mcq),
        "fmt": lambda n: f"{n:,}" if isinstance(n, int) else ("–" if n is None else str(n)),
        "glob": _glob,
    }


def limitations(manifest: dict, llm_on: bool, self_judged: bool, relaxed: bool, small_mcq: list[str]) -> list[str]:
    """The card's known limitations: the ones this build's settings call for, then the standing ones."""
    llm = manifest.get("llm") or {}
    out = []
    if llm_on and llm.get("profile") == "demo":
        out.append(f"**Demo profile (`llm.profile: demo`).** This build ran the CPU demo settings: a tiny model "
                   f"(`{llm.get('writer_model')}`) synthesised for a handful of users under relaxed thresholds. Its "
                   "personas, profiles, scenarios, answers and MCQ distractors are toy quality, there only so every "
                   "stage runs: do not train or evaluate on them.")
    if self_judged:
        out.append("**Self-judged.** No separate judge model was configured, so the writer scored its own output "
                   "(HumanLLM writes with Llama-3.3-70B-Instruct and judges with Qwen2.5-72B-Instruct).")
    if relaxed:
        out.append("**Relaxed thresholds.** The label gate or the judge thresholds are looser than the paper's "
                   "(quality high only; overall > 8 and every other score > 7).")
    if llm and not llm_on:
        out.append("**No LLM stages** (`llm.enabled: false`): no label gate, no synthesised or judged artifacts; only "
                   "the tasks built from the timelines have samples.")
    elif llm.get("labels") == "off":
        out.append("**No label gate** (`llm.labels: off`): records were not labelled for quality or harm.")
    if not (manifest.get("pii") or {}).get("enabled", True):
        out.append("**Not PII-scrubbed** (`pii.enabled: false`).")
    if small_mcq:
        out.append(f"**Small MCQ sets.** {', '.join(small_mcq)}: fewer than 100 questions each, so an accuracy "
                   "measured on them has a wide confidence interval.")
    out += [
        "**User ids are not scrubbed.** `user_id` is the account's id or name as the dump has it (a Reddit username, "
        "a tweet's author id, a reviewer id): it links a user's samples to the public account and its original, "
        "unscrubbed posts. Replace it (e.g. with a keyed hash) before publishing where that matters.",
        "PII scrubbing is automatic: its recall is high but not perfect (rare names, names in lower case, identifiers "
        "in unusual formats can be missed), and what a person writes about (places, events, dates, writing style) "
        "can still identify them.",
        "Synthesised text (personas, profiles, scenarios, QA answers) is written by an LLM and can contain claims the "
        "user never made; the judge is an LLM too. `lewin audit` produces a sheet for a human audit.",
        "Some task inputs are stand-ins: writing-imitation topics come from titles (or an item and rating, or a "
        "post's long words); personalized commenting exists for Reddit comments only; item-selection candidates "
        "are drawn from the item pool.",
        "English only (fastText language ID). The sources' users are not representative of any population, and "
        "balancing per task and source changes the mix of sources relative to the dumps.",
    ]
    return out


_TEMPLATE = r"""
# {{ meta.pretty_name }}

Per-user training samples and multiple-choice evaluation sets built by Lewin from user-generated content
({{ sources | join(", ") if sources else "no source" }}), after the recipe of *HumanLLM: Towards Personalized
Understanding and Simulation of Human Nature* (Lei et al., KDD 2026): every user's curated, PII-scrubbed posts
become Person (persona, profile), Environment (scenarios) and Behaviour (social QA) records, which an LLM
synthesises and an LLM judge filters, and which are turned into six training tasks.

**{{ fmt(samples.train + samples.test) }} samples** ({{ fmt(samples.train) }} train, {{ fmt(samples.test) }} test, split by user){% if mcq %}
and {{ fmt(mcq.values() | sum(attribute="questions")) }} multiple-choice question{{ "" if (mcq.values() | sum(attribute="questions")) == 1 else "s" }} over the held-out users{% endif %}.

## Dataset structure

| config | split | files | examples | bytes |
|---|---|---|---:|---:|
{% for c in meta.configs %}{% for d in c.data_files %}| `{{ c.config_name }}` | {{ d.split }} | `{{ d.path }}` | {{ fmt(split_rows[c.config_name][d.split].num_examples) }} | {{ fmt(split_rows[c.config_name][d.split].num_bytes) }} |
{% endfor %}{% endfor %}

`bytes` are the files' sizes. The same samples are also in Parquet (`train/parquet/`, `test/parquet/`,
{{ fmt(parquet_bytes) }} bytes); the configs name the JSON lines because the `datasets` loader reads every config of a
repository with one builder, and the MCQ sets are JSON lines.

```python
from datasets import load_dataset
train = load_dataset("<this folder or repo>", split="train")                 # config "default"
mcq = load_dataset("<this folder or repo>", "mcq_<task>", split="test")
train_parquet = load_dataset("parquet", data_dir="<this folder>/train/parquet", split="train")
```

`dataset_info.json` registers the shards for LlamaFactory (`lewin_train`, `lewin_test`: ShareGPT formatting
over `messages`); `manifest.json` lists every file with its sha256.

### Fields of a sample

| field | meaning |
|---|---|
{% for f, note in field_notes.items() %}| `{{ f }}` | {{ note }} |
{% endfor %}

### Tasks

| task | built from | template | train | test |
|---|---|---|---:|---:|
{% for t, c in per_task | dictsort %}| `{{ t }}` | {{ task_notes.get(t, "") }} | `{{ m.get("task_prompt_versions", {}).get(t, "") }}` | {{ fmt(c.train) }} | {{ fmt(c.test) }} |
{% endfor %}

Every task gets the same budget of samples, split evenly over its sources ({{ fmt(m.get("candidates_before_balance")) }}
candidates before balancing; seed {{ m.get("config", {}).get("seed") }}; {{ m.get("config", {}).get("test_fraction") }} of the users held out).
{% if mcq %}

### Multiple-choice evaluation sets (`mcq/<task>.jsonl`)

Held-out users only. Each item has the prompt without the answer (`messages`), `options`, `answer_index` and each
option's `origins`; the answer's position is balanced per task.

| task | questions | options | answer positions |
|---|---:|---:|---|
{% for t, v in mcq | dictsort %}| `{{ t }}` | {{ fmt(v.questions) }} | {{ v.options }} | {% for p, n in v.answer_positions.items() %}{{ p }}: {{ n }}{% if not loop.last %}, {% endif %}{% endfor %} |
{% endfor %}

Option origins: {% for o in origins %}`{{ o }}`{% if o in origin_notes %} ({{ origin_notes[o] }}){% elif o.startswith("engine:") %} (a distractor written by `{{ o[7:] }}`){% endif %}{% if not loop.last %}; {% endif %}{% endfor %}.
Distractors answer the request the trained model sees (never the user's own posts, persona or history) within
the task's length budget; a question without enough distinct options is dropped
({{ fmt(m.get("mcq_dropped_too_few_options", 0)) }} dropped).
{% endif %}

## Sources

| source | ingested | quarantined | rejected in curation | curated | kept by the label gate | users | train samples | test samples |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
{% for s in sources %}{% set f = funnel.get(s, {}) %}| {{ s }} | {{ fmt(f.get("bronze", z)) }} | {{ fmt(f.get("quarantined", z)) }} | {{ fmt(f.get("rejected", {}).values() | sum) if f else "–" }} | {{ fmt(f.get("silver", z)) }} | {{ fmt(f.get("label_kept", z)) }} | {{ fmt(f.get("users", z)) }} | {{ fmt(per_source[s].train) }} | {{ fmt(per_source[s].test) }} |
{% endfor %}

Terms that apply to the source text (check them before publishing; Lewin does not relicense anything):
{% for s in sources %}
- **{{ s }}**: {{ terms.get(s, "the terms of the dump ingested apply.") }}{% endfor %}

## Filtering funnel

Counts of the tables the samples were built from, as they were when these files were written.
{% if funnel %}

| source | ingested | {% for st in stages %}rejected: {{ st }} | {% endfor %}curated | PII-scrubbed | {% for g in gates %}label: {{ g }} | {% endfor %}users | records in timelines |
|---|---:|{% for st in stages %}---:|{% endfor %}---:|---:|{% for g in gates %}---:|{% endfor %}---:|---:|
{% for s in sources %}{% set f = funnel.get(s, {}) %}| {{ s }} | {{ fmt(f.get("bronze", z)) }} | {% for st in stages %}{{ fmt(f.get("rejected", {}).get(st, 0)) }} | {% endfor %}{{ fmt(f.get("silver", z)) }} | {{ fmt(f.get("scrubbed", z)) }} | {% for g in gates %}{{ fmt(f.get("label_gates", {}).get(g, 0)) }} | {% endfor %}{{ fmt(f.get("users", z)) }} | {{ fmt(f.get("timeline_records", z)) }} |
{% endfor %}

- *ingested*: records in bronze (malformed or oversized input is quarantined, not counted); *rejected*: rows
  curation dropped, by stage (rules: the paper's per-source rules; language: fastText, English only; quality:
  heuristics listed in `curate.quality.drop_on`; dedup: exact and MinHash near-duplicates; kcore: the Amazon
  k-core); *label*: the LLM quality/harm gate's verdict per record (only `kept` records reach the timelines).
- Curation rules that rejected records: {% for s in sources %}{% set rules = funnel.get(s, {}).get("rejected_rules", {}) %}{% if rules %}**{{ s }}** {% for r, n in rules | dictsort(by="value", reverse=True) %}`{{ r }}` {{ fmt(n) }}{% if not loop.last %}, {% endif %}{% endfor %}{% if not loop.last %}; {% endif %}{% endif %}{% endfor %}.
- Samples are then made from the judged gold artifacts and the timelines (see below), and balanced per task.
{% else %}

The manifest holds no funnel figures (written by an older Lewin).
{% endif %}

## PII scrubbing
{% if pii.get("enabled", True) %}

Every curated record is scrubbed before any later stage reads it (`lewin scrub`, {{ pii.get("scrub_versions", []) | join(", ") or "scrub_v1" }}):
private information is replaced with **fictitious values of the same kind**, never with placeholders or blanks —
names with names, a phone number with a number of the same shape, a card number with a Luhn-valid one, an IBAN
with a valid IBAN of the same country, an SSN with one from the never-issued 9xx range. The same original value
becomes the same surrogate throughout one user's history (so timelines stay coherent) and a different one for
any other user: surrogates come from generators seeded with HMAC-SHA256(key, user, type, value), with a secret
key that is not published. Original values are never stored past the scrub stage; overlapping detections are
merged so no fragment stays in clear.

- Detection: spaCy NER (`{{ pii.get("spacy_model", "en_core_web_sm") }}`) plus person-context cues for names;
  Presidio's recognizers (with checksums) for e-mail addresses, phone numbers, SSNs, card numbers, IBANs, IP
  addresses and URLs pointing below a domain; a street-address pattern recognizer.
- Entity types replaced: {{ pii.get("entities", []) | code }}{% if "LOCATION" not in pii.get("entities", []) %} (`LOCATION` — cities, countries — is not replaced){% endif %}.
{% if pii.get("min_score") %}- Minimum detection scores: {% for k, v in pii.min_score | dictsort %}`{{ k }}` {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}.
{% endif %}{% if pii.get("replaced") %}- Replacements in the scrubbed records: {% for k, v in pii.replaced | dictsort(by="value", reverse=True) %}`{{ k }}` {{ fmt(v) }}{% if not loop.last %}, {% endif %}{% endfor %}{% if pii.get("records_with_pii") is not none %} ({{ fmt(pii.records_with_pii) }} of {{ fmt(pii.get("records", 0)) }} records had at least one){% endif %}.
{% endif %}
{% else %}

**PII scrubbing was disabled (`pii.enabled: false`) for this build: the texts are as the dumps wrote them.**
{% endif %}

## Synthesis and judging
{% if llm and not llm_on %}

The LLM stages were disabled for this build (`llm.enabled: false`).
{% elif llm %}

- Profile: `{{ llm.profile }}`. Writer: `{{ llm.writer_model }}` ({{ llm.writer_engine }}); judge:
  `{{ llm.judge_model or llm.writer_model }}` ({{ llm.judge_engine or llm.writer_engine }}){% if self_judged %} — the writer judged its own output{% endif %}.
- Label gate (`llm.labels: {{ llm.labels }}`): records labelled quality {{ llm.quality_keep | join(" or ") }} and not harmful are kept.
- Gold: an artifact is kept when the judge's `overall` score is > {{ llm.judge_overall_gt }} and every other score
  is > {{ llm.judge_others_gt }} (scores 1–10 on the metrics HumanLLM's appendix A.3 assigns to it; paper: > 8 and > 7).

| artifact | synthesised | judged | gold | writer prompt | writer | judge prompt | judge |
|---|---:|---:|---:|---|---|---|---|
{% for a, v in llm.get("artifacts", {}) | dictsort %}| `{{ a }}` | {{ fmt(v.get("synth")) }} | {{ fmt(v.get("judged")) }} | {{ fmt(v.get("gold")) }} | {{ v.get("prompt_versions", []) | join(", ") }} | {{ v.get("models", []) | join(", ") }} | {{ v.get("judge_prompt_versions", []) | join(", ") }} | {{ v.get("judge_models", []) | join(", ") }} |
{% endfor %}

Stories and QA items are judged one by one, so an artifact can have more judged items than synthesised replies.
{% if distractor_models %}MCQ distractors were written by: {{ distractor_models | code }}.{% endif %}
{% else %}

The manifest holds no synthesis figures (written by an older Lewin).
{% endif %}

## Known limitations

{% for item in limitations %}- {{ item }}
{% endfor %}
## Intended use

Research on modelling and simulating individual human behaviour: training and evaluating models that
predict how a particular (pseudonymous) user writes, comments, answers social questions or chooses items, given
their history, as in HumanLLM; evaluation with the multiple-choice sets of held-out users.

## Out-of-scope use

- Identifying, tracking or profiling the real people behind the posts, or trying to undo the PII scrubbing.
- Decisions about individuals (credit, hiring, insurance, moderation, law enforcement) or targeted advertising
  and persuasion.
- Impersonating a specific real person, or presenting the synthesised profiles as facts about real people.
- Uses the sources' terms do not allow (e.g. commercial use where a source is licensed for research only).

## Licensing

`license: {{ meta.license }}`{% if meta.get("license_name") %} (`{{ meta.license_name }}`){% endif %}{% if meta.get("license_link") %}, see {{ meta.license_link }}{% endif %}.
{% if meta.license == "other" %}The samples quote and paraphrase text written by the sources' users, so the terms of each source
apply (see Sources) in addition to any terms of the publisher; the Lewin code that built them is Apache-2.0, which
does not cover the data.{% endif %}

## Provenance

- Lewin `{{ m.get("lewin_code_version", "unknown") }}`; task templates {{ m.get("task_prompt_versions", {}).values() | list | join(", ") }}.
- Upstream Delta table versions: {% for k, v in m.get("upstream_delta_versions", {}) | dictsort %}`{{ k }}` {{ v }}{% if not loop.last %}, {% endif %}{% else %}–{% endfor %}.
- The same input tables and seed give byte-identical files; `manifest.json` holds the emit configuration and every
  file's sha256.
"""

_env = jinja2.Environment(undefined=jinja2.ChainableUndefined, autoescape=False, keep_trailing_newline=True)
_env.filters["code"] = lambda xs: ", ".join(f"`{x}`" for x in xs)


def render(manifest: dict) -> str:
    """The dataset card (YAML header + markdown) for the shards ``manifest`` describes."""
    meta = metadata(manifest)
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=120)
    body = _env.from_string(_TEMPLATE).render(**_context(manifest, meta))
    lines = [ln.rstrip() for ln in body.strip().splitlines()]
    text, blank = [], False
    for ln in lines:  # at most one blank line in a row (the template's conditionals leave more)
        if ln or not blank:
            text.append(ln)
        blank = not ln
    return f"---\n{header}---\n\n" + "\n".join(text) + "\n"
