"""Rule filters as taggers: each rule only *scores* a row (does it fail, and why); the curate job
decides what to drop from the configuration (dolma's tagger/mixer split).

Rules are named and versioned (``reddit_min_score_v1``); a changed meaning gets a new version.
Every rule is a Spark built-in expression over the bronze columns plus ``clean_text``. Which rules
a curation stream runs, in which order, is the stream's (``StreamSpec.rules`` in
``lewin.udfs.sources``); the source-specific builders live with their source, the generic ones
here. ``tag_rules`` adds ``_failed`` (the names of the enabled rules the row fails, in rule order)
and ``_fail_detail`` (why the first one failed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lewin.schemas.config import CurateRules, MinChars, MinCount, NamePatterns, Rule

if TYPE_CHECKING:  # pragma: no cover
    from lewin.udfs.sources.base import RuleSpec, StreamSpec


@dataclass(frozen=True)
class Check:
    fails: Column
    detail: Column


def any_pattern(col: Column, patterns: list[str]) -> Column:
    """Whole-value, case-insensitive match against any of ``patterns``."""
    return F.coalesce(col.rlike("(?i)^(" + "|".join(f"(?:{p})" for p in patterns) + ")$"), F.lit(False))


def count_matches(col: Column, patterns: list[str]) -> Column:
    """How many times any of ``patterns`` (case-insensitive) occurs in ``col`` (null: 0)."""
    return F.regexp_count(F.coalesce(col, F.lit("")), F.lit("(?i)" + "|".join(f"(?:{p})" for p in patterns)))


def num(col: Column) -> Column:
    """A count column as bigint, null as 0."""
    return F.coalesce(col.cast("bigint"), F.lit(0))


def value_detail(label: str, value: Column) -> Column:
    """``label=value`` (``label=null``): a rule's detail."""
    return F.concat(F.lit(f"{label}="), F.coalesce(value.cast("string"), F.lit("null")))


# --- one builder per rule kind ---------------------------------------------------------------------
def min_count(column: str) -> Callable[[MinCount], Check]:
    return lambda r: Check(num(F.col(column)) < r.min, value_detail(column, F.col(column)))


def min_chars(r: MinChars) -> Check:
    n = F.coalesce(F.length("clean_text"), F.lit(0))
    return Check(n < r.min_chars, value_detail("chars", n))


def user_name_patterns(r: NamePatterns) -> Check:
    return Check(any_pattern(F.col("user_id"), r.patterns), value_detail("user", F.col("user_id")))


def flag(column: str) -> Callable[[Rule], Check]:
    return lambda r: Check(F.coalesce(F.col(column), F.lit(False)), F.lit(column))


def rule_config(rules: CurateRules, rule: "RuleSpec") -> Any:
    """The rule's parameters: ``curate.rules.<name>``, else the spec's default (a plugin's rule)."""
    cfg = getattr(rules, rule.name, None)
    if cfg is None:
        cfg = rule.default
    if cfg is None:
        raise ValueError(f"rule {rule.name} has no parameters: not in curate.rules and no RuleSpec.default")
    return cfg


def _stream(stream: "str | StreamSpec") -> "StreamSpec":
    if isinstance(stream, str):
        from lewin.udfs import sources

        return sources.stream(stream)
    return stream


def enabled_rules(rules: CurateRules, stream: "str | StreamSpec") -> list[tuple[str, Check]]:
    """(name, check) of the stream's enabled rules, in the stream's order."""
    out = []
    for rule in _stream(stream).rules:
        cfg = rule_config(rules, rule)
        if cfg.enabled:
            out.append((rule.name, rule.build(cfg)))
    return out


def tag_rules(df: DataFrame, rules: CurateRules, stream: "str | StreamSpec") -> DataFrame:
    """Add ``_failed`` (array of failing rule names) and ``_fail_detail`` (the first one's why)."""
    checks = enabled_rules(rules, stream)
    if not checks:
        return df.withColumn("_failed", F.array().cast("array<string>")).withColumn(
            "_fail_detail", F.lit(None).cast("string"))
    names = F.array(*[F.when(c.fails, F.lit(n)) for n, c in checks])
    detail = None
    for n, c in reversed(checks):
        detail = F.when(c.fails, c.detail).otherwise(detail if detail is not None else F.lit(None).cast("string"))
    df = df.withColumn("_failed", F.filter(names, lambda x: x.isNotNull()))
    return df.withColumn("_fail_detail", detail)
