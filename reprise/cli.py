"""The platform's command line: `python -m reprise run` (what `make run` calls)."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from typing import NoReturn

from reprise import owners
from reprise.components import redact
from reprise.errors import RepriseError
from reprise.project_args import split_options

log = logging.getLogger("reprise")
# Commands whose pipeline a signal stops, its runs ended KILLED.
STOPPABLE = ("run", "release", "verify")


def write_line(line: str = "") -> None:
    """One line of a command's answer on stdout (logging goes to stderr)."""
    sys.stdout.write(line + "\n")


def cmd_run(args: argparse.Namespace) -> int:
    """Run the pipeline on the embedded defaults, then say where to look.

    A single run goes in this process (the project's config composed by Hydra, one process start
    less than `mlflow run project`); a sweep (-m) goes through the MLflow project, as Hydra's
    multirun needs its own app. A sweep with any failed point exits 1, after its summary.
    """
    from mlflow.projects import ExecutionException

    from reprise import api, paths, sweep, tracking

    try:
        given = split_options(args.overrides_text, "OVERRIDES") + args.overrides
    except RepriseError as err:
        log.error("bad configuration: %s", err)
        return 1
    overrides = [*given, *(["main.cache=false"] if args.no_cache else [])]
    if not {"-m", "--multirun"} & set(overrides):
        return _run_in_process(args.steps, overrides)
    experiment_id = tracking.use_defaults()
    if launcher := sweep.launcher_given(overrides):
        try:  # before `mlflow run` makes a run (the sweep's callback would refuse it after)
            sweep.refuse_local_store(launcher)
        except RepriseError as err:
            log.error("sweep refused: %s", err)
            return 1
    api.use_this_python()
    try:
        submitted = tracking.run_project(
            str(paths.PROJECT_DIR),
            entry_point="main",
            # main.py splits hydra_options as shell words: join so that each override comes back
            parameters={"steps": args.steps, "hydra_options": shlex.join(overrides)},
            experiment_id=experiment_id,
            env_manager="local",
            run_name="pipeline",
        )
    except ExecutionException as err:
        if run_id := tracking.failed_run_id(str(err)):
            _print_summary(run_id)  # the points that ran, then the line that names the failed ones
        log.error("%s", _failure_line(str(err)))
        return 1
    _print_summary(submitted.run_id)
    return 0


def _run_in_process(steps: str, overrides: list[str]) -> int:
    from reprise import api

    try:
        run_id = api.run(overrides, steps)
    except api.ConfigError as err:
        log.error("bad configuration: %s", err)
        return 1
    except api.PipelineFailed as err:
        log.error("pipeline failed: %s", err)
        return 1
    _print_summary(run_id)
    return 0


def _failure_line(message: str) -> str:
    """The pipeline run's recorded cause (tag reprise.error), else a pointer to the log."""
    from reprise import tracking

    if cause := tracking.recorded_cause(message):
        return f"pipeline failed: {cause}"
    return f"pipeline failed ({message.splitlines()[0]}); the cause is the error above."


def _print_summary(parent_id: str) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from reprise import tracking
    from reprise.pipeline import HEADLINE

    client = MlflowClient()
    parent = client.get_run(parent_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
        order_by=["attributes.start_time ASC"],
    )
    write_line()
    write_line(
        f"Pipeline run {parent_id} ({parent.info.status}) in experiment {parent.info.experiment_id}"
    )
    for child in children:
        seconds = (child.info.end_time - child.info.start_time) / 1000 if child.info.end_time else 0
        tags = child.data.tags
        sha = tags.get("reprise.component.sha", "")[:12] or "-"
        write_line(
            f"  {tags.get('mlflow.runName', '?'):<22} {child.info.status:<9} {seconds:6.1f} s  "
            f"run {child.info.run_id}  commit {sha}"
        )
        for key, value in sorted(child.data.metrics.items()):
            if key.split(".", 1)[-1] in HEADLINE and key.startswith(("val.", "test.")):
                write_line(f"      {key} = {value:.4f}")
            elif key == "threshold":
                write_line(f"      decision threshold = {value:.4f}")
        if model := tags.get("reprise.output.registered_model"):
            write_line(f"      registered model: {model}")
    write_line()
    write_line(f"Look at it: {tracking.ui_command()}")
    write_line(f"Tracking URI: {redact(mlflow.get_tracking_uri())}")


def cmd_predict(args: argparse.Namespace) -> int:
    """Score a file offline (reprise.serving.batch) and print what was done."""
    # Arrow's jemalloc pool gives freed memory back; it is chosen when Arrow loads
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
    from reprise.serving import batch

    result = batch.predict(
        args.input,
        args.output,
        release=args.release,
        model=args.model,
        id_column=args.id_column,
        chunk_rows=args.chunk_rows,
        workers=args.workers,
        on_error=args.on_error,
        engine=args.engine,
        overwrite=args.overwrite,
    )
    model = result.model
    rate = result.rows_read / result.seconds if result.seconds else 0.0
    write_line(
        f"Scored {result.input} -> {result.output} ({result.engine} engine, {result.workers} workers)"
    )
    write_line(f"  model      {model['model_uri']}  threshold {model['threshold']:.4f}")
    write_line(f"  id column  {result.id_column}")
    write_line(
        f"  rows read {result.rows_read:,}  scored {result.rows_scored:,}  "
        f"quarantined {result.rows_quarantined:,}"
    )
    if result.quarantine is not None:
        write_line(f"  quarantine {result.quarantine}")
    write_line(f"  {result.seconds:.1f} s, {rate:,.0f} rows/s")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """End the runs whose owner process is gone, remove their temporary folders, and list what
    was changed and what was left alone."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from reprise import tracking

    mlflow.set_tracking_uri(tracking.store_uri())
    found = owners.doctor(MlflowClient())
    write_line(f"Tracking URI: {redact(mlflow.get_tracking_uri())}")
    if not found.killed:
        write_line("No run is left RUNNING by a process that is gone.")
    for run, reason in found.killed:
        name = run.data.tags.get("mlflow.runName", "")
        write_line(f"  marked KILLED: run {run.info.run_id} ({name}): {reason}")
    if found.processes:
        write_line(f"  stopped processes still working for them: {found.processes}")
    for folder in found.folders:
        write_line(f"  removed temporary folder {folder}")
    for run, owner in found.elsewhere:
        write_line(f"  left alone: run {run.info.run_id} is owned by {owner}, another host")
    if found.unowned:
        ids = ", ".join(r.info.run_id for r in found.unowned)
        write_line(
            f"  left alone: RUNNING with no owner recorded (older, or not started by Reprise): {ids}"
        )
    if found.unowned_folders:
        write_line(
            f"  left alone: {len(found.unowned_folders)} reprise-* folder(s) with no owner file "
            f"in {found.unowned_folders[0].parent}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reprise", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline on the embedded defaults")
    run.add_argument("--steps", default="all", help="comma-separated steps, or all")
    run.add_argument("--no-cache", action="store_true", help="run every step (main.cache=false)")
    run.add_argument(
        "--overrides",
        dest="overrides_text",
        default="",
        metavar="TEXT",
        help="more Hydra overrides in one string, split into words as a shell would but never "
        "expanded (what make run OVERRIDES= passes)",
    )
    run.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. etl.sample=sample1.parquet"
    )
    run.set_defaults(handler=cmd_run)

    release = sub.add_parser("release", help="cut a release of the project: make release")
    release.add_argument("--part", required=True, choices=["patch", "minor", "major"])
    release.set_defaults(handler=lambda a: _call("reprise.release", "cut", a.part))

    verify = sub.add_parser("verify", help="rerun a release and compare it with its manifest")
    verify.add_argument("version", help="X.Y.Z of the release")
    verify.add_argument("--run", default="", help="compare this pipeline run instead of rerunning")
    verify.set_defaults(handler=lambda a: _call("reprise.release", "verify", a.version, a.run))

    restore = sub.add_parser("restore", help="the project and its components as a release had them")
    restore.add_argument("version", help="X.Y.Z of the release")
    restore.add_argument("dest", help="an empty or absent folder")
    restore.set_defaults(handler=lambda a: _call("reprise.release", "restore", a.version, a.dest))

    promote = sub.add_parser("promote", help="alias a release's model version prod")
    promote.add_argument("version", help="X.Y.Z of the release")
    promote.set_defaults(handler=lambda a: _call("reprise.release", "promote", a.version))

    releases = sub.add_parser("releases", help="list the releases and their key metrics")
    releases.add_argument(
        "--remote", action="store_true", help="also list the origin's release tags (fetched)"
    )
    releases.set_defaults(handler=lambda a: _call("reprise.release", "list_releases", a.remote))

    crel = sub.add_parser("release-components", help="cut a release of components-repo/")
    crel.add_argument("--part", required=True, choices=["patch", "minor", "major"])
    crel.set_defaults(handler=lambda a: _call("reprise.components_release", "release", a.part))

    pub = sub.add_parser("publish-components", help="push components-repo/ as a repository")
    pub.add_argument("remote", help="git URI of the components repository to push to")
    pub.set_defaults(handler=lambda a: _call("reprise.components_release", "publish", a.remote))

    serve = sub.add_parser("serve", help="serve a model over HTTP (REST, MLflow's protocol too)")
    which = serve.add_mutually_exclusive_group()
    which.add_argument("--release", default="", help="X.Y.Z: serve this release's model")
    which.add_argument(
        "--model", default="", help="a model URI (default: the project's registered model @prod)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--workers", type=int, default=1, help="server processes")
    serve.add_argument(
        "--max-body-bytes", type=int, default=1024 * 1024, help="larger requests get 413"
    )
    serve.add_argument(
        "--poll-seconds",
        type=float,
        default=5.0,
        help="how often to check the followed alias (0: only on POST /reload)",
    )
    serve.add_argument("--max-rows", type=int, default=10_000, help="requests of more rows get 413")
    serve.add_argument(
        "--max-concurrency",
        type=int,
        default=64,
        help="scoring requests answered at once per worker; more get 503 with Retry-After",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=1000,
        help="open connections per worker; over it the oldest idle one is closed",
    )
    serve.add_argument(
        "--keep-alive-seconds",
        type=float,
        default=5.0,
        help="an idle connection (no request begun) is closed after this",
    )
    serve.add_argument(
        "--read-timeout-seconds",
        type=float,
        default=15.0,
        help="a request's headers and body must arrive within this from its first byte",
    )
    serve.add_argument(
        "--backlog", type=int, default=128, help="connections waiting to be accepted"
    )
    serve.add_argument(
        "--api-key",
        default=os.environ.get("REPRISE_SERVE_API_KEY", ""),
        help="require this key for scoring and /reload (default: $REPRISE_SERVE_API_KEY; "
        "prefer the variable, a flag shows in ps)",
    )
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument("--log-json", action="store_true", help="log lines as JSON objects")
    serve.set_defaults(handler=cmd_serve)

    predict = sub.add_parser("predict", help="score a CSV or Parquet file offline (batch)")
    predict.add_argument("--input", required=True, help="a .csv, .csv.gz, .parquet or .pq file")
    predict.add_argument("--output", required=True, help="a .parquet or .csv file to write")
    which = predict.add_mutually_exclusive_group()
    which.add_argument("--release", help="score with release X.Y.Z's model")
    which.add_argument(
        "--model", help="a model URI (default: the project's registered model @prod)"
    )
    predict.add_argument(
        "--id-column", help="the input's id column (default: id, else row numbers)"
    )
    predict.add_argument("--chunk-rows", type=int, default=200_000, help="rows per chunk")
    predict.add_argument(
        "--workers", type=int, default=None, help="scoring processes (default: one per core)"
    )
    predict.add_argument(
        "--on-error",
        choices=["fail", "quarantine"],
        default="fail",
        help="a bad row stops everything (fail) or goes to <output stem>.quarantine.<suffix>",
    )
    predict.add_argument("--engine", choices=["local", "spark"], default="local")
    predict.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing OUTPUT file (never a folder, a read-only file or the input)",
    )
    predict.set_defaults(handler=cmd_predict)

    doctor = sub.add_parser(
        "doctor", help="end runs whose process is gone, remove their temporary folders"
    )
    doctor.set_defaults(handler=cmd_doctor)

    graph = sub.add_parser("graph", help="print the pipeline the project declares")
    graph.add_argument("--mermaid", action="store_true", help="as a Mermaid flowchart for docs")
    graph.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. pipeline=other (a pipeline of its own)"
    )
    graph.set_defaults(handler=cmd_graph)

    new = sub.add_parser("new-component", help="write a new component in components-repo/")
    new.add_argument("name", help="its name in lower snake case: folder, step and module prefix")
    new.add_argument(
        "--components-dir",
        default="",
        help="the components folder to write in (default: components-repo/ of this checkout)",
    )
    new.set_defaults(handler=cmd_new_component)

    server = sub.add_parser(
        "server",
        help="a team's tracking server here: PostgreSQL + mlflow server (make server)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    server.add_argument("action", choices=("start", "stop", "status"), help="what to do")
    server.add_argument("--host", default="127.0.0.1", help="the address the MLflow server binds")
    server.add_argument("--port", type=int, default=5000, help="the MLflow server's port")
    server.add_argument("--workers", type=int, default=2, help="the MLflow server's processes")
    server.set_defaults(handler=cmd_server)
    return parser


def cmd_server(args: argparse.Namespace) -> int:
    """Start, stop or show the tracking server of this checkout (reprise/team_server.py)."""
    from reprise import team_server

    where = team_server.folder()
    if args.action == "stop":
        stopped = team_server.stop(where)
        write_line(f"Stopped {' and '.join(stopped)}." if stopped else "No tracking server runs.")
        return 0
    if args.action == "status":
        found = team_server.running(where)
        write_line(f"Running at {found.uri}" if found else f"No tracking server runs ({where}).")
        return 0 if found else 1
    if args.workers < 1:
        raise RepriseError(
            f"--workers {args.workers} is below 1.",
            "give --workers 1 or more (make server SERVER_WORKERS=1).",
        )
    state, already = team_server.start(args.host, args.port, args.workers, where)
    write_line(
        f"{'Already running' if already else 'Started'}: MLflow server {state.uri} "
        f"(pid {state.mlflow_pid}) on PostgreSQL 127.0.0.1:{state.postgres_port} "
        f"(pid {state.postgres_pid}); data in {where}"
    )
    write_line("Point every command at it:")
    write_line(f"  export MLFLOW_TRACKING_URI={state.uri}")
    write_line("Stop both: make server-stop")
    return 0


def cmd_new_component(args: argparse.Namespace) -> int:
    """Write a new component folder, then say what to edit next."""
    from pathlib import Path

    from reprise import new_component, paths

    created = new_component.create(args.name, Path(args.components_dir or paths.COMPONENTS_DIR))
    write_line(f"Created component {args.name} in {created.folder}")
    write_line(f"  {', '.join(created.files)}")
    write_line(f"  environment locked as {created.environment_from}'s (the same pins)")
    write_line(f"Next: write its logic in {created.folder / created.logic_module}, then declare")
    write_line(f"  the step in the pipeline (component: {args.name}, outputs: [{created.output}]).")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    """Print the declared pipeline: each step, what it takes and makes (or a Mermaid chart)."""
    from reprise import graph

    pipeline = graph.declared(graph.project_config(overrides=args.overrides))
    write_line(graph.as_mermaid(pipeline) if args.mermaid else graph.as_text(pipeline))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a model over HTTP with the limits and the key the flags give."""
    from reprise.serving import server
    from reprise.serving.connections import Limits

    settings = server.Settings(
        max_body_bytes=args.max_body_bytes,
        poll_seconds=args.poll_seconds,
        max_rows=args.max_rows,
        max_concurrency=args.max_concurrency,
        api_key=args.api_key,
        access_log=args.access_log,
        log_json=args.log_json,
    )
    limits = Limits(args.keep_alive_seconds, args.read_timeout_seconds, args.max_connections)
    return server.serve(
        args.release, args.model, args.host, args.port, args.workers, settings, limits, args.backlog
    )


def _call(module: str, function: str, *args: object) -> int:
    """Import the command's module only when it runs (mlflow alone takes seconds to import)."""
    import importlib

    result = getattr(importlib.import_module(module), function)(*args)
    return result if isinstance(result, int) else 0


def exit_now(code: int) -> NoReturn:
    """End the command with ``code`` once its exit handlers have run and its output is flushed,
    skipping Python's teardown of every module and object (MLflow's thousands: about 0.6 s of a
    pipeline rerun). Nothing is left to tear down that holds data: the tracking store commits
    each write, and with a thread still running the normal exit is taken instead."""
    import atexit
    import threading

    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is None or threading.active_count() > 1:
        sys.exit(code)
    run_exit_handlers()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    args = build_parser().parse_args(argv)
    # a signal stops these commands' pipelines and ends their runs KILLED, said in one line
    with owners.signals_stop() if args.command in STOPPABLE else nullcontext():
        try:
            return args.handler(args)
        except owners.Stopped as stop:
            log.error("%s", owners.stop_below(stop))
            return stop.exit_code
        except RepriseError as err:
            log.error("%s", err)
            return 1
        except Exception as err:  # MLflow's own, from the store: one is the user's to fix
            from reprise import tracking

            if (busy := tracking.busy_store(err)) is None:
                raise
            log.error("%s", busy)
            return 1
