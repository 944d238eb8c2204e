"""Benchmark: ``prepare``, ``validate``, ``embed`` and ``evaluate`` (with and without re-ranking) at the published
benchmarks' full sizes, in their real on-disk layouts, on 2 cores.

Generated data (under ``--work``, a scratch folder, deleted unless ``--keep``): Sketchy-Extended in the
ZSE-SBIR ``zeroshot1`` layout (125 classes, 25 unseen; 75,481 sketch and 85,502 photo files: 12,500 originals
listed twice, as in the real lists) and QuickDraw-Extended in the ZSE-SBIR ``zeroshot`` layout (110 classes, 30
unseen; ~330k sketches / ~204k photos, test 92,291 × 54,151; class and file names with spaces). Every image is a
32 × 32 PNG sketch (random strokes) or JPEG photo (random boxes) that also spells its number in binary, so no two
files share bytes (except Sketchy's duplicated originals, as released) and the embeddings are distinct (identical
pixels would tie scores, which the metrics resolve far more slowly); at 32 px ``validate`` runs with
params.yaml's thresholds.

Each stage runs its pure function (``prepare_dataset``, ``validate_dataset``, ``embed_dataset``,
``evaluate_embeddings``) in a fresh process under a ``--cap-gb`` address-space limit (a guard for the shared
machine), measuring the call's wall time and the process's peak RSS (ru_maxrss; embed's DataLoader workers reported
apart). The embed encoder is cheap: ``baseline_random`` (ResNet-18, random weights) at 32 px. Re-ranking uses the
compact ZSE-SBIR of params.yaml (random heads) at 32 px on those embeddings, on a fraction of the queries against
the full gallery (its time extrapolated linearly); a last run re-ranks the full QuickDraw test split with the pair
scorer stood in (the top-k's own cosines), to show what evaluate holds. ``relation_all`` is off throughout; evaluate
otherwise runs params.yaml's ``evaluate`` (no cross galleries). A test fraction is the first share of each unseen
class's sketches and photos. Torch runs one intra-op thread: with two, on these 2 shared and niced cores, small
torch batches ran 5-10× slower and erratically (a descheduled thread stalls the other); parallelism comes from the
stages' own workers (DataLoader processes, hashing/decoding/metric threads). Train splits are generated in full.
Writes benchmarks/results/scale.{json,md} (``--quick``: 1/50 of every count, scale_quick.*). Timings are reported,
never asserted.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from sbir.io import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PARAMS = ROOT / "params.yaml"
SIDE = 32  # image files and both models, pixels
QUICKDRAW_TOTAL = (330_000, 204_000)  # sketches, photos: reference §1.1 ("~330k / ~204k", unverified)


@dataclass
class Layout:
    """A dataset's files (relative path, image number) and list lines, as the ZSE-SBIR release lays them out."""

    dataset: str
    root: Path
    split_dir: str
    seen: list[str]
    unseen: list[str]
    files: list[tuple[str, int]] = field(default_factory=list)
    lists: dict[str, list[str]] = field(default_factory=dict)

    def add(self, relative: str, name: str, stem: str | None, number: int | None = None) -> int:
        """A file (a fresh image, or a byte-identical copy of image ``number``) of class ``name``, listed in
        ``<stem>_train.txt`` or (unseen classes, labels of cname_cid_zero.txt) ``<stem>_zero.txt`` unless no stem."""
        number = len(self.files) if number is None else number
        self.files.append((relative, number))
        if stem:
            part, names = ("zero", self.unseen) if name in self.unseen else ("train", self.seen)
            self.lists.setdefault(f"{stem}_{part}.txt", []).append(f"{relative} {names.index(name)}")
        return number


def spread(total: int, parts: int, scale: float) -> list[int]:
    """``total × scale`` items over ``parts`` classes, as evenly as possible (at least one each)."""
    base, extra = divmod(round(total * scale), parts)
    return [max(1, base + (i < extra)) for i in range(parts)]


def sketchy_layout(root: Path, scale: float) -> Layout:
    """Sketchy-Extended, 25-class split (zeroshot1): 100 originals per class, each listed from 256x256/photo and
    from EXTEND_image_sketchy_ready; ``ext_N.jpg`` photos; 50 sketches per seen class on disk but in no list."""
    from sbir.datasets.benchmark_lists import shipped_class_list

    unseen = shipped_class_list("sketchy25_unseen.txt")
    seen = [f"seen_class_{i:03d}" for i in range(100)]  # the seen names are not shipped; any disjoint names do
    layout = Layout("sketchy25", root, "zeroshot1", seen, unseen)
    originals, held = max(1, round(100 * scale)), round(50 * scale)
    ext = {False: spread(48_401, 100, scale), True: spread(12_101, 25, scale)}
    sketches = {False: spread(60_252, 100, scale), True: spread(15_229, 25, scale)}
    photo_list, sketch_list, ext_number = "all_photo_filelist", "sketch_tx_000000000000_ready_filelist", 0
    for c, name in enumerate(seen + unseen):
        test, i = name in unseen, c % 100
        ids = [f"n{2_000_000 + c:08d}_{100 + p}" for p in range(originals)]
        for image_id in ids:
            number = layout.add(f"256x256/photo/tx_000000000000_ready/{name}/{image_id}.jpg", name, photo_list)
            layout.add(f"EXTEND_image_sketchy_ready/{name}/{image_id}.jpg", name, photo_list, number)
        for ext_number in range(ext_number + 1, ext_number + 1 + ext[test][i]):
            layout.add(f"EXTEND_image_sketchy_ready/{name}/ext_{ext_number}.jpg", name, photo_list)
        count = sketches[test][i]
        for j in range(count):
            layout.add(f"256x256/sketch/tx_000000000000_ready/{name}/{ids[j % originals]}-{j // originals + 1}.png",
                       name, sketch_list if test or j < count - held else None)
    return layout


def quickdraw_layout(root: Path, scale: float) -> Layout:
    """QuickDraw-Extended (zeroshot): 3,001 test sketches per unseen class (cake 5,262), 54,151 test photos."""
    from sbir.datasets.benchmark_lists import shipped_class_list

    unseen, seen = shipped_class_list("quickdraw30_unseen.txt"), shipped_class_list("quickdraw80_seen.txt")
    layout = Layout("quickdraw30", root, "zeroshot", seen, unseen)
    test_sketches = [max(1, round((5_262 if name == "cake" else 3_001) * scale)) for name in unseen]
    sketches = spread(QUICKDRAW_TOTAL[0] - 92_291, 80, scale) + test_sketches
    photos = spread(QUICKDRAW_TOTAL[1] - 54_151, 80, scale) + spread(54_151, 30, scale)
    for name, n_sketches, n_photos in zip(seen + unseen, sketches, photos):
        for _ in range(n_sketches):
            layout.add(f"sketches/{name}/{5_000_000 + len(layout.files)}.png", name, "sketch")
        for k in range(n_photos):
            layout.add(f"images/{name}/image {k:05d}.jpg", name, "all_photo")
    return layout


def image_bytes(number: int, png: bool) -> bytes:
    """A 32 × 32 image of three random strokes (PNG sketch) or boxes (JPEG photo) seeded by ``number``, whose
    row 31 spells ``number`` in binary: distinct bytes per number, and varied enough for distinct embeddings."""
    rng = random.Random(number)
    paper = 255 if png else tuple(rng.randrange(256) for _ in range(3))
    image = Image.new("L" if png else "RGB", (SIDE, SIDE), paper)
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        box = sorted(rng.sample(range(SIDE - 1), 2)), sorted(rng.sample(range(SIDE - 1), 2))
        if png:
            draw.line((box[0][0], box[1][0], box[0][1], box[1][1]), fill=0, width=2)
        else:
            draw.rectangle((box[0][0], box[1][0], box[0][1], box[1][1]), fill=tuple(rng.randrange(256)
                                                                                     for _ in range(3)))
    ink = 0 if png or sum(paper) > 384 else (255, 255, 255)  # full contrast: JPEG cannot smooth a bit away
    draw.point([(4 + bit, SIDE - 1) for bit in range(24) if number >> bit & 1], fill=ink)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG" if png else "JPEG", quality=90)
    return buffer.getvalue()


def _write_chunk(job: tuple[str, list[tuple[str, int]]]) -> int:
    root, files = job
    for relative, number in files:
        Path(root, relative).write_bytes(image_bytes(number, relative.endswith(".png")))
    return len(files)


def write_layout(layout: Layout, workers: int = 2) -> None:
    """Class and list files, folders, then the images on ``workers`` processes."""
    split_dir = layout.root / layout.split_dir
    split_dir.mkdir(parents=True, exist_ok=True)
    for file_name, names in (("cname_cid.txt", layout.seen), ("cname_cid_zero.txt", layout.unseen)):
        (split_dir / file_name).write_text("".join(f"{name} {i}\n" for i, name in enumerate(names)))
    for file_name, lines in layout.lists.items():
        (split_dir / file_name).write_text("\n".join(lines) + "\n")
    for folder in {str(Path(relative).parent) for relative, _ in layout.files}:
        (layout.root / folder).mkdir(parents=True, exist_ok=True)
    chunks = [(str(layout.root), layout.files[i:i + 4096]) for i in range(0, len(layout.files), 4096)]
    with Pool(workers) as pool:
        sum(pool.imap_unordered(_write_chunk, chunks))


def _folders(work: Path, dataset: str) -> dict[str, Path]:
    base = work / dataset
    return {name: base / name for name in ("raw", "prepared", "embeddings", "eval")}


def zse_model() -> Any:
    """The compact ZSE-SBIR of params.yaml at 32 px, random heads (costs do not depend on the weights)."""
    import torch
    from models.zse import ZSE, ZSEConfig
    from sbir.config import Params

    torch.manual_seed(0)
    method = ZSE(replace(Params.load(PARAMS).read(ZSEConfig, "zse.model"), image_size=SIDE))
    return method.export(method.build(100).eval())


def subsample(embeddings: Any, fraction: float, queries: float) -> Any:
    """The first ``fraction`` of each class's test rows (sketches: ``fraction × queries``)."""
    from sbir.embeddings import Embeddings

    if fraction == queries == 1:
        return embeddings  # as the stage reads them: no copy
    rows = embeddings.rows
    groups = rows.groupby(["split", "domain", "category"])
    share = np.where(rows["domain"] == "sketch", fraction * queries, fraction)
    keep = (groups.cumcount() < np.ceil(groups["row"].transform("size") * share)).to_numpy()
    return Embeddings(embeddings.vectors[keep], rows[keep].reset_index(drop=True), embeddings.meta)


def run_stage_call(stage: str, dirs: dict[str, Path], dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one stage's pure function; returns what it did (timed by the caller)."""
    from sbir.config import Params

    params = Params.load(PARAMS)
    if stage == "prepare":
        from stages.prepare import prepare_dataset

        frame = prepare_dataset(dataset, {"root": str(dirs["raw"]), "layout": "zse"}, dirs["prepared"], False).frame
        return {"rows": len(frame), "distinct_hashes": int(frame["content_hash"].nunique()),
                "counts": {f"{s}/{d}": int(n) for (s, d), n in frame.groupby(["split", "domain"]).size().items()}}
    if stage == "validate":
        from stages.validate import ValidateParams, validate_dataset

        report = validate_dataset(dirs["prepared"], params.read(ValidateParams, "validate"), progress=False)
        return {"rows": report["images"], "success": report["success"],
                "failed": [c["check"] for c in report["checks"] if not c["success"]]}
    from sbir.manifest import read_manifest

    manifest = read_manifest(dirs["prepared"])
    if stage == "embed":
        from models.embed import EmbedParams, embed_dataset
        from models.registry import create_model

        model = create_model("baseline_random", {"backbone": "timm:resnet18", "image_size": SIDE, "seed": 0},
                             "bench_scale", "baseline")
        done = embed_dataset(model, manifest, dirs["embeddings"], params.read(EmbedParams, "embed"), False)
        return {"rows": done["count"], "dim": model.embedding_dim}
    return run_evaluate(stage, dirs, manifest, params, args)


def run_evaluate(stage: str, dirs: dict[str, Path], manifest: Any, params: Any,
                 args: argparse.Namespace) -> dict[str, Any]:
    """``evaluate_embeddings`` on a subsample, its ``rerank`` timed; ``rerank_full``: the whole test split with the
    pair scorer stood in (the top-k's own cosines; the scorer's time is the fraction rows'), for the memory."""
    import stages.evaluate as evaluate
    from models.pair_ranking import RerankedScores, rerank
    from sbir.embeddings import read_embeddings
    from sbir.index import top_k

    embeddings = subsample(read_embeddings(dirs["embeddings"], manifest), args.fraction, args.queries)
    sketch_emb, sketches = embeddings.select(split="test_unseen", domain="sketch")
    photo_emb, photos = embeddings.select(split="test_unseen", domain="photo")
    out = {"rows": len(sketches), "queries": len(sketches), "gallery": len(photos),
           "dense_mb": len(sketches) * len(photos) * 4 / 2**20, "rerank_s": 0.0}
    model = zse_model() if args.rerank else None

    def stand_in(model: Any, manifest: Any, sketches: Any, photos: Any, sketch_emb: np.ndarray,
                 photo_emb: np.ndarray, k: int) -> RerankedScores:
        scores, top = top_k(sketch_emb, photo_emb, k)
        return RerankedScores(np.asarray(sketch_emb, np.float32), np.asarray(photo_emb, np.float32), top,
                              np.asarray(scores, np.float32)[:, ::-1].copy())  # the top-k, reversed

    scorer = stand_in if stage == "rerank_full" else rerank

    def timed(*call: Any) -> Any:
        started = time.perf_counter()
        scores = scorer(*call)
        out["rerank_s"] = time.perf_counter() - started if scorer is rerank else 0.0
        return scores

    evaluate.rerank = timed
    settings = replace(params.read(evaluate.EvaluateParams, "evaluate"), rerank_top_k=args.rerank,
                       relation_all=False, cross_galleries=[])
    document = evaluate.evaluate_embeddings(embeddings, manifest, settings, dirs["eval"] / stage, {}, model, None)
    out["map_all"] = document["zero_shot"].get("map_all/sklearn/query")
    return out


def child(args: argparse.Namespace) -> int:
    """One measurement in this process, under the address-space cap: prints a JSON line."""
    import torch

    torch.set_num_threads(1)  # 2 intra-op threads on 2 shared, niced cores: 5-10x slower and erratic (see docs)
    resource.setrlimit(resource.RLIMIT_AS, (int(args.cap_gb * 2**30),) * 2)
    dirs = _folders(args.work, args.dataset)
    started = time.perf_counter()
    out = run_stage_call(args.child, dirs, args.dataset, args)
    out["seconds"] = time.perf_counter() - started
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["children_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(out))
    return 0


def measure(args: argparse.Namespace, dataset: str, stage: str, fraction: float = 1.0, queries: float = 1.0,
            rerank: int = 0) -> dict[str, Any]:
    """Run one stage in a fresh process; its JSON line, or the error it died with."""
    command = [sys.executable, __file__, "--child", stage, "--dataset", dataset, "--work", str(args.work),
               "--fraction", str(fraction), "--queries", str(queries), "--rerank", str(rerank),
               "--cap-gb", str(args.cap_gb)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=args.work,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    run = {"stage": stage, "fraction": fraction, "query_fraction": queries, "rerank_top_k": rerank,
           "cap_gb": args.cap_gb, "error": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}",
           "seconds": float("nan")}
    if done.returncode == 0:
        run.update({"error": None, **json.loads(done.stdout.strip().splitlines()[-1])})
    run["process_s"] = time.perf_counter() - started
    print(json.dumps(run), flush=True)
    return run


#: (stage, test fraction, query fraction of it, rerank top-k) per measurement
_STAGES = [("prepare", 1.0, 1.0, 0), ("validate", 1.0, 1.0, 0), ("embed", 1.0, 1.0, 0)]
PLAN = {"sketchy25": _STAGES + [("evaluate", 1.0, 1.0, 0), ("evaluate", 1.0, 1 / 4, 20)],
        "quickdraw30": _STAGES + [("evaluate", 1 / 8, 1.0, 0), ("evaluate", 1 / 2, 1.0, 0), ("evaluate", 1.0, 1.0, 0),
                                  ("evaluate", 1.0, 1 / 32, 20), ("evaluate", 1.0, 1 / 16, 20),
                                  ("rerank_full", 1.0, 1.0, 20)]}


def run_dataset(args: argparse.Namespace, dataset: str, scale: float) -> dict[str, Any]:
    """Generate one dataset's layout, then every measurement of its plan."""
    dirs = _folders(args.work, dataset)
    build = sketchy_layout if dataset == "sketchy25" else quickdraw_layout
    started = time.perf_counter()
    layout = build(dirs["raw"], scale)
    write_layout(layout)
    generate = {"stage": "generate", "rows": len(layout.files), "seconds": time.perf_counter() - started,
                "distinct_images": len({n for _, n in layout.files}),
                "listed": {k: len(v) for k, v in layout.lists.items()}}
    print(json.dumps(generate), flush=True)
    runs = [generate] + [measure(args, dataset, *step) for step in PLAN[dataset]]
    return {"scale": scale, "classes": {"seen": len(layout.seen), "unseen": len(layout.unseen)}, "runs": runs}


NOTES = {"generate": "files written on 2 processes; {distinct_images:,} distinct images",
         "prepare": "{distinct_hashes:,} distinct content hashes",
         "embed": "main process; DataLoader workers peak {children_peak_rss_mb:.0f} MB"}


def describe(run: dict[str, Any], full_queries: int) -> str:
    """The notes column of one row."""
    if run.get("error"):
        return f"**failed**: {run['error']}"
    notes = [NOTES[run["stage"]].format(**run)] if run["stage"] in NOTES else []
    if run["stage"] == "validate":
        notes.append("all checks pass" if run["success"] else f"failed checks: {run['failed']}")
    if "queries" in run:
        notes.append(f"{run['queries']:,} × {run['gallery']:,}; dense q×g float32 {run['dense_mb']:,.0f} MB; "
                     f"peak/dense {run['peak_rss_mb'] / run['dense_mb']:.2f}")
    if run.get("rerank_s"):
        per_query = run["rerank_s"] / run["queries"]
        notes.append(f"rerank top-{run['rerank_top_k']} {run['rerank_s']:.0f} s = {per_query * 1e3:.1f} ms/query "
                     f"→ all {full_queries:,} queries ≈ {per_query * full_queries / 60:.0f} min (extrapolated)")
    return "; ".join(notes)


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Scale: the pipeline's stages at the published benchmarks' full sizes", "",
             f"Written by `python benchmarks/bench_scale.py{' --quick' if result['quick'] else ''}` "
             f"({result['machine']}; total {result['total_s'] / 60:.1f} min).", "", result["method"], "",
             "rows: manifest rows (prepare, validate), vectors (embed), queries (evaluate). Wall s: the stage call; "
             "peak RSS: the process's ru_maxrss (imports, torch and the model included).", ""]
    for dataset, data in result["datasets"].items():
        full_queries = max([r.get("queries", 0) for r in data["runs"] if r.get("query_fraction") == 1.0] or [0])
        lines += [f"## {dataset} (scale {data['scale']:g}; {data['classes']['seen']} seen / "
                  f"{data['classes']['unseen']} unseen classes)", "",
                  "| stage | test fraction | rows | wall s | items/s | peak RSS MB | notes |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for run in data["runs"]:
            label = ("evaluate + rerank, pair scorer stood in" if run["stage"] == "rerank_full" else run["stage"] + (
                f" + rerank, {run['query_fraction']:g} of the queries" if run.get("rerank_top_k") else ""))
            rate = "–" if run.get("error") else f"{run.get('rows', 0) / run['seconds']:,.0f}"
            peak = f"{run['peak_rss_mb']:.0f}" if "peak_rss_mb" in run else "–"
            lines.append(f"| {label} | {run.get('fraction', 1):g} | {run.get('rows', 0):,} | {run['seconds']:.1f} "
                         f"| {rate} | {peak} | {describe(run, full_queries)} |")
        lines.append("")
    return "\n".join(lines + result["findings"]) + "\n"


def findings(datasets: dict[str, Any]) -> list[str]:
    """What the runs show about growth with queries × gallery, derived from the measurements."""
    lines = ["## What grows with queries × gallery", ""]
    for dataset, data in datasets.items():
        plain = [r for r in data["runs"] if r["stage"] == "evaluate" and not r["rerank_top_k"] and "dense_mb" in r]
        reranked = [r for r in data["runs"] if r["stage"] == "evaluate" and r["rerank_top_k"] and "dense_mb" in r]
        lines += [f"- {dataset}, evaluate without re-ranking: " + ", ".join(
            f"{r['dense_mb']:,.0f} MB dense → {r['peak_rss_mb']:,.0f} MB peak" for r in plain) + "."] if plain else []
        if len(reranked) >= 2 and plain:
            a, b = reranked[0], reranked[-1]
            slope = (b["peak_rss_mb"] - a["peak_rss_mb"]) / (b["dense_mb"] - a["dense_mb"])
            full = b["peak_rss_mb"] + slope * (plain[-1]["dense_mb"] - b["dense_mb"])
            lines.append(f"- {dataset}, evaluate with re-ranking: peak RSS grows by {slope:.2f} MB per MB of the "
                         f"dense queries × gallery float32 matrix ({a['queries']:,} → {b['queries']:,} queries); "
                         f"at {plain[-1]['queries']:,} × {plain[-1]['gallery']:,} that projects to "
                         f"{full / 1024:,.1f} GB.")
        for run in data["runs"]:
            if run["stage"] == "rerank_full":
                what = run.get("error") or f"peak RSS {run.get('peak_rss_mb', 0):,.0f} MB"
                lines.append(f"- {dataset}, evaluate with re-ranking on the full test split, the pair scorer stood in "
                             f"(q×g float32 would be {run.get('dense_mb', 0):,.0f} MB; cap {run['cap_gb']:g} GB): "
                             f"{what}.")
    return lines + ["", WHERE, ""]


WHERE = ("Where (from the code): `models.pair_ranking.rerank` keeps each query's top-k gallery indices and pair "
         "scores (queries × k) and returns `RerankedScores`, which makes the re-ranked scores per chunk of query rows "
         "when `compute_retrieval` asks for them (`sbir.ranking.LazyScores`); the fine-grained pass over the paired "
         "photos takes a column subset of the same object. `score_every_pair` (relation_all, off here) is lazy the "
         "same way (`RelationScores`). So evaluate holds one chunk of 512 queries × gallery at a time, with or "
         "without re-ranking. Before this change `rerank` held `sketch_emb @ photo_emb.T` and a copy (two dense "
         "queries × gallery matrices: 18.6 GiB each at QuickDraw-30, a MemoryError under the cap).")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1/50 of the sizes: a smoke check")
    parser.add_argument("--datasets", nargs="+", default=list(PLAN), choices=list(PLAN))
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "scale_bench")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where scale.{json,md} go")
    parser.add_argument("--cap-gb", type=float, default=16.0, help="address-space limit of each measured process")
    for name, kind, default in (("--child", str, None), ("--dataset", str, None), ("--fraction", float, 1.0),
                                ("--queries", float, 1.0), ("--rerank", int, 0)):
        parser.add_argument(name, type=kind, default=default, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.work = args.work.resolve()
    if args.child:
        return child(args)
    if args.work.exists() and set(os.listdir(args.work)) - {"sketchy25", "quickdraw30"}:
        parser.error(f"{args.work} holds other files; give an empty or new --work folder")
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    started = time.perf_counter()
    try:
        datasets = {name: run_dataset(args, name, 1 / 50 if args.quick else 1.0) for name in args.datasets}
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    result = {"quick": args.quick, "machine": f"{os.cpu_count()} CPU cores, torch threads 1, cap {args.cap_gb} GB",
              "method": " ".join(__doc__.split("\n\n")[1:3]).replace("\n", " "), "datasets": datasets,
              "total_s": time.perf_counter() - started, "findings": findings(datasets)}
    name = "scale_quick" if args.quick else "scale"  # a smoke check never overwrites the committed results
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / f"{name}.json", result)
    atomic_write_text(args.out / f"{name}.md", markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
