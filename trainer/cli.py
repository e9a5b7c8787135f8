"""``lewin-train``: prepare-base, fit, merge, evaluate, all (fit -> merge -> evaluate base vs merged)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from lewin.trainer.config import TrainConfig, TrainConfigError, dump_train_config, load_train_config, world_size

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Lewin trainer: full fine-tuning on Lewin shards, weight merge, MCQ evaluation.")
console = Console()
err_console = Console(stderr=True)
log = logging.getLogger("lewin.trainer")


class _State:
    config_path: Optional[Path] = None
    overrides: list[str] = []


state = _State()


def _load() -> TrainConfig:
    try:
        return load_train_config(state.config_path, state.overrides)
    except TrainConfigError as exc:
        err_console.print(f"error: {exc}", markup=False)
        raise typer.Exit(code=2) from None


@app.callback()
def main_options(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML training config."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a key: --set learning_rate=1e-5 (repeatable)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    state.config_path = config
    state.overrides = list(set_)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=err_console, show_path=False)], force=True)


def _base_dir(cfg: TrainConfig) -> str:
    if cfg.gguf_file:
        err_console.print("error: the base model is a GGUF: run `lewin-train prepare-base` and set base_model to its output",
                          markup=False)
        raise typer.Exit(code=2)
    return cfg.base_model


def _prepare(cfg: TrainConfig, out: Path) -> Path:
    from lewin.trainer.models import bundled_gguf, prepare_base

    source, gguf = (cfg.base_model, cfg.gguf_file) if cfg.gguf_file else bundled_gguf()
    return prepare_base(source, gguf, out)


def _fit(cfg: TrainConfig) -> dict:
    """Train in this process, or relaunch `fit` on every GPU (torchrun) when started as one process on several."""
    import torch

    n_gpus = torch.cuda.device_count()
    if n_gpus > 1 and world_size() == 1:
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        resolved = Path(cfg.output_dir) / "train_config.yaml"
        resolved.write_text(dump_train_config(cfg), encoding="utf-8")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n_gpus),
               "-m", "lewin.trainer.cli", "--config", str(resolved), "fit"]
        log.info("launching on %d GPUs: %s", n_gpus, " ".join(cmd))
        subprocess.run(cmd, check=True)
        return json.loads((Path(cfg.output_dir) / "finetuned" / "train_metrics.json").read_text(encoding="utf-8"))
    from lewin.trainer.train import fit

    return fit(cfg)


def _print_fit(metrics: dict) -> None:
    console.print(f"fit: {metrics['steps']} steps, loss {metrics['first_loss']:.4f} -> {metrics['last_loss']:.4f}, "
                  f"deepspeed={'ZeRO-%s' % metrics['zero_stage'] if metrics['deepspeed'] else 'off'} "
                  f"({metrics['deepspeed_reason']}), samples {metrics['samples']}", markup=False)
    data = metrics.get("data") or {}
    if data.get("mix") or data.get("train_tasks", "all") != "all":
        console.print(f"data: tasks {data['train_tasks']}, shares {data.get('achieved_share')}", markup=False)


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def _print_report(report: dict) -> None:
    labels = list(report["models"])
    metrics = ["accuracy"] + (["option_likelihood"] if report.get("option_likelihood") else [])
    table = Table(title=f"MCQ accuracy: {report.get('protocol')} (letters shown; temperature {report['temperature']})"
                        + (", and option likelihood" if len(metrics) == 2 else ""))
    cols = ["benchmark", "n", "chance"]
    for m in metrics:
        cols += [f"{label} {'letter' if m == 'accuracy' else 'likelihood'}" for label in labels]
    cols += ["unparseable", "longest", "shortest"]
    for col in cols:
        table.add_column(col, justify="left" if col == "benchmark" else "right")

    def add(name: str, b: dict) -> None:
        row = [name, str(b["n"]), _fmt(b["chance"])]
        for m in metrics:
            row += [_fmt(b[m].get(label)) for label in labels]
        row += [" ".join(str(b["unparseable"][label]) for label in labels),
                _fmt(b["length_baseline"]["longest"]), _fmt(b["length_baseline"]["shortest"])]
        table.add_row(*row)

    for name, b in report["benchmarks"].items():
        add(name, b)
        for g, gb in (b.get("groups") or {}).items():
            add(f"  {g}", gb)
    console.print(table)


def _evaluate(cfg: TrainConfig, models: dict[str, str]) -> dict:
    """Evaluate, then write ``eval_report.json`` (with the paper's tables and, when this output
    folder holds a fit, what it trained on) and ``eval_tables.md``."""
    from lewin.trainer.mcq import evaluate_models, markdown_tables

    report = evaluate_models(models, cfg)
    fit_metrics = Path(cfg.output_dir) / "finetuned" / "train_metrics.json"
    if fit_metrics.is_file():
        report["training"] = json.loads(fit_metrics.read_text(encoding="utf-8")).get("data")
    out = Path(cfg.output_dir) / "eval_report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tables = markdown_tables(report["tables"])
    (out.parent / "eval_tables.md").write_text(tables, encoding="utf-8")
    _print_report(report)
    console.print(f"report: {out}; tables: {out.parent / 'eval_tables.md'}", markup=False)
    return report


@app.command("prepare-base")
def prepare_base_cmd(out: Optional[Path] = typer.Option(None, "--out", help="Default: <output_dir>/base.")) -> None:
    """Convert the GGUF base model (base_model + gguf_file; default: the bundled SmolLM2-135M) into an HF directory."""
    cfg = _load()
    path = _prepare(cfg, out or Path(cfg.output_dir) / "base")
    console.print(f"base model: {path}  (use --set base_model={path})", markup=False)


@app.command("fit")
def fit_cmd() -> None:
    """Full fine-tuning on <shards_dir>/train -> <output_dir>/finetuned (+ train_metrics.json)."""
    metrics = _fit(_load())
    if world_size() == 1 or int(os.environ.get("RANK", "0")) == 0:
        _print_fit(metrics)


@app.command("merge")
def merge_cmd(
    finetuned: Optional[Path] = typer.Option(None, "--finetuned", help="Default: <output_dir>/finetuned."),
    base: Optional[str] = typer.Option(None, "--base", help="Default: base_model."),
    out: Optional[Path] = typer.Option(None, "--out", help="Default: <output_dir>/merged."),
) -> None:
    """Weighted average (merge_weights) of the fine-tuned and base weights."""
    from lewin.trainer.merge import merge_models

    cfg = _load()
    paths = [str(finetuned or Path(cfg.output_dir) / "finetuned"), base or _base_dir(cfg)]
    path = merge_models(paths, cfg.merge_weights, out or Path(cfg.output_dir) / "merged")
    console.print(f"merged model: {path}", markup=False)


@app.command("evaluate")
def evaluate_cmd(
    model: list[str] = typer.Option([], "--model", help="label=path (repeatable). Default: base and <output_dir>/merged."),
) -> None:
    """MCQ accuracy of each model on the shards' MCQ sets, ToMBench and MotiveBench -> eval_report.json."""
    cfg = _load()
    if model:
        models = dict(m.split("=", 1) if "=" in m else (Path(m).name, m) for m in model)
    else:
        models = {"base": _base_dir(cfg), "merged": str(Path(cfg.output_dir) / "merged")}
    _evaluate(cfg, models)


@app.command("all")
def all_cmd() -> None:
    """prepare-base (if the base is a GGUF) -> fit -> merge -> evaluate base vs merged."""
    from lewin.trainer.merge import merge_models

    cfg = _load()
    if cfg.gguf_file:
        base = _prepare(cfg, Path(cfg.output_dir) / "base")
        cfg = cfg.model_copy(update={"base_model": str(base), "gguf_file": None})
    _print_fit(_fit(cfg))
    merged = merge_models([str(Path(cfg.output_dir) / "finetuned"), cfg.base_model], cfg.merge_weights,
                          Path(cfg.output_dir) / "merged")
    _evaluate(cfg, {"base": cfg.base_model, "merged": str(merged)})


def main() -> None:
    app()


if __name__ == "__main__":
    main()
