"""The trainer module (``lewin-train``): loss mask, truncation, merge, ZeRO choice, config, MCQ, CPU smoke run.

The expensive artefacts (the base model converted once from the bundled GGUF, the smoke run's
outputs) are session-scoped fixtures; the whole file runs in a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from .conftest import CPU_SHARE  # noqa: E402

# torch's OpenMP threads spin at every barrier: this worker's share of the cores, not all of them
torch.set_num_threads(CPU_SHARE)

import yaml  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from lewin.trainer.cli import app  # noqa: E402
from lewin.trainer.config import TrainConfigError, load_train_config  # noqa: E402
from lewin.trainer.data import IGNORE_INDEX, EncodeStats, PadCollator, encode_conversation, load_records  # noqa: E402
from lewin.trainer.deepspeed import zero_config, zero_plan  # noqa: E402
from lewin.trainer.mcq import Question, evaluate_questions, load_motivebench, load_tombench, option_scores, subsample  # noqa: E402
from lewin.trainer.merge import merge_models, merge_state_dicts  # noqa: E402
from lewin.trainer.models import load_model, load_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TOMBENCH = SHARED / "eval" / "tombench"
MOTIVEBENCH = SHARED / "eval" / "motivebench"
needs_shared = pytest.mark.skipif(not (TOMBENCH.is_dir() and MOTIVEBENCH.is_dir()),
                                  reason=f"real evaluation data not present at {SHARED / 'eval'}")


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> Path:
    """The bundled SmolLM2-135M GGUF converted once (through the CLI) into an HF directory."""
    out = tmp_path_factory.mktemp("base") / "smollm2"
    result = CliRunner().invoke(app, ["prepare-base", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    return out


@pytest.fixture(scope="session")
def tokenizer(base_dir):
    return load_tokenizer(base_dir)


@pytest.fixture(scope="session")
def base_model(base_dir):
    return load_model(base_dir).eval()


def _conv(user: str, reply: str, system: str = "You write in the voice of one specific user.") -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}, {"role": "assistant", "content": reply}]


def _labelled_runs(encoded: dict) -> list[list[int]]:
    """Token ids of each maximal run of labelled positions."""
    runs, current = [], []
    for tok, lab in zip(encoded["input_ids"], encoded["labels"]):
        if lab != IGNORE_INDEX:
            assert lab == tok  # a label is the token itself (the model shifts internally)
            current.append(tok)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


# --- (a) loss mask on the real tokenizer -------------------------------------------------------

def test_loss_mask_covers_exactly_the_assistant_reply_and_its_end_token(tokenizer):
    reply = "I'd pick the trail shoes: light, grippy, and they survived two muddy autumns."
    messages = _conv("Which shoes would this user buy next?", reply)
    encoded = encode_conversation(tokenizer, messages, max_length=4096)
    ids, labels = encoded["input_ids"], encoded["labels"]
    assert len(ids) == len(labels)
    runs = _labelled_runs(encoded)
    assert len(runs) == 1
    assert tokenizer.decode(runs[0]) == reply + "<|im_end|>"
    # token by token: each labelled position decodes to a piece of the reply or the end-of-turn token
    text = ""
    for tok in runs[0]:
        piece = tokenizer.decode([tok])
        assert piece == "<|im_end|>" or reply.startswith(text + piece)
        text += piece
    # and nothing before the reply is labelled: the prompt tokens are exactly the generation prompt
    first = labels.index(next(x for x in labels if x != IGNORE_INDEX))
    prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(ids[:first]) == prompt
    # the trailing newline after <|im_end|> is template, not reply
    assert labels[-1] == IGNORE_INDEX and tokenizer.decode(ids[-1:]) == "\n"


def test_loss_mask_multi_turn_labels_both_assistant_turns(tokenizer):
    replies = ["Morning runs, mostly. Rain or not.", "Then a thermos of black coffee and the crossword."]
    messages = [
        {"role": "system", "content": "Answer as the user would."},
        {"role": "user", "content": "How do you start your day?"},
        {"role": "assistant", "content": replies[0]},
        {"role": "user", "content": "And after that?"},
        {"role": "assistant", "content": replies[1]},
    ]
    stats = EncodeStats()
    encoded = encode_conversation(tokenizer, messages, max_length=4096, stats=stats)
    runs = _labelled_runs(encoded)
    assert [tokenizer.decode(r) for r in runs] == [r + "<|im_end|>" for r in replies]
    assert stats.offset_fallbacks == 0 and stats.kept == 1
    # user turns and the system prompt are never labelled
    unlabelled = tokenizer.decode([t for t, lab in zip(encoded["input_ids"], encoded["labels"]) if lab == IGNORE_INDEX])
    assert "How do you start your day?" in unlabelled and "And after that?" in unlabelled
    assert replies[0] not in unlabelled and replies[1] not in unlabelled


def test_loss_mask_survives_a_token_merged_across_the_reply_boundary(tokenizer):
    # "assistant\n" + "\n\n  text": BPE merges the template's newline into the reply's first token,
    # so the rendered prefix is not a token prefix; offsets decide and the whole reply is still labelled
    messages = _conv("Say something.", "\n\n  Indented reply.")
    stats = EncodeStats()
    runs = _labelled_runs(encode_conversation(tokenizer, messages, 4096, stats))
    assert stats.offset_fallbacks == 1
    decoded = tokenizer.decode(runs[0])
    assert decoded.endswith("\n\n  Indented reply.<|im_end|>") and decoded.strip() == "Indented reply.<|im_end|>"


# --- (b) truncation ---------------------------------------------------------------------------

def test_truncation_keeps_partial_replies_and_drops_fully_cut_ones(tokenizer):
    messages = _conv("Describe your weekend.", "Long hike on Saturday, then a very lazy Sunday with two novels and soup.")
    full = encode_conversation(tokenizer, messages, 4096)
    n = len(full["input_ids"])
    start = next(i for i, lab in enumerate(full["labels"]) if lab != IGNORE_INDEX)

    stats = EncodeStats()
    cut = encode_conversation(tokenizer, messages, start + 3, stats)
    assert len(cut["input_ids"]) == start + 3 == len(cut["labels"])
    assert cut["input_ids"] == full["input_ids"][: start + 3]
    assert sum(lab != IGNORE_INDEX for lab in cut["labels"]) == 3
    assert stats.truncated == 1 and stats.kept == 1

    assert encode_conversation(tokenizer, messages, start, stats) is None  # only the prompt would remain
    assert stats.dropped_truncated == 1
    assert encode_conversation(tokenizer, messages, n, stats)["labels"] == full["labels"]  # exactly fits: untouched
    assert stats.truncated == 1

    # two turns, the second cut away entirely: kept for the first
    two = messages + [{"role": "user", "content": "More?"}, {"role": "assistant", "content": "No."}]
    kept = encode_conversation(tokenizer, two, n, stats)
    assert kept is not None and kept["labels"] == full["labels"]


def test_collator_pads_ids_mask_and_labels():
    batch = PadCollator(pad_token_id=7)([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4], "labels": [4]}])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 7, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]


# --- (c) merge --------------------------------------------------------------------------------

def _tiny_llama(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config)


def test_merge_of_two_tiny_models_is_the_elementwise_mean(tmp_path, tokenizer):
    from safetensors.torch import load_file

    paths = []
    for seed in (1, 2):
        model = _tiny_llama(seed)
        model.save_pretrained(tmp_path / f"m{seed}")
        tokenizer.save_pretrained(tmp_path / f"m{seed}")
        paths.append(tmp_path / f"m{seed}")
    out = merge_models(paths, (0.5, 0.5), tmp_path / "merged")
    a, b = (load_file(p / "model.safetensors") for p in paths)
    merged = load_file(out / "model.safetensors")
    assert merged.keys() == a.keys()
    for name in a:
        assert not torch.equal(a[name], b[name]) or "norm" in name  # the models really differ
        assert torch.equal(merged[name], (a[name] + b[name]) / 2), name
    assert (out / "tokenizer.json").is_file()


def test_merge_state_dicts_weights_buffers_and_mismatches():
    a = {"w": torch.tensor([1.0, 2.0]), "steps": torch.tensor([3])}
    b = {"w": torch.tensor([5.0, 6.0]), "steps": torch.tensor([9])}
    merged = merge_state_dicts([a, b], (0.25, 0.75))
    assert torch.allclose(merged["w"], torch.tensor([4.0, 5.0]))
    assert merged["steps"].tolist() == [3]  # non-float buffer: the first model's
    half = merge_state_dicts([{"w": a["w"].bfloat16()}, {"w": b["w"].bfloat16()}], (0.5, 0.5))
    assert half["w"].dtype == torch.bfloat16 and half["w"].tolist() == [3.0, 4.0]
    with pytest.raises(ValueError, match="sum to 1"):
        merge_state_dicts([a, b], (0.5, 0.6))
    with pytest.raises(ValueError, match="different tensors"):
        merge_state_dicts([a, {"w": b["w"]}], (0.5, 0.5))
    with pytest.raises(ValueError, match="shape"):
        merge_state_dicts([a, {"w": torch.zeros(3), "steps": b["steps"]}], (0.5, 0.5))


# --- (d) ZeRO stage by model size ------------------------------------------------------------

def test_zero_stage_follows_model_size():
    assert zero_plan(135_000_000, 8, 80) == (2, [])  # small: ZeRO-2, weights replicated
    assert zero_plan(7_000_000_000, 8, 80) == (2, [])  # 14 GB weights + 12 GB sharded states fit in 40 GB
    assert zero_plan(13_000_000_000, 8, 80) == (3, [])  # ZeRO-2 needs 49 GB/GPU; ZeRO-3 26 GB
    assert zero_plan(13_000_000_000, 2, 80) == (3, ["optimizer"])
    assert zero_plan(70_000_000_000, 8, 80) == (3, ["optimizer"])  # 140 GB/GPU sharded: offload Adam
    assert zero_plan(70_000_000_000, 1, 24) == (3, ["optimizer", "param"])
    cfg = zero_config(70_000_000_000, 1, 24)
    assert cfg["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert cfg["train_micro_batch_size_per_gpu"] == cfg["gradient_accumulation_steps"] == "auto"


def test_shipped_zero_examples_match_the_generator():
    here = ROOT / "trainer"
    assert json.loads((here / "zero2.json").read_text()) == zero_config(135_000_000, 8, 80)
    assert json.loads((here / "zero3.json").read_text()) == zero_config(13_000_000_000, 8, 80)


# --- (e) config ----------------------------------------------------------------------------------

def test_config_defaults_are_the_papers():
    cfg = load_train_config()
    assert (cfg.learning_rate, cfg.total_batch_size, cfg.max_length, cfg.lr_scheduler, cfg.warmup_ratio,
            cfg.num_epochs, cfg.merge_weights, cfg.eval_temperature) == (5e-6, 64, 8192, "cosine", 0.5, 3, (0.5, 0.5), 0.7)
    assert cfg.gradient_accumulation_steps(8) == 8


def test_config_rejects_unknown_keys_and_indivisible_batches(tmp_path, monkeypatch):
    with pytest.raises(TrainConfigError, match=r"learning_rat: unknown key"):
        load_train_config(None, ["learning_rat=1e-5"])
    path = tmp_path / "train.yaml"
    path.write_text("per_device_batch_size: 4\ntotal_batch_size: 64\nwarmup_steps: 10\n")
    with pytest.raises(TrainConfigError, match="warmup_steps: unknown key"):
        load_train_config(path)
    with pytest.raises(TrainConfigError, match="not divisible"):
        load_train_config(None, ["per_device_batch_size=3"])
    monkeypatch.setenv("WORLD_SIZE", "3")  # 64 samples cannot split over 3 processes
    with pytest.raises(TrainConfigError, match="3 process"):
        load_train_config()
    monkeypatch.setenv("WORLD_SIZE", "8")
    path.write_text("per_device_batch_size: 4\ntotal_batch_size: 64\n")
    cfg = load_train_config(path, ["learning_rate=2e-5", "merge_weights=[0.3, 0.7]"])
    assert cfg.gradient_accumulation_steps(8) == 2 and cfg.learning_rate == 2e-5 and cfg.merge_weights == (0.3, 0.7)
    with pytest.raises(TrainConfigError, match="sum to 1"):
        load_train_config(None, ["merge_weights=[0.6, 0.6]"])


def test_cli_names_the_bad_key():
    result = CliRunner().invoke(app, ["--set", "max_lenght=512", "fit"])
    assert result.exit_code == 2
    assert "max_lenght: unknown key" in result.output


# --- (f) MCQ ----------------------------------------------------------------------------------

@needs_shared
def test_tombench_loader_reads_every_english_question():
    questions = load_tombench(TOMBENCH)
    lines = sum(1 for p in TOMBENCH.glob("*.jsonl") for line in p.open(encoding="utf-8") if line.strip())
    assert len(questions) == lines
    assert all(len(q.options) == 4 and 0 <= q.answer_index < 4 for q in questions)
    first = next(q for q in questions if q.qid == "False Belief Task:0")
    assert first.options[first.answer_index] == "Backpack"
    assert first.messages[0]["content"].startswith("Xiaogang and Xiaoming")
    assert not any("\u4e00" <= ch <= "\u9fff" for q in questions[:50] for ch in q.messages[0]["content"])  # English only


@needs_shared
def test_motivebench_loader_reads_three_questions_per_item():
    questions = load_motivebench(MOTIVEBENCH)
    items = sum(len(json.loads(p.read_text(encoding="utf-8"))) for p in MOTIVEBENCH.glob("*_questions.json"))
    assert len(questions) == 3 * items
    assert all(len(q.options) == 6 for q in questions)
    assert not any(o[:2] in ("A.", "B.", "C.", "D.", "E.", "F.") for q in questions for o in q.options)
    amazon = next(q for q in questions if q.qid == "Amazon_questions:0:1")
    assert amazon.options[amazon.answer_index] == "To address her dog\u2019s current discomfort"


def test_subsample_is_deterministic_by_seed():
    questions = [Question(str(i), [], ["a", "b"], 0) for i in range(100)]
    pick = [q.qid for q in subsample(questions, 10, seed=1)]
    assert pick == [q.qid for q in subsample(questions, 10, seed=1)] and len(set(pick)) == 10
    assert pick != [q.qid for q in subsample(questions, 10, seed=2)]
    assert pick == sorted(pick, key=int)  # original order kept
    assert len(subsample(questions, None, 1)) == 100


def test_runner_picks_the_trivially_likely_option(base_model, tokenizer):
    sentence = "The quick brown fox jumps over the lazy dog."
    q = Question("copy", [{"role": "user", "content": f"Repeat exactly, nothing else: {sentence}"}],
                 ["Zebra quantum pickle marmalade.", "Seventeen purple.", sentence, "Ok."], answer_index=2)
    scores = option_scores(base_model, tokenizer, q, temperature=0.7, options_per_forward=8)
    assert max(range(4), key=scores.__getitem__) == 2
    # one padded batch scores each option exactly as alone
    alone = option_scores(base_model, tokenizer, q, temperature=0.7, options_per_forward=1)
    assert scores == pytest.approx(alone, abs=1e-4)
    # and as a plain forward over prompt + option (no cache) computes it
    prompt = tokenizer.apply_chat_template(q.messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    option_ids = tokenizer(sentence, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = base_model(input_ids=torch.tensor([prompt_ids + option_ids])).logits[0].float() / 0.7
    logprobs = torch.log_softmax(logits[len(prompt_ids) - 1:-1], dim=-1)
    reference = logprobs.gather(-1, torch.tensor(option_ids)[:, None]).mean().item()
    assert scores[2] == pytest.approx(reference, abs=1e-4)
    result = evaluate_questions(base_model, tokenizer, [q, Question("b", q.messages, q.options, 0)], 0.7)
    assert result == {"accuracy": 0.5, "correct": 1, "n": 2, "chance": 0.25}


# --- (g) CPU smoke: prepare-base -> fit -> merge -> evaluate ------------------------------------

TASKS = {
    "profile_generation": ("Summarise user {u} from their posts about {topic}.",
                           "User {u} writes short, upbeat posts about {topic} and signs off with 'cheers'."),
    "personalized_commenting": ("Write the comment user {u} would leave on a post about {topic}.",
                                "Love this! {topic} is my weekend ritual. cheers"),
}
TOPICS = ["gardening", "cycling", "baking", "chess", "birdwatching", "pottery"]


def _write_shards(root: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def record(i: int, task: str, split: str) -> dict:
        user, reply = TASKS[task]
        u, topic = f"u{i}", TOPICS[i % len(TOPICS)]
        return {"sample_id": f"{task}-{i}", "task": task, "source": "reddit", "user_id": u, "split": split,
                "messages": _conv(user.format(u=u, topic=topic), reply.format(u=u, topic=topic)),
                "artifact_ids": [f"r{i}"], "prompt_version": "v1"}

    for split, ids in (("train", range(6)), ("test", range(6, 8))):
        rows = [record(i, task, split) for i in ids for task in TASKS]
        (root / split / "parquet").mkdir(parents=True)
        (root / split / "jsonl").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), root / split / "parquet" / "part-00000.parquet")
        (root / split / "jsonl" / "part-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "mcq").mkdir()
    with open(root / "mcq" / "personalized_commenting.jsonl", "w") as f:
        for i in range(6, 10):
            topic = TOPICS[i % len(TOPICS)]
            real = TASKS["personalized_commenting"][1].format(topic=topic)
            distractors = [f"Meh, {topic} again? Unfollowing.", f"Source needed for this {topic} claim.",
                           "First!", f"I prefer the 2019 edition of {topic} rules.", "This is spam, reported.",
                           f"Has anyone tried {topic} at night?", "lol"]
            options = distractors[: i % 8] + [real] + distractors[i % 8:]
            messages = _conv(TASKS["personalized_commenting"][0].format(u=f"u{i}", topic=topic), "")[:2]
            f.write(json.dumps({"mcq_id": f"m{i}", "task": "personalized_commenting", "source": "reddit",
                                "user_id": f"u{i}", "messages": messages, "options": options,
                                "answer_index": i % 8, "origins": ["real"] + ["pool"] * 7}) + "\n")
    (root / "manifest.json").write_text("{}\n")
    (root / "dataset_info.json").write_text("{}\n")
    return root


def test_shard_loader_reads_parquet_and_jsonl_alike(tmp_path):
    shards = _write_shards(tmp_path / "shards")
    parquet = load_records(shards, "train", "parquet")
    assert len(parquet) == 12 and parquet == load_records(shards, "train", "jsonl") == load_records(shards, "train")
    assert {r["task"] for r in parquet} == set(TASKS)


# --- infra ------------------------------------------------------------------------------------

def test_databricks_job_and_launch_script_call_real_commands():
    infra = ROOT / "infra" / "trainer"
    job = yaml.safe_load((infra / "databricks_job.yml").read_text())
    commands = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    (job_def,) = job["resources"]["jobs"].values()
    (cluster,) = job_def["job_clusters"]
    for task in job_def["tasks"]:
        wheel = task["python_wheel_task"]
        assert (wheel["package_name"], wheel["entry_point"]) == ("lewin", "lewin-train")
        params = wheel["parameters"]
        overrides = [params[i + 1] for i, p in enumerate(params) if p == "--set"]
        load_train_config(None, [o for o in overrides if "${" not in o])  # every key exists
        assert params[-1] in commands
        assert task["job_cluster_key"] == cluster["job_cluster_key"]
        assert {"whl": "../../dist/*.whl"} in task["libraries"]  # relative to infra/trainer/
    bundle = yaml.safe_load((ROOT / "infra" / "databricks.yml").read_text())
    assert "trainer/databricks_job.yml" in bundle["include"]
    cfg = load_train_config(infra / "train.yaml")  # the example config is valid
    assert cfg.deepspeed == "auto" and cfg.merge_weights == (0.5, 0.5)
    launch = (infra / "launch.sh").read_text()
    assert subprocess.run(["bash", "-n", str(infra / "launch.sh")]).returncode == 0
    assert "lewin.trainer.cli" in launch and " fit" in launch


@pytest.mark.slow
def test_cpu_proof_on_the_emitted_sample_shards(sample_run, base_dir, tmp_path, capsys):
    """The CPU proof: the same trainer on the shards `lewin run` emitted from the bundled sample —
    a few full-batch steps (so the loss must fall), the 1:1 merge, base vs merged on the sample's
    MCQ sets and (when present) ToMBench and MotiveBench."""
    cwd, _ = sample_run
    shards = cwd / "lewin-data" / "shards"
    manifest = json.loads((shards / "manifest.json").read_text())
    # one task's samples (the paper's task-group switch, train_tasks): personalized_commenting's are
    # the shortest (3 of about 240 tokens each against 8 of 240-630 for the other tasks here: 706 of
    # 4,831 tokens), so a step costs about a seventh of the whole train split's 2.3 min on one thread
    task = "personalized_commenting"
    assert task in manifest["counts"]["train"], manifest["counts"]["train"]
    n_train = sum(manifest["counts"]["train"][task].values())
    out = tmp_path / "run"
    # 2 full-batch steps (every sample fits 1024 tokens; the second step's loss is after one update on
    # the same batch) and 6 questions a benchmark (one per ToMBench ability, two per MotiveBench subset)
    overrides = [f"base_model={base_dir}", f"shards_dir={shards}", f"output_dir={out}", "max_steps=2",
                 f"train_tasks=[{task}]", "learning_rate=5e-5", "warmup_ratio=0", "per_device_batch_size=1",
                 f"total_batch_size={n_train}", "max_length=1024", "gradient_checkpointing=false", "eval_limit=6"]
    if TOMBENCH.is_dir() and MOTIVEBENCH.is_dir():
        overrides += [f"tombench_dir={TOMBENCH}", f"motivebench_dir={MOTIVEBENCH}"]
    result = CliRunner().invoke(app, [a for o in overrides for a in ("--set", o)] + ["all"])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    metrics = json.loads((out / "finetuned" / "train_metrics.json").read_text())
    report = json.loads((out / "eval_report.json").read_text())["benchmarks"]
    losses = [h["loss"] for h in metrics["losses"]]
    assert metrics["samples"]["kept"] == n_train and metrics["deepspeed"] is False and "CPU" in metrics["deepspeed_reason"]
    assert metrics["data"]["lewin"]["by_task"] == {task: n_train}, metrics["data"]
    assert metrics["steps"] == 2 and len(losses) == 2 and metrics["gradient_accumulation_steps"] == n_train
    assert losses[-1] < losses[0], losses  # every step sees the whole (same) batch
    # the merged weights are the 1:1 mean of the fine-tuned and base weights
    from safetensors import safe_open

    name = "model.layers.0.mlp.down_proj.weight"
    tensors = {}
    for label, folder in (("base", base_dir), ("finetuned", out / "finetuned"), ("merged", out / "merged")):
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            tensors[label] = f.get_tensor(name)
    assert not torch.equal(tensors["finetuned"], tensors["base"])
    assert torch.equal(tensors["merged"], (tensors["finetuned"] + tensors["base"]) / 2)
    for name_, b in report.items():
        assert set(b["accuracy"]) == {"base", "merged"}, name_
        assert all(0 <= b["correct"][m] <= b["n"] and b["accuracy"][m] == b["correct"][m] / b["n"] for m in b["accuracy"])
    if "tombench" in report:
        assert report["tombench"]["n"] == report["motivebench"]["n"] == 6
        assert report["tombench"]["chance"] == pytest.approx(1 / 4) and report["motivebench"]["chance"] == pytest.approx(1 / 6)
    in_domain = {k: v for k, v in report.items() if k.startswith("lewin/")}
    assert in_domain and {k.split("/")[1] for k in in_domain} <= set(manifest["mcq"])
    # the paper's tables (issue 15): per task, per MotiveBench subset, per ToMBench ability; base and
    # merged, the letter protocol (letter log-probs on CPU) and option likelihood
    full = json.loads((out / "eval_report.json").read_text())
    assert full["protocol"] == "letter_logprob"
    tables = full["tables"]
    expected = {"in_domain"} | ({"motivebench", "tombench"} if "tombench" in report else set())
    assert set(tables) == expected
    for t in tables.values():
        assert {"base (letter)", "merged (letter)", "base (likelihood)", "merged (likelihood)"} <= set(t["rows"])
    if "tombench" in report:
        assert tables["motivebench"]["columns"] == ["Amazon", "Blogger", "Persona", "Avg"]
        assert tables["tombench"]["columns"][:-1] == ["Emotion", "Desire", "Intention", "Knowledge", "Belief",
                                                       "Non-literal communication"]
    markdown = (out / "eval_tables.md").read_text()
    with capsys.disabled():
        print(f"\n[sample shards] {n_train} train samples; loss per step: {' '.join(f'{x:.3f}' for x in losses)}")
        for name, b in report.items():
            print(f"[sample shards] {name:34s} n={b['n']:3d} chance={b['chance']:.3f} "
                  f"base={b['accuracy']['base']:.3f} merged={b['accuracy']['merged']:.3f} "
                  f"(likelihood {b['option_likelihood']['base']:.3f} / {b['option_likelihood']['merged']:.3f})")
        print(markdown)
