"""``zssbir``: one command line for the product; every command calls the same code as the stages and flows.

Run from the repository root (where ``dvc.yaml`` is). Offline and no-telemetry settings, and the project-local
BentoML store and Prefect home, are applied before anything is imported (``sbir.env``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbir.env import allow_hub_downloads, apply_offline_defaults, apply_project_defaults
from sbir.processes import replace_with, run_child


@dataclass
class RunParams:
    """``params.yaml`` ``run``: what ``make run`` trains (the quick path)."""

    models: list[str]  # models of dvc.yaml's list


def _dvc(*args: str) -> int:
    """``dvc <args>`` to its end, its output without DVC's hints (``QuietOutput``); SIGTERM/SIGINT/SIGHUP sent to
    ``zssbir`` reach it (``run_child``)."""
    from flows.dvc import QuietOutput

    return run_child([str(Path(sys.executable).with_name("dvc")), *args], keep_line=QuietOutput())


def _registry():
    from stages.model_store import Registry

    return Registry(os.environ["BENTOML_HOME"])


def _protocol_and_dataset(args: argparse.Namespace) -> tuple[str, str]:
    from sbir.config import Params

    params = Params.load()
    return (args.dataset or params.value("evaluate.dataset", str)), (args.metric or params.value("register.metric", str))


def quick_targets(repo: Path = Path(".")) -> list[list[str]]:
    """``make run``'s ``dvc repro`` calls: params.yaml ``run.models`` evaluated (DVC runs what they need first),
    then register, index and package on their own (``--single-item``: they must not pull in the other models)."""
    from flows.dvc import pipeline_models
    from sbir.config import Params

    known = pipeline_models(repo)
    chosen = Params.load(repo / "params.yaml").read(RunParams, "run").models or known
    unknown = [model for model in chosen if model not in known]
    if unknown:
        raise ValueError(f"params.yaml run.models: unknown model(s) {unknown}; dvc.yaml's models are {known}")
    return [["repro", *[f"evaluate@{model}" for model in chosen]],
            *[["repro", "--single-item", stage] for stage in ("register", "index", "package")]]


def cmd_run(args: argparse.Namespace) -> int:
    """The quick path (``make run``): the models of params.yaml ``run.models`` through the pipeline, then the
    summary table; ``--all``: every model of dvc.yaml (``dvc repro``, ``make compare``); ``--flow``: the flow."""
    if args.flow:
        return cmd_flow(args)
    try:
        calls = [["repro"]] if args.all else quick_targets()
    except ValueError as error:
        print(f"run failed: {error}", file=sys.stderr)
        return 2
    for call in calls:
        code = _dvc(*call)
        if code:
            return code
    from stages.report import main as report

    return report(["--markdown", str(args.table)] if args.table else [])


def cmd_reproduce(args: argparse.Namespace) -> int:
    """A paper profile through the pipeline: one ``dvc exp run`` of ``evaluate@<model>`` (DVC runs prepare,
    validate, train and embed first) with the profile's params, then the summary table of its benchmark.
    params.yaml is restored afterwards unless ``--keep-params``: the experiment keeps them (``dvc exp show``)."""
    from flows import profiles
    from sbir.io import atomic_write_bytes

    if args.list or not args.profile:
        print(profiles.describe())
        return 0 if args.list else 2
    run = profiles.paper_run(args.profile, args.profile_file)
    profiles.check(run)
    name = f"{run.profile}-{time.strftime('%Y%m%d-%H%M%S')}"
    call = ["exp", "run", "--name", name, *[arg for change in run.overrides for arg in ("-S", change)], run.target]
    if args.dry_run:
        print(shlex.join(["dvc", *call]))
        return 0
    params_file = Path("params.yaml")
    before = params_file.read_bytes()
    try:
        code = _dvc(*call)
    finally:
        if not args.keep_params:
            atomic_write_bytes(params_file, before)
    if code:
        return code
    from stages.report import main as report

    print(f"experiment {name}: `dvc exp show` compares it; `dvc exp apply {name}` brings its params back")
    return report(["--dataset", run.dataset])


def cmd_flow(args: argparse.Namespace) -> int:
    from flows.training import training_flow

    result = training_flow(dataset=getattr(args, "dataset", None), models=getattr(args, "models", None),
                           set_params=getattr(args, "set", None))
    print(result["report"])
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    """``dvc repro <stage>@<model>`` for train / evaluate: DVC decides what is up to date."""
    return _dvc("repro", *(["--force"] if args.force else []), f"{args.command}@{args.model}")


def cmd_register(args: argparse.Namespace) -> int:
    if args.dataset and not args.force:
        raise ValueError("--dataset needs --force (dvc repro register judges params evaluate.dataset)")
    if args.force:
        from stages.register import main as register

        return register(["--dataset", args.dataset] if args.dataset else [])
    return _dvc("repro", "register")


def cmd_champion(args: argparse.Namespace) -> int:
    dataset, protocol = _protocol_and_dataset(args)
    registry = _registry()
    champion = registry.champion(dataset, protocol)
    history = [event for event in registry.ledger()["history"] if event["key"] == f"{dataset}|{protocol}"]
    if args.json:
        print(json.dumps({"champion": champion, "history": history}, indent=2))
        return 0
    if champion is None:
        print(f"no champion for {dataset} / {protocol} in {registry.home}; run `zssbir run` or `zssbir register`")
        return 1
    print(f"champion of {dataset} / {protocol}: {champion['method']} {champion['version']} "
          f"(score {champion['score']:.4f}, registered {champion['registered_at']}, git {champion['git_revision']})")
    print(f"models: {champion['models']['sketch']}, {champion['models']['photo']}  (store: {registry.home})")
    for event in history[-args.history:]:
        previous = f" (previous {event['previous']})" if event.get("previous") else ""
        print(f"  {event['at']}  {event['event']:<13} {event['version']}{previous}: {event['reason']}")
    return 0


def _serve_champion(args: argparse.Namespace) -> int:
    """Rebuild the serving bundle and the Bento for the new champion (the ledger is outside DVC's view)."""
    if args.no_rebuild:
        print("serving bundle and Bento left as they are (--no-rebuild): `dvc repro --force index package` later")
        return 0
    return _dvc("repro", "--force", "--single-item", "index") or _dvc("repro", "--force", "--single-item", "package")


def cmd_promote(args: argparse.Namespace) -> int:
    record = _registry().promote(args.version, reason=args.reason)
    print(f"champion of {record['dataset']} / {record['protocol']} is now {record['method']} {record['version']}")
    return _serve_champion(args)


def cmd_rollback(args: argparse.Namespace) -> int:
    dataset, protocol = _protocol_and_dataset(args)
    record = _registry().rollback(dataset, protocol, to=args.to)
    print(f"rolled back: champion of {dataset} / {protocol} is now {record['method']} {record['version']} "
          "(the gate will not promote the rolled-back model again; `zssbir promote` can)")
    return _serve_champion(args)


def _shared_store(args: argparse.Namespace):
    from sbir.config import Params
    from stages.shared_store import SharedStore, store_url

    url = args.store or store_url(Params.load().value("register.store", str))
    if not url:
        raise ValueError("no shared model store: pass --store URL, set params.yaml register.store or "
                         "ZSSBIR_MODEL_STORE (a folder, s3://bucket/prefix or dvc://<remote>)")
    return SharedStore(url)


def cmd_push_champion(args: argparse.Namespace) -> int:
    """This checkout's champion (encoders, registration, serving bundle when built for it) to the shared store."""
    from sbir import paths
    from sbir.bundle_layout import meta_path, read_meta
    from sbir.config import Params
    from stages.shared_store import publish, publish_bundle

    dataset, protocol = _protocol_and_dataset(args)
    registry, store = _registry(), _shared_store(args)
    champion = registry.champion(dataset, protocol)
    if champion is None:
        raise ValueError(f"no champion of {dataset} / {protocol} in {registry.home} to push; run `zssbir run`")
    decision = publish(registry, store, champion["version"], protocol, Params.load().value("register.margin", float))
    print(f"pushed {champion['method']} {champion['version']} to {store.url}: "
          f"{'the team champion' if decision.promoted or decision.previous == decision.version else 'not promoted'}"
          f" ({decision.reason})")
    bundle = paths.serving_bundle()
    if meta_path(bundle).is_file() and read_meta(bundle)["champion"]["version"] == champion["version"]:
        entry = publish_bundle(store, bundle, champion["version"])
        print(f"serving bundle pushed ({entry['bytes']} bytes, sha256 {entry['sha256'][:12]}…)")
    else:
        print(f"no serving bundle of {champion['version']} at {bundle} (`dvc repro index`); pushed without one")
    return 0


def cmd_pull_champion(args: argparse.Namespace) -> int:
    """The team's champion from the shared store into this BentoML home, its bundle to --bundle; --build: its
    Bento; --serve: serve it."""
    from sbir import paths
    from stages.shared_store import pull_champion

    dataset, protocol = _protocol_and_dataset(args)
    bundle = args.bundle or paths.serving_bundle()
    if args.build and bundle.resolve() != paths.serving_bundle().resolve():
        raise ValueError(f"--build packs the project's bundle ({paths.serving_bundle()}): leave --bundle out")
    record = pull_champion(_shared_store(args), _registry(), dataset, protocol, bundle)
    print(f"champion of {dataset} / {protocol}: {record['method']} {record['version']} (score {record['score']:.4f},"
          f" ledger generation {record['generation']}) imported into {os.environ['BENTOML_HOME']}; bundle at {bundle}")
    if record["current_champion"] != record["version"]:
        print(f"note: the current champion, {record['current_champion']}, has no serving bundle yet; this is the "
              "newest champion that has one")
    if args.build:  # the Bento of exactly this champion and bundle, as the package stage builds it
        from stages.package import main as package

        if code := package([]):
            return code
        return cmd_serve(args) if args.serve else 0
    if not args.serve:
        print(f"serve it: `zssbir pull-champion --build --serve`, or ZSSBIR_BUNDLE={bundle} bentoml serve "
              "serving.service:SketchSearch")
        return 0
    sys.stdout.flush()
    os.environ["ZSSBIR_BUNDLE"] = str(bundle.resolve())
    replace_with([str(Path(sys.executable).with_name("bentoml")), "serve", "serving.service:SketchSearch",
                  "--host", args.host, "--port", str(args.port)])
    return 0  # not reached


def cmd_scheduler(args: argparse.Namespace) -> int:
    from flows import schedule

    home = Path(os.environ["PREFECT_HOME"])
    if args.action == "start":
        parameters: dict[str, Any] = json.loads(args.parameters)
        state = schedule.start(home, Path.cwd(), args.port, args.cron, args.interval, parameters)
        print(f"Prefect server: {state['api_url'].removesuffix('/api')} (UI and API); training flow served on "
              f"{state['schedule']}; logs: {state['logs']}. Stop with `zssbir scheduler stop`.")
    elif args.action == "stop":
        stopped = schedule.stop(home)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    elif args.action == "status":
        print(json.dumps(schedule.status(home), indent=2))
    else:
        schedule.serve(args.port, args.cron, args.interval, {"repo": str(Path.cwd()), **json.loads(args.parameters)})
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the built Bento (``make run`` builds it) on 127.0.0.1."""
    from sbir import paths

    bento_file = paths.bento_record()
    if not bento_file.is_file():
        print(f"no built Bento ({bento_file} is missing): run `make run` first", file=sys.stderr)
        return 1
    tag = json.loads(bento_file.read_text())["tag"]
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    sys.stdout.flush()
    sys.stderr.flush()
    # zssbir becomes the server: a supervisor's SIGTERM stops it, and no orphan keeps the port
    replace_with([bentoml, "serve", tag, "--host", args.host, "--port", str(args.port)])
    return 0  # not reached


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zssbir", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    run = commands.add_parser("run", help="the whole pipeline (dvc repro + summary), or --flow: through Prefect")
    run.add_argument("--flow", action="store_true", help="run the training flow once instead of dvc repro")
    run.add_argument("--all", action="store_true", help="every model of dvc.yaml (dvc repro), not only run.models")
    run.add_argument("--table", type=Path, default=None, help="also write the summary table as Markdown here")
    run.set_defaults(handler=cmd_run)

    reproduce = commands.add_parser("reproduce", help="a paper profile (e.g. zse-sketchy25) through the pipeline: "
                                                      "one dvc exp run, then the summary table")
    reproduce.add_argument("profile", nargs="?", help="<setup>-<benchmark> (--list shows them)")
    reproduce.add_argument("--profile", dest="profile_file", action="append", default=[], type=Path,
                           metavar="FILE", help="one more YAML file laid over the paper profile (repeatable)")
    reproduce.add_argument("--list", action="store_true", help="the setups, benchmarks and profiles")
    reproduce.add_argument("--dry-run", action="store_true", help="print the dvc exp run command, run nothing")
    reproduce.add_argument("--keep-params", action="store_true",
                           help="leave the profile's values in params.yaml (default: restore the file)")
    reproduce.set_defaults(handler=cmd_reproduce)

    flow = commands.add_parser("flow", help="run the training flow once (validate → … → register, with a report)")
    flow.add_argument("--dataset")
    flow.add_argument("--models", nargs="+", help="models of dvc.yaml to run (default: all)")
    flow.add_argument("--set", nargs="+", metavar="KEY=VALUE", help="parameter changes, via dvc exp run -S")
    flow.set_defaults(handler=cmd_flow)

    for name, text in (("train", "train (or build) one model: dvc repro train@MODEL"),
                       ("evaluate", "evaluate one model: dvc repro evaluate@MODEL")):
        stage = commands.add_parser(name, help=text)
        stage.add_argument("--model", required=True)
        stage.add_argument("--force", action="store_true", help="re-run even if DVC finds it up to date")
        stage.set_defaults(handler=cmd_stage)

    register = commands.add_parser("register", help="register the best method; promote it if it beats the champion")
    register.add_argument("--force", action="store_true", help="run the register stage outside DVC's cache")
    register.add_argument("--dataset")
    register.set_defaults(handler=cmd_register)

    for name, handler, text in (("champion", cmd_champion, "show the champion and its history"),
                                ("rollback", cmd_rollback, "restore the previous champion")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--dataset", help="default: params evaluate.dataset")
        sub.add_argument("--metric", help="protocol (default: params register.metric)")
        sub.set_defaults(handler=handler)
        if name == "champion":
            sub.add_argument("--json", action="store_true")
            sub.add_argument("--history", type=int, default=10, help="how many history events to show")
        else:
            sub.add_argument("--to", help="an earlier champion's version (default: the one before)")
            sub.add_argument("--no-rebuild", action="store_true", help="do not rebuild the serving bundle and Bento")

    promote = commands.add_parser("promote", help="make a registered version the champion, whatever its score")
    promote.add_argument("version", help="registered version (a unique prefix is enough)")
    promote.add_argument("--reason", default="promoted by hand")
    promote.add_argument("--no-rebuild", action="store_true", help="do not rebuild the serving bundle and Bento")
    promote.set_defaults(handler=cmd_promote)

    for name, handler, text in (("push-champion", cmd_push_champion, "publish the champion to the shared store"),
                                ("pull-champion", cmd_pull_champion, "import the shared store's champion here")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--store", help="store URL (default: ZSSBIR_MODEL_STORE, else params register.store)")
        sub.add_argument("--dataset", help="default: params evaluate.dataset")
        sub.add_argument("--metric", help="protocol (default: params register.metric)")
        sub.set_defaults(handler=handler)
        if name == "pull-champion":
            sub.add_argument("--bundle", type=Path, help="where the serving bundle goes (default: the project's)")
            sub.add_argument("--build", action="store_true", help="then build its Bento (the package stage)")
            sub.add_argument("--serve", action="store_true", help="then serve it on --host:--port (the built Bento "
                                                                  "with --build, else the service from source)")
            sub.add_argument("--host", default="127.0.0.1")
            sub.add_argument("--port", type=int, default=3000)

    scheduler = commands.add_parser("scheduler", help="Prefect server + the training flow on a schedule")
    scheduler.add_argument("action", choices=["start", "stop", "status", "serve"],
                           help="start/stop the background server and runner; serve: the runner in the foreground")
    scheduler.add_argument("--port", type=int, default=4200)
    scheduler.add_argument("--cron", default="0 3 * * *", help="schedule (default: daily at 03:00 UTC)")
    scheduler.add_argument("--interval", type=int, help="seconds between runs, instead of --cron")
    scheduler.add_argument("--parameters", default="{}", help="JSON object of flow parameters")
    scheduler.set_defaults(handler=cmd_scheduler)

    serve = commands.add_parser("serve", help="serve the built Bento (sketch pad at /ui/)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3000)
    serve.set_defaults(handler=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "reproduce":
        allow_hub_downloads()  # paper profiles name hub weights (timm/open_clip tags)
    apply_offline_defaults()
    apply_project_defaults()
    from sbir.logs import setup_logging
    from sbir.errors import SbirError
    from stages.model_store import RegistryError

    setup_logging()
    try:
        return args.handler(args)
    except (RegistryError, ValueError, OSError, SbirError) as error:
        print(f"zssbir {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
