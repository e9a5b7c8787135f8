"""The six training tasks as DataFrame -> DataFrame transforms (Spark built-ins only).

Every builder returns ``TASK_COLUMNS``: the conversation's parts (system, user, answer), the same
request without the user's own behaviour (``public_prompt``: all a distractor writer may see), the
ids of what the sample is built from, and for item selection the candidate list. ``to_samples``
turns them into ShareGPT messages with a stable ``sample_id``.

What each task is built from (paper's six tasks; see the README for stand-ins):
- profile_generation: gold persona -> gold profile (same user).
- scenario_generation: gold scenario's characters + background -> its plots.
- social_qa: persona (else profile) + a gold QA item's scenario and question -> its answer.
- writing_imitation: the user's latest post; shown either their earlier posts or (when the user
  has a gold writing style, for half of them by seed) the style description, plus the topic
  (the post's title; an Amazon review's item and rating; else the post's longest words).
- personalized_commenting: a Reddit comment whose parent (post or comment) is in the data, with
  the user's earlier comments as history. Twitter, Blogger and Amazon dumps carry no parent text,
  so they contribute no samples here.
- item_selection: an Amazon user's purchase history (+ persona when gold has one) and 20
  candidates (the real next item + 19 drawn from the item pool outside the user's history).
"""

from __future__ import annotations

from lewin.schemas.shards import SHARD_RECORD
from lewin.udfs.ids import stable_id
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

# Task prompt versions: bump the suffix when a task's wording changes.
TASK_VERSIONS = {
    "profile_generation": "profile_generation_v1",
    "scenario_generation": "scenario_generation_v1",
    "social_qa": "social_qa_v1",
    "writing_imitation": "writing_imitation_v1",
    "personalized_commenting": "personalized_commenting_v1",
    "item_selection": "item_selection_v1",
}

SYSTEM = {
    "profile_generation": "You expand a short persona into a detailed, faithful profile of the person.",
    "scenario_generation": "You continue social scenarios: given the characters and the background, you write what happens.",
    "social_qa": "You predict how a specific person acts, feels and reasons in a situation.",
    "writing_imitation": "You write exactly as a specific person writes: their topics, voice, length and habits.",
    "personalized_commenting": "You write the comment a specific person would write on a post.",
    "item_selection": "You predict which item a specific shopper picks next.",
}

TASK_COLUMNS = ("task", "source", "user_id", "basis", "system", "user", "answer", "public_prompt", "artifact_ids",
                "candidates", "answer_index", "prompt_head")

# item selection: the prompt is ``prompt_head + CANDIDATES_HEADER + numbered candidates + CANDIDATES_FOOTER``;
# the head and the candidates travel as data, so MCQ building re-renders the list instead of parsing it
CANDIDATES_HEADER = "\n\nWhich one of these do you buy next?\n"
CANDIDATES_FOOTER = "\n\nAnswer with the item."


def item_prompt(prompt_head: str, candidates: list[str]) -> str:
    """The item-selection prompt for candidates in this order (the Python twin of the Spark one)."""
    numbered = "\n".join(f"{i + 1}. {c}" for i, c in enumerate(candidates))
    return prompt_head + CANDIDATES_HEADER + numbered + CANDIDATES_FOOTER


def _out(col: str, path: str):
    return F.get_json_object(F.col(col), f"$.{path}")


def _after_lambdas(df: DataFrame) -> DataFrame:
    """A shuffle between lambda-built columns and a filter on them: Sail (0.7) fails to push a
    filter through a projection holding higher-order functions. Harmless elsewhere."""
    return df.repartition("source", "user_id")


def _finish(df: DataFrame, task: str, check_answer: bool = True) -> DataFrame:
    out = df.select(
        F.lit(task).alias("task"), "source", "user_id", F.col("basis").cast("string"), F.lit(SYSTEM[task]).alias("system"),
        F.col("user").alias("user"), F.col("answer"), F.col("public_prompt"),
        F.col("artifact_ids").cast("array<string>"),
        (F.col("candidates") if "candidates" in df.columns else F.lit(None)).cast("array<string>").alias("candidates"),
        (F.col("answer_index") if "answer_index" in df.columns else F.lit(None)).cast("int").alias("answer_index"),
        (F.col("prompt_head") if "prompt_head" in df.columns else F.lit(None)).cast("string").alias("prompt_head"),
    )
    return out.where(F.col("answer").isNotNull() & (F.length(F.trim("answer")) > 0)) if check_answer else out


def _personas(gold_persona: DataFrame) -> DataFrame:
    return gold_persona.select("source", "user_id", _out("output", "persona").alias("persona"),
                               F.col("ledger_key").alias("persona_key"))


def _profiles(gold_profile: DataFrame) -> DataFrame:
    return gold_profile.select("source", "user_id", _out("output", "profile").alias("profile"),
                               F.col("ledger_key").alias("profile_key"))


def profile_generation(gold_persona: DataFrame, gold_profile: DataFrame) -> DataFrame:
    j = _personas(gold_persona).join(_profiles(gold_profile), ["source", "user_id"])
    ask = "Write this person's profile (100-400 words): who they are, what they do and care about, how they behave."
    return _finish(j.select(
        "source", "user_id", F.col("profile_key").alias("basis"),
        F.concat(F.lit("Persona: "), "persona", F.lit("\n\n" + ask)).alias("user"),
        F.col("profile").alias("answer"),
        F.lit("Write a person's profile (100-400 words): who they are, what they do and care about, how they behave.")
        .alias("public_prompt"),
        F.array("persona_key", "profile_key").alias("artifact_ids")), "profile_generation")


def scenario_generation(gold_scenario: DataFrame) -> DataFrame:
    s = gold_scenario.select(
        "source", "user_id", "ledger_key", _out("output", "background").alias("bg"),
        F.from_json(_out("output", "characters"), "array<string>").alias("chars"), _out("output", "plots").alias("plots"))
    ask = F.concat(F.lit("Characters: "), F.array_join("chars", ", "), F.lit("\nBackground: "), "bg",
                   F.lit("\n\nWrite the plot: what happens, step by step."))
    return _finish(s.select("source", "user_id", F.col("ledger_key").alias("basis"), ask.alias("user"),
                            F.col("plots").alias("answer"), ask.alias("public_prompt"),
                            F.array("ledger_key").alias("artifact_ids")), "scenario_generation")


def social_qa(gold_social_qa: DataFrame, gold_persona: DataFrame, gold_profile: DataFrame) -> DataFrame:
    """One sample per gold QA item (items are judged one by one: input_id is ``<record>#<n>``)."""
    items = gold_social_qa.select(
        "source", "user_id", "ledger_key", F.substring_index("input_id", "#", -1).alias("pos"),
        F.from_json("output", "struct<type:string,scenario:string,question:string,answer:string>").alias("qa"))
    j = items.join(_personas(gold_persona), ["source", "user_id"], "left").join(_profiles(gold_profile), ["source", "user_id"], "left")
    about = F.coalesce("persona", "profile")
    about_key = F.when(F.col("persona").isNotNull(), F.col("persona_key")).otherwise(F.col("profile_key"))
    question = F.concat(F.lit("Scenario: "), F.col("qa.scenario"), F.lit("\nQuestion ("),
                        F.regexp_replace(F.col("qa.type"), "_", " "), F.lit("): "), F.col("qa.question"))
    return _finish(j.where(about.isNotNull()).select(
        "source", "user_id", F.concat_ws("#", "ledger_key", "pos").alias("basis"),
        F.concat(F.lit("About the person: "), about, F.lit("\n\n"), question).alias("user"),
        F.col("qa.answer").alias("answer"), question.alias("public_prompt"),
        F.array("ledger_key", about_key).alias("artifact_ids")), "social_qa")


def _history_text(records, max_chars: int):
    return F.array_join(F.transform(records, lambda r: F.concat(
        F.lit("- "), F.when(F.length(F.coalesce(r["title"], F.lit(""))) > 0, F.concat(r["title"], F.lit(": "))).otherwise(F.lit("")),
        F.substring(r["text"], 1, max_chars))), "\n")


def _topic(rec, item_label):
    words = F.filter(F.split(F.lower(rec["text"]), "[^a-z]+"), lambda w: F.length(w) >= 7)
    keywords = F.concat_ws(", ", F.slice(F.array_sort(F.array_distinct(words)), 1, 6))
    amazon = F.concat(F.lit("a review of "), item_label, F.lit(" (you rated it "),
                      F.format_number(rec["rating"], 0), F.lit("/5)"))
    return F.coalesce(
        F.when(F.length(F.coalesce(rec["title"], F.lit(""))) > 0, rec["title"]),
        F.when(rec["item_id"].isNotNull(), amazon),
        F.when(F.length(keywords) > 0, F.concat(F.lit("a post touching on: "), keywords)),
        F.lit("anything on your mind"))


def _item_labels(items: DataFrame | None) -> DataFrame | None:
    if items is None:
        return None
    return items.where(F.col("title").isNotNull()).groupBy("item_id").agg(F.min("title").alias("item_title"))


def _label(item_id, title):
    return F.coalesce(F.concat(F.substring(title, 1, 120), F.lit(" [item "), item_id, F.lit("]")),
                      F.concat(F.lit("item "), item_id))


def writing_imitation(users: DataFrame, gold_style: DataFrame, items: DataFrame | None, seed: int, history: int,
                      max_chars: int) -> DataFrame:
    u = users.where(F.size("records") >= 2).select(
        "source", "user_id", F.element_at("records", -1).alias("target"),
        F.slice("records", F.greatest(F.lit(1), F.size("records") - history), F.least(F.size("records") - 1, F.lit(history)))
        .alias("hist"))
    style = gold_style.select("source", "user_id", _out("output", "style").alias("style"), F.col("ledger_key").alias("style_key"))
    u = u.join(style, ["source", "user_id"], "left").withColumn("_iid", F.col("target.item_id"))
    labels = _item_labels(items)
    u = u.join(labels, u["_iid"] == labels["item_id"], "left").drop("item_id") if labels is not None else u.withColumn(
        "item_title", F.lit(None).cast("string"))
    use_style = F.col("style").isNotNull() & (F.pmod(F.xxhash64(F.lit(seed), "source", "user_id"), F.lit(2)) == 1)
    topic = _topic(F.col("target"), _label(F.col("_iid"), F.col("item_title")))
    context = F.when(use_style, F.concat(F.lit("Your writing style: "), "style")).otherwise(
        F.concat(F.lit("Your earlier posts (oldest first):\n"), _history_text(F.col("hist"), max_chars)))
    ask = F.concat(F.lit("Write a new post about: "), topic)
    return _finish(u.select(
        "source", "user_id", F.col("target.record_id").alias("basis"),
        F.concat(context, F.lit("\n\n"), ask).alias("user"), F.col("target.text").alias("answer"), ask.alias("public_prompt"),
        F.when(use_style, F.array(F.col("target.record_id"), F.col("style_key"))).otherwise(F.array(F.col("target.record_id")))
        .alias("artifact_ids")), "writing_imitation")


def personalized_commenting(scrubbed: DataFrame, comment_parents: DataFrame, history: int, max_chars: int) -> DataFrame:
    """``comment_parents``: (record_id, parent_id) of the comments (silver carries ``parent_id``
    for the ``reddit_comments`` stream only)."""
    comments = scrubbed.join(
        comment_parents.select("record_id", F.concat(F.lit("reddit:"), "parent_id").alias("parent_rid")), "record_id")
    w = Window.partitionBy("source", "user_id").orderBy("event_ts", "record_id").rowsBetween(-history, -1)
    rec = F.struct(F.col("event_ts"), F.col("record_id"), F.lit(None).cast("string").alias("title"), F.col("text"))
    comments = comments.withColumn("hist", F.collect_list(rec).over(w))
    parents = scrubbed.select(F.col("record_id").alias("parent_rid"), F.col("title").alias("p_title"),
                              F.col("text").alias("p_text"))
    j = comments.join(parents, "parent_rid").where(F.size("hist") >= 1)
    post = F.concat(F.when(F.length(F.coalesce("p_title", F.lit(""))) > 0, F.concat("p_title", F.lit("\n"))).otherwise(F.lit("")),
                    F.substring("p_text", 1, max_chars * 2))
    return _finish(j.select(
        "source", "user_id", F.col("record_id").alias("basis"),
        F.concat(F.lit("Your earlier comments (oldest first):\n"), _history_text(F.col("hist"), max_chars),
                 F.lit("\n\nThe post you reply to:\n"), post, F.lit("\n\nWrite your comment.")).alias("user"),
        F.col("text").alias("answer"),
        F.concat(F.lit("The post:\n"), post, F.lit("\n\nWrite a comment on it.")).alias("public_prompt"),
        F.array("record_id", "parent_rid").alias("artifact_ids")), "personalized_commenting")


def item_selection(users: DataFrame, gold_persona: DataFrame, items: DataFrame | None, seed: int, history: int,
                   n_candidates: int) -> DataFrame:
    """Candidates are drawn by hashing (seed, user, draw number) into the numbered item pool: no
    users x items cross join, and the same seed draws the same items."""
    amazon = users.where(F.col("source") == "amazon").select(
        "source", "user_id", F.filter("records", lambda r: r["item_id"].isNotNull()).alias("recs"))
    amazon = _after_lambdas(amazon).where(F.size("recs") >= 2).select(
        "source", "user_id", F.element_at("recs", -1).alias("target"),
        F.slice("recs", F.greatest(F.lit(1), F.size("recs") - history), F.least(F.size("recs") - 1, F.lit(history))).alias("hist"),
        F.transform("recs", lambda r: r["item_id"]).alias("owned"))
    # the pool: every item reviewed by a curated user, plus the catalogue (item metadata)
    pool = users.where(F.col("source") == "amazon").select(F.explode(F.transform("records", lambda r: r["item_id"])).alias("item_id"))
    if items is not None:
        pool = pool.unionByName(items.select("item_id"))
    pool = _after_lambdas(pool.withColumn("source", F.lit("amazon")).withColumn("user_id", F.lit(""))).where(
        F.col("item_id").isNotNull()).select("item_id").distinct()
    # numbering the pool is one global sort of the item ids (millions at most, not interactions)
    order = Window.orderBy(F.xxhash64(F.lit(seed), "item_id"), "item_id")
    pool = pool.withColumn("idx", F.row_number().over(order) - 1)
    n_pool = pool.agg(F.count(F.lit(1)).alias("n_pool"))
    draws = amazon.crossJoin(n_pool).select(
        "source", "user_id", "owned", "n_pool",
        F.explode(F.sequence(F.lit(0), F.size("owned") + F.lit(3 * n_candidates))).alias("draw"))
    draws = draws.withColumn("idx", F.pmod(F.xxhash64(F.lit(seed), "source", "user_id", "draw"), F.col("n_pool")))
    picked = draws.join(pool, "idx").where(~F.array_contains("owned", F.col("item_id")))
    first = Window.partitionBy("source", "user_id", "item_id").orderBy("draw")
    picked = picked.withColumn("_r", F.row_number().over(first)).where("_r = 1")
    order = Window.partitionBy("source", "user_id").orderBy("draw")
    picked = picked.withColumn("_n", F.row_number().over(order)).where(F.col("_n") < n_candidates)
    others = picked.groupBy("source", "user_id").agg(F.collect_list("item_id").alias("others"))
    c = amazon.join(others, ["source", "user_id"]).where(F.size("others") == n_candidates - 1)
    # candidate order: by hash of (seed, user, item) — the real item's place is uniform
    c = c.withColumn("cand_ids", F.transform(
        F.array_sort(F.transform(F.concat(F.array(F.col("target.item_id")), F.col("others")),
                                 lambda i: F.struct(F.xxhash64(F.lit(seed), F.col("user_id"), i).alias("h"), i.alias("id")))),
        lambda s: s["id"]))
    labels = _item_labels(items)
    if labels is not None:
        lab_map = labels.agg(F.map_from_entries(F.collect_list(F.struct("item_id", "item_title"))).alias("lab"))
        c = c.crossJoin(lab_map)
    else:
        c = c.withColumn("lab", F.create_map().cast("map<string,string>"))
    c = c.withColumn("candidates", F.transform("cand_ids", lambda i: _label(i, F.col("lab")[i])))
    c = c.withColumn("answer_index", F.array_position("cand_ids", F.col("target.item_id")).cast("int") - 1)
    c = c.join(_personas(gold_persona), ["source", "user_id"], "left")
    hist = F.array_join(F.transform("hist", lambda r: F.concat(
        F.lit("- "), _label(r["item_id"], F.col("lab")[r["item_id"]]), F.lit(" (rated "), F.format_number(r["rating"], 0),
        F.lit("/5)"))), "\n")
    numbered = F.array_join(F.transform("candidates", lambda x, i: F.concat((i + 1).cast("string"), F.lit(". "), x)), "\n")
    about = F.when(F.col("persona").isNotNull(), F.concat(F.lit("About you: "), "persona", F.lit("\n\n"))).otherwise(F.lit(""))
    head = F.concat(about, F.lit("Your purchases so far (oldest first):\n"), hist)
    ask = F.concat(head, F.lit(CANDIDATES_HEADER), numbered, F.lit(CANDIDATES_FOOTER))
    return _finish(c.select(
        "source", "user_id", F.col("target.record_id").alias("basis"), ask.alias("user"),
        F.element_at("candidates", F.col("answer_index") + 1).alias("answer"), F.lit(None).cast("string").alias("public_prompt"),
        F.when(F.col("persona_key").isNotNull(), F.array(F.col("target.record_id"), F.col("persona_key")))
        .otherwise(F.array(F.col("target.record_id"))).alias("artifact_ids"),
        "candidates", "answer_index", head.alias("prompt_head")), "item_selection", check_answer=False)  # the answer is a label: never empty


# --- from task rows to samples ---------------------------------------------------------------------------
def to_samples(tasks: DataFrame) -> DataFrame:
    msg = lambda role, col: F.struct(F.lit(role).alias("role"), F.col(col).alias("content"))  # noqa: E731
    version = F.create_map(*[x for k, v in TASK_VERSIONS.items() for x in (F.lit(k), F.lit(v))])
    return tasks.select(
        stable_id("task", "source", "user_id", "basis").alias("sample_id"),
        "task", "source", "user_id", F.lit(None).cast("string").alias("split"),
        F.array(msg("system", "system"), msg("user", "user"), msg("assistant", "answer")).alias("messages"),
        "artifact_ids", version[F.col("task")].alias("prompt_version"), "public_prompt", "candidates", "answer_index",
        "prompt_head")


def split_by_user(samples: DataFrame, seed: int, test_fraction: float) -> DataFrame:
    """A user's every sample lands in the same split: the split is a hash of (seed, source, user)."""
    bucket = F.pmod(F.xxhash64(F.lit(seed), F.lit("split"), "source", "user_id"), F.lit(1_000_000))
    return samples.withColumn("split", F.when(bucket < int(round(test_fraction * 1_000_000)), "test").otherwise("train"))


def balance(samples: DataFrame, caps: DataFrame, seed: int) -> DataFrame:
    """Keep at most ``caps.cap`` samples per (task, source), chosen by a seeded hash."""
    w = Window.partitionBy("task", "source").orderBy(F.xxhash64(F.lit(seed), "sample_id"), "sample_id")
    return samples.join(caps, ["task", "source"]).withColumn("_rank", F.row_number().over(w)).where(
        F.col("_rank") <= F.col("cap")).drop("_rank", "cap")


SHARD_COLUMNS = [f.name for f in SHARD_RECORD.fields]
