"""Rule filters as taggers: each rule only *scores* a row (does it fail, and why); the curate job
decides what to drop from the configuration (dolma's tagger/mixer split).

Rules are named and versioned (``reddit_min_score_v1``); a changed meaning gets a new version.
Every rule is a Spark built-in expression over the bronze columns plus ``clean_text``.
``tag_rules`` adds ``_failed`` (the names of the enabled rules the row fails, in rule order) and
``_fail_detail`` (why the first one failed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lewin.schemas.config import (
    AdContentRule,
    BrandAccountRule,
    CurateRules,
    DeletedRule,
    DistinguishedRule,
    FirstPersonRule,
    MinChars,
    MinCount,
    NamePatterns,
    Rule,
)


@dataclass(frozen=True)
class Check:
    fails: Column
    detail: Column


def _any_pattern(col: Column, patterns: list[str]) -> Column:
    """Whole-value, case-insensitive match against any of ``patterns``."""
    return F.coalesce(col.rlike("(?i)^(" + "|".join(f"(?:{p})" for p in patterns) + ")$"), F.lit(False))


def _count_matches(col: Column, patterns: list[str]) -> Column:
    return F.regexp_count(F.coalesce(col, F.lit("")), F.lit("(?i)" + "|".join(f"(?:{p})" for p in patterns)))


def _num(col: Column) -> Column:
    return F.coalesce(col.cast("bigint"), F.lit(0))


def _detail(label: str, value: Column) -> Column:
    return F.concat(F.lit(f"{label}="), F.coalesce(value.cast("string"), F.lit("null")))


# --- one builder per rule kind ---------------------------------------------------------------------
def min_count(column: str) -> Callable[[MinCount], Check]:
    return lambda r: Check(_num(F.col(column)) < r.min, _detail(column, F.col(column)))


def min_chars(r: MinChars) -> Check:
    n = F.coalesce(F.length("clean_text"), F.lit(0))
    return Check(n < r.min_chars, _detail("chars", n))


def reddit_deleted(r: DeletedRule) -> Check:
    markers = [m.lower() for m in r.markers]
    author = F.lower(F.col("user_id")).isin(markers)
    text = F.lower(F.trim(F.col("text"))).isin(markers)
    removed = F.col("removed_by_category").isNotNull()
    return Check(
        author | text | removed,
        F.when(author, F.lit("author deleted")).when(text, F.concat(F.lit("text="), F.col("text")))
        .otherwise(F.concat(F.lit("removed_by="), F.col("removed_by_category"))),
    )


def user_name_patterns(r: NamePatterns) -> Check:
    return Check(_any_pattern(F.col("user_id"), r.patterns), _detail("user", F.col("user_id")))


def reddit_moderator(r: DistinguishedRule) -> Check:
    d = F.lower(F.col("distinguished"))
    return Check(F.coalesce(d.isin([v.lower() for v in r.values]), F.lit(False)), _detail("distinguished", d))


def flag(column: str) -> Callable[[Rule], Check]:
    return lambda r: Check(F.coalesce(F.col(column), F.lit(False)), F.lit(column))


def twitter_brand_account(r: BrandAccountRule) -> Check:
    vt = F.coalesce(F.lower(F.col("user_verified_type")).isin([v.lower() for v in r.verified_types]), F.lit(False))
    name = _any_pattern(F.col("user_name"), r.name_patterns) | _any_pattern(F.col("user_display_name"), r.name_patterns)
    bio = _count_matches(F.col("user_description"), r.bio_promo_patterns) > 0
    followers, following = _num(F.col("user_followers")), _num(F.col("user_following"))
    broadcast = (followers >= 10_000) & (followers >= F.greatest(following, F.lit(1)) * r.min_followers_per_following)
    # account-level density over the user's tweets (computed by the job as _user_link_share etc.)
    dense = F.coalesce(F.col("_user_tweets") >= r.min_tweets_for_share, F.lit(False)) & (
        (F.col("_user_link_share") >= r.max_link_share) | (F.col("_user_promo_share") >= r.max_promo_share)
    )
    reason = (
        F.when(vt, F.concat(F.lit("verified_type="), F.col("user_verified_type")))
        .when(name, F.concat(F.lit("name="), F.col("user_name")))
        .when(bio, F.lit("promotional bio"))
        .when(broadcast, F.concat(F.lit("followers/following="), followers.cast("string"), F.lit("/"), following.cast("string")))
        .otherwise(F.concat(F.lit("link share="), F.round(F.col("_user_link_share"), 2).cast("string"),
                            F.lit(" promo share="), F.round(F.col("_user_promo_share"), 2).cast("string")))
    )
    return Check(vt | name | bio | broadcast | dense, reason)


def ad_content(r: AdContentRule) -> Check:
    hits = _count_matches(F.col("text"), r.promo_patterns)
    tags, urls = _num(F.col("n_hashtags")), _num(F.col("n_urls"))
    return Check(
        (hits > r.max_promo_hits) | (tags > r.max_hashtags) | (urls > r.max_urls),
        F.concat(F.lit("promo phrases="), hits.cast("string"), F.lit(" hashtags="), tags.cast("string"),
                 F.lit(" urls="), urls.cast("string")),
    )


def first_person(r: FirstPersonRule) -> Check:
    words = "|".join(p.replace("'", "['’]") for p in r.pronouns)
    n = F.regexp_count(F.coalesce(F.col("clean_text"), F.lit("")), F.lit(rf"(?i)\b(?:{words})\b"))
    return Check(n < 1, F.lit("no first-person pronoun"))


# rule name -> (curation sources it applies to, builder). Order = evaluation order = the order reasons are reported in.
RULES: dict[str, tuple[tuple[str, ...], Callable]] = {
    "reddit_deleted_v1": (("reddit", "reddit_comments"), reddit_deleted),
    "reddit_system_user_v1": (("reddit", "reddit_comments"), user_name_patterns),
    "reddit_bot_v1": (("reddit", "reddit_comments"), user_name_patterns),
    "reddit_moderator_v1": (("reddit", "reddit_comments"), reddit_moderator),
    "reddit_min_score_v1": (("reddit",), min_count("score")),
    "reddit_min_comments_v1": (("reddit",), min_count("num_comments")),
    "reddit_min_length_v1": (("reddit",), min_chars),
    "reddit_comment_min_score_v1": (("reddit_comments",), min_count("score")),
    "reddit_comment_min_length_v1": (("reddit_comments",), min_chars),
    "twitter_retweet_v1": (("twitter",), flag("is_retweet")),
    "twitter_quote_v1": (("twitter",), flag("is_quote")),
    "twitter_brand_account_v1": (("twitter",), twitter_brand_account),
    "twitter_ad_content_v1": (("twitter",), ad_content),
    "twitter_min_length_v1": (("twitter",), min_chars),
    "blogger_min_length_v1": (("blogger",), min_chars),
    "blogger_first_person_v1": (("blogger",), first_person),
    "amazon_min_length_v1": (("amazon",), min_chars),
}


def enabled_rules(rules: CurateRules, source: str) -> list[tuple[str, Check]]:
    out = []
    for name, (sources, builder) in RULES.items():
        cfg = getattr(rules, name)
        if source in sources and cfg.enabled:
            out.append((name, builder(cfg)))
    return out


def tag_rules(df: DataFrame, rules: CurateRules, source: str) -> DataFrame:
    """Add ``_failed`` (array of failing rule names) and ``_fail_detail`` (the first one's why)."""
    checks = enabled_rules(rules, source)
    if not checks:
        return df.withColumn("_failed", F.array().cast("array<string>")).withColumn(
            "_fail_detail", F.lit(None).cast("string"))
    names = F.array(*[F.when(c.fails, F.lit(n)) for n, c in checks])
    detail = None
    for n, c in reversed(checks):
        detail = F.when(c.fails, c.detail).otherwise(detail if detail is not None else F.lit(None).cast("string"))
    df = df.withColumn("_failed", F.filter(names, lambda x: x.isNotNull()))
    return df.withColumn("_fail_detail", detail)
