"""Regenerate the bundled demo sample: small synthetic dumps in every supported format.

    python -m lewin.jobs.sample_data.generate  [--out DIR]

Deterministic (fixed seed): the same code writes the same bytes. The texts are synthetic
first-person posts assembled from phrase banks, with the quirks real dumps have: deleted and
removed posts, bots and moderators, retweets and quotes, brand accounts, link spam, HTML and
URLs, short posts, non-English posts, duplicate reviews across product variants, and one user
per source with a long history. Real public samples live in ``../shared/data`` (never copied).
"""

from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import io
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

HERE = Path(__file__).parent
SEED = 20260522

OPENERS = [
    "I have been thinking about this for a while and I finally want to write it down.",
    "So this happened to me last week and I still do not know how I feel about it.",
    "My sister told me I should post this here, so here goes.",
    "I never thought I would be the kind of person who asks strangers for advice, but here I am.",
    "Long story short, I made a decision yesterday that I am already second-guessing.",
    "This is going to sound silly, but it has been on my mind all day.",
    "I moved to a new city three months ago and I am still figuring things out.",
    "Today I finally did the thing I had been putting off for almost a year.",
]
MIDDLES = [
    "My manager asked me to stay late again, and instead of saying yes like I always do, I told her I had plans.",
    "When my roommate left the dishes for the fourth day in a row, I wrote a note and then tore it up.",
    "I called my dad for the first time in months and we talked about his garden for an hour.",
    "I signed up for a pottery class because I wanted something to do with my hands that was not a screen.",
    "My best friend forgot my birthday and I pretended it did not bother me, but it really did.",
    "I started running in the mornings, mostly because I could not sleep anyway.",
    "At the interview they asked where I see myself in five years and I honestly had no idea.",
    "I adopted a shy old dog from the shelter and he hid under the bed for two whole days.",
    "My neighbour knocked on my door to complain about the noise, and I ended up inviting him in for tea.",
    "I lent my brother money again even though I promised myself I would stop.",
    "I finally told my partner that I want to go back to school, and the conversation did not go how I expected.",
    "I volunteered at the food bank on Saturday and met a woman who reminded me of my grandmother.",
]
FEELINGS = [
    "Part of me feels proud, and part of me feels like I let someone down.",
    "I keep replaying the conversation in my head and wondering what I should have said.",
    "Honestly I feel lighter than I have in weeks.",
    "I am anxious about what happens next, but I think it was the right call.",
    "It made me realise how much I have been avoiding the things that scare me.",
    "I do not know if I am overreacting, which is why I am asking you all.",
]
CLOSERS = [
    "Has anyone else been through something like this? How did you handle it?",
    "I would love to hear what you would have done in my place.",
    "Thanks for reading this far, it helps just to write it out.",
    "Anyway, I am going to make some tea and try not to overthink it.",
    "Any advice is welcome, even the blunt kind.",
]
SPANISH = (
    "Hoy fue un día muy largo en el trabajo y cuando llegué a casa me di cuenta de que había olvidado "
    "las llaves en la oficina. Tuve que esperar a mi hermana durante casi dos horas sentado en la escalera, "
    "pensando en todo lo que tengo que cambiar en mi vida. Creo que necesito organizarme mejor y dormir más."
)
GERMAN = (
    "Ich habe heute endlich meine Wohnung fertig eingerichtet und zum ersten Mal seit Wochen fühle ich mich "
    "wirklich zu Hause. Meine Nachbarin hat mir Kuchen gebracht und wir haben lange über unsere Familien "
    "gesprochen. Manchmal sind es die kleinen Dinge, die einen Tag besonders machen."
)
SPAM = (
    "BIG SALE!!! Get 50% off all our premium products today only. Click the link in bio and use code SAVE50 "
    "at checkout. Free shipping worldwide, limited stock, do not miss out! Buy now at https://example-shop.test/deal "
    "#sale #discount #deal #shopping #offer"
)
SUBREDDITS = ["relationship_advice", "offmychest", "AskWomen", "AskMen", "CasualConversation", "TrueOffMyChest"]
PRODUCTS = [
    ("B0SAMPLE01", "Gentle Foaming Face Wash", "Beauty"),
    ("B0SAMPLE02", "Hydrating Night Cream", "Beauty"),
    ("B0SAMPLE03", "Vitamin C Serum", "Beauty"),
    ("B0SAMPLE04", "Mineral Sunscreen SPF 50", "Beauty"),
    ("B0SAMPLE05", "Lavender Bath Salts", "Beauty"),
    ("B0SAMPLE06", "Bamboo Hair Brush", "Beauty"),
    ("B0SAMPLE07", "Unscented Body Lotion", "Beauty"),
    ("B0SAMPLE08", "Clay Detox Mask", "Beauty"),
    ("B0SAMPLE09", "Rose Water Toner", "Beauty"),
    ("B0SAMPLE10", "Argan Oil Shampoo", "Beauty"),
    ("B0SAMPLE11", "Travel Makeup Bag", "Beauty"),
    ("B0SAMPLE12", "Lip Balm Trio", "Beauty"),
]
# Catalogue-only items (metadata, no reviews): the pool item selection draws its 19 wrong
# candidates from must be larger than a purchase history.
CATALOGUE = [(f"B0CATLG{i:03d}", f"{a} {n}", "Beauty") for i, (a, n) in enumerate(
    (a, n) for a in ("Charcoal", "Aloe", "Coconut", "Green Tea") for n in ("Cleanser", "Scrub", "Lip Gloss", "Hand Cream",
                                                                          "Eye Gel", "Hair Oil"))]
REVIEW_BITS = [
    "I bought this after my old one ran out and I was nervous about switching brands.",
    "My skin is very sensitive, so I always patch test first, and this one passed.",
    "I use it every night before bed and my partner noticed the difference before I did.",
    "The smell is lighter than I expected, which I actually prefer.",
    "It arrived a day early and the packaging was neat and recyclable.",
    "I gave one to my mom for her birthday and she has already asked for another.",
    "After two weeks I can say it does what it promises, no more and no less.",
    "I wish the bottle were bigger for the price, but I will probably buy it again.",
]

T0 = datetime(2019, 1, 1, tzinfo=timezone.utc)


# PII goes into about a third of the posts (its own random stream: the rest of the sample does not
# shift). Every injected value is listed in pii_injected.json, which the leak test reads.
PII_RNG = random.Random(SEED + 1)
PII_LOG: list[dict] = []
SHARED_EMAIL = "tamsin.okafor48@posteo.de"  # the same e-mail in two users' posts (consistency test)


def _pii_sentence(etype: str | None = None, value: str | None = None) -> str:
    from lewin.udfs.pii_eval import TEMPLATES, TYPES, _value

    etype = etype or PII_RNG.choice(TYPES)
    value = value or _value(etype, PII_RNG)
    PII_LOG.append({"type": etype, "value": value})
    return PII_RNG.choice(TEMPLATES[etype]).format(v=value)


def post(rng: random.Random, n_mid: int = 3, pii: tuple[str, str] | None = None) -> str:
    parts = [rng.choice(OPENERS)] + rng.sample(MIDDLES, n_mid) + [rng.choice(FEELINGS), rng.choice(CLOSERS)]
    if pii is not None:
        parts.insert(2, _pii_sentence(*pii))
    elif PII_RNG.random() < 0.33:
        parts.insert(PII_RNG.randrange(1, len(parts)), _pii_sentence())
    return " ".join(parts)


def ts(rng: random.Random, days: int = 900) -> datetime:
    return T0 + timedelta(days=rng.randrange(days), seconds=rng.randrange(86400))


def _gzip_text(path: Path, mode: str, encoding: str) -> io.TextIOWrapper:
    # mtime=0: the same rows give the same bytes
    return io.TextIOWrapper(gzip.GzipFile(path, "wb", mtime=0), encoding=encoding)


def _write_jsonl(path: Path, rows: list[dict], opener=open) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with opener(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def reddit(out: Path, rng: random.Random) -> None:
    users = [f"sample_user_{i:02d}" for i in range(12)] + ["long_history_lou"]
    subs: list[dict] = []
    i = 0
    for u in users:
        for k in range(14 if u == "long_history_lou" else rng.randrange(3, 6)):
            i += 1
            t = ts(rng)
            shared = u in ("long_history_lou", "sample_user_01") and k < (2 if u == "long_history_lou" else 1)
            subs.append({
                "id": f"s{i:05d}", "author": u, "created_utc": int(t.timestamp()), "score": rng.randrange(2, 400),
                "num_comments": rng.randrange(2, 80), "title": rng.choice(["Need advice", "I finally did it",
                "Is this normal?", "Small win today", "Vent: long week"]),
                "selftext": post(rng, pii=("EMAIL_ADDRESS", SHARED_EMAIL) if shared else None),
                "subreddit": rng.choice(SUBREDDITS), "distinguished": None, "stickied": False, "over_18": False,
                "is_self": True, "url": f"https://www.reddit.com/r/x/comments/s{i:05d}/",
            })
    # the quirks every real dump has
    quirks = [
        {"author": "[deleted]", "selftext": "[deleted]"},
        {"author": "sample_user_03", "selftext": "[removed]"},
        {"author": "AutoModerator", "selftext": "Your post has been removed because it breaks rule 3. " * 8},
        {"author": "helpful_mod", "distinguished": "moderator", "selftext": "Weekly thread reminder. " * 20},
        {"author": "sample_user_04", "score": 1, "num_comments": 0},
        {"author": "sample_user_05", "selftext": "Short one. Anyone else?"},
        {"author": "sample_user_06", "selftext": SPANISH},
        {"author": "sample_user_07", "selftext": "<p>I <b>really</b> needed to share this: " + post(rng)
         + " More at https://example.org/my-story?ref=reddit &amp; thanks!</p>"},
    ]
    for q in quirks:
        i += 1
        t = ts(rng)
        base = {"id": f"s{i:05d}", "created_utc": int(t.timestamp()), "score": 25, "num_comments": 5,
                "title": "A post", "selftext": post(rng), "subreddit": "offmychest", "distinguished": None}
        base.update(q)
        subs.append(base)
    rng.shuffle(subs)
    # JSONL (Pushshift), zstd-compressed NDJSON (Pushshift monthly dumps), CSV export, Parquet
    third = len(subs) // 3
    _write_jsonl(out / "reddit" / "RS_sample_a.jsonl", subs[:third])
    raw = "".join(json.dumps(r) + "\n" for r in subs[third: 2 * third]).encode()
    (out / "reddit" / "RS_sample_b.ndjson.zst").write_bytes(zstandard.ZstdCompressor(level=10).compress(raw))
    fields = ["author", "created_utc", "score", "num_comments", "selftext", "title", "subreddit", "distinguished", "id"]
    rest = subs[2 * third:]
    half = len(rest) // 2
    with open(out / "reddit" / "pushshift_export.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([""] + fields)
        for k, r in enumerate(rest[:half]):
            w.writerow([k] + ["" if r.get(c) is None else r.get(c) for c in fields])
    table = pa.Table.from_pylist([{c: r.get(c) for c in fields} for r in rest[half:]],
                                 schema=pa.schema([("author", pa.string()), ("created_utc", pa.int64()),
                                                   ("score", pa.int64()), ("num_comments", pa.int64()),
                                                   ("selftext", pa.string()), ("title", pa.string()),
                                                   ("subreddit", pa.string()), ("distinguished", pa.string()),
                                                   ("id", pa.string())]))
    pq.write_table(table, out / "reddit" / "submissions.parquet")
    # comments: JSONL.gz and a PRAW-style CSV
    comments = []
    for k in range(60):
        s = rng.choice(subs)
        u = rng.choice(users)
        comments.append({"id": f"c{k:05d}", "author": u, "body": rng.choice(FEELINGS) + " " + rng.choice(CLOSERS),
                         "created_utc": int(ts(rng).timestamp()), "score": rng.randrange(-2, 50),
                         "link_id": f"t3_{s['id']}", "parent_id": f"t3_{s['id']}", "subreddit": s["subreddit"]})
    _write_jsonl(out / "reddit" / "comments" / "RC_sample.jsonl.gz", comments[:40], opener=_gzip_text)
    with open(out / "reddit" / "comments" / "praw_comments.csv", "w", newline="", encoding="utf-8") as f:
        cf = ["id", "author", "body", "created_utc", "score", "link_id", "parent_id", "subreddit"]
        w = csv.writer(f)
        w.writerow([""] + cf)
        for k, c in enumerate(comments[40:]):
            w.writerow([k] + [c[x] for x in cf])


def twitter(out: Path, rng: random.Random) -> None:
    users = [{"id": str(9000 + i), "username": f"sample_tweeter{i}", "name": f"Sample Tweeter {i}",
              "description": "Coffee, books, and long walks. Opinions are my own.", "verified": False,
              "public_metrics": {"followers_count": rng.randrange(10, 900), "following_count": rng.randrange(10, 500),
                                 "tweet_count": rng.randrange(100, 9000)}} for i in range(8)]
    brand = {"id": "9999", "username": "ShopDealsNow", "name": "Shop Deals Now", "verified": True,
             "verified_type": "business", "description": "Official store. Best deals daily! Shop now: https://example-shop.test",
             "public_metrics": {"followers_count": 250000, "following_count": 3, "tweet_count": 41000}}
    n = 0
    pages = []
    for page_no in range(4):
        data = []
        for _ in range(8):
            n += 1
            u = rng.choice(users)
            t = ts(rng)
            tw = {"id": str(15000000 + n), "author_id": u["id"], "created_at": t.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                  "text": post(rng, 2), "lang": "en", "public_metrics": {"retweet_count": 1, "reply_count": 0,
                  "like_count": rng.randrange(0, 50), "quote_count": 0}, "edit_history_tweet_ids": [str(15000000 + n)]}
            data.append(tw)
        n += 1
        data.append({"id": str(15000000 + n), "author_id": users[0]["id"], "created_at": "2020-05-01T10:00:00.000Z",
                     "text": "RT @sample_tweeter3: " + post(rng, 1)[:200], "lang": "en",
                     "referenced_tweets": [{"type": "retweeted", "id": "15000001"}]})
        n += 1
        data.append({"id": str(15000000 + n), "author_id": users[1]["id"], "created_at": "2020-05-02T10:00:00.000Z",
                     "text": "So true, this is exactly how I felt. " + post(rng, 2), "lang": "en",
                     "referenced_tweets": [{"type": "quoted", "id": "15000002"}]})
        n += 1
        data.append({"id": str(15000000 + n), "author_id": brand["id"], "created_at": "2020-06-01T09:00:00.000Z",
                     "text": SPAM, "lang": "en", "entities": {"urls": [{"url": "https://t.co/x"}],
                     "hashtags": [{"tag": "sale"}, {"tag": "discount"}, {"tag": "deal"}]}})
        pages.append({"data": data, "includes": {"users": users + [brand]}, "meta": {"result_count": len(data)}})
    pages.append({"errors": [{"title": "Not Found Error", "detail": "Could not find tweet with ids: [1].",
                              "type": "https://api.twitter.com/2/problems/resource-not-found"}]})
    _write_jsonl(out / "twitter" / "api_v2_pages.jsonl", pages)
    # API v1.1 tweets (gzip JSONL) and a twarc-flattened v2 file
    v1 = []
    for k in range(10):
        u = rng.choice(users)
        t = ts(rng)
        v1.append({"id": 16000000 + k, "id_str": str(16000000 + k), "created_at": t.strftime("%a %b %d %H:%M:%S +0000 %Y"),
                   "full_text": post(rng, 2), "lang": "en", "truncated": False,
                   "source": '<a href="http://twitter.com" rel="nofollow">Twitter Web App</a>',
                   "user": {"id": int(u["id"]), "id_str": u["id"], "screen_name": u["username"], "name": u["name"],
                            "description": u["description"], "verified": False, "followers_count": 120,
                            "friends_count": 80, "statuses_count": 5000},
                   "retweet_count": 0, "favorite_count": 3, "entities": {"hashtags": [], "urls": [], "user_mentions": []}})
    _write_jsonl(out / "twitter" / "statuses_v1.jsonl.gz", v1, opener=_gzip_text)
    flat = []
    for k in range(6):
        u = rng.choice(users)
        flat.append({"id": str(17000000 + k), "author_id": u["id"], "author": u,
                     "created_at": ts(rng).strftime("%Y-%m-%dT%H:%M:%S.000Z"), "text": post(rng, 2), "lang": "en"})
    _write_jsonl(out / "twitter" / "twarc_flat.jsonl", flat)


def blogger(out: Path, rng: random.Random) -> None:
    months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December"]
    bloggers = [(3100000 + i, rng.choice(["male", "female"]), rng.randrange(15, 48),
                 rng.choice(["Student", "Education", "Technology", "Arts", "indUnk"]),
                 rng.choice(["Aries", "Leo", "Virgo", "Libra", "Pisces"])) for i in range(6)]
    # original corpus: one XML-ish file per blogger
    for bid, g, age, topic, sign in bloggers[:3]:
        lines = ["<Blog>", ""]
        for _ in range(rng.randrange(3, 6)):
            t = ts(rng, 1500) - timedelta(days=5000)
            lines += [f"<date>{t.day},{months[t.month - 1]},{t.year}</date>", "<post>", "", "      " + post(rng), "", "</post>", ""]
        lines.append("</Blog>")
        (out / "blogger").mkdir(parents=True, exist_ok=True)
        (out / "blogger" / f"{bid}.{g}.{age}.{topic}.{sign}.xml").write_text("\n".join(lines), encoding="utf-8")
    # Kaggle CSV export: id = blogger id
    with open(out / "blogger" / "blogtext.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "gender", "age", "topic", "sign", "date", "text"])
        for bid, g, age, topic, sign in bloggers[3:5]:
            for _ in range(4):
                t = ts(rng, 1500) - timedelta(days=5000)
                w.writerow([bid, g, age, topic, sign, f"{t.day},{months[t.month - 1]},{t.year}", post(rng)])
            w.writerow([bid, g, age, topic, sign, "02,Juni,2004", GERMAN])
    # JSONL (bz2) with post ids and author_id, as in ../shared/data/blogger
    rows = []
    bid, g, age, topic, sign = bloggers[5]
    for k in range(5):
        t = ts(rng, 1500) - timedelta(days=5000)
        rows.append({"id": 800000 + k, "author_id": bid, "gender": g, "age": age, "job": topic, "starsign": sign,
                     "date": t.strftime("%Y-%m-%d"), "text": post(rng)})
    with bz2.open(out / "blogger" / "blog_posts.jsonl.bz2", "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def amazon(out: Path, rng: random.Random) -> None:
    """Purchase histories whose (8 per user, 3 per item) k-core takes several rounds: ten core
    buyers, one buyer who reaches 8 items only through a fringe item, and light buyers whose
    removal starves that item first (round 1), then that buyer (round 2), and so on."""
    core_items = PRODUCTS[:11]
    fringe = ("B0SAMPLE12", "Lip Balm Trio", "Beauty")
    plan: dict[str, list[tuple[str, str, str]]] = {}
    for i in range(10):
        plan[f"AUSER{i:04d}"] = rng.sample(core_items, rng.randrange(8, 11))
    plan["AUSER0010"] = rng.sample(core_items, 7) + [fringe]
    plan["AUSER0011"] = rng.sample(core_items, 3) + [fringe]
    plan["AUSER0012"] = rng.sample(core_items, 2) + [fringe]
    plan["AUSER0013"] = rng.sample(core_items, 2)
    r18, r23 = [], []
    for u, bought in plan.items():
        for asin, title, _ in bought:
            t = ts(rng)
            text = (f"I bought the {title.lower()} {rng.randrange(2, 90)} days ago. "
                    + " ".join(rng.sample(REVIEW_BITS, 2)))
            if rng.random() < 0.5:
                r18.append({"overall": float(rng.randrange(1, 6)), "verified": True, "reviewerID": u, "asin": asin,
                            "reviewText": text, "summary": rng.choice(["Good value", "Would buy again", "Meh"]),
                            "unixReviewTime": int(t.timestamp()), "vote": rng.choice([None, "2", "1,204"]),
                            "style": {"Size:": " 7.0 oz"}})
            else:
                r23.append({"rating": float(rng.randrange(1, 6)), "title": "Would buy again", "text": text,
                            "asin": asin + "V", "parent_asin": asin, "user_id": u,
                            "timestamp": int(t.timestamp() * 1000), "helpful_vote": rng.randrange(0, 9),
                            "verified_purchase": True, "images": []})
    # a review repeated under another product variant a day later, as in the real 5-core files
    dup = dict(r18[0])
    dup["asin"] = "B0SAMPLE99"
    dup["unixReviewTime"] += 86400
    r18.append(dup)
    short = dict(r18[1])
    short["reviewText"] = "Nice."
    short["unixReviewTime"] += 86400
    r18.append(short)
    _write_jsonl(out / "amazon" / "Sample_Beauty_5.json.gz", r18, opener=_gzip_text)
    _write_jsonl(out / "amazon" / "Sample_Beauty.jsonl", r23)
    meta = [{"main_category": "All Beauty", "title": title, "average_rating": 4.2, "rating_number": 120,
             "features": ["Gentle", "Cruelty free"], "description": [f"A {title.lower()} for everyday use."],
             "price": 12.99, "store": "Sample Brand", "categories": [cat], "parent_asin": asin}
            for asin, title, cat in PRODUCTS + CATALOGUE]
    _write_jsonl(out / "amazon" / "meta_Sample_Beauty.jsonl", meta)


def generate(out: Path) -> None:
    rng = random.Random(SEED)
    PII_RNG.seed(SEED + 1)
    PII_LOG.clear()
    for fn in (reddit, twitter, blogger, amazon):
        fn(out, rng)
    values = sorted({(x["type"], x["value"]) for x in PII_LOG})
    (out / "pii_injected.json").write_text(
        json.dumps([{"type": t, "value": v} for t, v in values], indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    generate(args.out)
    print(f"sample written to {args.out}")


if __name__ == "__main__":
    main()
