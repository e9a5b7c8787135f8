"""Training samples and MCQ evaluation items: the Delta tables' schemas and the file records.

A sample is a ShareGPT "messages" conversation (system / user / assistant) with metadata; the
shard files under ``shards/{train,test}/`` hold exactly the ``SHARD_RECORD`` columns, in this
order, so the Parquet and JSONL shards and the Delta table agree.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pyspark.sql.types import ArrayType, IntegerType, StringType, StructField, StructType

Role = Literal["system", "user", "assistant"]


def _f(name: str, dtype, nullable: bool = True) -> StructField:
    return StructField(name, dtype, nullable)


# nested fields stay nullable: engines differ in the nullability they infer for built arrays
MESSAGE = StructType([_f("role", StringType()), _f("content", StringType())])

# What a shard file row holds (Parquet column order = JSONL key order).
SHARD_RECORD = StructType(
    [
        _f("sample_id", StringType(), False),  # sha256 of (task, source, user, what the sample is built from)
        _f("task", StringType(), False),
        _f("source", StringType(), False),
        _f("user_id", StringType(), False),
        _f("split", StringType(), False),  # train | test, by user
        _f("messages", ArrayType(MESSAGE), False),
        _f("artifact_ids", ArrayType(StringType()), False),  # gold ledger keys / record ids used
        _f("prompt_version", StringType(), False),  # the task template's version
    ]
)

# The `shard_samples` Delta table: every sample after balancing, plus the fields MCQs are built from.
SHARD_SAMPLES = StructType(
    SHARD_RECORD.fields
    + [
        _f("public_prompt", StringType()),  # the request without the user's own behaviour (distractors see only this)
        _f("candidates", ArrayType(StringType())),  # item selection: option labels, in prompt order
        _f("answer_index", IntegerType()),  # item selection: the real item's place among candidates
        _f("prompt_head", StringType()),  # item selection: the prompt before the candidate list
    ]
)

# The `mcq_items` Delta table (and mcq/<task>.jsonl).
MCQ_ITEM = StructType(
    [
        _f("mcq_id", StringType(), False),
        _f("task", StringType(), False),
        _f("source", StringType(), False),
        _f("user_id", StringType(), False),
        _f("messages", ArrayType(MESSAGE), False),  # system + user: the prompt without the answer
        _f("options", ArrayType(StringType()), False),
        _f("answer_index", IntegerType(), False),
        _f("origins", ArrayType(StringType()), False),  # real | engine:<model> | other_user | pool
    ]
)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    content: str = Field(min_length=1)


class ShardRecord(BaseModel):
    """One line of a JSONL shard / row of a Parquet shard."""

    model_config = ConfigDict(extra="forbid")
    sample_id: str
    task: str
    source: str
    user_id: str
    split: Literal["train", "test"]
    messages: list[Message] = Field(min_length=2)
    artifact_ids: list[str]
    prompt_version: str

    @model_validator(mode="after")
    def _ends_with_answer(self):
        if self.messages[-1].role != "assistant":
            raise ValueError("a training sample ends with the assistant's message")
        return self


class McqRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mcq_id: str
    task: str
    source: str
    user_id: str
    messages: list[Message] = Field(min_length=1)
    options: list[str] = Field(min_length=2)
    answer_index: int
    origins: list[str]

    @model_validator(mode="after")
    def _consistent(self):
        if not 0 <= self.answer_index < len(self.options):
            raise ValueError(f"answer_index {self.answer_index} outside {len(self.options)} options")
        if len(self.origins) != len(self.options):
            raise ValueError("one origin per option")
        norm = [o.strip().lower() for o in self.options]
        if len(set(norm)) != len(norm):
            raise ValueError("options must be distinct")
        return self
