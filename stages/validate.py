"""Stage ``validate``: the data gate. A Great Expectations suite, built in code on an ephemeral context,
checks a prepared dataset's manifest and files; on failure it exits non-zero naming the failed checks and the
offending files, so ``dvc repro`` stops here.

Checks: schema and types; every file exists and decodes; image sizes and modes; minimum images per category
and domain; seen/unseen categories disjoint; no identical image (content hash) in train and a test split;
every sketch's instance link resolves to a photo. An artwork set (manifest metadata ``domains``: ``[photo]``, e.g.
``twemoji``, or ``[sketch]``, e.g. ``symbola``) must hold that domain only and needs no images of the other per
category; a sketch set's links resolve against the photos of the dataset it was drawn for (``gallery_for``). Params: ``validate``. Output:
``data/reports/validation/<dataset>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sbir import paths
from sbir.integrity import category_splits, file_facts, group_counts, relation_facts
from sbir.io import atomic_write_text
from sbir.manifest import COLUMNS, DOMAINS, SPLITS, read_manifest
from sbir.config import ConfigError, Count, Params, PositiveInt
from sbir.errors import DataError
from sbir.stage import run_stage, stage_parser
MAX_LISTED = 50  # offending rows listed per failed check


@dataclass
class ValidateParams:
    """Thresholds of the data gate (``params.yaml`` section ``validate``)."""

    # per split × category × domain that the split contains; test_seen is a small hold-out by design
    min_images_per_category: dict[str, Count]
    min_side: PositiveInt
    max_side: PositiveInt
    sketch_modes: list[str]  # Pillow modes
    photo_modes: list[str]
    workers: PositiveInt


def _suites(gx: Any, params: ValidateParams, domains: tuple[str, ...] = DOMAINS) -> dict[str, list[tuple[str, Any]]]:
    """(check name, expectation) pairs per table the suite runs on (``domains``: those the dataset declares)."""
    from great_expectations.expectations.row_conditions import Column

    E = gx.expectations
    decodes = Column("decodes") == True  # noqa: E712 - builds a GX condition, not a Python comparison
    extra_columns = ["file_exists", "decodes", "width", "height", "mode", "error", "hash_leak", "instance_resolves"]
    images = [
        ("schema: manifest columns", E.ExpectTableColumnsToMatchSet(column_set=[*COLUMNS, *extra_columns],
                                                                   exact_match=True)),
        *[(f"schema: {c} not null", E.ExpectColumnValuesToNotBeNull(column=c))
          for c in ("path", "domain", "category", "split", "content_hash")],
        ("schema: path unique", E.ExpectColumnValuesToBeUnique(column="path")),
        ("schema: domain values", E.ExpectColumnValuesToBeInSet(column="domain", value_set=list(domains))),
        ("schema: split values", E.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS))),
        ("schema: content_hash is sha256", E.ExpectColumnValuesToMatchRegex(column="content_hash",
                                                                           regex=r"^[0-9a-f]{64}$")),
        ("files: exist", E.ExpectColumnValuesToBeInSet(column="file_exists", value_set=[True])),
        ("files: decode", E.ExpectColumnValuesToBeInSet(column="decodes", value_set=[True])),
        *[(f"images: {side} within limits", E.ExpectColumnValuesToBeBetween(
            column=side, min_value=params.min_side, max_value=params.max_side,
            row_condition=decodes)) for side in ("width", "height")],
        ("images: sketch modes", E.ExpectColumnValuesToBeInSet(
            column="mode", value_set=params.sketch_modes, row_condition=(Column("domain") == "sketch") & decodes)),
        ("images: photo modes", E.ExpectColumnValuesToBeInSet(
            column="mode", value_set=params.photo_modes, row_condition=(Column("domain") == "photo") & decodes)),
        ("splits: no identical image in train and test", E.ExpectColumnValuesToBeInSet(column="hash_leak",
                                                                                      value_set=[False])),
        ("links: sketch instance resolves to a photo", E.ExpectColumnValuesToBeInSet(column="instance_resolves",
                                                                                     value_set=[True])),
    ]
    groups = [("counts: minimum images per category and domain", E.ExpectColumnPairValuesAToBeGreaterThanB(
        column_A="count", column_B="minimum", or_equal=True))]
    categories = [("splits: seen and unseen categories disjoint", E.ExpectColumnValuesToBeInSet(
        column="seen_unseen_overlap", value_set=[False]))]
    return {"images": images, "groups": groups, "categories": categories}


_ID_COLUMNS = {"images": "path", "groups": "group", "categories": "category"}


def validate_frames(tables: dict[str, pd.DataFrame], params: ValidateParams,
                    domains: tuple[str, ...] = DOMAINS) -> dict[str, Any]:
    """Run the suite on the fact tables; returns a JSON-ready report of every check."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX sets this module's logger to INFO on import: one line per run about a temporary docs folder it never uses
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("manifest")
    checks: list[dict[str, Any]] = []
    for table, expectations in _suites(gx, params, domains).items():
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"sbir_{table}"))
        for name, expectation in expectations:
            expectation.meta = {"check": name}
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=table, data=batch, suite=suite))
        result = definition.run(batch_parameters={"dataframe": tables[table]}, result_format={
            "result_format": "COMPLETE", "unexpected_index_column_names": [_ID_COLUMNS[table]]})
        for outcome in result.results:
            config = outcome.expectation_config
            name = (config.meta or {}).get("check", config.type)
            offending = [row.get(_ID_COLUMNS[table]) for row in outcome.result.get("unexpected_index_list") or []]
            error = outcome.exception_info.get("exception_message") if outcome.exception_info else None
            checks.append({"check": name, "table": table, "expectation": config.type,
                           "column": config.kwargs.get("column"), "success": bool(outcome.success),
                           "unexpected_count": int(outcome.result.get("unexpected_count") or 0),
                           "offending": [str(o) for o in offending[:MAX_LISTED]],
                           **({"error": error} if error and not outcome.success else {})})
    return {"success": all(c["success"] for c in checks), "checks": checks}


def validate_dataset(prepared_dir: Path, params: ValidateParams, progress: bool = True) -> dict[str, Any]:
    """Validate one prepared dataset: file facts, relations, then the GX suite."""
    manifest = read_manifest(prepared_dir)
    domains = tuple(manifest.extra.get("domains") or DOMAINS)  # an artwork set declares its one domain
    linked = None
    if "photo" not in domains and manifest.extra.get("gallery_for"):  # sketches of another dataset's photos
        linked = read_manifest(paths.prepared_dir(manifest.extra["gallery_for"])).select(domain="photo")
    images = relation_facts(file_facts(manifest, workers=params.workers, progress=progress), linked)
    groups = group_counts(images)
    groups = groups[groups["domain"].isin(domains)].reset_index(drop=True)
    groups["minimum"] = groups["split"].map(params.min_images_per_category).fillna(1).astype(int)
    tables = {"images": images, "groups": groups, "categories": category_splits(images)}
    report = validate_frames(tables, params, domains)
    errors = images.loc[images["error"] != "", ["path", "error"]].head(MAX_LISTED)
    root = manifest.image_root
    shown_root = root.relative_to(Path.cwd()) if root.is_relative_to(Path.cwd()) else root
    report.update(dataset=manifest.dataset, images=len(images), domains=list(domains), image_root=str(shown_root),
                  decode_errors=errors.to_dict(orient="records"))
    return report


def format_failures(report: dict[str, Any]) -> str:
    """Human-readable lines for every failed check and its offending files."""
    lines = [f"validation failed for dataset '{report.get('dataset')}':"]
    for check in report["checks"]:
        if not check["success"]:
            listed = ", ".join(check["offending"][:10]) or check.get("error", "")
            lines.append(f"  ✗ {check['check']} ({check['unexpected_count']} offending): {listed}")
    for row in report.get("decode_errors", [])[:10]:
        lines.append(f"    {row['path']}: {row['error']}")
    return "\n".join(lines)


def run_validate(args: argparse.Namespace, params: Params) -> int:
    if (args.report or args.prepared) and len(args.dataset) > 1:
        raise ConfigError("--report and --prepared name one dataset's files: give one --dataset with them")
    settings = params.read(ValidateParams, "validate")
    failed = 0
    for name in args.dataset:
        report_path = args.report or paths.validation_report(name)
        report = validate_dataset(args.prepared or paths.prepared_dir(name), settings, progress=not args.no_progress)
        atomic_write_text(report_path, json.dumps(report, indent=2))
        if not report["success"]:
            print(format_failures(report), file=sys.stderr)
            print(f"full report: {report_path}", file=sys.stderr)
            failed += 1
            continue
        print(f"validation passed: {len(report['checks'])} checks on {report['images']} images -> {report_path}")
    return DataError.exit_code if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, action="append", help="repeat to validate several datasets")
    parser.add_argument("--prepared", type=Path, default=None, help="default: data/prepared/<dataset>")
    parser.add_argument("--report", type=Path, default=None, help="default: data/reports/validation/<dataset>.json")
    return run_stage("validate", parser, run_validate, argv)


if __name__ == "__main__":
    sys.exit(main())
