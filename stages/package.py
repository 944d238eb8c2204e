"""Stage ``package``: build the Bento — the champion's encoders, the serving bundle and the sketch pad — offline.

Reads ``bentofile.yaml`` (what goes in; pinned requirements, no locking) and the serving bundle of the ``index``
stage (which names the champion's model tags); the Bento lands in the BentoML store (``BENTOML_HOME``). Output:
``artifacts/serving/bento.json`` (its tag and what it serves). Serve it with ``make serve`` / ``zssbir serve``;
``bentoml containerize <tag>`` makes an image where a Docker engine exists.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import UTC, datetime

from sbir import paths
from sbir.bundle_layout import meta_path, read_meta
from sbir.config import Params
from sbir.io import atomic_write_json
from sbir.stage import run_stage, stage_parser

log = logging.getLogger("stages.package")


def build_bento(bentofile: str = "bentofile.yaml") -> dict[str, object]:
    """``bentoml build`` of the serving bundle in place; returns what ``bento.json`` records."""
    import bentoml

    meta_file = meta_path(paths.serving_bundle())
    if not meta_file.is_file():
        raise FileNotFoundError(f"{meta_file} is missing: run the index stage first (`dvc repro index`)")
    meta = read_meta(paths.serving_bundle())
    started = time.perf_counter()
    bento = bentoml.bentos.build_bentofile(bentofile, build_ctx=".")
    return {"tag": str(bento.tag), "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - started, 1), "models": meta["champion"]["models"],
            "method": meta["champion"]["method"], "gallery": meta["gallery"]["source"],
            "gallery_size": meta["gallery"]["size"], "index": meta["index"]["kind"]}


def run_package(args: argparse.Namespace, params: Params) -> int:
    record = build_bento(args.bentofile)
    atomic_write_json(paths.bento_record(), record)
    log.info("built Bento %s (%s, %d photos) in %.1f s; serve it with `make serve` (or `bentoml serve %s`)",
             record["tag"], record["method"], record["gallery_size"], record["seconds"], record["tag"])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, progress=False)
    parser.add_argument("--bentofile", default="bentofile.yaml")
    return run_stage("package", parser, run_package, argv, project_homes=True)


if __name__ == "__main__":
    sys.exit(main())
