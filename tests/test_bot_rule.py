"""``reddit_bot_v2``: bot accounts from a shipped list and from what they post, never from a name
suffix alone. One small Reddit dump (comments and submissions) is ingested once; each test tags
it under its own configuration (``tag_rules`` with only the bot rule on) and reads which signal
fired."""

from __future__ import annotations

import json
import tomllib
import uuid
from fnmatch import fnmatch
from importlib import resources

import pytest
from pyspark.sql import functions as F

from lewin.jobs.ingest import ingest
from lewin.jobs.tables import TableStore
from lewin.schemas.config import CurateRules, LewinConfig, StorageConfig
from lewin.udfs import sources
from lewin.udfs.rules import tag_rules
from lewin.udfs.sources.reddit import KNOWN_BOTS_FILE, known_bots

from .conftest import PROJECT

pytestmark = pytest.mark.transforms

ADVICE = "Have you tried talking to your landlord in writing? Keep a copy of every email you send them."
PROMO = ("Hey u/{who}, great question! Check out our {n}% off spring sale on dab rigs and vapes, "
         "link in my profile, free shipping on every order.")
AUTOMOD = ("Hey, the friendly automod here. Looks like you submitted a question post. Please check the "
           "FAQ first.\n\n*I am a bot, and this action was performed automatically. Please contact the "
           "moderators of this subreddit if you have any questions or concerns.*")

_n = 0


def _c(author, body, thread, sub="AskReddit"):
    global _n
    _n += 1
    return {"id": f"c{_n:03d}", "author": author, "body": body, "created_utc": 1600000000 + _n, "score": 5,
            "link_id": f"t3_{thread}", "parent_id": f"t3_{thread}", "subreddit": sub}


COMMENTS = [
    # people whose names end in "bot" (all rejected by reddit_bot_v1)
    _c("Talbot", "I grew up near the coast and the winters there were always milder than this.", "a1"),
    _c("Talbot", "My grandmother made this exact soup every Sunday, I still use her recipe.", "a2"),
    _c("yungrobot", "The second album is better than people give it credit for, honestly.", "a3"),
    _c("hashtag_not_a_robot", "I am not a bot, I just type fast and drink too much coffee.", "a4"),
    _c("helper_bot", "Try restarting the router first, it fixed the same issue for me last week.", "a5"),
    _c("helper_bot", "I had this with my old laptop too, a new battery solved it completely.", "a6"),
    # a person who pasted one answer into three threads among many other comments: kept
    *[_c("careful_tenant", ADVICE, f"t{k}", sub="legaladvice") for k in range(3)],
    *[_c("careful_tenant", body, f"u{k}") for k, body in enumerate((
        "The deposit rules depend on your state, so check them before you sign anything.",
        "We had mould in our first flat too; the council inspector was surprisingly helpful.",
        "Honestly I would just move, that building sounds like more trouble than it is worth.",
        "Photos with timestamps saved us when we moved out. Take them on the first day."))],
    # short repeats are what people write: never a template
    *[_c("polite_person", "Thanks!", f"p{k}") for k in range(5)],
    # "beep boop" alone is a joke people make; with a bot-like name it is a signal
    _c("fun_person", "beep boop, my brain has stopped working after this meeting", "b1"),
    _c("tiny_bot", "Beep boop! Here is the link you asked for: the wiki page on tomatoes.", "b2"),
    # known bots (the shipped list): AutoModerator signs its replies; WikiSummarizerBot does not here
    _c("AutoModerator", AUTOMOD, "m1", sub="delta8"),
    _c("WikiSummarizerBot", "Tomato: the tomato is the edible berry of the plant Solanum lycopersicum.", "w1"),
    # a templated-reply account: one text (mentions and numbers vary) in four threads, two subreddits
    *[_c("deal_finder_2020", PROMO.format(who=w, n=n), th, sub=s)
      for w, n, th, s in (("ann", 20, "d1", "vape"), ("bob", 25, "d2", "vape"), ("cy", 30, "d3", "trees"),
                          ("dee", 20, "d4", "trees"))],
    # signatures
    _c("kind_helper", "Converted: 5 miles is about 8 km.\n\n^^I ^^am ^^a ^^bot ^^| ^^feedback", "s1"),
    _c("summary_helper", "Summary: the author moved abroad.\n\n^(I'm a bot, beep boop)", "s2"),
    _c("summary_helper", "Summary: the council approved the park.\n\n^(I'm a bot, beep boop)", "s3"),
    _c("summary_helper", "Summary: the team won the final in extra time after a long season.", "s4"),
    # a bot-like name with the same text in two threads (and nothing else): bot_name+template
    *[_c("quote_bot", "The only way to do great work is to love what you do. Have a nice day!", f"q{k}")
      for k in range(2)],
]

SUBMISSIONS = [  # a spammer posting the same text as submissions in three subreddits
    {"id": f"sp{k}", "author": "crosspost_spammer", "created_utc": 1600001000 + k, "score": 3, "num_comments": 2,
     "title": "Best deals", "subreddit": sub,
     "selftext": "Huge sale this week only on all premium cartridges, use code SAVE10 at checkout for savings."}
    for k, sub in enumerate(("vape", "trees", "Drugs"))
] + [{"id": "ok1", "author": "Talbot", "created_utc": 1600002000, "score": 9, "num_comments": 4, "title": "Hi",
      "selftext": "A long story about my garden and the tomatoes that finally grew this summer.", "subreddit": "gardening"}]

PEOPLE = {"Talbot", "yungrobot", "hashtag_not_a_robot", "helper_bot", "careful_tenant", "polite_person", "fun_person"}


@pytest.fixture(scope="module")
def dump(engine, tmp_path_factory):
    d = tmp_path_factory.mktemp("botdump")
    (d / "reddit").mkdir()
    (d / "reddit" / "RC_bots.jsonl").write_text("".join(json.dumps(r) + "\n" for r in COMMENTS))
    (d / "reddit" / "RS_bots.jsonl").write_text("".join(json.dumps(r) + "\n" for r in SUBMISSIONS))
    cfg = LewinConfig(storage=StorageConfig(root=d / "tables", database=f"b_{uuid.uuid4().hex[:8]}"))
    store = TableStore(engine, cfg.storage)
    r = ingest(store, cfg, "reddit", [str(d / "reddit")])
    assert r.quarantined == 0
    return store, cfg


def tagged(dump, stream="reddit_comments", **bot) -> dict[str, dict[str, str | None]]:
    """user -> record_id -> the bot rule's detail (None: kept), only ``reddit_bot_v2`` enabled."""
    store, base = dump
    cfg = base.model_copy(deep=True)
    rules = cfg.curate.rules
    for name in type(rules).model_fields:
        getattr(rules, name).enabled = name == "reddit_bot_v2"
    for k, v in bot.items():
        setattr(rules.reddit_bot_v2, k, v)
    st = sources.stream(stream)
    batch = store.read(st.bronze_table)
    if st.fill_missing_from:
        missing = [f for f in sources.bronze_schema(st.fill_missing_from).fields if f.name not in batch.columns]
        batch = batch.select("*", *[F.lit(None).cast(f.dataType).alias(f.name) for f in missing])
    batch = tag_rules(st.account_stats(store, cfg, batch, st.bronze_table), rules, st)
    out: dict[str, dict[str, str | None]] = {}
    for r in batch.select("user_id", "record_id", "_failed", "_fail_detail").collect():
        assert r["_failed"] in ([], ["reddit_bot_v2"])
        out.setdefault(r["user_id"], {})[r["record_id"]] = r["_fail_detail"] if r["_failed"] else None
    return out


def signals(got: dict[str, dict[str, str | None]]) -> dict[str, set[str | None]]:
    """user -> the signal names that fired on their records (None: a record kept)."""
    return {u: {d.split(":")[0] if d else None for d in recs.values()} for u, recs in got.items()}


def test_people_are_kept_and_bots_rejected_with_their_signal(dump):
    got = tagged(dump)
    sig = signals(got)
    for person in PEOPLE:
        assert sig[person] == {None}, (person, got[person])
    assert sig["AutoModerator"] == {"known_bot"}
    assert got["AutoModerator"] == {"reddit:t1_" + next(c["id"] for c in COMMENTS if c["author"] == "AutoModerator"):
                                    "known_bot: AutoModerator"}
    assert sig["WikiSummarizerBot"] == {"known_bot"}
    assert sig["deal_finder_2020"] == {"template"}
    assert all(d == "template: same text in 4 threads, 4 of 4 records repeated"
               for d in got["deal_finder_2020"].values())
    assert sig["kind_helper"] == {"signature"}
    assert list(got["kind_helper"].values()) == ['signature: "i am a bot"']
    # two signed records make the account a bot: its unsigned third record goes too
    assert set(got["summary_helper"].values()) == {"signature: 2 signed records"}
    assert sig["tiny_bot"] == {"bot_name+weak_signature"}
    assert sig["quote_bot"] == {"bot_name+template"}


def test_submissions_and_comments_are_one_account(dump):
    got = tagged(dump, stream="reddit")
    assert signals(got)["crosspost_spammer"] == {"template"}
    assert signals(got)["Talbot"] == {None}  # two comments and a submission, all different


def test_the_list_is_shipped_data_and_configurable(dump, tmp_path):
    text = resources.files("lewin.udfs").joinpath(KNOWN_BOTS_FILE).read_text()
    assert text.startswith("#") and "Provenance" in text.split("\n\n")[0]
    names = known_bots(CurateRules().reddit_bot_v2)
    assert {"automoderator", "remindmebot", "wikisummarizerbot"} <= set(names)
    assert not set(names) & {p.lower() for p in PEOPLE}
    package_data = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any(fnmatch(KNOWN_BOTS_FILE, p) for p in package_data["lewin.udfs"]), "the list must ship in the wheel"
    # another list instead of the shipped one, plus extra names
    other = tmp_path / "bots.txt"
    other.write_text("# ours\nhelper_bot  # our own helper\n")
    got = signals(tagged(dump, known_bots_file=str(other), extra_names=["Yungrobot"]))
    assert got["helper_bot"] == got["yungrobot"] == {"known_bot"}
    assert got["WikiSummarizerBot"] == {None}  # listed only in the shipped list: no behaviour signal
    assert got["AutoModerator"] == {"signature"}  # unlisted, still signs its replies
    with pytest.raises(ValueError, match="reddit_bot_v2.known_bots_file"):
        known_bots(CurateRules().reddit_bot_v2.model_copy(update={"known_bots_file": str(tmp_path / "none.txt")}))


def test_thresholds_are_configuration(dump):
    got = signals(tagged(dump, min_template_threads=5, name_patterns=[]))
    assert got["deal_finder_2020"] == {None} and got["quote_bot"] == {None} and got["tiny_bot"] == {None}
    got = signals(tagged(dump, min_template_share=0.3))  # 3 of careful_tenant's 7 records are one paste
    assert got["careful_tenant"] == {"template"}


def test_v1_dropped_people_and_is_off_by_default(dump):
    rules = CurateRules()
    assert not rules.reddit_bot_v1.enabled and rules.reddit_bot_v2.enabled
    store, base = dump
    cfg = base.model_copy(deep=True)
    for name in type(cfg.curate.rules).model_fields:
        getattr(cfg.curate.rules, name).enabled = name == "reddit_bot_v1"
    st = sources.stream("reddit_comments")
    rows = tag_rules(store.read(st.bronze_table), cfg.curate.rules, st)
    v1 = {r["user_id"] for r in rows.where(F.size("_failed") > 0).collect()}
    assert {"Talbot", "yungrobot", "hashtag_not_a_robot", "helper_bot"} <= v1
