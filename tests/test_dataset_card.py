"""The dataset card emit writes beside the shards (README.md, Hugging Face format): it parses as a
dataset card, its metadata has the keys the Hub's dataset-card spec and the `datasets` loader read,
every data_files glob matches exactly the shard files the manifest lists, `datasets` loads every
config offline, it is written before manifest.json (and listed in it), and what it says follows the
manifest (demo profile, self-judging, PII settings). No network: nothing is validated on the Hub."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lewin.jobs import emit as emit_job
from lewin.udfs import dataset_card

from .conftest import ENGINE

hf = pytest.importorskip("huggingface_hub")

# the Hub's dataset-card metadata (huggingface_hub's datasetcard template; `datasets`' YAML fields)
SPEC_KEYS = {"pretty_name", "language", "license", "license_name", "license_link", "license_details", "tags",
             "annotations_creators", "language_creators", "language_details", "multilinguality", "size_categories",
             "source_datasets", "task_categories", "task_ids", "paperswithcode_id", "configs", "dataset_info",
             "extra_gated_fields", "extra_gated_prompt", "viewer"}
SIZE_CATEGORIES = {"n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B", "1B<n<10B",
                   "10B<n<100B", "100B<n<1T", "n>1T"}
TASK_CATEGORIES = {"text-generation", "question-answering", "multiple-choice"}  # of the Hub's list, the ones used
SPLIT_RE = r"^\w+(\.\w+)*$"  # datasets.naming._split_re


def _sample(i: int, split: str, task: str = "social_qa", source: str = "reddit") -> dict:
    return {"sample_id": hashlib.sha256(f"{split}{i}".encode()).hexdigest(), "task": task, "source": source,
            "user_id": f"user{i:03d}", "split": split,
            "messages": [{"role": "system", "content": "You answer as the person would."},
                         {"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}],
            "artifact_ids": [f"key{i}"], "prompt_version": "social_qa_v1"}


def _entry(root: Path, path: Path, rows: int) -> dict:
    return {"path": path.relative_to(root).as_posix(), "rows": rows, "bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def build_shards(root: Path, profile: str = "demo", judge_model: str | None = None) -> dict:
    """Shard files written by hand as emit writes them (two train shards, one test shard, two MCQ
    sets) and a manifest describing them: what the card is rendered from."""
    files = []
    layout = {"train": [list(range(0, 3)), list(range(3, 5))], "test": [list(range(5, 7))]}
    for split, shards in layout.items():
        for k, ids in enumerate(shards):
            table = pa.Table.from_pylist([_sample(i, split) for i in ids], schema=emit_job._ARROW_SHARD)
            for kind in ("parquet", "jsonl"):
                p = root / split / kind / f"part-{k:05d}.{kind}"
                p.parent.mkdir(parents=True, exist_ok=True)
                if kind == "parquet":
                    pq.write_table(table, p, compression="zstd")
                else:
                    p.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
                files.append(_entry(root, p, table.num_rows))
    mcq = {}
    for task, n_opt in (("profile_generation", 8), ("item_selection", 20)):
        items = [{"mcq_id": f"{task}{q}", "task": task, "source": "reddit", "user_id": f"user{q}",
                  "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                  "options": [f"option {j}" for j in range(n_opt)], "answer_index": q,
                  "origins": ["real" if j == q else ("pool" if task == "item_selection" else "engine:m#0") for j in range(n_opt)]}
                 for q in range(2)]
        p = root / "mcq" / f"{task}.jsonl"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(json.dumps(it) + "\n" for it in items))
        files.append(_entry(root, p, len(items)))
        mcq[task] = {"questions": 2, "options": n_opt, "answer_positions": {"0": 1, "1": 1},
                     "origins": {"real": 2, ("pool" if task == "item_selection" else "engine:m#0"): 2 * (n_opt - 1)}}
    return {
        "lewin_code_version": "0.1.0+test", "task_prompt_versions": {"social_qa": "social_qa_v1"},
        "config": {"seed": 42, "test_fraction": 0.3}, "upstream_delta_versions": {"users": 3},
        "counts": {"test": {"social_qa": {"reddit": 2}}, "train": {"social_qa": {"reddit": 5}}},
        "candidates_before_balance": 9, "mcq": mcq, "mcq_dropped_too_few_options": 0,
        "distractor_plan": [{"slot": 0, "model": "m", "round": 0, "seed": 0}], "files": files,
        "funnel": {"reddit": {"bronze": 20, "quarantined": 1, "rejected": {"rules": 4, "dedup": 2}, "silver": 14,
                              "scrubbed": 14, "pii_records": 3, "label_gates": {"kept": 12, "quality_low": 2},
                              "label_kept": 12, "users": 7, "timeline_records": 12}},
        "pii": {"enabled": True, "entities": ["PERSON", "EMAIL_ADDRESS"], "spacy_model": "en_core_web_sm",
                "min_score": {"PERSON": 0.0}, "retention": "keep", "scrub_versions": ["scrub_v1"],
                "replaced": {"PERSON": 4, "EMAIL_ADDRESS": 1}, "records": 14, "records_with_pii": 3},
        "llm": {"enabled": True, "profile": profile, "labels": "llm", "quality_keep": ["high", "medium"] if profile == "demo" else ["high"],
                "writer_model": "SmolLM2-135M-Instruct", "writer_engine": "llamacpp", "judge_model": judge_model,
                "judge_engine": "vllm" if judge_model else None, "judge_overall_gt": 1 if profile == "demo" else 8,
                "judge_others_gt": 0 if profile == "demo" else 7,
                "artifacts": {"social_qa": {"synth": 9, "judged": 9, "gold": 7, "models": ["SmolLM2-135M-Instruct"],
                                            "prompt_versions": ["social_qa.v2-abc"], "judge_models": ["SmolLM2-135M-Instruct"],
                                            "judge_prompt_versions": ["judge.v4-def"]}}},
    }


@pytest.fixture
def shards(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "shards"
    manifest = build_shards(root)
    emit_job.write_card_and_manifest(root, manifest)
    return root, json.loads((root / "manifest.json").read_text())


def _groups(manifest: dict) -> dict[tuple[str, str], set[str]]:
    """(config, split) -> the files the manifest lists for it, by the layout emit writes: the JSONL
    shards are the default config (one builder per repository: JSON, as the MCQ sets are)."""
    out: dict[tuple[str, str], set[str]] = {}
    for f in manifest["files"]:
        p = f["path"].split("/")
        if p[0] in ("train", "test") and p[1] == "jsonl":
            out.setdefault(("default", p[0]), set()).add(f["path"])
        elif p[0] == "mcq":
            out.setdefault((f"mcq_{p[1][:-6]}", "test"), set()).add(f["path"])
    return out


def check_card(root: Path, manifest: dict) -> hf.DatasetCard:
    """Everything the tests require of a card beside the shards ``manifest`` describes."""
    card = hf.DatasetCard.load(root / "README.md")
    data = card.data.to_dict()
    assert set(data) <= SPEC_KEYS, f"keys outside the dataset-card spec: {set(data) - SPEC_KEYS}"
    assert data["language"] == ["en"] and data["license"] and data["pretty_name"]
    if data["license"] == "other":
        assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*", data["license_name"]), "license_name: lower case, dashes"
    assert set(data["size_categories"]) <= SIZE_CATEGORIES and len(data["size_categories"]) == 1
    assert set(data["task_categories"]) <= TASK_CATEGORIES and "text-generation" in data["task_categories"]
    assert data["tags"] and all(isinstance(t, str) for t in data["tags"])
    groups = _groups(manifest)
    # configs[].data_files[].split/path: every glob matches exactly the files listed for its split
    seen = set()
    for c in data["configs"]:
        assert set(c) <= {"config_name", "data_files", "default"} and re.fullmatch(r"[\w-]+", c["config_name"])
        for d in c["data_files"]:
            assert set(d) == {"split", "path"} and re.fullmatch(SPLIT_RE, d["split"])
            matched = {p.relative_to(root).as_posix() for p in root.glob(d["path"]) if p.is_file()}
            assert matched and matched == groups[(c["config_name"], d["split"])], (c["config_name"], d)
            seen.add((c["config_name"], d["split"]))
    assert seen == set(groups), "a config and split for every group of shard files"
    assert [c["config_name"] for c in data["configs"] if c.get("default")] == ["default"]
    # dataset_info[].splits[].name/num_examples/num_bytes, from the manifest's files
    rows = {f["path"]: f for f in manifest["files"]}
    infos = {i["config_name"]: i for i in data["dataset_info"]}
    assert set(infos) == {c["config_name"] for c in data["configs"]}
    for (config, split), paths in groups.items():
        info = infos[config]
        assert set(info) == {"config_name", "features", "splits", "download_size", "dataset_size"}
        s = {x["name"]: x for x in info["splits"]}[split]
        assert set(s) == {"name", "num_bytes", "num_examples"}
        assert s["num_examples"] == sum(rows[p]["rows"] for p in paths) > 0
        assert s["num_bytes"] == sum(rows[p]["bytes"] for p in paths)
        assert all({"name"} < set(f) and set(f) - {"name"} <= {"dtype", "list", "struct"} for f in info["features"])
    # the `datasets` loader's own parsing of the YAML (no network)
    datasets_utils = pytest.importorskip("datasets.utils.metadata")
    from datasets.info import DatasetInfosDict

    configs = datasets_utils.MetadataConfigs.from_dataset_card_data(card.data)
    assert configs.get_default_config_name() == "default" and set(configs) == set(infos)
    parsed = DatasetInfosDict.from_dataset_card_data(card.data)
    assert {n: {s: v.num_examples for s, v in i.splits.items()} for n, i in parsed.items()} == {
        n: {s["name"]: s["num_examples"] for s in i["splits"]} for n, i in infos.items()}
    # the card is listed in the manifest, with its hash
    entry = rows["README.md"]
    assert entry["sha256"] == hashlib.sha256((root / "README.md").read_bytes()).hexdigest()
    return card


def test_card_is_a_valid_dataset_card_whose_globs_match_the_shards(shards):
    root, manifest = shards
    card = check_card(root, manifest)
    assert card.data.license == "other" and card.data.license_name == "source-terms"
    assert [c["config_name"] for c in card.data.configs] == ["default", "mcq_item_selection", "mcq_profile_generation"]
    default = next(c for c in card.data.configs if c["config_name"] == "default")
    assert default["data_files"] == [{"split": "train", "path": "train/jsonl/part-*.jsonl"},
                                     {"split": "test", "path": "test/jsonl/part-*.jsonl"}]
    assert card.data.size_categories == ["n<1K"]
    assert set(card.data.task_categories) == {"text-generation", "question-answering", "multiple-choice"}


def test_datasets_loads_every_config_of_the_card_offline(shards, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf.constants, "HF_HUB_OFFLINE", True)
    root, manifest = shards
    infos = {i["config_name"]: i for i in hf.DatasetCard.load(root / "README.md").data.dataset_info}
    for name, info in infos.items():
        ds = datasets.load_dataset(str(root), name, cache_dir=str(tmp_path / "hf-cache"))
        assert {s: len(d) for s, d in ds.items()} == {s["name"]: s["num_examples"] for s in info["splits"]}, name
        assert ds[next(iter(ds))].features == datasets.Features._from_yaml_list(info["features"]), name
    train = datasets.load_dataset(str(root), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert train[0]["messages"][-1]["role"] == "assistant"


def _record_writes(monkeypatch) -> list[str]:
    """The names of the files written through pathlib, in order."""
    order: list[str] = []
    for method in ("write_text", "write_bytes"):
        real = getattr(Path, method)

        def spy(self, *a, _real=real, **k):
            order.append(self.name)
            return _real(self, *a, **k)

        monkeypatch.setattr(Path, method, spy)
    return order


def test_card_is_written_before_the_manifest_and_listed_in_it(tmp_path, monkeypatch):
    root = tmp_path / "shards"
    manifest = build_shards(root)
    expected = dataset_card.render(json.loads(json.dumps(manifest)))
    order = _record_writes(monkeypatch)
    emit_job.write_card_and_manifest(root, manifest)
    assert "README.md" in order and "manifest.json" in order, order
    assert order.index("README.md") < order.index("manifest.json"), "the manifest is the last file written"
    assert order[-1] == "manifest.json"
    written = json.loads((root / "manifest.json").read_text())
    assert [f["path"] for f in written["files"]][-1] == "README.md"
    assert (root / "README.md").read_text() == expected, "the card is rendered from the manifest as given"


def test_card_text_follows_the_manifest(tmp_path):
    demo = dataset_card.render(build_shards(tmp_path / "a", profile="demo"))
    assert "Demo profile" in demo and "toy quality" in demo and "Self-judged" in demo and "Relaxed thresholds" in demo
    assert "`PERSON` 4" in demo and "`LOCATION` — cities, countries — is not replaced" in demo
    assert "never with placeholders" in demo and "HMAC-SHA256" in demo
    for section in ("## Sources", "## Filtering funnel", "## PII scrubbing", "## Synthesis and judging",
                    "## Known limitations", "## Intended use", "## Out-of-scope use", "## Licensing"):
        assert section in demo
    assert "| reddit | 20 | 1 | 6 | 14 | 12 | 7 | 5 | 2 |" in demo, "sources: funnel and samples per source"
    paper = dataset_card.render(build_shards(tmp_path / "b", profile="paper", judge_model="Qwen2.5-72B-Instruct"))
    assert "Demo profile" not in paper and "Self-judged" not in paper and "Relaxed thresholds" not in paper
    assert "overall` score is > 8 and every other score\n  is > 7" in paper
    m = build_shards(tmp_path / "c")
    m["config"]["card"] = {"license": "cc-by-nc-4.0", "pretty_name": "My users"}
    meta = dataset_card.metadata(m)
    assert meta["license"] == "cc-by-nc-4.0" and "license_name" not in meta and meta["pretty_name"] == "My users"


@pytest.mark.skipif(ENGINE != "embedded", reason="emit is exercised end to end on the embedded engine")
def test_emit_writes_the_card_before_the_manifest(tmp_path, engine, monkeypatch):
    from .test_emit import _emit_fixture

    order = _record_writes(monkeypatch)
    store, cfg, r, _ = _emit_fixture(tmp_path, engine)
    root = Path(r.out_dir)
    assert order.index("README.md") < order.index("manifest.json") == len(order) - 1
    manifest = json.loads((root / "manifest.json").read_text())
    check_card(root, manifest)
    text = (root / "README.md").read_text()
    users = {r["source"]: r["count"] for r in store.read("users").groupBy("source").count().collect()}
    assert {s: f["users"] for s, f in manifest["funnel"].items() if "users" in f} == users
    assert manifest["pii"]["records"] == store.count("silver_records_scrubbed")
    assert manifest["llm"]["artifacts"]["persona"]["gold"] == 6 and "`persona` | – | 6 | 6 |" in text
    assert not re.search(r"\bw\d\d\b", text), "no user id in the card"
    # the funnel and LLM figures come from the tables: add what the fixture lacks and count again
    from lewin.schemas import tables as T

    from .test_emit import _row

    spark = store.spark
    store.overwrite("bronze_reddit", spark.createDataFrame(
        [_row(T.BRONZE_REDDIT, record_id=f"b{i}", source="reddit", user_id="w00") for i in range(5)], T.BRONZE_REDDIT))
    store.overwrite("quarantine", spark.createDataFrame(
        [_row(T.QUARANTINE, quarantine_id="q1", source="twitter", reason="twitter_error_page")], T.QUARANTINE))
    store.overwrite("rejected", spark.createDataFrame(
        [_row(T.REJECTED, record_id=f"r{i}", source="reddit", stage=st) for i, st in enumerate(("rules", "rules", "dedup"))],
        T.REJECTED))
    store.overwrite("synth_persona", spark.createDataFrame(
        [_row(T.SYNTH, artifact="persona", input_id=f"i{i}", user_id="u", source="reddit", model="w", prompt_version="p")
         for i in range(4)], T.SYNTH))
    store.overwrite("judged_persona", spark.createDataFrame(
        [_row(T.JUDGED, artifact="persona", input_id=f"i{i}", user_id="u", source="reddit", model="w", prompt_version="p",
              judge_model="j", judge_prompt_version="jp", accepted=i < 2) for i in range(3)], T.JUDGED))
    p = emit_job.provenance(store, cfg)
    assert p["funnel"]["reddit"]["bronze"] == 5 and p["funnel"]["twitter"]["quarantined"] == 1
    assert p["funnel"]["reddit"]["rejected"] == {"dedup": 1, "rules": 2}
    assert p["llm"]["artifacts"]["persona"] == {"synth": 4, "judged": 3, "gold": 2, "models": ["w"], "prompt_versions": ["p"],
                                                "judge_models": ["j"], "judge_prompt_versions": ["jp"]}
    assert p["pii"]["records"] == store.count("silver_records_scrubbed") and p["pii"]["replaced"] == {}
