"""Benchmark: one paper profile trained at its benchmark's full size, where a GPU is — images/s and peak memory.

One command on a GPU machine, from the repository root after ``make setup`` (nothing is downloaded):

    python benchmarks/bench_paper_profile.py --profile zse-sketchy25            # one epoch
    python benchmarks/bench_paper_profile.py --profile dsn-sketchy25 --steps 200

It generates the benchmark at its full size in the ZSE-SBIR layout (``bench_scale``'s generator: every file a
distinct 32-px image, so decoding is cheaper than the real 256-px files and the number is the model's, not the
disk's), prepares it with the prepare stage's function (outputs under the work folder, not the checkout), composes
the paper profile exactly as ``zssbir reproduce`` does (``flows.profiles``) with weights that need no download —
random weights in the architecture's own file format, loaded through the local-file path (so DSN's
knowledge-preservation teacher exists) — and trains with the train stage's function for one epoch or ``--steps``.
Written to ``benchmarks/results/paper_profile_<profile>.{json,md}``: steps, pairs and images per second (a pair is
one sketch and one photo), seconds per step, the data share of a step, peak GPU memory
(``torch.cuda.max_memory_allocated``) and peak RSS. On a CPU it runs too (``--steps 2`` as a smoke check), and says
so in the result. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import quickdraw_layout, sketchy_layout, write_layout  # noqa: E402

from flows import profiles  # noqa: E402
from sbir import paths  # noqa: E402
from sbir.io import atomic_write_json, atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LAYOUTS = {"sketchy25": sketchy_layout, "quickdraw30": quickdraw_layout}


def random_weights(spec: str, folder: Path) -> str | None:
    """A timm architecture's random weights (with its ImageNet classifier) as a local file; None for others."""
    if not spec.startswith("timm:"):
        return None
    import timm
    from safetensors.torch import save_file

    name = spec.split(":", 1)[1]
    path = folder / f"{name}_random.safetensors"
    save_file(timm.create_model(name, pretrained=False).state_dict(), str(path))
    return str(path)


def overlay_file(run: profiles.PaperRun, work: Path, raw: Path, workers: int) -> Path:
    """The profile's changes for this machine: the generated folder, local weights, one epoch's runtime."""
    model_section = profiles.composed(run).section(f"{run.model}.model")
    weights = random_weights(str(model_section.get("backbone", "")), work)
    changes: dict[str, Any] = {"prepare": {run.dataset: {"root": str(raw), "workers": workers}},
                               "train": {"runtime": {"workers": workers, "cache": "none"}},
                               run.model: {"train": {"epochs": 1}, "model": {"pretrained": weights}}}
    path = work / "machine.yaml"
    path.write_text(yaml.safe_dump(changes, sort_keys=False))
    return path


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from stages.prepare import prepare_dataset
    from stages.train import train_method

    benchmark = profiles.split_profile(args.profile)[1]
    if benchmark not in LAYOUTS:
        raise SystemExit(f"{benchmark}: no generator (choose a profile on {', '.join(LAYOUTS)})")
    work = Path(args.work or tempfile.mkdtemp(prefix="paper_profile_"))
    raw = work / benchmark
    started = time.perf_counter()
    layout = LAYOUTS[benchmark](raw, args.scale)
    write_layout(layout, workers=args.workers)
    generated = time.perf_counter() - started
    run = profiles.paper_run(args.profile)
    run = profiles.paper_run(args.profile, [overlay_file(run, work, raw, args.workers)])
    profiles.check(run)
    params = profiles.composed(run)
    os.chdir(work)  # the stages' outputs (prepared data, train state and logs) land there, not in the checkout
    started = time.perf_counter()
    manifest = prepare_dataset(benchmark, params.section(f"prepare.{benchmark}"), paths.prepared_dir(benchmark))
    prepared = time.perf_counter() - started
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    summary = train_method(run.model, params, progress=True, stop_after_steps=args.steps)
    train = params.section(f"{run.model}.train")
    pairs = summary["steps"] * int(train["batch_size"])
    return {"profile": args.profile, "model": run.model, "dataset": benchmark, "scale": args.scale,
            "files": len(layout.files), "manifest_rows": len(manifest.frame),
            "generate_seconds": round(generated, 1), "prepare_seconds": round(prepared, 1),
            "steps": summary["steps"], "epoch_completed": summary["completed"],
            "batch_pairs": int(train["batch_size"]), "train_seconds": summary["train_seconds"],
            "seconds_per_step": summary["seconds_per_step"], "data_share_of_step": summary["data_share_of_step"],
            "pairs_per_second": round(pairs / max(summary["train_seconds"], 1e-9), 2),
            "images_per_second": round(2 * pairs / max(summary["train_seconds"], 1e-9), 2),
            "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)
            if torch.cuda.is_available() else None,
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor()})",
            "weights": "random (local file in the architecture's format)", "torch": torch.__version__}


def markdown(result: dict[str, Any]) -> str:
    rows = "\n".join(f"| {key} | {value} |" for key, value in result.items())
    return (f"# Paper profile `{result['profile']}` at full size: one training run\n\n"
            "`python benchmarks/bench_paper_profile.py` (docstring: what is generated and measured). Images per "
            "second count a sketch and a photo per pair; the paper's weights replaced by random ones.\n\n"
            f"| | |\n|---|---|\n{rows}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="zse-sketchy25", help="<setup>-<benchmark> (sketchy25, quickdraw30)")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps (default: one epoch)")
    parser.add_argument("--scale", type=float, default=1.0, help="share of the benchmark's size to generate")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--work", default=None, help="where the data is generated (default: a temporary folder)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    from sbir.env import apply_offline_defaults
    from sbir.logs import setup_logging

    apply_offline_defaults()
    setup_logging()
    result = measure(args)
    print(json.dumps(result))
    stem = f"paper_profile_{args.profile}"
    atomic_write_json(args.results / f"{stem}.json", result)
    atomic_write_text(args.results / f"{stem}.md", markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
