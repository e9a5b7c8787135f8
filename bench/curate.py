"""Curation throughput on Pushshift-style Reddit dumps: Lewin's default curation against datatrove
doing the same work with its own blocks, each side in its own process, on the same cores, in one run.

Input (``_common.write_reddit_jsonl``): N records in monthly ``RS_YYYY-MM.jsonl`` (submissions, ~6 %)
and ``RC_YYYY-MM.jsonl`` (comments, ~94 %) files, or with ``--layout mixed`` files holding both;
Reddit Markdown, quotes, links, HTML entities, deleted/removed bodies, AutoModerator and other bots,
moderator-distinguished removal notices, boilerplate, ~3 % non-English comments, ~5 % planted near-
and exact duplicates. Records in = all generated records, both kinds.

(a) Lewin, the headline: ``load_config(None, [f"storage.root={root}"])``, nothing switched off.
    ``ingest`` of the folder for source ``reddit`` (JSONL -> the ``bronze_reddit`` and
    ``bronze_reddit_comments`` Delta tables), then ``curate`` of the streams ``reddit`` and
    ``reddit_comments``: cleaning (``clean_v1``, text and title, every bronze row), the stream's
    rules, fastText lid.176 language ID (English >= 0.65, on the first ``curate.language.max_chars``
    = 500 characters), the datatrove quality heuristics as tags (``curate.quality.drop_on`` is
    empty by default: nothing is dropped for quality), exact dedup on the normalised-text hash
    over source ``reddit`` (both streams together, the earliest record wins), then MinHash + LSH
    near-dedup (word 5-grams, 20 bands x 5 rows, candidates verified at exact Jaccard >= 0.8,
    connected components, the earliest survives: ``dedup_near_v1``),
    writing ``silver_records`` and ``rejected``. Seconds = ingest + both curates; the engine start
    is reported apart.

(b) datatrove, the baseline of the headline: ``LocalPipelineExecutor`` runs in sequence, workers =
    cores, uncompressed JSONL between them:
    0. ``reddit_bot_v2``'s account pass, one task per input file: JsonlReader -> a step counting per
       author its records, bot-signed records, "beep boop" records and the threads each text
       (template key) was posted in; the driver merges the tasks' counts into the set of bot
       accounts (plus the shipped known-bot list) that the rules below read (Lewin reads every
       bronze row of the batch's users the same way; datatrove's reader skips empty texts, which
       only link posts have);
    1. one task per input file: JsonlReader (an adapter maps submissions and comments to
       Documents, text = ``selftext`` / ``body``; the reader skips empty texts, i.e. link posts,
       which Lewin's length rule rejects: they are counted as rule rejections) -> LambdaFilter with
       Lewin's default Reddit rules (parameters read from ``CurateRules()``: deleted/removed
       markers, system-user names, ``reddit_bot_v2`` (the known-bot list, a signed text, or an
       account from step 0), moderator/admin/special distinguished;
       submissions score >= 2 and num_comments >= 2, comments score >= 2) -> the cleaning step
       (Lewin's ``clean_v1`` patterns in Python ``re``, text and title) -> LambdaFilter on the
       cleaned length (submissions >= 300, comments >= 20) -> GopherRepetitionFilter,
       GopherQualityFilter, C4QualityFilter(filter_no_terminal_punct=False) and
       FineWebQualityFilter as taggers (a failure goes to ``metadata["quality_flags"]``, the
       document passes) -> LanguageFilter (fastText lid.176, the ``.ftz`` Lewin ships, English >
       0.65) -> JsonlWriter -> ExactDedupSignature (Lewin's normalisation: lower case, runs of
       non-letters/digits -> one space);
    2. ExactFindDedups (one task);
    3. one task per file: JsonlReader -> ExactDedupFilter -> JsonlWriter -> MinhashDedupSignature;
    4. MinhashDedupBuckets (one task per bucket);
    5. MinhashDedupCluster (one task);
    6. one task per file: JsonlReader -> MinhashDedupFilter -> JsonlWriter.
    MinHash: ``MinhashConfig(n_grams=5, num_buckets=20, hashes_per_bucket=5)``, datatrove's default
    seed (1), text normalisation and 64-bit xxhash (through a two-line wrapper that encodes the
    shingle to UTF-8: datatrove's own hands ``str`` to xxhash, which xxhash 4 refuses). Seconds =
    all six runs, their process pools included.

What differs: Lewin writes Delta tables (bronze, silver, ``rejected`` with a reason per dropped
row, run logs), datatrove JSONL files. Lewin classifies the language on the first 500 characters,
datatrove on the whole text. Lewin keeps the earliest of duplicates, datatrove one of them (the
counts do not depend on which). datatrove's MinHash drops every document sharing a bucket with
another, unverified; Lewin verifies each candidate pair by its exact shingle Jaccard (>= 0.8), so
on short comments, where one edited word moves the 5-gram Jaccard below 0.8, datatrove removes
more (the funnel shows both). The per-side funnel and the quality flags counted on the kept records show
how far the two agree.

(c) Secondary, rules only: Lewin with ``curate.quality.enabled=false`` and
    ``curate.dedup.enabled=false`` and ``curate.dedup.near.enabled=false`` against one datatrove
    run of JsonlReader -> rules -> cleaning -> length -> LanguageFilter -> JsonlWriter.

Output: per-side lines, then ``name: value`` lines, the headline last: ``records_per_s_per_core``
(Lewin, default configuration: records in / seconds / cores) and ``ratio_per_core`` (Lewin per
core / datatrove per core, the same work).

    python bench/curate.py --n 600000
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import get_filter_result

sys.path.insert(0, str(Path(__file__).parent))
from _common import cores, run_child, write_reddit_jsonl  # noqa: E402

# --- the cleaning datatrove applies: lewin.udfs.clean (clean_v1) in Python's re syntax --------------
_ENTITIES = [
    ("&nbsp;", " "), ("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&apos;", "'"), ("&#39;", "'"),
    ("&#x27;", "'"), ("&#34;", '"'), ("&#8217;", "’"), ("&#8216;", "‘"), ("&#8220;", "“"), ("&#8221;", "”"),
    ("&#8212;", "—"), ("&#8211;", "–"), ("&#8230;", "…"), ("&#x200B;", ""), ("&#x200b;", ""), ("&hellip;", "…"),
    ("&mdash;", "—"), ("&ndash;", "–"), ("&rsquo;", "’"), ("&lsquo;", "‘"), ("&rdquo;", "”"), ("&ldquo;", "“"),
    ("&amp;", "&"),  # last, as in Lewin
]
_STRIP = [(re.compile(p), r) for p, r in (
    (r"(?s)<!--.*?-->", " "),
    (r"(?is)<(script|style)[^>]*>.*?</(script|style)>", " "),
    (r"</?[A-Za-z][A-Za-z0-9:-]*(\s[^<>]{0,500})?/?>", " "),
    (r"!?\[([^\]\n]{0,300})\]\([^)\s]{0,2000}\)", r"\1"),
    (r"(?i)\b(https?://|ftp://|www\.)[^\s<>\"']+", " "),
    (r"\*\*\*([^*\n]+)\*\*\*", r"\1"),
    (r"\*\*([^*\n]+)\*\*", r"\1"),
    (r"(^|\s)\*([^*\s][^*\n]*)\*", r"\1\2"),
    (r"__([^_\n]+)__", r"\1"),
    (r"~~([^~\n]+)~~", r"\1"),
    (r"`{3}[^\n]*", " "),
    (r"`([^`\n]+)`", r"\1"),
    (r"(?m)^[ \t]*(#{1,6}|>+|[-*+]|\d{1,3}[.)])[ \t]+", ""),
    (r"(?m)^[ \t]*([-*_][ \t]*){3,}$", ""),
    (r"(?m)^\|.*\|$", " "),
    (r"\burlLink\b", " "),
    ("[\u200b-\u200d\u2060\ufeff\u00ad\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", ""),
    ("[ \t\u00a0\u2000-\u200a\u3000]+", " "),
    (r" ?\n ?", "\n"),
    (r"\n{3,}", "\n\n"),
)]


def _clean(text: str) -> str:
    if "&" in text:
        for a, b in _ENTITIES:
            text = text.replace(a, b)
    for rx, repl in _STRIP:
        text = rx.sub(repl, text)
    return text.strip(" \n\t\r")


# --- (b) datatrove -----------------------------------------------------------------------------------
def _adapter(self, data: dict, path: str, id_in_file: int | str):
    comment = data.get("body") is not None or data.get("link_id") is not None
    text = data.get("body") if comment else data.get("selftext")
    return {"text": text if isinstance(text, str) else "", "id": ("t1_" if comment else "t3_") + str(data.get("id")),
            "metadata": {"kind": "comment" if comment else "submission", "author": data.get("author"),
                         "score": data.get("score"), "num_comments": data.get("num_comments"),
                         "distinguished": data.get("distinguished"),
                         "removed_by_category": data.get("removed_by_category"), "title": data.get("title"),
                         "created_utc": data.get("created_utc"), "subreddit": data.get("subreddit"),
                         "link_id": data.get("link_id")}}


class _RedditRules:
    """Lewin's default Reddit rules (``CurateRules()``: the same parameters) as two predicates:
    ``keep`` before cleaning, ``long_enough`` on the cleaned text."""

    def __init__(self):
        from lewin.schemas.config import CurateRules

        r = CurateRules()
        d = r.reddit_deleted_v1
        self.markers = {m.lower() for m in d.markers} if d.enabled else None
        pats = [p for rule in (r.reddit_system_user_v1, r.reddit_bot_v1) if rule.enabled for p in rule.patterns]
        self.names = re.compile("(?i)^(" + "|".join(f"(?:{p})" for p in pats) + ")$") if pats else None
        self.bots = _RedditBots(r.reddit_bot_v2) if r.reddit_bot_v2.enabled else None
        self.bot_accounts: set[str] | None = None  # from the account pass (``_RedditBots.accounts``)
        m = r.reddit_moderator_v1
        self.distinguished = {v.lower() for v in m.values} if m.enabled else set()
        on = lambda rule, v: v if rule.enabled else 0  # noqa: E731
        self.sub_score = on(r.reddit_min_score_v1, r.reddit_min_score_v1.min)
        self.sub_comments = on(r.reddit_min_comments_v1, r.reddit_min_comments_v1.min)
        self.sub_chars = on(r.reddit_min_length_v1, r.reddit_min_length_v1.min_chars)
        self.com_score = on(r.reddit_comment_min_score_v1, r.reddit_comment_min_score_v1.min)
        self.com_chars = on(r.reddit_comment_min_length_v1, r.reddit_comment_min_length_v1.min_chars)

    def keep(self, doc) -> bool:
        m = doc.metadata
        author = m.get("author") or ""
        if self.markers is not None and (author.lower() in self.markers or doc.text.strip().lower() in self.markers
                                         or m.get("removed_by_category")):
            return False
        if self.names is not None and self.names.match(author):
            return False
        if self.bots is not None and (author.lower() in self.bot_accounts or self.bots.signed(doc.text)):
            return False
        if str(m.get("distinguished") or "").lower() in self.distinguished:
            return False
        if m["kind"] == "submission":
            return (m.get("score") or 0) >= self.sub_score and (m.get("num_comments") or 0) >= self.sub_comments
        return (m.get("score") or 0) >= self.com_score

    def long_enough(self, doc) -> bool:
        return len(doc.text) >= (self.sub_chars if doc.metadata["kind"] == "submission" else self.com_chars)


class _RedditBots:
    """``reddit_bot_v2`` in Python: the shipped known-bot list, signatures per record, and the
    account signals (signed records, one text posted in several threads, a bot-like name with a
    weak signal) from a pass over every document first (``_AccountStats``), as Lewin's
    ``account_stats`` reads every bronze row of the batch's users."""

    def __init__(self, r):
        from lewin.udfs.sources.reddit import known_bots

        self.r = r
        self.known = set(known_bots(r))
        self.sig = re.compile("|".join(f"(?:{p})" for p in r.signature_patterns), re.I) if r.signature_patterns else None
        self.weak = re.compile("|".join(f"(?:{p})" for p in r.weak_signature_patterns), re.I) if r.weak_signature_patterns else None
        self.name = re.compile("^(?:" + "|".join(f"(?:{p})" for p in r.name_patterns) + ")$", re.I) if r.name_patterns else None

    @staticmethod
    def plain(text: str) -> str:
        return " ".join(_SIG_STRIP.sub(" ", text or "").split()).lower()

    def signed(self, text: str) -> bool:
        return self.sig is not None and self.sig.search(self.plain(text)) is not None

    @staticmethod
    def template_key(text: str) -> str:
        t = _MENTION.sub(" u ", (text or "").lower())
        t = _DIGITS.sub("0", t)
        t = "".join(" " if unicodedata.category(c)[0] in "PSZ" or c.isspace() else c for c in t)
        return " ".join(t.split())

    def accounts(self, parts: list[dict]) -> set[str]:
        """The bot accounts (lower case) from the per-task account counts."""
        r = self.r
        acc: dict[str, list] = {}
        for part in parts:
            for a, (n, signed, weak, keys) in part.items():
                cur = acc.setdefault(a, [0, 0, 0, {}])
                cur[0] += n
                cur[1] += signed
                cur[2] += weak
                for k, (threads, c) in keys.items():
                    t = cur[3].setdefault(k, [set(), 0])
                    t[0].update(threads)
                    t[1] += c
        bots = set(self.known)
        for a, (n, signed, weak, keys) in acc.items():
            threads = max((len(t) for t, _ in keys.values()), default=0)
            repeated = sum(c for t, c in keys.values() if len(t) >= 2)
            mostly = repeated / max(n, 1) >= r.min_template_share
            named = self.name is not None and self.name.match(a) is not None
            if (signed >= r.min_signed_records or (threads >= r.min_template_threads and mostly)
                    or (named and weak > 0) or (named and threads >= r.name_template_threads and mostly)):
                bots.add(a)
        return bots


_SIG_STRIP = re.compile(r"[\^*_~()\\]+")
_MENTION = re.compile(r"/?\bu/[\w-]+", re.ASCII)  # Java's \w and \b are ASCII, as Spark's regexp_replace
_DIGITS = re.compile(r"[0-9]+")


class _AccountStats(PipelineStep):
    """Per author: records, signed records, weakly signed records and, per template key of at
    least ``min_template_chars``, its threads and count; one JSON file per task."""

    name = "reddit_bot_v2 account pass"

    def __init__(self, out: str, bots: _RedditBots):
        super().__init__()
        self.out, self.bots = out, bots

    def run(self, data, rank: int = 0, world_size: int = 1):
        b = self.bots
        acc: dict[str, list] = {}
        for doc in data:
            m = doc.metadata
            a = (m.get("author") or "").lower()
            cur = acc.setdefault(a, [0, 0, 0, {}])
            cur[0] += 1
            plain = b.plain(doc.text)
            cur[1] += b.sig is not None and b.sig.search(plain) is not None
            cur[2] += b.weak is not None and b.weak.search(plain) is not None
            key = b.template_key(doc.text)
            if len(key) >= b.r.min_template_chars:
                t = cur[3].setdefault(key, [[], 0])
                t[0].append(m.get("link_id") or doc.id)
                t[1] += 1
        for cur in acc.values():
            cur[3] = {k: [sorted(set(t)), c] for k, (t, c) in cur[3].items()}
        Path(self.out).mkdir(parents=True, exist_ok=True)
        (Path(self.out) / f"{rank:05d}.json").write_text(json.dumps(acc))
        return iter(())


def _norm_text(doc) -> bytes:
    """Exact-dedup key: Lewin's ``normalized_hash`` normalisation (datatrove hashes it), UTF-8."""
    import regex

    return regex.sub(r"[^\p{L}\p{N}]+", " ", doc.text.lower()).strip().encode()


def _xxhash64(data: str | bytes) -> int:
    """datatrove's default shingle hash (xxhash64) of the UTF-8 text: its own wrapper hands ``str``
    to xxhash, which xxhash 4 refuses ("Strings must be encoded before hashing")."""
    import xxhash

    return xxhash.xxh64_intdigest(data.encode() if isinstance(data, str) else data)


class _NumpyScores:
    """fasttext-predict returns plain floats; datatrove calls ``.item()`` on each score."""

    def __init__(self, model):
        self.model = model

    def predict(self, text, k=-1):
        import numpy as np

        labels, probs = self.model.predict(text, k=k)
        return labels, np.array(probs)


class _LocalFT176:
    """datatrove's FT176LID with the offline lid.176.ftz (datatrove would download lid.176.bin);
    the model loads lazily in each worker, as datatrove's own does."""

    def __init__(self, languages):
        self.languages = languages
        self._lid = None

    def predict(self, doc):
        if self._lid is None:
            import fasttext
            from datatrove.utils.lid import FT176LID

            from lewin.udfs.langid import default_model_path

            self._lid = FT176LID(self.languages)
            self._lid._model = _NumpyScores(fasttext.load_model(default_model_path()))
        return self._lid.predict(doc)


def _accept_fasttext_predict() -> None:
    """datatrove asks for the `fasttext-numpy2-wheel` distribution; the installed `fasttext` module
    is fasttext-predict (the same C++ predict, NumPy-2 safe), which serves the same model. At
    module level because datatrove's workers re-import this file and re-check on unpickling."""
    try:
        import datatrove.utils._import_utils as deps
    except ImportError:
        return
    accept = deps._is_distribution_available
    deps._is_distribution_available = lambda name: name == "fasttext-numpy2-wheel" or accept(name)


_accept_fasttext_predict()


class _Clean(PipelineStep):
    """The cleaning step: ``_clean`` on the text and on the title (kept in metadata)."""

    name = "clean_v1"
    type = "✂️ - FORMAT"

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            with self.track_time():
                doc.text = _clean(doc.text)
                title = doc.metadata.get("title")
                if title:
                    doc.metadata["title"] = _clean(title)
            yield doc


class _Tag(PipelineStep):
    """A datatrove filter run as a tagger: a failing document gets ``flag[:reason]`` in
    ``metadata["quality_flags"]`` (Lewin's format) and passes on."""

    type = "🏷 - TAGGER"

    name = "tag"

    def __init__(self, flag: str, f):
        self.name = f"tag {flag}"  # before PipelineStep.__init__, which names the step's stats
        super().__init__()
        self.flag, self.f = flag, f

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            with self.track_time():
                ok, reason = get_filter_result(self.f.filter(doc))
                flags = doc.metadata.setdefault("quality_flags", [])
                if not ok:
                    flags.append(f"{self.flag}:{reason}" if reason else self.flag)
                self.stat_update("passed" if ok else "flagged")
            yield doc


def _touch_ranks(folder: Path, tasks: int) -> None:
    """A task that kept nothing writes no file; the next run's task r must read task r's output
    (the dedup stages index documents by rank), so every rank gets a file."""
    folder.mkdir(parents=True, exist_ok=True)
    for r in range(tasks):
        (folder / f"{r:05d}.jsonl").touch()


def _dropped(stats) -> list[int]:
    return [int(s.stats["dropped"].total) if "dropped" in s.stats else 0 for s in stats.stats]


def _count_lines(folder: Path) -> int:
    return sum(1 for p in folder.glob("*.jsonl") for _ in open(p, "rb"))


def _flag_counts(folder: Path) -> dict[str, int]:
    """Kept documents flagged by each quality heuristic."""
    counts: dict[str, int] = {}
    for p in folder.glob("*.jsonl"):
        with open(p, "rb") as f:
            for line in f:
                for flag in {x.split(":")[0] for x in json.loads(line)["metadata"].get("quality_flags") or ()}:
                    counts[flag] = counts.get(flag, 0) + 1
    return dict(sorted(counts.items()))


def run_datatrove(data: str, work: str, tasks: int, workers: int, mode: str) -> None:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        ExactDedupConfig, ExactDedupFilter, ExactDedupSignature, ExactFindDedups, MinhashConfig, MinhashDedupBuckets,
        MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature,
    )
    from datatrove.pipeline.filters import (
        C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter, LambdaFilter,
        LanguageFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    w = Path(work)
    rules = _RedditRules()
    lang = LanguageFilter(languages=["en"], language_threshold=0.65)
    lang.model = _LocalFT176(["en"])
    stage_s: dict[str, float] = {}
    read: list[int] = []

    def run(name: str, pipeline: list, n_tasks: int):
        t = time.perf_counter()
        st = LocalPipelineExecutor(pipeline=pipeline, tasks=n_tasks, workers=min(workers, n_tasks),
                                   logging_dir=str(w / "logs" / name), skip_completed=False).run()
        stage_s[name] = round(time.perf_counter() - t, 3)
        if not read:  # documents the reader passed on (it skips those with an empty text)
            read.append(int(st.stats[1].stats["total"].total))
        return _dropped(st)

    t0 = time.perf_counter()
    if rules.bots is not None:  # reddit_bot_v2's account signals: one pass over every document first
        run("0_bot_account_pass", [JsonlReader(data, adapter=_adapter, glob_pattern="*.jsonl", compression=None),
                                   _AccountStats(str(w / "accounts"), rules.bots)], tasks)
        read.clear()
        rules.bot_accounts = rules.bots.accounts([json.loads(p.read_text()) for p in sorted((w / "accounts").glob("*.json"))])
    filtering = [
        JsonlReader(data, adapter=_adapter, glob_pattern="*.jsonl", compression=None),
        LambdaFilter(rules.keep),
        _Clean(),
        LambdaFilter(rules.long_enough),
    ]
    if mode == "rules":
        d = run("rules_clean_language", filtering + [lang, JsonlWriter(str(w / "out"), compression=None)], tasks)
        kept = _count_lines(w / "out")
        print(json.dumps({"seconds": time.perf_counter() - t0, "kept": kept, "stages": stage_s, "read": read[0],
                          "funnel": {"rules": d[1] + d[3], "language": d[4]}}))
        return

    exact = ExactDedupConfig(content_getter=_norm_text)
    mh = MinhashConfig(n_grams=5, num_buckets=20, hashes_per_bucket=5)
    mh_sig = MinhashDedupSignature(str(w / "mh_sigs"), config=mh)
    if mh.hash_config.hash_fc == "xxhash" and mh.hash_config.precision == 64:
        mh_sig._hash_func = _xxhash64
    taggers = [_Tag("gopher_repetition", GopherRepetitionFilter()), _Tag("gopher_quality", GopherQualityFilter()),
               _Tag("c4_quality", C4QualityFilter(filter_no_terminal_punct=False)),
               _Tag("fineweb_quality", FineWebQualityFilter())]
    d1 = run("1_filter_tag_language", filtering + taggers + [
        lang, JsonlWriter(str(w / "filtered"), compression=None),
        ExactDedupSignature(str(w / "exact_sigs"), config=exact)], tasks)
    _touch_ranks(w / "filtered", tasks)
    run("2_exact_find", [ExactFindDedups(str(w / "exact_sigs"), str(w / "exact_dups"), config=exact)], 1)
    d3 = run("3_exact_filter_minhash_sigs", [
        JsonlReader(str(w / "filtered"), compression=None), ExactDedupFilter(str(w / "exact_dups"), config=exact),
        JsonlWriter(str(w / "exact_deduped"), compression=None), mh_sig], tasks)
    _touch_ranks(w / "exact_deduped", tasks)
    run("4_minhash_buckets", [MinhashDedupBuckets(str(w / "mh_sigs"), str(w / "mh_buckets"), config=mh)],
        mh.num_buckets)
    run("5_minhash_cluster", [MinhashDedupCluster(str(w / "mh_buckets"), str(w / "mh_remove"), config=mh)], 1)
    d6 = run("6_minhash_filter", [
        JsonlReader(str(w / "exact_deduped"), compression=None), MinhashDedupFilter(str(w / "mh_remove")),
        JsonlWriter(str(w / "out"), compression=None)], tasks)
    secs = time.perf_counter() - t0
    kept = _count_lines(w / "out")
    print(json.dumps({"seconds": secs, "kept": kept, "stages": stage_s, "read": read[0],
                      "quality_flagged": _flag_counts(w / "out"),
                      "funnel": {"rules": d1[1] + d1[3], "language": d1[8], "dedup_exact": d3[1], "dedup_near": d6[1]},
                      "minhash": {"n_grams": mh.n_grams, "num_buckets": mh.num_buckets,
                                  "hashes_per_bucket": mh.hashes_per_bucket, "seed": mh.seed,
                                  "hash": str(mh.hash_config)}}))


# --- (a) Lewin ---------------------------------------------------------------------------------------
def run_lewin(data: str, root: str, mode: str) -> None:
    from pyspark.sql import functions as F

    from lewin.jobs.curate import curate
    from lewin.jobs.engine import get_engine
    from lewin.jobs.ingest import ingest
    from lewin.jobs.tables import TableStore
    from lewin.schemas.config import load_config

    overrides = [f"storage.root={root}"]
    if mode == "rules":
        overrides += ["curate.quality.enabled=false", "curate.dedup.enabled=false", "curate.dedup.near.enabled=false"]
    cfg = load_config(None, overrides)
    t0 = time.perf_counter()
    eng = get_engine(cfg.engine)
    store = TableStore(eng, cfg.storage)
    t = time.perf_counter()
    ing = ingest(store, cfg, "reddit", [data])
    t_ing = time.perf_counter() - t
    streams = {}
    for stream in ("reddit", "reddit_comments"):
        ts = time.perf_counter()
        cur = curate(store, cfg, stream)
        streams[stream] = {"seconds": round(time.perf_counter() - ts, 3), "records_in": cur.records_in,
                           "kept": cur.kept, "rejected_by_rule": cur.rejected_by_rule, "steps": cur.seconds_by_step}
    secs = time.perf_counter() - t
    flags = store.read("silver_records").select("record_id", F.explode("quality_flags").alias("f"))
    flagged = {r["f"]: r["n"] for r in flags.select("record_id", F.split("f", ":")[0].alias("f"))
               .groupBy("f").agg(F.countDistinct("record_id").alias("n")).collect()}
    print(json.dumps({"seconds": secs, "startup": t - t0, "ingest_s": t_ing, "records": ing.records_in,
                      "quality_flagged": dict(sorted(flagged.items())),
                      "quarantined": ing.quarantined, "ingest_steps": ing.seconds_by_step, "streams": streams,
                      "kept": sum(s["kept"] for s in streams.values()),
                      "dedup_config": cfg.curate.dedup.model_dump(mode="json"),
                      "quality_drop_on": list(cfg.curate.quality.drop_on)}))
    eng.stop()


def _lewin_funnel(lw: dict) -> dict[str, int]:
    out = {"quarantined": lw["quarantined"], "rules": 0, "language": 0, "quality": 0, "dedup_exact": 0,
           "dedup_near": 0, "other": 0}
    for s in lw["streams"].values():
        for rule, n in s["rejected_by_rule"].items():
            key = ("rules" if rule.startswith("reddit_") else "language" if rule.startswith("language")
                   else "quality" if rule.startswith("quality") else "dedup_exact" if rule.startswith("dedup_exact")
                   else "dedup_near" if rule.startswith(("dedup_near", "dedup_minhash")) else "other")
            out[key] += n
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=600_000)
    ap.add_argument("--files", type=int, default=0, help="input files (default: 2 per core; split layout: "
                                                         "a monthly RS_ and RC_ file per 2)")
    ap.add_argument("--layout", choices=("split", "mixed"), default="split")
    ap.add_argument("--child", nargs="+")
    a = ap.parse_args()
    if a.child:
        kind, *args = a.child
        {"lewin": run_lewin, "datatrove": run_datatrove}[kind](*[int(x) if x.isdigit() else x for x in args])
        return
    n_cores = cores()
    work = Path(tempfile.mkdtemp(prefix="lewin-bench-curate-"))
    try:
        t = time.perf_counter()
        gen: dict = {}
        paths = write_reddit_jsonl(work / "data", a.n, a.files or 2 * n_cores, layout=a.layout, stats=gen)
        files = len(paths)
        mb = sum(p.stat().st_size for p in paths) / 1e6
        print(f"generated {a.n} records, {mb:.0f} MB in {files} files ({a.layout}) in {time.perf_counter() - t:.1f}s; "
              f"cores: {n_cores}")
        print(f"input: {json.dumps(gen)}")
        data = str(work / "data")

        lw, lw_mem = run_child([__file__, "--child", "lewin", data, str(work / "lewin"), "default"])
        assert lw["records"] == a.n, lw
        print(f"lewin default      {lw['seconds']:8.2f}s (ingest {lw['ingest_s']:.2f}s, +{lw['startup']:.1f}s engine "
              f"start)  kept {lw['kept']}  peak {lw_mem / 1e6:.0f} MB  dedup config {lw['dedup_config']}")
        print(f"  ingest steps {lw['ingest_steps']}")
        for name, s in lw["streams"].items():
            print(f"  {name:16s} {s['seconds']:7.2f}s  in {s['records_in']}  kept {s['kept']}  steps {s['steps']}  "
                  f"rejected {s['rejected_by_rule']}")
        dt, dt_mem = run_child([__file__, "--child", "datatrove", data, str(work / "dt"), str(files), str(n_cores),
                                "full"])
        print(f"datatrove full     {dt['seconds']:8.2f}s  kept {dt['kept']}  peak {dt_mem / 1e6:.0f} MB  "
              f"minhash {dt['minhash']}")
        print(f"  stages {dt['stages']}")
        lf = _lewin_funnel(lw)
        df = dict(dt["funnel"], rules=dt["funnel"]["rules"] + a.n - dt["read"])  # + empty texts the reader skips
        print("  funnel (rejected)      lewin  datatrove")
        for key in ("quarantined", "rules", "language", "quality", "dedup_exact", "dedup_near", "other"):
            print(f"    {key:18s} {lf[key]:9d} {df.get(key, 0):10d}")
        print(f"    {'kept':18s} {lw['kept']:9d} {dt['kept']:10d}")
        print(f"  kept and quality-flagged: lewin {lw['quality_flagged']}  datatrove {dt['quality_flagged']}")

        lr, _ = run_child([__file__, "--child", "lewin", data, str(work / "lewin_rules"), "rules"])
        print(f"[secondary] lewin rules only     {lr['seconds']:8.2f}s (ingest {lr['ingest_s']:.2f}s)  "
              f"kept {lr['kept']}  " + "  ".join(f"{k} {s['kept']}" for k, s in lr["streams"].items()))
        extra = {k: v for k, v in _lewin_funnel(lr).items() if k not in ("rules", "language") and v}
        if extra:
            print(f"[secondary] WARNING: the Lewin rules-only run also rejected {extra}")
        dr, _ = run_child([__file__, "--child", "datatrove", data, str(work / "dt_rules"), str(files), str(n_cores),
                           "rules"])
        print(f"[secondary] datatrove rules only {dr['seconds']:8.2f}s  kept {dr['kept']}  funnel "
              f"{dict(dr['funnel'], rules=dr['funnel']['rules'] + a.n - dr['read'])}")

        lw_pc = a.n / lw["seconds"] / n_cores
        dt_pc = a.n / dt["seconds"] / n_cores
        lr_pc = a.n / lr["seconds"] / n_cores
        dr_pc = a.n / dr["seconds"] / n_cores
        print(f"lewin_kept: {lw['kept']}")
        print(f"datatrove_kept: {dt['kept']}")
        print(f"rules_only_lewin_kept: {lr['kept']}")
        print(f"rules_only_datatrove_kept: {dr['kept']}")
        print(f"rules_only_lewin_records_per_s_per_core: {lr_pc:.0f}")
        print(f"rules_only_datatrove_records_per_s_per_core: {dr_pc:.0f}")
        print(f"rules_only_ratio_per_core: {lr_pc / dr_pc:.2f}")
        print(f"datatrove_records_per_s_per_core: {dt_pc:.0f}")
        print(f"records_per_s_per_core: {lw_pc:.0f}")
        print(f"ratio_per_core: {lw_pc / dt_pc:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
