"""The platform's command line: `python -m reprise run` (what `make run` calls)."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from reprise import owners, paths
from reprise.credentials import redact
from reprise.errors import RepriseError
from reprise.project_args import split_options

if TYPE_CHECKING:  # reprise.api loads the config machinery (0.4 s): `--help` must not pay it
    from reprise.api import ProjectRunFailed

log = logging.getLogger("reprise")
# Commands whose pipeline a signal stops, its runs ended KILLED.
STOPPABLE = ("run", "release", "verify")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def platform_version() -> str:
    """The platform's version: the checkout's .bumpversion.cfg (what a release bumps, current
    before the venv is synced again), else the installed package's."""
    from reprise.versioning import current_version

    config = paths.ROOT / ".bumpversion.cfg"
    if config.is_file():
        return current_version(config)
    from importlib.metadata import version

    return version("reprise")


def write_line(line: str = "") -> None:
    """One line of a command's answer on stdout (logging goes to stderr)."""
    sys.stdout.write(line + "\n")


def cmd_run(args: argparse.Namespace) -> int:
    """Run the pipeline on the embedded defaults, then say where to look.

    A single run goes in this process (the project's config composed by Hydra, one process start
    less than `mlflow run project`); a sweep (-m) goes through the MLflow project, as Hydra's
    multirun needs its own app. A sweep with any failed point exits 1, after its summary.
    """
    try:
        given = split_options(args.overrides_text, "OVERRIDES") + args.overrides
    except RepriseError as err:
        log.error("bad configuration: %s", err)
        return 1
    if args.list_steps:  # before MLflow's import: listing needs only the config
        return _list_steps(given)
    from reprise import api, sweep, tracking

    # `run -m key=a,b` is the sweep `run -- -m key=a,b` gives
    sweep_flag = ["-m"] if args.multirun else []
    overrides = [*sweep_flag, *given, *(["main.cache=false"] if args.no_cache else [])]
    if not {"-m", "--multirun"} & set(overrides):
        return _run_in_process(args.steps, overrides)
    experiment_id = tracking.use_defaults()
    if launcher := sweep.launcher_given(overrides):
        try:  # before `mlflow run` makes a run (the sweep's callback would refuse it after)
            sweep.refuse_local_store(launcher)
        except RepriseError as err:
            log.error("sweep refused: %s", err)
            return 1
    try:
        run_id = api.run_project(
            paths.PROJECT_DIR,
            # main.py splits hydra_options as shell words: join so that each override comes back
            {"steps": args.steps, "hydra_options": shlex.join(overrides)},
            experiment_id,
        )
    except api.ProjectRunFailed as err:
        if err.run_id:
            _print_summary(err.run_id)  # the points that ran, then the line naming the failed
        log.error("%s", _failure_line(err))
        return 1
    _print_summary(run_id)
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


def _list_steps(overrides: list[str]) -> int:
    """Print the declared steps in running order, one a line with the component each runs."""
    from reprise import graph

    pipeline = graph.declared(graph.project_config(overrides=overrides))
    width = max(map(len, pipeline.names))
    for step in pipeline.steps.values():
        write_line(f"{step.name:<{width}}  {step.component}")
    return 0


def declared_steps_line(root: Path = paths.ROOT) -> str:
    """The line that closes `run --help`: the steps the project in ``root`` declares, or why they
    are not known (a broken config must not break the help; the run itself says what is wrong)."""
    from reprise import graph

    try:
        names = graph.declared(graph.project_config(root)).names
    except Exception as err:  # any failure of the config: the help still prints
        cause = str(err).splitlines()[0] if str(err) else type(err).__name__
        return f"Declared steps: unknown, the project's config does not compose ({cause})."
    return (
        f"Declared steps (in running order): {', '.join(names)}. "
        "--list-steps shows the component each runs."
    )


class _HelpWithSteps(argparse.Action):
    """run's -h: its help, closed by the declared steps, read only now (composing the config
    costs about a second that no other start of the command should pay)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> NoReturn:
        parser.epilog = declared_steps_line()
        parser.print_help()
        parser.exit()


class _PrintVersion(argparse.Action):
    """--version: the platform's version, read only when asked for (not at every start)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> NoReturn:
        write_line(f"{parser.prog} {platform_version()}")
        parser.exit()


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default after its help, unless the help says it already or there is none
    to show (an empty or absent value, a flag that is off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if (
            "(default" in (action.help or "")
            or action.default in (None, "")
            or action.default is False
        ):
            return action.help
        return super()._get_help_string(action)


def _failure_line(err: ProjectRunFailed) -> str:
    """The pipeline run's recorded cause (tag reprise.error), else a pointer to the log."""
    if err.recorded:
        return f"pipeline failed: {err.recorded}"
    return f"pipeline failed ({err.message.splitlines()[0]}); the cause is the error above."


def _print_summary(parent_id: str) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from reprise import tracking
    from reprise.pipeline import HEADLINE
    from reprise.tags import COMPONENT_SHA_TAG, REGISTERED_MODEL_TAG

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
        sha = tags.get(COMPONENT_SHA_TAG, "")[:12] or "-"
        write_line(
            f"  {tags.get('mlflow.runName', '?'):<22} {child.info.status:<9} {seconds:6.1f} s  "
            f"run {child.info.run_id}  commit {sha}"
        )
        for key, value in sorted(child.data.metrics.items()):
            if key.split(".", 1)[-1] in HEADLINE and key.startswith(("val.", "test.")):
                write_line(f"      {key} = {value:.4f}")
            elif key == "threshold":
                write_line(f"      decision threshold = {value:.4f}")
        if model := tags.get(REGISTERED_MODEL_TAG):
            write_line(f"      registered model: {model}")
    write_line()
    write_line(f"Look at it: {tracking.ui_hint()}")
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
    """The command line: global options, then a subcommand; every --help shows the defaults."""
    parser = argparse.ArgumentParser(
        prog="reprise", description=__doc__, formatter_class=DefaultsHelpFormatter
    )
    parser.add_argument(
        "--version",
        action=_PrintVersion,
        nargs=0,
        default=argparse.SUPPRESS,
        help="print the platform's version and exit",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("REPRISE_LOG_LEVEL") or "INFO",
        metavar="{" + ",".join(LOG_LEVELS) + "}",
        help="what the platform and its steps log (the steps get it as REPRISE_LOG_LEVEL) "
        "(default: $REPRISE_LOG_LEVEL, else INFO)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline on the embedded defaults", add_help=False)
    run.add_argument(
        "-h",
        "--help",
        action=_HelpWithSteps,
        nargs=0,
        default=argparse.SUPPRESS,
        help="show this help message, with the declared steps, and exit",
    )
    run.add_argument("--steps", default="all", help="comma-separated declared steps, or all")
    run.add_argument(
        "--list-steps",
        action="store_true",
        help="print the declared steps, one a line with the component each runs, and exit",
    )
    run.add_argument(
        "-m",
        "--multirun",
        action="store_true",
        help="a sweep: a run per combination of comma-separated values, e.g. -m "
        "model.max_depth=4,8 (Hydra's multirun; the same as run -- -m ...)",
    )
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
    release.set_defaults(handler=cmd_release)

    verify = sub.add_parser("verify", help="rerun a release and compare it with its manifest")
    verify.add_argument("version", help="X.Y.Z of the release")
    verify.add_argument("--run", default="", help="compare this pipeline run instead of rerunning")
    verify.set_defaults(handler=cmd_verify)

    restore = sub.add_parser("restore", help="the project and its components as a release had them")
    restore.add_argument("version", help="X.Y.Z of the release")
    restore.add_argument("dest", help="an empty or absent folder")
    restore.set_defaults(handler=cmd_restore)

    promote = sub.add_parser("promote", help="alias a release's model version prod")
    promote.add_argument("version", help="X.Y.Z of the release")
    promote.set_defaults(handler=cmd_promote)

    releases = sub.add_parser("releases", help="list the releases and their key metrics")
    releases.add_argument(
        "--remote", action="store_true", help="also list the origin's release tags (fetched)"
    )
    releases.set_defaults(handler=cmd_releases)

    crel = sub.add_parser("release-components", help="cut a release of components-repo/")
    crel.add_argument("--part", required=True, choices=["patch", "minor", "major"])
    crel.set_defaults(handler=cmd_release_components)

    pub = sub.add_parser("publish-components", help="push components-repo/ as a repository")
    pub.add_argument("remote", help="git URI of the components repository to push to")
    pub.set_defaults(handler=cmd_publish_components)

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
    predict.add_argument(
        "--engine",
        choices=["local", "spark"],
        default="local",
        help="score in processes of this machine (local) or on Spark (Java 17 and the spark extra)",
    )
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
    )
    server.add_argument("action", choices=("start", "stop", "status"), help="what to do")
    server.add_argument("--host", default="127.0.0.1", help="the address the MLflow server binds")
    server.add_argument("--port", type=int, default=5000, help="the MLflow server's port")
    server.add_argument("--workers", type=int, default=2, help="the MLflow server's processes")
    server.set_defaults(handler=cmd_server)

    ui = sub.add_parser(
        "ui", help="the MLflow UI on the tracking store, or the tracking server's URL (make ui)"
    )
    ui.add_argument("--host", default="127.0.0.1", help="the address the UI binds")
    ui.add_argument("--port", type=int, default=5001, help="the UI's port (make server's is 5000)")
    ui.set_defaults(handler=cmd_ui)

    for command in sub.choices.values():
        command.formatter_class = DefaultsHelpFormatter
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


def cmd_ui(args: argparse.Namespace) -> int:
    """Start the MLflow UI on the tracking store with this interpreter's mlflow (the venv's bin
    need not be on PATH), or, for a tracking server, say its URL: it serves the UI itself."""
    from reprise import tracking

    uri = tracking.store_uri()
    if url := tracking.server_url(uri):
        write_line(f"open {url} in a browser")
        return 0
    from reprise.serving.server.command import check_port

    # MLflow's UI says a taken port in a log line and exits 0: say it before, and fail
    check_port(args.host, args.port, "pass another port (make ui PORT=...) or stop what holds it.")
    log.info("MLflow UI of %s on http://%s:%d (Ctrl-C stops it)", redact(uri), args.host, args.port)
    sys.stderr.flush()
    # the UI becomes this process: its PID is the one to stop, and no Python of ours waits on it
    os.execv(
        sys.executable,
        [sys.executable, "-m", "mlflow", *tracking.ui_arguments(uri)]
        # one viewer: one worker process, not MLflow's four
        + ["--host", args.host, "--port", str(args.port), "--workers", "1"],
    )


def cmd_new_component(args: argparse.Namespace) -> int:
    """Write a new component folder, then say what to edit next."""
    from reprise import new_component

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


# The release commands import their module only when they run: mlflow alone takes seconds to
# import, which `--help` and the other commands must not pay.


def cmd_release(args: argparse.Namespace) -> int:
    """Cut a release of the project (reprise/release.py)."""
    from reprise import release

    release.cut(args.part)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Rerun a release (or take a given run), print the comparison with its manifest; 1 when
    anything differs."""
    from reprise import release, report

    result = release.verify(args.version, args.run)
    for line in report.verification_lines(result):
        write_line(line)
    if result.registry_unchanged is False:  # the tag's own orchestrator predates main.register
        log.warning(
            "the rerun of release %s changed model %s in the registry",
            result.version,
            result.model_name,
        )
    if different := result.different:
        log.error(
            "release %s is not reproduced: %d of %d differ (%s)",
            result.version,
            len(different),
            len(result.rows),
            ", ".join(row.what for row in different[:5]),
        )
        return 1
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore a release's project and components in a folder."""
    from reprise import release

    release.restore(args.version, args.dest)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Alias a release's model version prod."""
    from reprise import release

    release.promote(args.version)
    return 0


def cmd_releases(args: argparse.Namespace) -> int:
    """Print the releases and their key metrics."""
    from reprise import release, report

    for line in report.releases_lines(release.list_releases(args.remote)):
        write_line(line)
    return 0


def cmd_release_components(args: argparse.Namespace) -> int:
    """Cut a release of components-repo/; the exit code of the components' own release."""
    from reprise import components_release

    return components_release.release(args.part)


def cmd_publish_components(args: argparse.Namespace) -> int:
    """Push components-repo/ and its release tags as a repository of its own."""
    from reprise import components_release

    components_release.publish(args.remote)
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
    """Run the command ``argv`` names; its exit code."""
    args = build_parser().parse_args(argv)
    level = str(args.log_level).upper()
    logging.basicConfig(
        level=level if level in LOG_LEVELS else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if level not in LOG_LEVELS:
        log.error(
            "%s",
            RepriseError(
                f"Log level '{args.log_level}' is not one of {', '.join(LOG_LEVELS)}.",
                "give --log-level one of them (or set REPRISE_LOG_LEVEL to one).",
            ),
        )
        return 2
    os.environ["REPRISE_LOG_LEVEL"] = level  # the steps' processes log at the same level
    # a signal stops these commands' pipelines and ends their runs KILLED, said in one line
    with owners.signals_stop() if args.command in STOPPABLE else nullcontext():
        try:
            code: int = args.handler(args)
            return code
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
