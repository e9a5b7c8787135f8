"""The read-only check behind ``lewin sql``: queries over Lewin's tables, nothing else.

``check_read_only(query)`` raises ``Refused`` (a one-line reason naming what was refused) unless
the text is a single query — ``SELECT``, ``WITH``, ``VALUES``, ``TABLE``, ``FROM``, ``SHOW``,
``DESCRIBE``/``DESC`` or ``EXPLAIN``, optionally behind opening parentheses — that

* holds no write or DDL keyword anywhere (``INSERT`` … ``COPY``; a CTE or ``FROM`` clause cannot
  wrap a write), outside string literals, comments and quoted identifiers;
* names no table by path: ``<format>.`<path>``` (``delta``, ``parquet``, ``text``, ``json`` …, any
  case, quoted or not, comments between the parts), nor any ``a.`b``` whose quoted part is not a
  plain name, nor ``a."b"``;
* calls no function that reads files or the environment by itself (``read_files``/``read_*``,
  ``cloud_files``, ``IDENTIFIER(…)`` — a table name from a string —, ``reflect``, ``secret`` …);
* uses no ``${…}`` variable substitution (classic Spark expands ``${env:…}`` before parsing).

The text is tokenised, not matched with a regex: ``--`` and (nested) ``/* */`` comments are
skipped, string literals and quoted identifiers are single tokens, statements are split on ``;``.
Dialects differ on backslash escapes in strings and on nested comments, so the text is tokenised
under each reading; every reading that an engine could parse must pass (one that leaves a string
or a comment open cannot run anywhere). Names Lewin registered stay addressable: ``users``,
``lewin.users``, ``lewin.`users```.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

QUERY_STARTS = ("SELECT", "WITH", "VALUES", "TABLE", "FROM", "SHOW", "DESCRIBE", "DESC", "EXPLAIN")
"""First keyword of an accepted statement (after any opening parentheses)."""

WRITE_KEYWORDS = frozenset({
    "INSERT", "DELETE", "UPDATE", "MERGE", "UPSERT", "CREATE", "DROP", "ALTER", "TRUNCATE", "COPY", "OVERWRITE",
    "VACUUM", "OPTIMIZE", "RESTORE", "MSCK", "GRANT", "REVOKE",
})
"""Refused anywhere in a statement (not only first): ``WITH x AS (…) INSERT …``, ``FROM t INSERT …``."""

FILE_FORMATS = frozenset({
    "delta", "parquet", "text", "json", "csv", "orc", "avro", "binaryfile", "xml", "jdbc", "iceberg", "hudi",
    "image", "libsvm", "noop", "kafka", "console", "rate", "socket", "jsonl", "ndjson", "arrow", "excel",
})
"""Data-source names that turn ``<format>.<path>`` into a file read (Spark's "SQL on files")."""

DENIED_FUNCTIONS = frozenset({
    "identifier", "cloud_files", "reflect", "java_method", "try_reflect", "secret", "try_secret", "list_secrets",
    "http_request",
})
"""Functions refused wherever they are called (besides every ``read_*``)."""

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_WORD = re.compile(r"[A-Za-z0-9_$]+")
_LINE_END = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


class Refused(ValueError):
    """The query is not a read-only query over Lewin's tables; ``str()`` is one line, ``<what>: <why>``."""


@dataclass(frozen=True)
class _Tok:
    kind: str  # word | quoted (`…`) | dq ("…") | string ('…') | punct
    text: str  # a word as written; a quoted token's content; the punctuation character


class _Open(Exception):
    """This reading leaves a string, comment or quoted identifier open: no engine runs it."""


def _tokens(sql: str, escapes: bool, nested: bool) -> list[list[_Tok]]:
    """Statements (split on ``;``) as token lists, comments dropped, literals as single tokens."""
    stmts: list[list[_Tok]] = [[]]
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
        elif sql.startswith("--", i):
            m = _LINE_END.search(sql, i)  # the earliest line end any dialect knows (\r included)
            i = n if m is None else m.end()
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2
            while depth:
                if i >= n:
                    raise _Open("an unterminated /* comment")
                if sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                elif nested and sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                else:
                    i += 1
        elif c in "'\"`":
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise _Open("an unterminated " + ("quoted identifier" if c == "`" else "string literal"))
                ch = sql[j]
                if c == "`" and ch == "`":
                    if sql.startswith("``", j):  # a doubled backquote is one backquote
                        buf.append("`")
                        j += 2
                        continue
                    break
                if c != "`" and ch == c:
                    break
                if c != "`" and ch == "\\" and escapes and j + 1 < n:
                    buf.append(sql[j + 1])
                    j += 2
                    continue
                buf.append(ch)
                j += 1
            stmts[-1].append(_Tok({"`": "quoted", '"': "dq", "'": "string"}[c], "".join(buf)))
            i = j + 1
        elif c == ";":
            stmts.append([])
            i += 1
        else:
            m = _WORD.match(sql, i)
            if m:
                stmts[-1].append(_Tok("word", m.group()))
                i = m.end()
            else:
                stmts[-1].append(_Tok("punct", c))
                i += 1
    return [s for s in stmts if s]


def _show(tok: _Tok) -> str:
    text = {"quoted": f"`{tok.text}`", "dq": f'"{tok.text}"', "string": f"'{tok.text}'"}.get(tok.kind, tok.text)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_statement(toks: list[_Tok], namespaces: set[str]) -> None:
    first = next((t for t in toks if not (t.kind == "punct" and t.text == "(")), None)
    if first is None:
        return
    if first.kind != "word" or first.text.upper() not in QUERY_STARTS:
        raise Refused(f"{_show(first).upper() if first.kind == 'word' else _show(first)} statement: "
                      "lewin sql runs queries only (SELECT, WITH, VALUES, TABLE, SHOW, DESCRIBE, EXPLAIN); writes go "
                      "through Lewin's commands")
    for k, t in enumerate(toks):
        prev = toks[k - 1] if k else None
        nxt = toks[k + 1] if k + 1 < len(toks) else None
        after = toks[k + 2] if k + 2 < len(toks) else None
        if t.kind == "word":
            up = t.text.upper()
            if up in WRITE_KEYWORDS and not (up == "CREATE" and prev is not None and prev.kind == "word"
                                             and prev.text.upper() == "SHOW"):
                raise Refused(f"{up} inside a query: lewin sql is read-only; writes go through Lewin's commands")
            low = t.text.lower()
            if nxt is not None and nxt.kind == "punct" and nxt.text == "(" and (
                    low in DENIED_FUNCTIONS or low.startswith("read_")):
                raise Refused(f"function {low}(): lewin sql reads Lewin's tables by name, not files, tables "
                              "named by strings or the environment")
        # a qualified name a.b: refuse file-format prefixes and any quoted part that is not a plain name
        if t.kind in ("word", "quoted", "dq") and nxt is not None and nxt.kind == "punct" and nxt.text == "." \
                and after is not None:
            head = t.text.lower()
            ref = f"{_show(t)}.{_show(after)}"
            path_like = (after.kind in ("dq", "string")
                         or (after.kind == "quoted" and not _PLAIN.match(after.text))
                         or (t.kind in ("quoted", "dq") and not _PLAIN.match(t.text)))
            if path_like or (head in FILE_FORMATS and head not in namespaces):
                raise Refused(f"path-based table reference {ref}: lewin sql reads Lewin's registered tables by "
                              "name (FROM users, lewin.users)")


def check_read_only(query: str, namespaces: Iterable[str | None] = ("lewin",)) -> None:
    """Raise ``Refused`` unless ``query`` is one read-only query over tables named in the catalog.

    ``namespaces``: Lewin's database (and catalog) names; ``<namespace>.<table>`` is never read as
    ``<format>.<path>`` even if a namespace happens to be called like a format."""
    ns = {n.lower() for n in namespaces if n}
    if "${" in query:
        raise Refused("variable substitution ${...}: lewin sql runs the query as written")
    readings, open_reason = [], None
    for escapes in (True, False):
        for nested in (True, False):
            try:
                readings.append(_tokens(query, escapes, nested))
            except _Open as exc:
                open_reason = str(exc)
    if not readings:
        raise Refused(f"{open_reason}: the query does not end where it seems to")
    for stmts in readings:
        if len(stmts) > 1:
            raise Refused(f"{len(stmts)} statements: lewin sql runs one query at a time")
        for toks in stmts:
            _check_statement(toks, ns)
