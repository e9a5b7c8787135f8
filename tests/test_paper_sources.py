"""The paper's own source datasets, in their published layouts and schemas, through ingest and curate.

* Twitter ``enryu43/twitter100m_tweets`` (Parquet: ``user, id, tweet, replies, retweets, likes,
  quotes, date``) with ``enryu43/twitter100m_users`` (``user, id, verified, followers, description,
  location``) in the sibling folder a Hugging Face download gives (``twitter100m_users/`` beside
  ``twitter100m_tweets/``). The dump has no retweet/quote flags: they come from the text.
* Reddit ``HuggingFaceGECLM/REDDIT_submissions``: Parquet, one folder per subreddit (and the Hub's
  flat ``data/<subreddit>-00000-of-00001-<hash>.parquet`` shards), no ``subreddit`` column.

The fixtures are written here with pyarrow, a few dozen rows each.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from lewin.jobs.curate import curate
from lewin.jobs.ingest import ingest, source_options
from lewin.jobs.tables import TableStore
from lewin.schemas.config import LewinConfig, StorageConfig
from lewin.udfs.readers import ReaderOptions, read_file
from lewin.udfs.sources.twitter import users_table_path

# --- Twitter fixture ---------------------------------------------------------------------------------
PERSONAL = (
    "I finally called my dad after three months of not talking, and it went better than I feared. "
    "He asked about my job and my tiny balcony garden, and I told him the tomatoes died again. "
    "We laughed about the summer he tried to grow melons in the backyard and the whole street got "
    "involved. I am going to visit him next month, and I think I am a little nervous but mostly glad."
)
PERSONAL_2 = (
    "Ran my first half marathon this morning and my legs are still shaking while I type this. "
    "At kilometre fifteen I wanted to quit, but a stranger with a handwritten sign that said your "
    "knees believe in you made me laugh so hard I kept going. I cried a little at the finish line, "
    "my sister was there with coffee, and now I understand why people keep signing up for these."
)
PERSONAL_3 = (
    "Moving to a new city alone at thirty is strange in ways nobody warned me about. I know where "
    "the good bakery is but not who to call when the sink leaks. Tonight I cooked my grandmother's "
    "soup recipe for the first time in this kitchen and the smell made the flat feel like mine. "
    "Small wins, I keep telling myself, and tomorrow I will finally talk to the neighbour downstairs."
)
RETWEETED = (
    "Our library is staying open late all week for exam season, with free tea and quiet rooms on "
    "the second floor. Volunteers will be around to help with printing and to show you the new study "
    "booths, and the children's corner runs story time every afternoon so parents can get some work "
    "done too. Come by, bring a friend, and tell us what else would make the space better for you."
)
QUOTED = (
    "This thread about learning to cook as an adult is exactly where I was two years ago. I burned "
    "rice three times in one week and my flatmate started leaving instant noodles on my shelf as a "
    "joke. Now I make bread every weekend and I still think about how embarrassed I felt at the start. "
    "If you are just starting, please be patient with yourself, it really does get easier and fun."
)
BRAND = (
    "Meet the new Acme travel mug: keeps coffee hot for twelve hours, fits every cup holder we could "
    "find, and comes in six colours picked by our community. We tested it on mountain trails, long "
    "commutes and one very stormy ferry ride so you would not have to. Tell us where your mug is "
    "going next and which colour you would choose for a long road trip this summer with your friends."
)

UTC = timezone.utc


def _tweet(user, tid, text, date, likes=3):
    return {"user": user, "id": tid, "tweet": text, "replies": 1, "retweets": 0, "likes": likes, "quotes": 0,
            "date": date}


# record id -> the rule that rejects it at curation (None: kept in silver)
TWEETS_STRING_DATES = [
    _tweet("maria_h", 1590000000000000001, PERSONAL, "2022-11-05 19:21:07+00:00"),
    _tweet("maria_h", 1590000000000000002, "Coffee first, then emails.", "2022-11-06 08:00:00+00:00"),
    _tweet("tom_k", 1590000000000000003, "RT @citylibrary: " + RETWEETED, "2022-11-06 09:30:00+00:00"),
    _tweet("tom_k", 1590000000000000004, QUOTED + " https://twitter.com/cookingthread/status/1589999999999999999",
           "2022-11-06T10:15:00Z"),
    _tweet("tom_k", 1590000000000000005, "QT @cookingthread: " + QUOTED.replace("two years", "three years"),
           "2022-11-06T10:16:00Z"),
    _tweet("acmeworld", 1590000000000000006, BRAND, "2022-11-07 12:00:00+00:00", likes=900),
] + [  # a couple of dozen short everyday tweets (rejected as too short, never quarantined)
    _tweet(u, 1590000000000000100 + i, f"Short note number {i} from my day, nothing more to say.",
           f"2022-11-{10 + i % 15:02d} 07:{i:02d}:00+00:00")
    for i, u in enumerate(["maria_h", "tom_k", "lee_w", "sam_p"] * 6)
]
TWEETS_TIMESTAMP_DATES = [
    _tweet("lee_w", 1590000000000000201, PERSONAL_2, datetime(2022, 11, 8, 6, 45, tzinfo=UTC)),
    # an author missing from the users table: no profile, still a tweet
    _tweet("ghost_writer", 1590000000000000202, PERSONAL_3, datetime(2022, 11, 9, 21, 5, tzinfo=UTC)),
]
USERS = [  # twitter100m_users' real columns; screen names in another case than the tweets'
    {"user": "Maria_H", "id": 11, "verified": True, "followers": 2_300_000,
     "description": "Teacher, runner, bad gardener. Opinions my own.", "location": "Leeds"},
    {"user": "tom_k", "id": 12, "verified": False, "followers": 310, "description": "cook in training",
     "location": None},
    {"user": "lee_w", "id": 13, "verified": False, "followers": 95, "description": None, "location": "Oslo"},
    {"user": "acmeworld", "id": 14, "verified": True, "followers": 48_000,
     "description": "The official account of Acme travel gear. Shop now at acme.example, free shipping over $50.",
     "location": "Portland, OR"},
    {"user": "sam_p", "id": 15, "verified": False, "followers": 12, "description": "", "location": None},
]
EXPECTED_TWEETS = {
    "twitter:1590000000000000001": None,
    "twitter:1590000000000000002": "twitter_min_length_v1",
    "twitter:1590000000000000003": "twitter_retweet_v1",
    "twitter:1590000000000000004": "twitter_quote_v1",
    "twitter:1590000000000000005": "twitter_quote_v1",
    "twitter:1590000000000000006": "twitter_brand_account_v1",
    "twitter:1590000000000000201": None,
    "twitter:1590000000000000202": None,
    **{f"twitter:{1590000000000000100 + i}": "twitter_min_length_v1" for i in range(24)},
}

TWEETS_SCHEMA = pa.schema([("user", pa.string()), ("id", pa.int64()), ("tweet", pa.string()),
                           ("replies", pa.int64()), ("retweets", pa.int64()), ("likes", pa.int64()),
                           ("quotes", pa.int64())])


def write_twitter100m(root):
    """``root/twitter100m_tweets/data/*.parquet`` and ``root/twitter100m_users/data/*.parquet``."""
    tweets, users = root / "twitter100m_tweets" / "data", root / "twitter100m_users" / "data"
    tweets.mkdir(parents=True)
    users.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(TWEETS_STRING_DATES, TWEETS_SCHEMA.append(pa.field("date", pa.string()))),
                   tweets / "train-00000-of-00002-5a1c.parquet")
    pq.write_table(pa.Table.from_pylist(TWEETS_TIMESTAMP_DATES,
                                        TWEETS_SCHEMA.append(pa.field("date", pa.timestamp("us", tz="UTC")))),
                   tweets / "train-00001-of-00002-5a1c.parquet")
    pq.write_table(pa.Table.from_pylist(USERS), users / "train-00000-of-00001-4125.parquet")
    return root / "twitter100m_tweets", root / "twitter100m_users"


# --- Reddit fixture ----------------------------------------------------------------------------------
LONG_POST = (
    "Last winter I started volunteering at a food bank on Saturday mornings because I felt stuck after "
    "a breakup, and it changed how I see my own neighbourhood. I met a retired bus driver who knows "
    "every family by name and a teenager who organises the shelves better than any shop I have seen. "
    "I used to think I had nothing to offer, but showing up every week turned out to be the whole "
    "point. Has anyone else found that a small routine like this pulled them out of a bad stretch?"
)
LONG_POST_2 = (
    "TIFU by confidently telling my new manager that I had read the whole onboarding document, then "
    "spending the first meeting asking questions that were answered on page two. She was kind about "
    "it, which somehow made it worse, and she asked me to summarise the document for the next hire. "
    "So now I have read it three times, I know more about our expense policy than anyone alive, and "
    "I have learned to just say that I skimmed it when that is what actually happened to be true."
)
LONG_POST_3 = (
    "I built my first PC this weekend after saving for almost a year, and I was terrified of bending a "
    "pin or forgetting the standoffs. My partner read the manual out loud while I worked, we argued "
    "about cable management for an hour, and when it finally booted on the first try we both cheered "
    "loud enough to wake the dog. I know it is a modest build, but it is mine and I understand every "
    "part of it now. Thank you to everyone here whose old threads answered my questions about it."
)


def _post(pid, author, title, selftext, created, score=25, num_comments=8, distinguished=None):
    return {"id": pid, "author": author, "title": title, "selftext": selftext, "created_utc": created,
            "score": score, "num_comments": num_comments, "distinguished": distinguished, "stickied": False,
            "over_18": False, "is_self": True, "url": f"https://www.reddit.com/comments/{pid}/",
            "removed_by_category": None, "subreddit_id": "t5_2qh1i", "retrieved_on": 1650000000}


REDDIT_FOLDERS = {
    "AskReddit": [
        _post("ar_keep", "kind_neighbour", "Did volunteering ever pull you out of a rut?", LONG_POST, 1640995200),
        _post("ar_deleted", "[deleted]", "Gone", LONG_POST.replace("winter", "spring"), 1640995260),
        _post("ar_automod", "AutoModerator", "Weekly thread", "Post your questions below. " * 20, 1640995320),
        _post("ar_short", "brief_person", "Quick one", "What is your favourite soup?", 1640995380),
        _post("ar_removed", "someone_else", "Removed", "[removed]", 1640995440),
        _post("ar_mod", "a_moderator", "Rules update", LONG_POST.replace("food bank", "soup kitchen"), 1640995500,
              distinguished="moderator"),
    ],
    "tifu": [
        _post("tf_keep", "skimmer_99", "TIFU by not reading the onboarding doc", LONG_POST_2, 1641081600),
        _post("tf_low", "quiet_one", "TIFU quietly", LONG_POST_2.replace("manager", "team lead"), 1641081660,
              score=1, num_comments=0),
    ],
}
HUB_SHARD = ("buildapc", [_post("bp_keep", "first_builder", "My first build", LONG_POST_3, 1641168000)])
EXPECTED_POSTS = {
    "reddit:t3_ar_keep": None,
    "reddit:t3_ar_deleted": "reddit_deleted_v1",
    "reddit:t3_ar_automod": "reddit_system_user_v1",
    "reddit:t3_ar_short": "reddit_min_length_v1",
    "reddit:t3_ar_removed": "reddit_deleted_v1",
    "reddit:t3_ar_mod": "reddit_moderator_v1",
    "reddit:t3_tf_keep": None,
    "reddit:t3_tf_low": "reddit_min_score_v1",
    "reddit:t3_bp_keep": None,
}


def write_reddit_submissions(root):
    """``root/REDDIT_submissions/<subreddit>/0000.parquet`` (no subreddit column; ``created_utc`` an
    int64 in one folder, a string in the other) and a Hub shard ``data/buildapc-00000-of-00001-….parquet``
    with ``created_utc`` as a timestamp."""
    base = root / "REDDIT_submissions"
    for i, (sub, rows) in enumerate(REDDIT_FOLDERS.items()):
        (base / sub).mkdir(parents=True)
        t = pa.Table.from_pylist(rows)
        if i == 1:
            t = t.set_column(t.schema.get_field_index("created_utc"), "created_utc", t["created_utc"].cast(pa.string()))
        pq.write_table(t, base / sub / "0000.parquet")
    sub, rows = HUB_SHARD
    (base / "data").mkdir()
    t = pa.Table.from_pylist([dict(r, created_utc=datetime.fromtimestamp(r["created_utc"], UTC)) for r in rows])
    pq.write_table(t, base / "data" / f"{sub}-00000-of-00001-8f48c287.parquet")
    return base


# --- one ingest + curate of both, shared by the tests below ---------------------------------------------
@pytest.fixture(scope="module")
def paper(engine, tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    tweets, _users = write_twitter100m(root / "dumps")
    reddit = write_reddit_submissions(root / "dumps")
    cfg = LewinConfig(storage=StorageConfig(root=root / "tables", database=f"p_{uuid.uuid4().hex[:8]}"))
    store = TableStore(engine, cfg.storage)
    ing = {"twitter": ingest(store, cfg, "twitter", [str(tweets)]),  # lewin ingest --source twitter --path …
           "reddit": ingest(store, cfg, "reddit", [str(reddit)])}
    cur = {"twitter": curate(store, cfg, "twitter"), "reddit": curate(store, cfg, "reddit")}
    return store, ing, cur


def _outcome(store, expected):
    silver = {r["record_id"] for r in store.read("silver_records").collect()}
    rejected = {r["record_id"]: r for r in store.read("rejected").collect()}
    return {rid: (None if rid in silver else rejected[rid]["rule"] if rid in rejected else "MISSING")
            for rid in expected}, rejected


@pytest.mark.transforms
def test_twitter100m_ingests_without_quarantine(paper):
    store, ing, _ = paper
    r = ing["twitter"]
    assert r.reconciles and r.files == 2 and r.files_skipped == []
    assert (r.records_in, r.kept, r.quarantined) == (len(EXPECTED_TWEETS), len(EXPECTED_TWEETS), 0)
    rows = {x["record_id"]: x for x in store.read("bronze_twitter").collect()}
    assert set(rows) == set(EXPECTED_TWEETS)
    keep = rows["twitter:1590000000000000001"]
    assert (keep["user_id"], keep["user_name"], keep["native_id"], keep["api_format"]) == (
        "maria_h", "maria_h", "1590000000000000001", "twitter100m")
    assert keep["text"] == PERSONAL and keep["like_count"] == 3 and keep["reply_count"] == 1
    # the date as an ISO string (either separator) and as a Parquet timestamp
    assert keep["event_ts"] == datetime(2022, 11, 5, 19, 21, 7)
    assert rows["twitter:1590000000000000004"]["event_ts"] == datetime(2022, 11, 6, 10, 15)
    assert rows["twitter:1590000000000000201"]["event_ts"] == datetime(2022, 11, 8, 6, 45)
    # flags derived from the text; the profile joined from twitter100m_users (screen names case-blind)
    flags = {rid[-3:]: (x["is_retweet"], x["is_quote"]) for rid, x in rows.items()}
    assert flags["001"] == (False, False) and flags["003"] == (True, False)
    assert flags["004"] == (False, True) and flags["005"] == (False, True)
    assert (keep["user_followers"], keep["user_following"]) == (2_300_000, None)
    assert keep["user_description"].startswith("Teacher, runner")
    assert rows["twitter:1590000000000000006"]["user_description"].startswith("The official account of Acme")
    ghost = rows["twitter:1590000000000000202"]
    assert ghost["user_id"] == "ghost_writer" and ghost["user_description"] is None and ghost["user_followers"] is None
    assert rows["twitter:1590000000000000004"]["n_urls"] == 1


@pytest.mark.transforms
def test_twitter100m_curation_drops_retweets_quotes_and_the_brand_account(paper):
    store, _, cur = paper
    got, rejected = _outcome(store, EXPECTED_TWEETS)
    assert got == EXPECTED_TWEETS
    r = cur["twitter"]
    assert r.reconciles and r.records_in == len(EXPECTED_TWEETS) and r.kept == 3
    # the brand account is caught by its profile (its screen name matches no brand pattern); a
    # personal account with 2.3 M followers is not a broadcaster when its following count is unknown
    assert rejected["twitter:1590000000000000006"]["detail"].startswith("promotional bio")
    silver = {x["record_id"]: x for x in store.read("silver_records").where(F.col("source") == "twitter").collect()}
    assert silver["twitter:1590000000000000001"]["user_name"] == "maria_h"
    assert silver["twitter:1590000000000000001"]["user_id"] == "maria_h"


@pytest.mark.transforms
def test_reddit_submissions_subreddit_comes_from_the_folder(paper):
    store, ing, cur = paper
    r = ing["reddit"]
    assert r.reconciles and r.files == 3 and r.quarantined == 0 and r.kept == len(EXPECTED_POSTS)
    bronze = {x["record_id"]: x for x in store.read("bronze_reddit").collect()}
    assert set(bronze) == set(EXPECTED_POSTS)
    subs = {rid: x["subreddit"] for rid, x in bronze.items()}
    assert subs == {rid: ("AskReddit" if "_ar_" in rid else "tifu" if "_tf_" in rid else "buildapc") for rid in subs}
    keep = bronze["reddit:t3_ar_keep"]
    assert (keep["user_id"], keep["title"], keep["text"], keep["score"], keep["num_comments"]) == (
        "kind_neighbour", "Did volunteering ever pull you out of a rut?", LONG_POST, 25, 8)
    assert keep["event_ts"] == datetime(2022, 1, 1)
    assert bronze["reddit:t3_tf_keep"]["event_ts"] == datetime(2022, 1, 2)  # created_utc as a string
    assert bronze["reddit:t3_bp_keep"]["event_ts"] == datetime(2022, 1, 3)  # created_utc as a timestamp

    got, _ = _outcome(store, EXPECTED_POSTS)
    assert got == EXPECTED_POSTS
    assert cur["reddit"].reconciles and cur["reddit"].kept == 3
    silver = {x["record_id"]: x["subreddit"] for x in store.read("silver_records").where(F.col("source") == "reddit").collect()}
    assert silver == {"reddit:t3_ar_keep": "AskReddit", "reddit:t3_tf_keep": "tifu", "reddit:t3_bp_keep": "buildapc"}


# --- the reader alone: where the users table is found, and the users table among the tweets ---------------
def _payloads(path, **options):
    return [(r, json.loads(r["payload"]) if r["payload"] else None)
            for b in read_file(str(path), ReaderOptions(source="twitter", options=options)) for r in b.to_pylist()]


def test_users_table_is_found_beside_the_tweets_or_configured(tmp_path):
    tweets, users = write_twitter100m(tmp_path / "hub")
    first = sorted(tweets.rglob("*.parquet"))[0]
    assert users_table_path(str(first)) == str(users)  # twitter100m_tweets/ -> twitter100m_users/
    # a users/ folder inside the tweets folder, and a lone file pair
    flat = tmp_path / "flat"
    (flat / "users").mkdir(parents=True)
    (flat / "t.parquet").write_bytes(first.read_bytes())
    pq.write_table(pa.Table.from_pylist(USERS), flat / "users" / "u.parquet")
    assert users_table_path(str(flat / "t.parquet")) == str(flat / "users")
    pair = tmp_path / "pair"
    pair.mkdir()
    (pair / "my_tweets.parquet").write_bytes(first.read_bytes())
    pq.write_table(pa.Table.from_pylist(USERS), pair / "my_users.parquet")
    assert users_table_path(str(pair / "my_tweets.parquet")) == str(pair / "my_users.parquet")
    # nothing beside: no profiles, the tweets still read; the reader option names one anywhere
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "t.parquet").write_bytes(first.read_bytes())
    assert users_table_path(str(alone / "t.parquet")) is None
    rows = _payloads(alone / "t.parquet")
    assert all(r["error"] is None for r, _ in rows) and "user_description" not in rows[0][1]
    rows = _payloads(alone / "t.parquet", users_path=str(users))
    assert rows[0][1]["user_description"].startswith("Teacher, runner") and rows[0][1]["user_followers"] == 2_300_000
    assert "is_retweet" not in rows[0][1]  # left to bronze, which derives it from the text
    with pytest.raises(FileNotFoundError):
        users_table_path(str(alone / "t.parquet"), str(tmp_path / "nowhere"))


def test_a_users_table_among_the_tweet_files_is_one_notice_not_records(tmp_path):
    _, users = write_twitter100m(tmp_path)
    (f,) = users.rglob("*.parquet")
    rows = _payloads(f)
    assert [(r["error"], r["line"]) for r, _ in rows] == [("twitter_users_table", 1)]
    assert "5 rows" in rows[0][0]["detail"]


def test_ingest_hands_a_sources_options_to_its_readers():
    """``ingest.sources.<source>`` keys beside ``paths`` reach ``ReaderOptions.options`` (a ``*_path``
    made absolute): ``ingest.sources.twitter.users_path`` works as soon as the configuration has it."""
    assert source_options(LewinConfig(), "twitter") == {}
    with_key = SimpleNamespace(model_dump=lambda: {"paths": ["/d/tweets"], "users_path": "dumps/users", "unset": None})
    cfg = SimpleNamespace(ingest=SimpleNamespace(sources={"twitter": with_key}))
    assert source_options(cfg, "twitter") == {"users_path": str(Path("dumps/users").absolute())}
