"""`lewin sql` is a read-only surface: queries over Lewin's registered tables, nothing else.

Writes, DDL, path-based tables (``text.`/etc/passwd` ``, ``delta.`…` ``) and file-reading
functions are refused with one line and exit code 2, before the engine starts, and change
nothing; queries by name (CTEs, SHOW, DESCRIBE, literals holding DELETE or a backquote) still run.
The CLI runs in-process (typer's CliRunner) over one small table store shared by the module,
on the session's engine.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest
from pyspark.sql.types import LongType, StringType, StructField, StructType
from typer.testing import CliRunner

from lewin.jobs import engine as engine_mod
from lewin.jobs.cli import app
from lewin.jobs.engine import Engine
from lewin.jobs.sql_guard import Refused, check_read_only
from lewin.jobs.tables import TableStore
from lewin.schemas.config import StorageConfig

from .conftest import ENGINE

pytestmark = pytest.mark.skipif(ENGINE != "embedded", reason="the CLI runs the default (embedded) engine")

SCHEMA = StructType([StructField("source", StringType()), StructField("user_id", StringType()),
                     StructField("n_records", LongType())])
ROWS = [("reddit", "lou", 17), ("blogger", "ann", 9), ("amazon", "bo", 3)]


@pytest.fixture(scope="module")
def surface(engine, tmp_path_factory):
    """(invoke, store, starts, tmp, db): a `users` table under a private root and database;
    ``invoke(query, *options)`` runs `lewin sql` on it; ``starts`` records each engine the CLI asked for."""
    tmp = tmp_path_factory.mktemp("sql_surface")
    db = f"sqlsurf_{uuid.uuid4().hex[:8]}"
    storage = StorageConfig(root=tmp / "tables", database=db)
    store = TableStore(engine, storage)
    store.ensure("users", SCHEMA)
    store.append("users", engine.spark.createDataFrame(ROWS, SCHEMA))
    (tmp / "lewin.yaml").write_text(f"storage:\n  root: {storage.root_location}\n  database: {db}\n")
    starts = []

    def shared_engine(cfg, app_name="lewin"):  # the session's engine, left running when the CLI stops it
        starts.append(cfg)
        return Engine(engine.spark, engine.kind, engine.python_workers, engine.table_format)

    runner = CliRunner()
    handlers, level = logging.root.handlers[:], logging.root.level  # the CLI reconfigures logging

    def invoke(query: str, *opts: str):
        # "--" ends the options: a query may start with a "--" comment
        return runner.invoke(app, ["-c", str(tmp / "lewin.yaml"), "sql", "--format", "json", "--limit", "0", *opts,
                                   "--", query])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine_mod, "get_engine", shared_engine)
        yield invoke, store, starts, tmp, db
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)


def _state(store: TableStore) -> tuple:
    """Rows, Delta version and every file under the root: what a refused query must not change."""
    root = Path(store.storage.root_location)
    rows = sorted(tuple(r) for r in store.read("users").collect())
    return rows, store.version("users"), sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _json_rows(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


REFUSED = {
    "insert": ("INSERT INTO users VALUES ('reddit', 'mallory', 1)", "INSERT"),
    "insert_overwrite": ("INSERT OVERWRITE users SELECT * FROM users WHERE 1 = 0", "INSERT"),
    "delete": ("DELETE FROM users", "DELETE"),
    "update": ("UPDATE users SET n_records = 0", "UPDATE"),
    "merge": ("MERGE INTO users t USING users s ON t.user_id = s.user_id WHEN MATCHED THEN DELETE", "MERGE"),
    "create_location": ("CREATE TABLE stolen USING delta LOCATION '{outside}' AS SELECT * FROM users", "CREATE"),
    "drop": ("DROP TABLE users", "DROP"),
    "truncate": ("TRUNCATE TABLE users", "TRUNCATE"),
    "set": ("SET spark.sql.runSQLOnFiles=true", "SET"),
    "add_jar": ("ADD JAR /tmp/evil.jar", "ADD"),
    "cache": ("CACHE TABLE users", "CACHE"),
    "text_file": ("SELECT * FROM text.`/etc/passwd`", "text.`/etc/passwd`"),
    "text_file_spaced_comment_case": ("select * from TeXt /* x */ . `/etc/passwd`", "TeXt.`/etc/passwd`"),
    "quoted_format": ("SELECT * FROM `json`.`/etc/hosts`", "`json`.`/etc/hosts`"),
    "delta_path": ("SELECT * FROM delta.`{root}/users`", "delta.`"),
    "delta_relative": ("SELECT * FROM delta.users", "delta.users"),
    "parquet_in_join": ("SELECT u.* FROM users u JOIN parquet.`/data/x` p ON u.user_id = p.id", "parquet.`/data/x`"),
    "read_files": ("SELECT * FROM read_files('/etc/passwd', format => 'text')", "read_files()"),
    "identifier": ("SELECT * FROM IDENTIFIER('text.`/etc/passwd`')", "identifier()"),
    "comment_hidden_write": ("/* just a look */ DELETE FROM users -- SELECT", "DELETE"),
    "line_comment_then_write": ("-- SELECT * FROM users\nDELETE FROM users", "DELETE"),
    "two_statements": ("SELECT * FROM users; DELETE FROM users", "2 statements"),
    "cte_wrapping_write": ("WITH x AS (SELECT * FROM users) INSERT INTO users SELECT * FROM x", "INSERT"),
    "parenthesised_write": ("((DELETE FROM users))", "DELETE"),
    "escaped_quote_split": ("SELECT 'a\\' ; DELETE FROM users; --'", "2 statements"),
    "nested_comment": ("SELECT /* /* */ DELETE FROM users; -- */ 1", "DELETE"),
    "cr_ends_comment": ("SELECT 1 -- look\rDELETE FROM users", "DELETE"),
    "env_substitution": ("SELECT '${env:LEWIN_PII_SALT}' AS s", "${...}"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_writes_paths_and_file_functions_are_refused_and_change_nothing(surface, name):
    invoke, store, starts, tmp, _ = surface
    query, what = REFUSED[name]
    outside = tmp / f"outside_{name}"
    query = query.replace("{outside}", str(outside)).replace("{root}", store.storage.root_location)
    before, n_starts = _state(store), len(starts)
    r = invoke(query)
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("refused:") and what in lines[0], r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert len(starts) == n_starts, "a refused query never starts the engine"
    assert _state(store) == before and not outside.exists()


LEGIT = {
    "cte": ("WITH big AS (SELECT * FROM users WHERE n_records >= 9) SELECT user_id FROM big ORDER BY user_id",
            [{"user_id": "ann"}, {"user_id": "lou"}]),
    "qualified": ("SELECT count(*) AS n FROM {db}.users", [{"n": 3}]),
    "qualified_quoted": ("SELECT count(*) AS n FROM {db}.`users`", [{"n": 3}]),
    "string_with_delete_and_backquote": ("SELECT 'DELETE FROM users; `x`' AS s, count(*) AS n FROM users -- DROP",
                                         [{"s": "DELETE FROM users; `x`", "n": 3}]),
    "comment_and_parentheses": ("/* how many */ (SELECT max(n_records) AS m FROM users);", [{"m": 17}]),
    "quoted_alias": ("SELECT user_id AS `user id` FROM users WHERE source = 'amazon'", [{"user id": "bo"}]),
}


@pytest.mark.parametrize("name", list(LEGIT))
def test_queries_over_registered_tables_still_run(surface, name):
    invoke, store, _, _, db = surface
    query, expect = LEGIT[name]
    before = _state(store)
    r = invoke(query.replace("{db}", db))
    assert r.exit_code == 0, (r.stdout, r.stderr)
    assert _json_rows(r.stdout) == expect
    assert _state(store) == before


def test_show_tables_and_describe_still_run(surface):
    invoke, *_ = surface
    r = invoke("SHOW TABLES")
    assert r.exit_code == 0, r.stderr
    assert "users" in {row.get("tableName") for row in _json_rows(r.stdout)}
    # Sail's parser wants the TABLE keyword (DESCRIBE users passes the guard, test below); Sail
    # 0.x lists no columns for a table registered by LOCATION, so only the header is certain
    r = invoke("DESCRIBE TABLE users", "--format", "csv")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "col_name,data_type,comment"
    assert [x.split(",")[0] for x in lines[1:4]] in ([], ["source", "user_id", "n_records"])


def test_the_guard_reads_every_dialect():
    """Pure checks (no engine): the same text under both readings of backslashes and comments."""
    for ok in ("DESCRIBE users", "DESC lewin.users", "SELECT 'it\\'s' AS x", "SELECT 'a\\\\' AS x",
               "SHOW CREATE TABLE users", "EXPLAIN SELECT 1", "VALUES (1)",
               "SELECT replace(user_id, 'a', 'b') FROM users", "SELECT t.text FROM users t"):
        check_read_only(ok)
    for bad in ("SELECT 'open", "SELECT /* open", "EXPLAIN INSERT INTO users VALUES (1)",
                "SELECT * FROM x.`a/b`", "SELECT * FROM parquet.\"/x\"", "SELECT * FROM \"delta\".`/x`",
                "FROM users INSERT INTO t SELECT *",
                "SELECT reflect('java.lang.System', 'getenv', 'HOME')"):
        with pytest.raises(Refused):
            check_read_only(bad)
    # the configured database is a namespace, never a file format, even when it is called like one
    check_read_only("SELECT * FROM text.users", namespaces=("text",))
    with pytest.raises(Refused):
        check_read_only("SELECT * FROM text.`/etc/passwd`", namespaces=("text",))
