"""The summary table at the end of ``make run``: every evaluated model's headline numbers on one dataset.

Not a DVC stage (it writes nothing): it reads ``artifacts/eval/<dataset>/*/metrics.json`` and, where present,
``artifacts/train/<model>/summary.json`` (and ``artifacts/train/pretrain_clip/<dataset>/summary.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.table import Table

from sbir import paths
from sbir.config import Params
from sbir.io import atomic_write_text
from sbir.metrics import HEADLINE, PAPER_COLUMNS
from sbir.errors import DataError
from sbir.stage import run_stage, stage_parser

COLUMNS = HEADLINE
COLUMN_NAMES = {"map_all": "mAP@all", "map_200": "mAP@200", "p_100": "P@100", "p_200": "P@200"}
STYLE_KINDS = {"cross_gallery": "photo style", "style_shift": "sketch style"}


def summary_rows(dataset: str, root: Path = Path(".")) -> list[dict[str, str]]:
    """One row of headline numbers per evaluated model (``root``: the repository the paths are relative to)."""
    rows = []
    documents = _documents(dataset, root)
    for model, document in documents.items():
        zero_shot, general = document.get("zero_shot", {}), document.get("generalised", {})
        row = {"model": model}
        row.update({name: f"{zero_shot[key]:.3f}" if key in zero_shot else "–" for name, key in COLUMNS.items()})
        row["generalised mAP@all"] = f"{general['map_all/sklearn/query']:.3f}" if general else "–"
        shift = document.get("style_shift", {})
        if shift:
            style, worst = min(shift.items(), key=lambda item: item[1].get("map_all_ratio", 1.0))
            row["worst style (mAP ratio)"] = f"{worst['map_all_ratio']:.2f} {style}"
        else:
            row["worst style (mAP ratio)"] = "–"
        reranked = document.get("reranked", {})
        row["re-ranked mAP@all"] = (f"{reranked['map_all/sklearn/query']:.3f} (top {reranked['top_k']})"
                                    if "map_all/sklearn/query" in reranked else "–")
        every_pair = document.get("relation_all", {})  # ZSE-SBIR's RN mode: every pair by the relation network
        row["RN mAP@all / FG Acc@1"] = " / ".join(
            f"{value:.3f}" if isinstance(value, float) else "–"
            for value in (every_pair.get("map_all/sklearn/query"), every_pair.get("fg/acc@1/gallery")))
        row.update(paper_columns(dataset, model, document))
        trained = root / paths.train_log_dir(model) / "summary.json"
        seconds = json.loads(trained.read_text()).get("train_seconds") if trained.is_file() else None
        row["training"] = f"{seconds:.0f} s" if seconds is not None else "–"
        pretraining = pretraining_seconds(root, model)
        if seconds is not None and pretraining is not None:
            row["training"] = f"{seconds + pretraining:.0f} s ({pretraining:.0f} s pretraining)"
        rows.append(row)
    return rows


def _documents(dataset: str, root: Path) -> dict[str, dict]:
    return {file.parent.name: json.loads(file.read_text())
            for file in sorted((root / paths.EVAL_ROOT / dataset).glob("*/metrics.json"))}


def _pair(map_all: object, acc: object, ratio: object = None) -> str:
    text = " / ".join(f"{v:.3f}" if isinstance(v, float) else "–" for v in (map_all, acc))
    return text + (f" ({ratio:.2f}×)" if isinstance(ratio, float) else "")


def style_rows(dataset: str, root: Path = Path(".")) -> list[dict[str, str]]:
    """Across styles (``stages.cross_style``): one row per evaluation set — in-distribution, each photo style
    (cross-dataset gallery), the mixed gallery, each sketch style — and per model "mAP@all / FG Acc@1", with the
    mAP ratio to in-distribution (to the model's own sketches of the same items, for an artwork sketch set)."""
    documents = _documents(dataset, root)
    if not any("cross_gallery" in d or "style_shift" in d for d in documents.values()):
        return []
    rows = [{"set": "in-distribution", "kind": "own sketches and photos", **{
        model: _pair(d["zero_shot"].get("map_all/sklearn/query"), d["zero_shot"].get("fg/acc@1/gallery"))
        for model, d in documents.items()}}]
    for section, kind in STYLE_KINDS.items():
        names = sorted({name for d in documents.values() for name in d.get(section, {})})
        for name in names:
            row = {"set": name, "kind": kind}
            for model, document in documents.items():
                numbers = document.get(section, {}).get(name, {})
                row[model] = _pair(numbers.get("map_all/sklearn/query", numbers.get("map_all")),
                                   numbers.get("fg/acc@1/gallery", numbers.get("fg_acc@1")), numbers.get("map_all_ratio"))
            rows.append(row)
        if section == "cross_gallery" and any("mixed_gallery" in d for d in documents.values()):
            rows.append({"set": "mixed", "kind": "every photo style at once", **{
                model: _pair(d.get("mixed_gallery", {}).get("map_all/sklearn/query"),
                             d.get("mixed_gallery", {}).get("fg/acc@1/gallery")) for model, d in documents.items()}})
    return rows


def paper_columns(dataset: str, model: str, document: dict) -> dict[str, str]:
    """The columns the papers print for a published benchmark (``PAPER_COLUMNS``), with the preset that
    computes them for this model; Ret (the embeddings) and, where the model has it, RN (every pair)."""
    if dataset not in PAPER_COLUMNS:
        return {}
    columns, presets, default = PAPER_COLUMNS[dataset]
    preset = presets.get(model, default)
    label = "paper " + " / ".join(COLUMN_NAMES.get(c, c) for c in columns) + " [preset]"

    def numbers(section: dict) -> str:
        values = [section.get(f"preset/{preset}/{column}") for column in columns]
        return " / ".join(f"{v:.3f}" if isinstance(v, float) else "–" for v in values)

    text = numbers(document.get("zero_shot", {}))
    if "relation_all" in document:
        text = f"Ret {text}, RN {numbers(document['relation_all'])}"
    return {label: f"{text} [{preset}]"}


def pretraining_seconds(root: Path, model: str) -> float | None:
    """Wall time of the pretraining a model folder starts from (CLIP prompt learning: its ``clip`` folder, made by
    ``pretrain_clip``, whose run summary lies under ``paths.pretrain_log_dir`` of the folder's dataset), where
    there is one."""
    config_file = root / paths.checkpoint_dir(model) / "config.json"
    if not config_file.is_file():
        return None
    source = json.loads(config_file.read_text()).get("config", {}).get("clip")
    clip_config = root / str(source) / "config.json" if isinstance(source, str) else None
    if clip_config is None or not clip_config.is_file():
        return None
    dataset = json.loads(clip_config.read_text()).get("dataset")
    summary = root / paths.pretrain_log_dir(dataset) / "summary.json" if isinstance(dataset, str) else None
    return json.loads(summary.read_text()).get("train_seconds") if summary and summary.is_file() else None


def markdown_table(rows: list[dict[str, str]], dataset: str) -> str:
    """The summary as a Markdown document (the committed comparison table, ``make compare``)."""
    lines = [f"# Zero-shot retrieval on {dataset}: every model of the pipeline",
             "",
             "Written by `make compare` (`zssbir run --all --table ...`): `dvc repro` of every model in dvc.yaml, "
             "then `python -m stages.report`. Same harness (stages/evaluate.py), same seeds (params.yaml). "
             "mAP@all and P@100 over the unseen categories' sketches against their photos; FG Acc@K: the photo the "
             "sketch was drawn from; generalised: unseen sketches against unseen + seen-category test photos; "
             "re-ranked: the top-k re-scored by the model's pair scorer; training: wall time on this machine "
             "(pretraining included where there is one).",
             ""]
    return "\n".join(lines) + "\n" + markdown_rows(rows)


STYLES_NOTE = ("Per model: mAP@all / FG Acc@1 of the unseen categories' sketches, and the mAP ratio to "
               "in-distribution. Photo style: the same sketches against another artist's pictures of the same emoji; "
               "mixed: against every photo style at once (any rendering of the sketch's emoji is its hit); sketch "
               "style: sketches in another style against the dataset's own photos (an artwork set's ratio is to the "
               "model's own sketches of the same emoji). stages/cross_style.py defines each.")


def markdown_rows(rows: list[dict[str, str]]) -> str:
    """Rows of equal keys as a Markdown table (text columns left, numbers right)."""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if name in ("model", "set", "kind") else "---:" for name in header) + "|"]
    lines += ["| " + " | ".join(row[name] for name in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def summary_table(rows: list[dict[str, str]], dataset: str, title: str | None = None) -> Table:
    table = Table(title=title or f"Zero-shot retrieval on {dataset} (unseen categories)")
    for column in rows[0]:  # folded, never cut with "…"
        table.add_column(column, justify="left" if column in ("model", "set", "kind") else "right",
                         overflow="fold")
    for row in rows:
        table.add_row(*row.values())
    return table


def print_table(table: Table, file: TextIO | None = None) -> None:
    """On a terminal: at its width, cells folded where they must be; anywhere else (a file, a CI log): at the
    table's full width, every cell whole."""
    console = Console(file=file)
    if not console.is_terminal:
        console = Console(file=file, width=Console(width=100_000).measure(table).maximum)
    console.print(table)


def run_report(args: argparse.Namespace, params: Params) -> int:
    dataset = args.dataset or params.value("evaluate.dataset", str)
    rows = summary_rows(dataset)
    if not rows:
        raise DataError(f"no evaluation results under {paths.EVAL_ROOT / dataset}; run `make run` first")
    styles = style_rows(dataset)
    if args.markdown:
        atomic_write_text(args.markdown, markdown_table(rows, dataset) + (
            f"\n## Across styles\n\n{STYLES_NOTE}\n\n" + markdown_rows(styles) if styles else ""))
    print_table(summary_table(rows, dataset))
    if styles:
        print_table(summary_table(styles, dataset, f"Across styles on {dataset}: mAP@all / FG Acc@1 "
                                                   "(mAP ratio to in-distribution)"))
    print(f"Details: {paths.EVAL_ROOT / dataset}/<model>/ (metrics.json, pr.csv, grid.png); "
          "compare with `dvc metrics show` and `dvc plots show`.")
    print(serving_summary(dataset))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, progress=False)
    parser.add_argument("--dataset", default=None, help="default: evaluate.dataset")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table as Markdown here")
    return run_stage("report", parser, run_report, argv)


def serving_summary(dataset: str, root: Path = Path(".")) -> str:
    """The registration decision and the built Bento, with how to serve it."""
    lines = []
    decision_file = root / paths.register_report(dataset)
    if decision_file.is_file():
        decision = json.loads(decision_file.read_text())["decision"]
        verdict = "promoted to champion" if decision["promoted"] else "registered, not promoted"
        lines.append(f"Registry: {decision['method']} {decision['version']} {verdict} ({decision['reason']}); "
                     "`zssbir champion` shows the champion and its history.")
    bento_file = root / paths.bento_record()
    if bento_file.is_file():
        bento = json.loads(bento_file.read_text())
        lines.append(f"Bento: {bento['tag']} ({bento['method']}, {bento['gallery_size']} gallery photos, "
                     f"{bento['index']} index). Serve it: `make serve`, then open http://127.0.0.1:3000/ui/")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
