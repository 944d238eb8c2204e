"""Benchmark: the BentoML service (serving.service) over HTTP against the bare model, and a bounded soak.

One run, one machine state: ``bentoml serve serving.service:SketchSearch`` (the project's BentoML store and serving
bundle, ``ZSSBIR_TORCH_THREADS=--threads``) in a subprocess; the load generator is this process (asyncio + aiohttp,
pre-built multipart bodies, closed-loop clients that wait ``--backoff-ms`` after a non-200).
1. bare model at batch 32, same torch threads: tensor forward (``encode_batch``), the baseline ``bundle.encode(PIL)``
   (preprocessing included, PNG decoding excluded), PNG decode + encode; interleaved call by call for
   ``--duration`` s, before and after the HTTP phases (the baseline is the mean of the two ``bundle.encode`` rates);
2. POST /encode_sketch, ``--clients`` clients x 1 then 8 images per request for ``--duration`` s: images/s (200s),
   ratio to the baseline, requests per batch the server formed (``bentoml_service_adaptive_batch_size`` in
   /metrics), CPU seconds of the server, the load generator and everything else on the machine;
3. POST /search: p50/p99 of ``--search-requests`` from 1 sequential client, then from 8 concurrent clients;
4. soak: ``--soak-seconds`` of 16 encode + 8 search clients, the server process tree's RSS sampled every second.
Timings are reported, never asserted. Writes benchmarks/results/serving_http.{json,md} (``--quick``: a few seconds
per phase, writes nothing unless ``--out`` is given); the server's log goes to the temp dir. Defaults: ~5 min.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import bentoml
import numpy as np
import psutil
import torch

from sbir.bundle_layout import read_meta
from sbir.io import atomic_write_json, atomic_write_text
from serving.bundle import SearchBundle
from serving.settings import API_THREADS
from serving.uploads import UploadLimits, decode_image
from stages.model_store import Registry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from serving_support import bentoml_server  # noqa: E402  (tests/: starts and stops ``bentoml serve``)
from sbir.paths import in_repository

RESULTS = ROOT / "benchmarks" / "results"
SKETCHES = ROOT / "data" / "prepared" / "openmoji_zs" / "images" / "sketch"


def shown(path: Path) -> str:
    """A path as the results record it: relative to the repository when inside it, else its name (results never
    hold a machine's absolute paths)."""
    path = path.resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name


GOAL_RATIO, GOAL_P99, GOAL_RSS, BATCH = 0.8, 2.0, 0.10, 32


def portable(value: object) -> object:
    """A path as the committed results may hold it: relative to the repository, or only its name when it lies
    outside (a machine's absolute paths never reach benchmarks/results/)."""
    if not isinstance(value, Path):
        return value
    return in_repository(value, ROOT) or f"<outside the repository>/{value.name}"


def bare_forward(bundle: SearchBundle, pngs: list[bytes], duration: float) -> dict[str, float]:
    """Images/s of each variant at batch ``BATCH``, interleaved so they see the same machine; and the CPU seconds
    that other processes used meanwhile."""
    model, limits = bundle.sketch_model, UploadLimits()
    pictures = [decode_image(data, limits) for data in pngs[:BATCH]]
    batch = torch.stack([model.preprocess("sketch").load(picture) for picture in pictures])
    steps = {"tensor_forward": lambda: model.encode_batch(batch, "sketch"),
             "encode_pil": lambda: bundle.encode(pictures, "sketch"),
             "decode_encode": lambda: bundle.encode([decode_image(d, limits) for d in pngs[:BATCH]], "sketch")}
    spent, calls = dict.fromkeys(steps, 0.0), dict.fromkeys(steps, 0)
    for step in steps.values():
        step()  # warm-up
    end, cpu = time.perf_counter() + duration, cpu_seconds()
    while time.perf_counter() < end:
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            spent[name] += time.perf_counter() - started
            calls[name] += 1
    cpu = cpu_seconds() - cpu
    return {**{name: calls[name] * BATCH / spent[name] for name in steps}, "others_cpu_s": float(cpu[2] - cpu[1])}


def search_profile(bundle: SearchBundle, pngs: list[bytes], requests: int = 200) -> dict[str, float]:
    """Median milliseconds of each step of one /search in-process (what the server does for one request, without
    HTTP): decode, blank check, preprocessing, forward of one sketch, ranking."""
    from sbir.ink import ink_fraction

    model, limits, spent = bundle.sketch_model, UploadLimits(), {}
    preprocess = model.preprocess("sketch")

    def timed(name: str, step):
        started = time.perf_counter()
        value = step()
        spent.setdefault(name, []).append((time.perf_counter() - started) * 1000)
        return value

    for data in (pngs * (1 + requests // len(pngs)))[:requests]:
        picture = timed("decode (Pillow)", lambda: decode_image(data, limits))
        timed("blank check (ink fraction)", lambda: ink_fraction(picture))
        tensor = timed("preprocessing (ink normalisation)", lambda: preprocess.load(picture)[None])
        query = timed("forward, one sketch", lambda: model.encode_batch(tensor, "sketch"))
        timed("ranking (index top-k + hits)", lambda: bundle.rank(query, 12))
    return {name: float(np.median(values)) for name, values in spent.items()}


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def cpu_seconds(server: int | None = None) -> np.ndarray:
    """CPU seconds so far: (server process tree, this process, whole machine busy)."""
    machine = psutil.cpu_times()
    return np.array([sum(sum(p.cpu_times()[:2]) for p in tree(server)) if server else 0.0,
                     sum(psutil.Process().cpu_times()[:2]),
                     sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)])


def batch_metric(url: str, metric: str = "bentoml_service_adaptive_batch_size", route: str = "encode_sketch") -> np.ndarray:
    """(sum, count) of a requests-per-batch histogram of the server: BentoML's of a batchable API (``route``), or
    the service's own of /search and /synthesize (``zssbir_sketch_batch_requests``, ``route=""``)."""
    values = {"sum": 0.0, "count": 0.0}
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            for key in values:
                if line.startswith((f"{metric}_{key}{{", f"{metric}_{key} ")) and route in line:
                    values[key] += float(line.rsplit(" ", 1)[1])
    return np.array([values["sum"], values["count"]])


def multipart(files: list[tuple[str, bytes]], fields: dict[str, str] | None = None) -> tuple[bytes, str, int]:
    """A multipart/form-data body built once: (body, content type, images in it)."""
    boundary, parts = "zssbirbench" + os.urandom(8).hex(), []
    for name, value in (fields or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for i, (name, data) in enumerate(files):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{i}.png"\r\n'
                     f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}", len(files)


def encode_bodies(pngs: list[bytes], per_request: int) -> list[tuple[bytes, str, int]]:
    return [multipart([("images", data) for data in pngs[i:i + per_request]])
            for i in range(0, len(pngs) - per_request + 1, per_request)]


class Tally:
    def __init__(self) -> None:
        self.items, self.latencies, self.errors = 0, [], {}

    def p(self, q: float) -> float | None:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else None


async def run_clients(specs: list[tuple[str, list, int]], backoff: float, duration: float | None = None,
                      per_client: int | None = None) -> dict[str, Tally]:
    """Closed-loop clients, all at once: ``specs`` = (url, bodies, clients); until ``duration`` s have passed or
    each client sent ``per_client`` requests. One tally per url (latencies of the 200s only)."""
    tallies = {url: Tally() for url, _, _ in specs}
    until = None if duration is None else time.monotonic() + duration

    async def client(session: aiohttp.ClientSession, url: str, bodies: list, offset: int) -> None:
        tally, sent = tallies[url], 0
        while (until is None or time.monotonic() < until) and (per_client is None or sent < per_client):
            body, content_type, items = bodies[(offset + sent) % len(bodies)]
            sent += 1
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers={"Content-Type": content_type}) as response:
                    await response.read()
                    status = str(response.status)
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                status = type(error).__name__
            if status == "200":
                tally.latencies.append(time.perf_counter() - started)
                tally.items += items
            else:
                tally.errors[status] = tally.errors.get(status, 0) + 1
                await asyncio.sleep(backoff)

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        await asyncio.gather(*(client(session, url, bodies, c * 97) for url, bodies, n in specs for c in range(n)))
    return tallies


def http_throughput(url: str, bodies: list, clients: int, duration: float, server: int, backoff: float) -> dict:
    spec = [(f"{url}/encode_sketch", bodies, clients)]
    asyncio.run(run_clients(spec, backoff, min(3.0, duration / 3)))  # warm-up (and BentoML's batch training)
    batches, cpu, started = batch_metric(url), cpu_seconds(server), time.perf_counter()
    tally = asyncio.run(run_clients(spec, backoff, duration))[spec[0][0]]
    elapsed = time.perf_counter() - started
    cpu, (summed, formed) = cpu_seconds(server) - cpu, batch_metric(url) - batches
    requests_per_batch = summed / formed if formed else None
    return {"clients": clients, "images_per_request": bodies[0][2], "seconds": round(elapsed, 2),
            "images": tally.items, "images_per_s": tally.items / elapsed, "ok_requests": len(tally.latencies),
            "errors": tally.errors, "p50_ms": tally.p(50), "p99_ms": tally.p(99), "server_batches": int(formed),
            "requests_per_batch": requests_per_batch, "images_per_batch": tally.items / formed if formed else None,
            "cpu_s": {"server": float(cpu[0]), "loadgen": float(cpu[1]), "others": float(cpu[2] - cpu[0] - cpu[1])}}


def search_latency(url: str, bodies: list, requests: int, backoff: float) -> dict:
    target, out = f"{url}/search", {}
    asyncio.run(run_clients([(target, bodies, 1)], backoff, per_client=20))  # warm-up
    for clients in (1, 8):
        started, batches = time.perf_counter(), batch_metric(url, "zssbir_sketch_batch_requests", "")
        tally = asyncio.run(run_clients([(target, bodies, clients)], backoff, per_client=requests // clients))[target]
        summed, formed = batch_metric(url, "zssbir_sketch_batch_requests", "") - batches
        out[f"clients_{clients}"] = {"ok_requests": len(tally.latencies), "errors": tally.errors,
                                     "p50_ms": tally.p(50), "p99_ms": tally.p(99),
                                     "requests_per_s": len(tally.latencies) / (time.perf_counter() - started),
                                     "requests_per_batch": summed / formed if formed else None}
    one, eight = out["clients_1"]["p99_ms"], out["clients_8"]["p99_ms"]
    out["p99_ratio_8_over_1"] = eight / one if one and eight else None
    return out


async def soak(url: str, encode: list, search: list, seconds: float, server: int, backoff: float) -> dict:
    samples: list[float] = []

    async def sample() -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            samples.append(sum(p.memory_info().rss for p in tree(server)) / 2**20)
            await asyncio.sleep(min(1.0, left))

    started, sampler = time.perf_counter(), asyncio.create_task(sample())
    tallies = await run_clients([(f"{url}/encode_sketch", encode, 16), (f"{url}/search", search, 8)], backoff,
                                seconds)
    await sampler
    elapsed, (enc, sea) = time.perf_counter() - started, tallies.values()
    errors = {k: enc.errors.get(k, 0) + sea.errors.get(k, 0) for k in {*enc.errors, *sea.errors}}
    tenth = max(1, len(samples) // 10)
    first, last = float(np.mean(samples[:tenth])), float(np.mean(samples[-tenth:]))
    ok = len(enc.latencies) + len(sea.latencies)
    return {"seconds": round(elapsed, 1), "clients": {"encode_sketch": 16, "search": 8}, "ok_requests": ok,
            "ok_per_s": ok / elapsed, "attempts_per_s": (ok + sum(errors.values())) / elapsed,
            "encode_ok": len(enc.latencies), "search_ok": len(sea.latencies), "search_p99_ms": sea.p(99),
            "errors": errors, "error_count": sum(errors.values()),
            "rss_mib": {"samples": len(samples), "first": samples[0], "peak": max(samples), "last": samples[-1],
                        "first_10pct_mean": first, "last_10pct_mean": last},
            "rss_growth": last / first - 1, "rss_curve_mib": [round(s, 1) for s in samples]}


def machine(args: argparse.Namespace) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "server_torch_threads": args.threads,
            "bare_torch_threads": torch.get_num_threads(), "encode_clients": args.clients,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "cpu_sharing": f"server (BentoML arbiter + 1 worker, API threads={API_THREADS}) and load generator (this process, one "
                           "asyncio thread) share all cores, unpinned, with whatever else runs on the machine",
            "python": platform.python_version(), "torch": torch.__version__, "bentoml": bentoml.__version__,
            "aiohttp": aiohttp.__version__}


def goals(r: dict) -> list[dict]:
    one, search, soak_ = r["http"]["single"], r["search"], r["soak"]
    ratio, p99 = one["ratio_to_baseline"], search["p99_ratio_8_over_1"]
    return [{"goal": f"HTTP images/s ({one['clients']} clients, 1 image/request) >= {GOAL_RATIO}x bare "
                     f"`bundle.encode` at batch {BATCH}", "met": ratio >= GOAL_RATIO,
             "values": f"{one['images_per_s']:.0f} vs {r['bare']['baseline_images_per_s']:.0f} img/s = {ratio:.2f}x"},
            {"goal": f"/search p99 at 8 clients <= {GOAL_P99}x p99 at 1 client",
             "met": p99 is not None and p99 <= GOAL_P99,
             "values": f"{search['clients_8']['p99_ms']:.1f} vs {search['clients_1']['p99_ms']:.1f} ms = {p99:.2f}x"},
            {"goal": "soak: no non-200 response", "met": soak_["error_count"] == 0,
             "values": f"{soak_['error_count']} non-200 vs {soak_['ok_requests']} ok {soak_['errors'] or ''}"},
            {"goal": f"soak: RSS growth, last 10 % vs first 10 % of samples, < {GOAL_RSS:.0%}",
             "met": soak_["rss_growth"] < GOAL_RSS,
             "values": f"{soak_['rss_mib']['first_10pct_mean']:.0f} -> {soak_['rss_mib']['last_10pct_mean']:.0f} "
                       f"MiB = {soak_['rss_growth']:+.1%}"}]


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown(r: dict) -> str:
    m, bare, search, s = r["machine"], r["bare"], r["search"], r["soak"]
    base, rss = bare["baseline_images_per_s"], s["rss_mib"]
    lines = ["# Serving over HTTP (BentoML adaptive batching) vs the bare model", "",
             f"`python benchmarks/bench_serving.py` ({r['config']['duration']} s per throughput phase, soak "
             f"{r['config']['soak_seconds']} s, backoff {r['config']['backoff_ms']} ms after a non-200); wall time "
             f"{r['wall_s']:.0f} s. Model {r['model']}.", "",
             f"Machine: {m['cpu']}, {m['cores']} cores; {m['cpu_sharing']}. Torch threads: server "
             f"{m['server_torch_threads']}, bare {m['bare_torch_threads']}; {m['encode_clients']} encode clients; "
             f"load average at start {m['load_average_at_start']}. Python {m['python']}, torch {m['torch']}, BentoML "
             f"{m['bentoml']}, aiohttp {m['aiohttp']}.", "", "## Goals", ""]
    lines += [f"- {g['goal']}: **{'met' if g['met'] else 'not met'}** ({g['values']})" for g in r["goals"]]
    lines += ["", f"## Sketch encoding (images/s; baseline = mean of the two `bundle.encode` rates, {base:.0f})", "",
              "| path | images/s | / baseline | requests (images) per batch | p50 / p99 ms | non-200 | CPU s server / "
              "loadgen / others |", "|---|---:|---:|---:|---:|---:|---:|"]
    for key, label in (("tensor_forward", "tensor forward"), ("encode_pil", "**`bundle.encode(PIL)`**"),
                       ("decode_encode", "PNG decode + `bundle.encode`")):
        b, a = bare["before"], bare["after"]
        lines.append(f"| bare, {label}, before / after HTTP | {b[key]:.0f} / {a[key]:.0f} | {b[key] / base:.2f} / "
                     f"{a[key] / base:.2f} | — ({BATCH}) | | | others {b['others_cpu_s']:.0f} / "
                     f"{a['others_cpu_s']:.0f} |")
    for h in r["http"].values():
        lines.append(f"| HTTP, {h['clients']} clients x {h['images_per_request']} image(s) | {h['images_per_s']:.0f} "
                     f"| {h['ratio_to_baseline']:.2f} | {fmt(h['requests_per_batch'])} ({fmt(h['images_per_batch'])}) "
                     f"| {fmt(h['p50_ms'])} / {fmt(h['p99_ms'])} | {sum(h['errors'].values())} {h['errors'] or ''} | "
                     + " / ".join(f"{v:.0f}" for v in h["cpu_s"].values()) + " |")
    lines += ["", "## /search latency (k=12)", "", "| clients | ok requests | p50 ms | p99 ms | requests/s | non-200 | "
              "requests per encoding batch |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for c in (1, 8):
        row = search[f"clients_{c}"]
        lines.append(f"| {c} | {row['ok_requests']} | {fmt(row['p50_ms'])} | {fmt(row['p99_ms'])} | "
                     f"{row['requests_per_s']:.1f} | {sum(row['errors'].values())} | {fmt(row.get('requests_per_batch'))} |")
    profile = r.get("search_profile_ms")
    if profile:
        inside, one = sum(profile.values()), search["clients_1"]["p50_ms"]
        lines += ["", "### Where one /search's milliseconds go", "",
                  "Medians of each step in-process (the server's work for one request, no HTTP), against the p50 of one "
                  "client over HTTP:", "", "| step | ms |", "|---|---:|"]
        lines += [f"| {name} | {ms:.2f} |" for name, ms in profile.items()]
        lines += [f"| **sum of the steps** | **{inside:.2f}** |", f"| one client over HTTP, p50 | {one:.2f} |",
                  f"| HTTP, BentoML and the client (the difference) | {one - inside:.2f} |"]
    if r.get("before"):
        before = r["before"]
        lines += ["", "## Before and after issue 21's serving changes", "",
                  f"Before: `serving_http.before.json`, {before.get('code', 'the earlier code')}, on "
                  f"{before['machine']['cpu']} ({before['machine']['cores']} cores).", "",
                  "| measure | before | now |", "|---|---:|---:|"]
        for label, (old, new) in comparison(r["before"], r).items():
            lines.append(f"| {label} | {old} | {new} |")
    lines += ["", f"p99 ratio 8 / 1 clients: {fmt(search['p99_ratio_8_over_1'], 2)}.", "", "## Soak", "",
              f"{s['seconds']} s, 16 encode clients (1 image) + 8 search clients: {s['ok_requests']} ok "
              f"({s['ok_per_s']:.1f}/s: {s['encode_ok']} encode, {s['search_ok']} search, search p99 "
              f"{fmt(s['search_p99_ms'])} ms); {s['error_count']} non-200 {s['errors'] or ''} "
              f"({s['attempts_per_s']:.1f} attempts/s).", "",
              f"Server process tree RSS ({rss['samples']} samples, 1 s apart): first {rss['first']:.0f} MiB, peak "
              f"{rss['peak']:.0f} MiB, last {rss['last']:.0f} MiB; mean of first / last 10 %: "
              f"{rss['first_10pct_mean']:.0f} / {rss['last_10pct_mean']:.0f} MiB ({s['rss_growth']:+.1%})."]
    return "\n".join(lines) + "\n"


def comparison(before: dict, now: dict) -> dict[str, tuple[str, str]]:
    """The numbers the issue named, from an earlier result document and this one."""
    def numbers(r: dict) -> dict[str, str]:
        one, eight, search = r["http"]["single"], r["http"]["eight"], r["search"]
        return {"bare `bundle.encode`, img/s": f"{r['bare']['baseline_images_per_s']:.0f}",
                "HTTP 32 clients x 1 image, img/s (ratio)": f"{one['images_per_s']:.0f} ({one['ratio_to_baseline']:.2f}x)",
                "HTTP 32 clients x 8 images, img/s (ratio)": f"{eight['images_per_s']:.0f} ({eight['ratio_to_baseline']:.2f}x)",
                "HTTP x8 non-200": f"{sum(eight['errors'].values())}",
                "/search p99 1 client, ms": f"{search['clients_1']['p99_ms']:.1f}",
                "/search p99 8 clients, ms": f"{search['clients_8']['p99_ms']:.1f}",
                "/search p99 ratio 8 / 1": f"{search['p99_ratio_8_over_1']:.2f}",
                "/search requests/s, 8 clients": f"{search['clients_8']['requests_per_s']:.0f}",
                "soak non-200": f"{r['soak']['error_count']}"}
    old, new = numbers(before), numbers(now)
    return {label: (old[label], new[label]) for label in new}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, help="seconds per throughput phase (default 20, quick 3)")
    parser.add_argument("--soak-seconds", type=float, help="default 180, quick 6")
    parser.add_argument("--search-requests", type=int, help="total per client count, 1 and 8 (default 400, quick 48)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent /encode_sketch clients")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads, server and bare")
    parser.add_argument("--backoff-ms", type=float, default=100.0, help="a client's pause after a non-200")
    parser.add_argument("--bundle", type=Path, default=Path(os.environ.get("ZSSBIR_BUNDLE",
                                                                           ROOT / "artifacts/serving/bundle")))
    parser.add_argument("--quick", action="store_true", help="a few seconds per phase; writes nothing unless --out")
    parser.add_argument("--out", type=Path, default=None, help=f"results folder (default {RESULTS})")
    args = parser.parse_args()
    for name, full, quick in (("duration", 20.0, 3.0), ("soak_seconds", 180.0, 6.0), ("search_requests", 400, 48)):
        setattr(args, name, getattr(args, name) or (quick if args.quick else full))
    out_dir, backoff, wall = args.out or (None if args.quick else RESULTS), args.backoff_ms / 1000, time.perf_counter()
    torch.set_num_threads(args.threads)
    pngs = [path.read_bytes() for path in sorted(SKETCHES.rglob("*.png"))[::4][:512]]
    version = read_meta(args.bundle)["champion"]["version"]
    registry = Registry(ROOT / ".bentoml")
    bundle = SearchBundle(args.bundle, registry.model_path("sketch", version), registry.model_path("photo", version))
    info = machine(args)
    print(f"{info['cpu']}: {info['cores']} cores, torch threads {args.threads}, {len(pngs)} sketches", flush=True)
    before = bare_forward(bundle, pngs, args.duration)
    print(f"bare: {before}", flush=True)
    profile = search_profile(bundle, pngs)
    print(f"one /search in-process, ms: {profile}", flush=True)
    log = Path(tempfile.gettempdir()) / "zssbir_bench_serving.log"
    print(f"server log: {log}", flush=True)
    with bentoml_server("serving.service:SketchSearch", ROOT / ".bentoml", log,
                        env={"ZSSBIR_TORCH_THREADS": str(args.threads)}) as (url, process):
        http = {}
        for name, per_request in (("single", 1), ("eight", 8)):
            h = http[name] = http_throughput(url, encode_bodies(pngs, per_request), args.clients, args.duration,
                                             process.pid, backoff)
            print(f"HTTP x{per_request}: {h['images_per_s']:.0f} img/s, non-200 {h['errors']}", flush=True)
        after = bare_forward(bundle, pngs, args.duration)
        print(f"bare again: {after}", flush=True)
        searches = [multipart([("sketch", data)], {"k": "12"}) for data in pngs]
        search = search_latency(url, searches, args.search_requests, backoff)
        soaked = asyncio.run(soak(url, encode_bodies(pngs, 1), searches, args.soak_seconds, process.pid, backoff))
    baseline = (before["encode_pil"] + after["encode_pil"]) / 2
    for h in http.values():
        h["ratio_to_baseline"] = h["images_per_s"] / baseline
    champion = bundle.meta["champion"]
    result = {"benchmark": "serving_http", "quick": args.quick,
              "config": {k: portable(v) for k, v in vars(args).items()}, "machine": info,
              "model": f"{champion['method']} {champion['version']}",
              "bare": {"batch": BATCH, "before": before, "after": after, "baseline_images_per_s": baseline,
                       "ratio_tensor_forward_to_baseline": (before["tensor_forward"] + after["tensor_forward"]) / 2
                       / baseline},
              "http": http, "search": search, "soak": soaked, "search_profile_ms": profile,
              "wall_s": time.perf_counter() - wall}
    result["goals"] = goals(result)
    earlier = RESULTS / "serving_http.before.json"  # the numbers before issue 21's changes, for comparison
    if earlier.is_file():
        result["before"] = json.loads(earlier.read_text())
    print(markdown(result))
    if out_dir is not None:
        atomic_write_json(out_dir / "serving_http.json", result)
        atomic_write_text(out_dir / "serving_http.md", markdown(result))
        print(f"wrote {out_dir / 'serving_http.json'} and {out_dir / 'serving_http.md'}")


if __name__ == "__main__":
    main()
