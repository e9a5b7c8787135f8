"""The ``lewin`` command line: run, ingest, status, report, sql, forget, config show."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from lewin.schemas.config import LLM_ARTIFACTS, SOURCES, ConfigError, LewinConfig, dump_config, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Lewin: per-user curation of UGC dumps on Spark.")
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
patterns_app = typer.Typer(help="The second recipe: psychological patterns -> bundles -> scenes -> conversations "
                           "-> dual-level checklists -> role-play shards.", no_args_is_help=True)
app.add_typer(patterns_app, name="patterns")
console = Console()
err_console = Console(stderr=True)
log = logging.getLogger("lewin")
# Two windows are global on purpose: numbering an LLM stage's pending prompts into chunks and the
# item pool for candidate draws (one sort over ids); Spark Connect warns on every such plan.
warnings.filterwarnings("ignore", message=".*No Partition Defined for Window.*")


class _State:
    config_path: Optional[Path] = None
    overrides: list[str] = []
    verbose: bool = False


state = _State()


def _load() -> LewinConfig:
    path = state.config_path
    if path is None:
        env = os.environ.get("LEWIN_CONFIG")
        if env:
            path = Path(env)
        elif Path("lewin.yaml").is_file():
            path = Path("lewin.yaml")
    try:
        return load_config(path, state.overrides)
    except ConfigError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from None


def _require_llm_engines(cfg: LewinConfig) -> None:
    """An LLM engine whose package is missing stops the command before any work, naming the key."""
    from rich.markup import escape

    from lewin.jobs.llm import missing_engine_packages

    if cfg.llm.enabled:
        for msg in missing_engine_packages(cfg):
            err_console.print(f"[bold red]error:[/] {escape(msg)}")
            raise typer.Exit(code=2)


@contextmanager
def _store(cfg: LewinConfig, *, write: bool = True, inputs: list[tuple[str, str]] = ()) -> Iterator:
    """The table store on the configured engine, after the environment checks (``preflight``):
    the storage root (``write=False``: read-only commands, which never create it), ``inputs``
    ((config key or option, location) pairs) and the engine's endpoint. Each problem is one
    line naming its key; any of them stops the command with exit code 2 before any work."""
    from rich.markup import escape

    from lewin.jobs.engine import get_engine
    from lewin.jobs.preflight import PreflightError, check
    from lewin.jobs.tables import TableStore

    t0 = time.perf_counter()
    try:
        notes = check(cfg, write=write, inputs=inputs)
        engine = get_engine(cfg.engine)
    except PreflightError as exc:
        for line in exc.problems:
            err_console.print(f"[bold red]error:[/] {escape(line)}", soft_wrap=True)
        raise typer.Exit(code=2) from None
    for note in notes:
        log.info("%s", note)
    log.info("engine %s ready in %.1fs (python workers: %d)", engine.kind, time.perf_counter() - t0, engine.python_workers)
    store = TableStore(engine, cfg.storage)
    store.register_all()
    from lewin.jobs.run_lock import RunLockHeld

    try:
        yield store
    except RunLockHeld as exc:  # another run holds a stage's lock: one line, before that stage did anything
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(code=2) from None
    finally:
        engine.stop()


def bundled_sample() -> Path:
    return Path(str(resources.files("lewin.jobs.sample_data")))


@app.callback()
def main_options(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (default: ./lewin.yaml or $LEWIN_CONFIG)."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a key: --set engine.kind=spark (repeatable)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    state.config_path = config
    state.overrides = list(set_)
    state.verbose = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=True)],
        force=True,
    )
    for noisy in ("py4j", "pyspark", "grpc", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _print_ingest(result) -> None:
    q = ", ".join(f"{k}={v}" for k, v in sorted(result.quarantined_by_reason.items())) or "none"
    console.print(
        f"[bold]{result.source}[/]: {result.files} new files, {result.records_in} records -> "
        f"{result.kept} kept, {result.duplicates} duplicates, {result.quarantined} quarantined ({q})"
        + ("" if result.reconciles else "  [bold red]DOES NOT RECONCILE[/]")
    )


def _print_curate(r) -> None:
    top = ", ".join(f"{k}={v}" for k, v in sorted(r.rejected_by_rule.items(), key=lambda kv: -kv[1])) or "none"
    extra = ""
    if r.kcore_rounds:
        extra = f"; k-core: {len(r.kcore_rounds)} rounds, {r.kcore_rounds[-1]['interactions']} interactions"
        if r.kcore_moved_out or r.kcore_restored:
            extra += f", {r.kcore_moved_out} moved out, {r.kcore_restored} restored"
    console.print(
        f"[bold]{r.source}[/]: {r.records_in} new bronze rows -> {r.kept} kept, {r.rejected} rejected ({top}){extra}"
        + ("" if r.reconciles else "  [bold red]DOES NOT RECONCILE[/]")
    )


def _print_scrub(r) -> None:
    kinds = ", ".join(f"{k}={v}" for k, v in sorted(r.entities.items(), key=lambda kv: -kv[1])) or "none"
    console.print(f"[bold]scrub[/]: {r.records_in} silver rows scrubbed ({kinds} replaced), "
                  f"{r.removed} removed with their silver rows")


def _print_users(u) -> None:
    console.print(f"[bold]users[/]: {u.users_changed} timelines (re)built, {u.users_removed} removed, {u.users_total} in total")


def _print_label(r) -> None:
    for s in r.stages:
        console.print(f"[bold]label {s.artifact}[/]: {s.inputs} records, {s.sent} prompts sent, {s.ok} ok, "
                      f"{s.dead} dead letters; tokens {s.tokens_in} in / {s.tokens_out} out")
    for source, gates in sorted(r.by_source.items()):
        kept = gates.get("kept", 0) + gates.get("unlabelled", 0)
        why = ", ".join(f"{g}={n}" for g, n in sorted(gates.items()) if g not in ("kept", "unlabelled"))
        console.print(f"[bold]label {source}[/]: {kept} of {sum(gates.values())} records kept" + (f" ({why})" if why else ""))
    if r.model_version:
        console.print(f"[bold]label distilled[/]: {r.summary()}")


def _print_llm(r) -> None:
    if r.users:
        console.print(f"[bold]llm users[/]: {r.users} selected, {r.users_summarised} with notes on older records, "
                      f"{r.users_below_min} below llm.min_records_per_user, {r.users_incomplete_notes} left out "
                      "(notes incomplete)")
    for s in r.stages:
        console.print(f"[bold]llm {s.artifact}[/]: {s.inputs} inputs, {s.sent} prompts sent, {s.ok} ok, "
                      f"{s.dead} dead letters; tokens {s.tokens_in} in / {s.tokens_out} out")
    gold = ", ".join(f"{k}={v}" for k, v in r.gold.items()) or "none"
    console.print(f"[bold]gold[/]: {gold}  ({r.calls} LLM calls this run)")


def _print_emit(r) -> None:
    if r.out_dir is None:
        return
    for split, by_task in r.counts.items():
        cells = ", ".join(f"{t}={sum(v.values())}" for t, v in by_task.items())
        console.print(f"[bold]shards {split}[/]: {sum(sum(v.values()) for v in by_task.values())} samples ({cells})")
    mcq = ", ".join(f"{t}={n}" for t, n in sorted(r.mcq.items())) or "none"
    console.print(f"[bold]mcq[/]: {mcq} ({r.distractor_calls} distractor calls; {r.mcq_dropped} questions "
                  "dropped for too few distinct options)")
    console.print(f"[bold]emit[/]: {r.kept} of {r.candidates} candidate samples kept after balancing -> {r.out_dir}")


def _report(stage) -> None:
    """Print what a stage instance did (its detailed result object)."""
    if stage.name == "curate":
        for r in stage.results:
            _print_curate(r)
        return
    printer = {"ingest": _print_ingest, "scrub": _print_scrub, "label": _print_label, "users": _print_users,
               "llm": _print_llm,
               "emit": _print_emit}[stage.name]
    if stage.result is not None:
        printer(stage.result)


def _execute(store, cfg: LewinConfig, stage) -> None:
    stage.execute(store, cfg)
    _report(stage)


@app.command()
def ingest(
    source: str = typer.Option(..., "--source", help=f"One of {', '.join(SOURCES)}."),
    path: list[str] = typer.Option(..., "--path", help="File or folder (repeatable); compressed files are fine."),
    stream: bool = typer.Option(False, "--stream", help="Structured Streaming over the paths (Auto Loader on "
                                "Databricks): every file not seen before, in micro-batches, exactly once through a "
                                "checkpoint; then stop. Embedded engine: one batch ingest."),
    watch: bool = typer.Option(False, "--watch", help="Keep going (implies --stream): a micro-batch every "
                               "ingest.watch_seconds (embedded engine: a poll of the paths) until Ctrl-C or SIGTERM."),
    max_polls: Optional[int] = typer.Option(None, "--max-polls", min=1, hidden=True,
                                            help="Embedded --watch: stop after this many polls (tests)."),
) -> None:
    """Ingest new dump files of one source into its bronze table(s)."""
    from lewin.jobs.ingest import IngestStage

    cfg = _load()
    if source not in SOURCES:
        err_console.print(f"[bold red]error:[/] --source must be one of {', '.join(SOURCES)} (got {source!r})")
        raise typer.Exit(code=2)
    with _store(cfg, inputs=[("--path", p) for p in path]) as store:
        if not (stream or watch):
            _execute(store, cfg, IngestStage(source, path))
            return
        from lewin.jobs.stream import stream_ingest

        report = stream_ingest(store, cfg, source, path, watch=watch, max_polls=max_polls)
        if store.engine.kind != "embedded" or watch:
            unit = "micro-batches" if store.engine.kind != "embedded" else "polls"
            console.print(f"{report.runs} {unit} with new files (runs {report.run_id}-*)")
        _print_ingest(report.result)


@app.command()
def curate(
    source: list[str] = typer.Option([], "--source", help="Source(s) to curate (default: all)."),
) -> None:
    """Curate new bronze rows into silver_records (rules, cleaning, language ID, dedup, k-core)."""
    from lewin.jobs.curate import CurateStage

    cfg = _load()
    bad = [s for s in source if s not in SOURCES]
    if bad:
        err_console.print(f"[bold red]error:[/] --source must be one of {', '.join(SOURCES)} (got {bad})")
        raise typer.Exit(code=2)
    # a source is curated as its streams (Reddit: submissions, then comments under their own rules)
    from lewin.udfs import sources

    streams = [st.name for s in source for st in sources.streams(s)]
    with _store(cfg) as store:
        _execute(store, cfg, CurateStage(streams or None))


@app.command()
def scrub() -> None:
    """Replace PII in silver_records with consistent fictitious values (silver_records_scrubbed)."""
    from lewin.jobs.scrub import ScrubStage

    cfg = _load()
    with _store(cfg) as store:
        _execute(store, cfg, ScrubStage())


@app.command()
def label(
    retry_dead: bool = typer.Option(False, "--retry-dead", help="Give dead letters a fresh set of attempts."),
) -> None:
    """Label every scrubbed record (quality, harm) through the ledger -> record_labels, the gate."""
    from lewin.jobs.label import LabelStage

    cfg = _load()
    if cfg.llm.labels != "off":
        _require_llm_engines(cfg)
    with _store(cfg) as store:
        _execute(store, cfg, LabelStage(retry_dead))


@app.command()
def users() -> None:
    """Rebuild the timelines of users whose kept records changed (users)."""
    from lewin.jobs.users import UsersStage

    cfg = _load()
    with _store(cfg) as store:
        _execute(store, cfg, UsersStage())


@app.command()
def llm(
    retry_dead: bool = typer.Option(False, "--retry-dead", help="Give dead letters a fresh set of attempts."),
) -> None:
    """LLM stages: notes, synthesis, judging, gold (resumable; see llm_ledger)."""
    from lewin.jobs.llm import LlmStage

    cfg = _load()
    if not cfg.llm.enabled:
        return
    _require_llm_engines(cfg)
    with _store(cfg) as store:
        _execute(store, cfg, LlmStage(retry_dead))


@app.command()
def emit() -> None:
    """Training shards (train/test by user), MCQ evaluation sets, manifest and LlamaFactory dataset_info."""
    from lewin.jobs.emit import EmitStage

    cfg = _load()
    if not cfg.emit.enabled:
        return
    _require_llm_engines(cfg)  # the MCQ distractors
    with _store(cfg) as store:
        _execute(store, cfg, EmitStage())


@app.command()
def run(
    data: Optional[str] = typer.Option(
        None, "--data", help="Folder or object-store URL with <source>/ subfolders (default: the bundled sample; try ../shared/data)."
    ),
) -> None:
    """Run every stage of the pipeline (the registry's order) on a data folder (default: the bundled sample)."""
    from lewin.jobs import registry
    from lewin.jobs.ingest import sources_under

    cfg = _load()
    if data is None and not any(sc.paths for sc in cfg.ingest.sources.values()):
        data = str(bundled_sample())
        console.print(f"using the bundled sample: {data}")
        if "profile" not in cfg.llm.model_fields_set:
            # the tiny CPU model cannot meet the paper's thresholds: the named demo profile relaxes them
            tree = cfg.model_dump(exclude_unset=True)
            tree["llm"] = {**tree.get("llm", {}), "profile": "demo"}
            cfg = LewinConfig.model_validate(tree)
            console.print("LLM stages use the 'demo' profile (relaxed thresholds, 2 users); see the README")
    plan: dict[str, list[str]] = {s: list(sc.paths) for s, sc in cfg.ingest.sources.items() if sc.paths}
    if data is not None:
        try:
            for s, paths in sources_under(data).items():
                plan.setdefault(s, []).extend(paths)
        except (FileNotFoundError, ImportError, ValueError) as exc:
            err_console.print(f"[bold red]error:[/] --data: {exc}")
            raise typer.Exit(code=2) from None
    if not plan:
        err_console.print(f"[bold red]error:[/] no source folders ({', '.join(SOURCES)}) under {data}")
        raise typer.Exit(code=2)
    _require_llm_engines(cfg)
    from lewin.jobs.preflight import config_inputs

    with _store(cfg, inputs=config_inputs(cfg)) as store:
        for stage in registry.plan(cfg, plan):
            _execute(store, cfg, stage)
        _print_status(store)
        _write_report(store, cfg, None)
    console.print(f"tables are in {cfg.storage.root_location}  "
                  "(try: lewin sql \"SELECT source, user_id, n_records FROM users WHERE n_records >= 8\")")


def _write_report(store, cfg: LewinConfig, out: Optional[str]):
    from lewin.jobs.report import write_report

    r = write_report(store, cfg, out)
    console.print(f"report: {r.path} ({len(r.sections)} sections, {len(r.charts)} charts, {r.bytes / 1e6:.1f} MB, "
                  f"{r.seconds:.1f}s)" + (f"; tables not there yet: {', '.join(r.missing_tables)}" if r.missing_tables else ""),
                  soft_wrap=True)
    for sid, err in sorted(r.errors.items()):
        err_console.print(f"[bold red]report section {sid} failed:[/] {err}", soft_wrap=True)
    return r


@app.command()
def report(
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Where to write the HTML file (default: <storage.root>/report.html; a path or URL)."),
) -> None:
    """One self-contained HTML report of the current tables: funnel, distributions, LLM stages, shards, quality signals."""
    cfg = _load()
    with _store(cfg, write=False) as store:
        r = _write_report(store, cfg, out)
    if r.errors:
        raise typer.Exit(code=1)


@patterns_app.command("run")
def patterns_run(
    retry_dead: bool = typer.Option(False, "--retry-dead", help="Give dead letters a fresh set of attempts."),
) -> None:
    """Run the second recipe end to end (resumable through llm_ledger): library, bundles, scenes,
    conversations, checklists and judges, role-play shards. On the starter library without a
    profile set, the 'demo' profile (few bundles, relaxed gates) for the tiny CPU model."""
    from lewin.jobs.patterns import PATTERN_STAGES, RoleplayEmitStage
    from lewin.udfs.patterns import PatternLibraryError, load_library

    cfg = _load()
    if cfg.patterns.library is None and "profile" not in cfg.patterns.model_fields_set:
        tree = cfg.model_dump(exclude_unset=True)
        tree["patterns"] = {**tree.get("patterns", {}), "profile": "demo"}
        cfg = LewinConfig.model_validate(tree)
        console.print(f"the starter pattern library with the 'demo' profile ({cfg.patterns.bundles} bundles, "
                      "relaxed gates); see the README")
    try:
        load_library(cfg.patterns.library)  # a bad library stops here, before any engine starts
    except PatternLibraryError as exc:
        err_console.print(f"[bold red]error:[/] patterns.library: {exc}", soft_wrap=True)
        raise typer.Exit(code=2) from None
    _require_llm_engines(cfg)
    inputs = [("patterns.literature_dir", cfg.patterns.literature_dir)] if cfg.patterns.literature_dir else []
    with _store(cfg, inputs=inputs) as store:
        for cls in PATTERN_STAGES:
            stage = cls() if cls is RoleplayEmitStage else cls(retry_dead)
            for f in stage.execute(store, cfg):
                console.print(f"[bold]{f.stage}[/]: {f.records_in} in, {f.kept} kept, {f.rejected} rejected"
                              + (f", {f.duplicates} duplicates" if f.duplicates else ""), soft_wrap=True)
        r = stage.result
        console.print(f"role-play shards: {r.samples} from {r.conversations} gold conversations -> {r.out_dir}",
                      soft_wrap=True)


def _print_status(store) -> None:
    from pyspark.sql import functions as F

    from lewin.schemas import tables as T

    if store.exists("runs"):
        runs = store.read("runs")
        latest = (
            runs.groupBy("stage", "source")
            .agg(
                F.sum("files").alias("files"), F.sum("records_in").alias("records_in"), F.sum("kept").alias("kept"),
                F.sum("duplicates").alias("duplicates"), F.sum("rejected").alias("rejected"),
                F.sum("quarantined").alias("quarantined"), F.count(F.lit(1)).alias("runs"),
            )
            .orderBy("stage", "source")
            .collect()
        )
        from lewin.jobs.registry import PIPELINES

        order = {s.name: i for i, s in enumerate(s for stages in PIPELINES.values() for s in stages)}
        latest = sorted(latest, key=lambda r: (order.get(r["stage"], len(order)), r["source"]))
        t = Table(title="funnel (all runs): in = kept + dup + rejected + quarantined")
        for c in ("stage", "source", "runs", "files", "in", "kept", "dup", "rejected", "quarantined"):
            t.add_column(c, justify="right" if c not in ("stage", "source") else "left")
        broken = []
        for r in latest:
            if r["records_in"] != r["kept"] + r["duplicates"] + r["rejected"] + r["quarantined"]:
                broken.append(f"{r['stage']}/{r['source']}")
            t.add_row(r["stage"], r["source"], str(r["runs"]), str(r["files"]), str(r["records_in"]), str(r["kept"]),
                      str(r["duplicates"]), str(r["rejected"]), str(r["quarantined"]))
        console.print(t)
        if broken:
            console.print(f"[bold red]funnel does NOT reconcile for: {', '.join(broken)}[/]")
        else:
            console.print("every funnel reconciles")
    if store.exists("llm_ledger"):
        rows = (store.read("llm_ledger").groupBy("artifact", "status")
                .agg(F.count(F.lit(1)).alias("n"), F.sum("tokens_in").alias("ti"), F.sum("tokens_out").alias("to"))
                .orderBy("artifact", "status").collect())
        if rows:
            t = Table(title="LLM ledger: progress and tokens")
            for c in ("artifact", "status", "prompts", "tokens in", "tokens out"):
                t.add_column(c, justify="right" if c not in ("artifact", "status") else "left")
            for r in rows:
                t.add_row(r["artifact"], r["status"], str(r["n"]), str(r["ti"] or 0), str(r["to"] or 0))
            console.print(t)
    if store.exists("rejected"):
        rows = store.read("rejected").groupBy("source", "stage", "rule").count().orderBy("source", F.desc("count")).collect()
        if rows:
            t = Table(title="rejected by rule")
            for c in ("source", "stage", "rule", "rows"):
                t.add_column(c)
            for r in rows:
                t.add_row(r["source"], r["stage"], r["rule"], str(r["count"]))
            console.print(t)
    if store.exists("quarantine"):
        rows = store.read("quarantine").groupBy("source", "reason").count().orderBy("source", F.desc("count")).collect()
        if rows:
            t = Table(title="quarantine by reason")
            for c in ("source", "reason", "rows"):
                t.add_column(c)
            for r in rows:
                t.add_row(r["source"], r["reason"], str(r["count"]))
            console.print(t)
    t = Table(title="tables")
    t.add_column("table")
    t.add_column("rows", justify="right")
    t.add_column("version", justify="right")
    names = list(T.BRONZE_TABLES) + list(T.SILVER_TABLES) + list(T.PII_TABLES) + ["llm_ledger", "label_models"] + [
        f"{kind}_{a}" for a in LLM_ARTIFACTS for kind in ("synth", "judged", "gold")] + ["synth_signals"] + list(T.OPS_TABLES) + [
        "patterns", "pattern_bundles", "pattern_scenes", "pattern_conversations", "pattern_checklists", "pattern_judged",
        "roleplay_samples"]
    for name in names:
        if store.exists(name):
            v = store.version(name)
            t.add_row(store.qualified_name(name), str(store.count(name)), "" if v is None else str(v))
    console.print(t)


@app.command()
def forget(
    user: list[str] = typer.Option([], "--user", "-u", help="SOURCE:ID of a user to erase, e.g. reddit:some_author (repeatable; case ignored)."),
    file: Optional[str] = typer.Option(None, "--file", help="A file with one SOURCE:ID per line (blank lines and # comments skipped)."),
    vacuum: bool = typer.Option(False, "--vacuum", help="Also remove older data files and Delta log history of the tables forget handles (no time travel to before the erasure)."),
) -> None:
    """Erase users from every table and file downstream of ingest; record them, hashed, so that ingest keeps them out."""
    from rich.markup import escape

    from lewin.jobs.forget import ErasureKeyMismatch, forget as forget_users, parse_user_ids, read_user_file

    cfg = _load()
    lines: list[str] = []
    option = "--user"
    try:  # each list checked on its own, so an error names its option and position (never the id)
        if user:
            parse_user_ids(user)
        if file:
            option = "--file"
            lines = read_user_file(file)
            parse_user_ids(lines)
    except (ValueError, OSError) as exc:
        err_console.print(f"[bold red]error:[/] {option}: {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(code=2) from None
    if not user and not file:
        err_console.print("[bold red]error:[/] give --user SOURCE:ID (repeatable) or --file F")
        raise typer.Exit(code=2)
    with _store(cfg) as store:
        try:
            r = forget_users(store, cfg, [*user, *lines], vacuum)
        except (ValueError, ErasureKeyMismatch) as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(code=2) from None
    # counts only: the ids are what is being erased
    deleted = ", ".join(f"{k}={v}" for k, v in sorted(r.deleted.items())) or "nothing"
    console.print(f"[bold]forget[/]: {r.requested} users asked for, {r.newly_erased} newly erased, "
                  f"{r.already_erased} erased before, {r.users_found} found in the tables; deleted rows: {deleted}; "
                  f"{r.dependent_samples} dependent samples, {r.mcq_options_replaced} MCQ options replaced, "
                  f"{r.mcq_items_dropped} questions dropped; shards {'rewritten' if r.shards_rewritten else 'unchanged'}"
                  + (f"; vacuumed {len(r.vacuumed)} tables" if vacuum else ""), soft_wrap=True)
    for table, why in sorted(r.not_vacuumed.items()):
        console.print(f"  not vacuumed: {table}: {why}", soft_wrap=True)


@app.command()
def status() -> None:
    """Funnel per stage and source, quarantine reasons, table row counts."""
    cfg = _load()
    with _store(cfg, write=False) as store:
        _print_status(store)


@app.command()
def audit(
    files: list[Path] = typer.Argument(None, help="With --score: two or more filled sheets."),
    score: bool = typer.Option(False, "--score", help="Score filled sheets instead of writing one."),
    n: int = typer.Option(120, "--n", min=1, help="Items to sample, stratified by source x artifact."),
    out: Path = typer.Option(Path("audit.csv"), "--out", help="The sheet to write."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
) -> None:
    """Human audit: write a stratified sample of gold rows with blank 1-5 columns per criterion,
    or (--score) the mean and Krippendorff's alpha of two or more filled copies."""
    from lewin.udfs import audit as audit_lib

    if score:
        try:
            res = audit_lib.score_sheets(files or [])
        except (ValueError, OSError) as exc:
            err_console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(code=2) from None
        t = Table(title=f"audit: {res.items} items, {res.raters} raters")
        t.add_column("criterion")
        t.add_column("mean (1-5)", justify="right")
        for c, v in res.mean_by_criterion.items():
            t.add_row(c, f"{v:.2f}")
        console.print(t)
        console.print(f"mean: {res.mean:.2f}" if res.mean is not None else "mean: none (no ratings)")
        console.print("krippendorff_alpha: " + (f"{res.alpha:.3f}" if res.alpha is not None else "undefined (no variation)"))
        return
    if files:
        err_console.print("[bold red]error:[/] sheet files are only read with --score")
        raise typer.Exit(code=2)
    from pyspark.sql import functions as F

    from lewin.schemas.llm import JUDGE_METRICS

    cfg = _load()
    with _store(cfg, write=False) as store:
        frames = [store.read(f"gold_{a}").select(F.lit(a).alias("artifact"), "source", "user_id", "record_id",
                                                  "ledger_key", "output")
                  for a in JUDGE_METRICS if store.exists(f"gold_{a}")]
        if not frames:
            err_console.print("[bold red]error:[/] no gold tables yet: run `lewin llm` first")
            raise typer.Exit(code=1)
        gold = frames[0]
        for f in frames[1:]:
            gold = gold.unionByName(f)
        rows = [r.asDict() for r in audit_lib.sample(gold, n, seed).collect()]
    written = audit_lib.write_sheet(rows, out)
    console.print(f"wrote {written} items to {out} (fill the 1-5 cells; '-' = not applicable)")


@app.command()
def sql(
    query: str = typer.Argument(..., help="One read-only query (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN); Lewin's "
                                "tables are addressable by name (e.g. FROM bronze_reddit)."),
    limit: int = typer.Option(50, "--limit", help="Rows to print (0 = all)."),
    fmt: str = typer.Option("table", "--format", help="table | json | csv"),
) -> None:
    """Run a read-only query over Lewin's tables (by name) and print the result. Writes, DDL,
    path-based tables (delta.`/x`, text.`/etc/passwd`) and file-reading functions are refused."""
    from rich.markup import escape

    from lewin.jobs.sql_guard import Refused, check_read_only

    cfg = _load()
    if fmt not in ("table", "json", "csv"):
        err_console.print("[bold red]error:[/] --format must be table, json or csv")
        raise typer.Exit(code=2)
    try:  # before the engine starts: a refused query never reaches it
        check_read_only(query, namespaces=(cfg.storage.database, cfg.storage.catalog))
    except Refused as exc:
        err_console.print(f"[bold red]refused:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(code=2) from None
    with _store(cfg, write=False) as store:
        try:
            df = store.spark.sql(query)
            rows = df.limit(limit).collect() if limit else df.collect()
        except Exception as exc:  # an analysis error is the user's input, not a crash
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            err_console.print(f"[bold red]SQL error:[/] {first}")
            raise typer.Exit(code=1) from None
        cols = df.columns
        if fmt == "json":
            for r in rows:
                sys.stdout.write(json.dumps(r.asDict(recursive=True), default=str) + "\n")
        elif fmt == "csv":
            import csv

            w = csv.writer(sys.stdout)
            w.writerow(cols)
            for r in rows:
                w.writerow(list(r))
        else:
            t = Table()
            for c in cols:
                t.add_column(c)
            for r in rows:
                t.add_row(*["" if v is None else str(v) for v in r])
            console.print(t)


@config_app.command("show")
def config_show() -> None:
    """Print the resolved configuration (defaults + file + --set overrides)."""
    # soft_wrap: a long value (a regex) must not be folded at the terminal width, or the YAML breaks
    console.print(dump_config(_load()), markup=False, highlight=False, soft_wrap=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
