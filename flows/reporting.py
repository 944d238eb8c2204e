"""What a flow run reports: Markdown for people, a table for machines; pure functions over the stage outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sbir import paths
from stages.report import summary_rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_(none)_"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(column, "")) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def metrics_table(repo: Path, dataset: str) -> list[dict[str, str]]:
    """Every evaluated model's headline numbers on ``dataset`` (the same rows as ``make run``'s summary)."""
    return summary_rows(dataset, repo)


def validation_failures(repo: Path, dataset: str) -> list[dict[str, Any]]:
    """Failed expectations of the last validation of ``dataset``, each with up to 10 offending files or values."""
    report_path = repo / paths.validation_report(dataset)
    if not report_path.is_file():
        return []
    report = json.loads(report_path.read_text())
    failed = [{"check": check["check"], "expectation": check["expectation"], "column": check.get("column") or "",
               "unexpected": check.get("unexpected_count", 0),
               "offending": ", ".join(map(str, check.get("offending", [])[:10]))}
              for check in report.get("checks", []) if not check.get("success", True)]
    failed += [{"check": "decode", "expectation": "image decodes", "column": "path", "unexpected": 1,
                "offending": str(error)} for error in report.get("decode_errors", [])[:10]]
    return failed


def validation_markdown(dataset: str, failures: list[dict[str, Any]], log_tail: str) -> str:
    return "\n\n".join([
        f"# Validation failed on `{dataset}`: training did not start",
        f"{len(failures)} failed expectation(s) (report: `{paths.validation_report(dataset)}`):",
        markdown_table(failures), "Stage log (last lines):", f"```\n{log_tail}\n```"])


def stage_failure_markdown(target: str, returncode: int, log_path: Path, log_tail: str) -> str:
    return (f"# Stage `{target}` failed (exit code {returncode})\n\nLog: `{log_path}`\n\n"
            f"```\n{log_tail}\n```\n")


def gate_markdown(decision_file: Path) -> str:
    if not decision_file.is_file():
        return "_No registration in this run._"
    document = json.loads(decision_file.read_text())
    decision = document["decision"]
    verdict = "**promoted to champion**" if decision["promoted"] else "**registered, not promoted**"
    scores = ", ".join(f"{name} {score:.4f}" for name, score in sorted(document["candidates"].items()))
    return (f"Candidates by `{decision['protocol']}`: {scores}.\n\n"
            f"Best: `{decision['method']}` (version `{decision['version']}`, {decision['score']:.4f}) — {verdict}: "
            f"{decision['reason']}.\n\nChampion now: `{document['champion']}` (store: `{document['store']}`).")


def run_markdown(dataset: str, repo: Path, stage_runs: list[dict[str, Any]], params_source: str,
                 params_changed: dict[str, Any], extra_sections: dict[str, str] | None = None) -> str:
    """The report of one flow run: evaluation table, gate decision, parameters, stage runs, where the plots are."""
    plots = [f"- `{model}`: `{paths.eval_dir(dataset, model)}/` (grid.png, pr.csv, pk.csv, per_category.csv)"
             for model in sorted(p.parent.name for p in (repo / paths.EVAL_ROOT / dataset).glob("*/metrics.json"))]
    changed = markdown_table([{"parameter": key, "old": value.get("old"), "new": value.get("new")}
                              for key, value in params_changed.items()])
    sections = [
        f"# Training run on `{dataset}`",
        "## Evaluation (unseen categories)", markdown_table(metrics_table(repo, dataset)),
        "## Registration gate", gate_markdown(repo / paths.register_report(dataset)),
        f"## Parameters\n\n{params_source}\n\nChanged against the last commit (`dvc params diff`):\n\n{changed}",
        "## Stages", markdown_table(stage_runs),
        "## Plots", "\n".join(plots) or "_(none)_",
    ]
    sections += [f"## {title}\n\n{body}" for title, body in (extra_sections or {}).items()]
    return "\n\n".join(sections) + "\n"
