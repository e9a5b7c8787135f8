"""The paper's evaluation protocol (issue 15): lettered options in the prompt, the chosen letter read
by log-probability or from a generated reply; breakdown tables per task / subset / ability; the
training-data knobs (task subset, ShareGPT mix). Scripted models only: no training, no real model."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from lewin.trainer import mcq as M  # noqa: E402
from lewin.trainer.config import load_train_config  # noqa: E402
from lewin.udfs.llm_backends import Response, register_backend  # noqa: E402


# --- scripted models ---------------------------------------------------------------------------

class CharTokenizer:
    """One token per character (its code point): enough for a chat template and letter tokens."""

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        text = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)
        return text + ("<|assistant|>" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


class LongestOptionLM:
    """Reads the lettered list from its prompt and puts its next-token mass on the letter of the
    longest option: it can only answer if the protocol shows the options, lettered."""

    config = SimpleNamespace(max_position_embeddings=10**6)
    device = torch.device("cpu")

    def __call__(self, input_ids, logits_to_keep=1, **_):
        text = "".join(chr(i) for i in input_ids[0].tolist())
        listed = re.findall(r"^([A-T])\. (.*)$", text.split("Candidate answers:")[-1], flags=re.M)
        logits = torch.zeros(1, 1, 0x3000)
        if listed:
            letter = max(listed, key=lambda x: len(x[1]))[0]
            logits[0, -1, ord(letter)] = 10.0
        return SimpleNamespace(logits=logits)


def _q(qid, options, answer, group=None, origins=None, prompt="Which one?"):
    return M.Question(qid, [{"role": "user", "content": prompt}], options, answer, group=group, origins=origins)


# --- the protocol -------------------------------------------------------------------------------

def test_letter_logprob_protocol_on_a_scripted_model_gives_the_expected_accuracy():
    questions = [
        _q("q1", ["short", "the longest option of all", "mid size"], 1),  # longest is right
        _q("q2", ["a", "bb", "ccc", "dddd", "eeeee", "ffffff", "ggggggg", "the real answer, longest"], 7),
        _q("q3", ["the longest wrong answer here", "right"], 1),  # longest is wrong
        _q("q4", ["x", "yy is right and longest"], 1),
    ]
    tok, model = CharTokenizer(), LongestOptionLM()
    prompt = M.letter_messages(questions[1])[-1]["content"]
    assert "Candidate answers:\nA. a\nB. bb\n" in prompt and "H. the real answer, longest" in prompt
    assert prompt.endswith(M.LETTER_INSTRUCTION)
    scores = [M.letter_scores(model, tok, q) for q in questions]
    assert [len(s) for s in scores] == [3, 8, 2, 2]
    picks = [max(range(len(s)), key=s.__getitem__) for s in scores]
    assert picks == [1, 7, 0, 1]
    report = M.build_report({"set": questions}, {"m": {"set": {"letter": picks, "letter_scores": scores}}})
    b = report["benchmarks"]["set"]
    assert b["accuracy"]["m"] == 0.75 and b["correct"]["m"] == 3 and b["unparseable"]["m"] == 0
    assert b["chance"] == pytest.approx((1 / 3 + 1 / 8 + 1 / 2 + 1 / 2) / 4)
    assert b["length_baseline"] == {"longest": 0.75, "shortest": 0.25}


class ScriptedEngine:
    """An engine of lewin.udfs.llm_backends that replies from a script keyed by question id."""

    name = "scripted"
    model = "scripted-eval"
    context_tokens = 8192

    def __init__(self, script):
        self.script = script
        self.seen = []

    def count_tokens(self, messages):
        return 1

    def generate(self, requests, sampling):
        self.seen += [(r.key, r.messages, r.sampling) for r in requests]
        return [Response(r.key, error="engine error: down") if self.script[r.key] is None
                else Response(r.key, self.script[r.key]) for r in requests]


def test_letter_generate_reads_the_first_letter_and_counts_unparseable_replies(tmp_path):
    questions = [_q(f"g{i}", ["one", "two", "three", "four"], i % 4, group="Belief") for i in range(6)]
    script = {"g0": "A", "g1": "B. because it fits", "g2": "The answer is C.", "g3": "I cannot tell.",
              "g4": "(A) clearly", "g5": None}  # right, right, right, unparseable, right, engine failure
    cfg = load_train_config(None, ["eval_protocol=letter_generate", "eval_option_likelihood=false",
                                   "eval_engine={kind: openai, base_url: 'http://scripted'}", "seed=5"])
    engine = ScriptedEngine(script)
    model_dir = tmp_path / "merged"
    register_backend(M.generation_spec(model_dir, cfg), engine)
    preds = M.predict_model(model_dir, {"tombench": questions}, cfg, "letter_generate")
    assert preds["tombench"]["letter"] == [0, 1, 2, None, 0, None]
    key, messages, sampling = engine.seen[0]
    assert "A. one\nB. two\nC. three\nD. four" in messages[-1]["content"]
    assert (sampling.temperature, sampling.seed) == (0.7, 5)
    b = M.build_report({"tombench": questions}, {"merged": preds})["benchmarks"]["tombench"]
    assert b["accuracy"]["merged"] == pytest.approx(4 / 6) and b["unparseable"]["merged"] == 2
    assert b["groups"]["Belief"]["n"] == 6


def test_read_letter():
    assert [M.read_letter(x, 8) for x in ("B", " c", "**D**", "Answer: E", "(F)", "H.", "I", "Because", "", None)] == \
        [1, None, 3, 4, 5, 7, None, None, None, None]
    assert M.read_letter("T", 20) == 19 and M.read_letter("I think B", 20) == 8  # the first letter, as read


# --- loaders: the groups the tables break down by ------------------------------------------------

def test_groups_come_from_the_items_own_fields(tmp_path):
    tom, mot = tmp_path / "tom", tmp_path / "mot"
    tom.mkdir()
    mot.mkdir()
    rows = [("Non-literal communication: White lies", "A"), ("Belief: Location false beliefs Belief: Second-order beliefs", "B"),
            ("Non-Literal Communication: Faux pas", "C"), ("Knowledge: Information-knowledge links ", "D")]
    (tom / "Some Task.jsonl").write_text("".join(json.dumps({
        "能力\nABILITY": a, "STORY": "s", "QUESTION": "q", "OPTION-A": "w", "OPTION-B": "x", "OPTION-C": "y",
        "OPTION-D": "z", "答案\nANSWER": ans}) + "\n" for a, ans in rows), encoding="utf-8")
    assert [q.group for q in M.load_tombench(tom)] == ["Non-literal communication", "Belief", "Non-literal communication",
                                                       "Knowledge"]
    item = {"idx": 0, "Motivation Reasoning Question": "why?", "Options 1": ["A. a", "B. b"], "Correct Answer 1": "B"}
    for stem in ("Amazon", "Blog", "Persona"):
        (mot / f"{stem}_questions.json").write_text(json.dumps([item]))
    assert [q.group for q in M.load_motivebench(mot)] == ["Amazon", "Blogger", "Persona"]


def test_item_selection_list_header_matches_the_emit_side(tmp_path):
    from lewin.udfs.training_tasks import CANDIDATES_HEADER, item_prompt

    assert M.ITEM_LIST_HEADER == CANDIDATES_HEADER
    (tmp_path / "mcq").mkdir()
    user = item_prompt("Your purchases so far:\n- Tea", ["Kettle", "Mug"])
    (tmp_path / "mcq" / "item_selection.jsonl").write_text(json.dumps({
        "mcq_id": "i1", "task": "item_selection", "messages": [{"role": "user", "content": user}],
        "options": ["Kettle", "Mug"], "answer_index": 1, "origins": ["pool", "real"]}) + "\n")
    (q,) = M.load_lewin_mcq(tmp_path)["lewin/item_selection"]
    shown = M.letter_messages(q)[-1]["content"]
    assert "1. Kettle" not in shown and "A. Kettle\nB. Mug" in shown and q.group == "item_selection"


def test_subsample_shares_the_limit_among_groups():
    qs = [_q(f"e{i}", ["a", "b"], 0, group="Emotion") for i in range(50)] + \
         [_q(f"d{i}", ["a", "b"], 0, group="Desire") for i in range(3)] + \
         [_q(f"b{i}", ["a", "b"], 0, group="Belief") for i in range(50)]
    picked = M.subsample(qs, 13, seed=1)
    counts = {g: sum(q.group == g for q in picked) for g in ("Emotion", "Desire", "Belief")}
    assert counts == {"Belief": 5, "Desire": 3, "Emotion": 5} and len(picked) == 13


# --- the breakdown tables ------------------------------------------------------------------------

def test_breakdown_tables_on_a_fixture():
    lewin_origins = ["real", "engine:a", "engine:b", "other_user"]
    benchmarks = {
        "lewin/profile_generation": [_q(f"p{i}", ["r" * (10 + i), "aa", "bbb", "c"], 0, "profile_generation", lewin_origins)
                                     for i in range(4)],
        "lewin/item_selection": [_q(f"i{i}", [f"o{k}" for k in range(20)], i, "item_selection", None) for i in range(2)],
        "motivebench": [_q(f"m{i}", list("abcdef"), 0, g) for i, g in enumerate(["Amazon", "Amazon", "Blogger", "Persona"])],
        "tombench": [_q(f"t{i}", list("abcd"), 1, g) for i, g in enumerate(["Emotion", "Belief", "Non-literal communication"])],
    }
    preds = {
        "base": {"lewin/profile_generation": {"letter": [0, 1, 2, None], "letter_scores": [[3, 2, 1, 0], [1, 3, 2, 0], [1, 2, 3, 0],
                                                                                             [0, 1, 2, 3]],
                                              "likelihood": [0, 0, 3, 3]},
                 "lewin/item_selection": {"letter": [0, 0], "likelihood": [0, 1]},
                 "motivebench": {"letter": [0, 1, 0, 1], "likelihood": [0, 0, 0, 0]},
                 "tombench": {"letter": [1, 0, 1], "likelihood": [1, 1, 1]}},
        "merged": {"lewin/profile_generation": {"letter": [0, 0, 0, 1], "likelihood": [0, 0, 0, 0]},
                   "lewin/item_selection": {"letter": [0, 1], "likelihood": [0, 1]},
                   "motivebench": {"letter": [0, 0, 0, 0], "likelihood": [0, 0, 0, 1]},
                   "tombench": {"letter": [1, 1, 1], "likelihood": [1, 1, 0]}},
    }
    report = M.build_report(benchmarks, preds, {"protocol": "letter_logprob"})
    t = report["tables"]
    assert list(t) == ["in_domain", "motivebench", "tombench"]
    ind = t["in_domain"]
    assert ind["columns"] == ["item_selection", "profile_generation", "Avg"]  # the paper's order
    assert ind["n"] == {"item_selection": 2, "profile_generation": 4, "Avg": 6}
    assert ind["chance"]["item_selection"] == pytest.approx(1 / 20) and ind["chance"]["profile_generation"] == 0.25
    assert ind["rows"]["base (letter)"] == {"item_selection": 0.5, "profile_generation": 0.25, "Avg": 0.375}
    assert ind["rows"]["merged (letter)"]["profile_generation"] == 0.75
    assert ind["rows"]["base (likelihood)"]["profile_generation"] == 0.5
    assert ind["rows"]["pick the longest"]["profile_generation"] == 1.0  # this fixture is length-solvable
    mb = t["motivebench"]
    assert mb["columns"] == ["Amazon", "Blogger", "Persona", "Avg"] and mb["n"]["Amazon"] == 2
    assert mb["rows"]["base (letter)"] == {"Amazon": 0.5, "Blogger": 1.0, "Persona": 0.0, "Avg": 0.5}
    assert mb["chance"]["Avg"] == pytest.approx(1 / 6)
    tb = t["tombench"]
    assert tb["columns"] == ["Emotion", "Belief", "Non-literal communication", "Avg"]
    assert tb["rows"]["merged (likelihood)"] == {"Emotion": 1.0, "Belief": 1.0, "Non-literal communication": 0.0,
                                                 "Avg": pytest.approx(2 / 3)}
    # accuracy by origin: base picked real 1/4, engine:a 1/4 of its options, other_user none
    origin = report["benchmarks"]["lewin/profile_generation"]["by_origin"]
    assert origin["real"]["letter"]["base"]["pick_rate"] == 0.25
    assert origin["engine:a"]["letter"]["base"] == {"pick_rate": 0.25, "beaten_by_real": 0.25}
    assert origin["other_user"]["letter"]["base"] == {"pick_rate": 0.0, "beaten_by_real": 0.75}
    assert origin["engine:b"]["option_likelihood"]["merged"] == {"pick_rate": 0.0}
    assert report["benchmarks"]["lewin/profile_generation"]["unparseable"]["base"] == 1
    md = M.markdown_tables(t)
    assert "### Table 1: in-domain MCQ accuracy (%)" in md and "| base (letter) | 50.00 | 25.00 | 37.50 |" in md
    assert "| base (letter) | 0.5000 | 1.0000 | 0.0000 | 0.5000 |" in md  # MotiveBench as fractions
    assert "| n | 2 | 1 | 1 | 4 |" in md


# --- ablation knobs: task subset and a ShareGPT mix ----------------------------------------------

def test_training_records_keep_a_task_subset_and_mix_sharegpt_at_a_ratio(tmp_path):
    from lewin.trainer.data import training_records

    shards = tmp_path / "shards" / "train" / "jsonl"
    shards.mkdir(parents=True)
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    rows = [{"task": t, "messages": conv} for t in ["social_qa"] * 6 + ["item_selection"] * 4]
    (shards / "part-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ext = tmp_path / "smoltalk.jsonl"
    ext.write_text("".join(json.dumps({"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": "a"}]})
                           + "\n" for i in range(20)) + json.dumps({"messages": [{"role": "user", "content": "no reply"}]}) + "\n")
    small = tmp_path / "orca.jsonl"
    small.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}) + "\n")
    cfg = load_train_config(None, [f"shards_dir={tmp_path / 'shards'}", "train_tasks=[social_qa]",
                                   f"mix=[{{path: '{ext}', ratio: 0.25}}, {{path: '{small}', ratio: 0.25}}]"])
    records, report = training_records(cfg)
    assert report["lewin"]["samples"] == 6 and report["lewin"]["by_task"] == {"social_qa": 6}
    assert report["train_tasks"] == ["social_qa"]
    smol, orca = report["mix"]
    assert (smol["usable_rows"], smol["wanted"], smol["samples"], smol["short"]) == (20, 3, 3, False)
    assert (orca["wanted"], orca["samples"], orca["short"]) == (3, 1, True)
    assert len(records) == 10 and sum(r["task"] == "mix:smoltalk.jsonl" for r in records) == 3
    assert records[-1]["messages"] == [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    assert report["achieved_share"] == {"lewin": 0.6, "mix:smoltalk.jsonl": 0.3, "mix:orca.jsonl": 0.1}
    with pytest.raises(ValueError, match="no samples"):
        training_records(cfg.model_copy(update={"train_tasks": ["writing_imitation"]}))
    with pytest.raises(Exception, match="need a share"):
        load_train_config(None, ["mix=[{path: a, ratio: 0.5}, {path: b, ratio: 0.5}]"])
