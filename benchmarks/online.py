"""Online inference, side by side in one run: single-row requests over HTTP keep-alive to
`python -m reprise serve` (MLflow's /invocations protocol and /predict) and to
`mlflow models serve --env-manager local`, one worker each, the same model version and the same
rows (the real test split, cycled); one client in a row, then concurrent clients. The servers
run one at a time on 127.0.0.1; the load comes from this process. Appends its table to
benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/online.py [--seconds 15] [--clients 8]
        [--tracking-uri URI [--model-version N]] [--baseline GIT-REF]

--baseline HEAD also serves the `reprise` package of that commit (exported with `git archive`,
put first on PYTHONPATH; or a folder holding a `reprise` package) in the same run, so a change to
the server is measured against what it changes under the same load.

Without --tracking-uri a store is made in a temporary folder: a whole pipeline run on the bundled
data (~1 minute), its candidate version aliased prod, as the serving tests make theirs.

Targets: Reprise >= 10x MLflow's requests per second and median latency <= 1/10 of MLflow's,
with no errors.

The client is a minimal HTTP/1.1 keep-alive client on a socket (one per client thread, requests
encoded once up front): its own cost is measured against a null server and is a small part of
what is timed. httpx's sync client alone costs ~0.4 ms per request on this machine, about what
Reprise takes to answer, so it would mostly time itself; one httpx client in a row is timed
against both servers for reference.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import ROOT, code_state, free_port, python, record, run_env

MODEL_NAME = "adult_income"
EXPERIMENT = "reprise-bench"
START_TIMEOUT_S = 180
CHECK_ROWS = 200  # rows whose labels are compared between the servers before timing
NULL_SERVER = r"""
import asyncio, sys
BODY = b'{"predictions": [0]}'
ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(BODY), BODY)
class Null(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""
    def data_received(self, data):
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            size = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + size:
                return
            self.buffer = self.buffer[end + 4 + size:]
            self.transport.write(ANSWER)
async def main():
    await asyncio.get_running_loop().create_server(Null, "127.0.0.1", int(sys.argv[1]))
    await asyncio.sleep(float(sys.argv[2]))
asyncio.run(main())
"""


# --- the store ----------------------------------------------------------------------------------
@dataclass
class Store:
    """A tracking store with a registered model version, and the test split it was judged on."""

    tracking_uri: str
    version: str
    test_table: Path
    env: dict[str, str]


def bench_env(base: Path, tracking_uri: str) -> dict[str, str]:
    """This process's environment with the store at ``tracking_uri``, state under ``base``, and
    this venv's bin first on PATH (uvicorn and mlflow from it)."""
    return run_env(base, tracking_uri, EXPERIMENT)


def make_store(base: Path, tracking_uri: str | None, version: str | None = None) -> Store:
    """A store under ``base`` made by a real pipeline run (its candidate aliased prod), or the
    given one (its version ``version``, else the one aliased prod, else candidate)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or f"sqlite:///{base / 'mlflow.db'}"
    env = bench_env(base, uri)
    client = MlflowClient(tracking_uri=uri)
    if tracking_uri is None:
        # artifacts in the temporary folder too, not in the repository's mlruns/
        client.create_experiment(EXPERIMENT, artifact_location=(base / "mlartifacts").as_uri())
        sys.stderr.write("making the store: python -m reprise run (about a minute)\n")
        started = time.monotonic()
        python("-m", "reprise", "run", env=env, timeout=1800)
        sys.stderr.write(f"  pipeline run: {time.monotonic() - started:.0f} s\n")
        version = client.get_model_version_by_alias(MODEL_NAME, "candidate").version
        client.set_registered_model_alias(MODEL_NAME, "prod", version)
    elif version is None:
        for alias in ("prod", "candidate"):
            try:
                version = client.get_model_version_by_alias(MODEL_NAME, alias).version
                break
            except MlflowException:
                continue
        else:
            raise SystemExit(f"no version of {MODEL_NAME} is aliased prod or candidate in {uri}")
    # the test split of the pipeline run that made this version, else the latest one
    step = "tags.`reprise.step` = 'train_val_test_split'"
    experiments = [e.experiment_id for e in client.search_experiments()]
    run = client.get_run(client.get_model_version(MODEL_NAME, str(version)).run_id)
    parent = run.data.tags.get("mlflow.parentRunId")
    found = []
    if parent:
        found = client.search_runs(
            experiments, f"{step} and tags.`mlflow.parentRunId` = '{parent}'"
        )
    found = found or client.search_runs(
        experiments, step, order_by=["attributes.start_time DESC"], max_results=1
    )
    if not found:
        raise SystemExit(f"no train_val_test_split run in {uri}: nothing to take test rows from")
    table = Path(client.download_artifacts(found[0].info.run_id, "test.parquet", str(base)))
    return Store(uri, str(version), table, env)


def baseline_env(base: Path, ref: str, store: Store) -> dict[str, str]:
    """The store's environment with the `reprise` package of git ``ref`` (or the one in the
    folder ``ref``) first on PYTHONPATH."""
    if (Path(ref) / "reprise" / "__init__.py").is_file():
        return {**store.env, "PYTHONPATH": str(Path(ref).resolve())}
    folder = base / "baseline"
    folder.mkdir()
    archive = subprocess.run(
        ["git", "archive", ref, "reprise"], cwd=ROOT, capture_output=True, check=True, timeout=60
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True, timeout=60)
    return {**store.env, "PYTHONPATH": str(folder)}


def model_columns(store: Store) -> list[str]:
    import mlflow

    mlflow.set_tracking_uri(store.tracking_uri)
    info = mlflow.models.get_model_info(f"models:/{MODEL_NAME}/{store.version}")
    return info.signature.inputs.input_names()


# --- servers ------------------------------------------------------------------------------------
@dataclass
class Server:
    name: str
    process: subprocess.Popen
    port: int
    log: Path
    start_seconds: float = 0.0


def start_server(
    name: str, command: list[str], env: dict[str, str], port: int, probe: str, base: Path
) -> Server:
    """Start ``command`` in its own process group; wait (bounded) until GET ``probe`` is 200."""
    log = base / f"{name.split()[0]}.log"
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=base, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(name, process, port, log)
    deadline = started + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        connection = Connection(port)
        try:
            status, _ = connection.request(
                b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % probe.encode()
            )
            connection.close()
            if status == 200:
                server.start_seconds = time.monotonic() - started
                return server
        except OSError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise SystemExit(f"{name} not ready in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def stop_server(server: Server) -> None:
    """SIGTERM to the server's process group, SIGKILL if it lingers."""
    try:
        os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
    except ProcessLookupError:
        pass


# --- the load -----------------------------------------------------------------------------------
class Connection:
    """An HTTP/1.1 keep-alive connection to 127.0.0.1: send pre-encoded requests, read answers
    framed by Content-Length. Minimal on purpose: its own cost must not be what is measured."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buffer = b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buffer = sock, b""
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def request(self, data: bytes) -> tuple[int, bytes]:
        """(status, body) of one request; OSError / ValueError on a broken answer."""
        sock = self.sock or self._connect()
        try:
            sock.sendall(data)
            buffer = self.buffer
            while True:
                end = buffer.find(b"\r\n\r\n")
                if end >= 0:
                    head = buffer[:end].lower()
                    at = head.find(b"content-length:")
                    if at < 0:
                        raise ValueError("an answer without Content-Length")
                    total = end + 4 + int(head[at + 15 :].split(b"\r\n", 1)[0])
                    if len(buffer) >= total:
                        break
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("the server closed the connection")
                buffer += chunk
        except (OSError, ValueError):
            self.close()
            raise
        self.buffer = buffer[total:]
        if b"\r\nconnection: close" in head:
            self.close()
        return int(head[9:12]), buffer[end + 4 : total]


def post(path: str, body: bytes) -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)
    )


def one_prediction(body: bytes) -> bool:
    predictions = json.loads(body).get("predictions")
    return isinstance(predictions, list) and len(predictions) == 1


@dataclass
class Phase:
    """One timed load: who, how, and what came back."""

    server: str
    endpoint: str
    clients: int
    client: str = "socket"
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, sorted

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Milliseconds at quantile ``q`` (nearest rank)."""
        if not self.latencies:
            return float("nan")
        index = min(len(self.latencies) - 1, max(0, round(q * len(self.latencies)) - 1))
        return self.latencies[index] * 1000


def run_load(
    port: int,
    requests: list[bytes],
    clients: int,
    seconds: float,
    warmup: float,
    valid: Callable[[bytes], bool] = one_prediction,
) -> tuple[int, int, float, list[float]]:
    """``clients`` threads, each with its own keep-alive connection, sending ``requests`` in
    turn (each thread from its own offset) for ``warmup`` s (not counted) then ``seconds``.
    (answered, errors, measured seconds, sorted latencies)."""
    barrier = threading.Barrier(clients + 1)
    results: list[tuple[list[float], int, float]] = []
    lock = threading.Lock()
    times: dict[str, float] = {}

    def client(offset: int) -> None:
        connection = Connection(port)
        latencies: list[float] = []
        errors, i, n = 0, offset, len(requests)
        barrier.wait()
        begin, end = times["begin"], times["end"]
        clock = time.perf_counter
        while True:
            started = clock()
            if started >= end:
                break
            try:
                status, body = connection.request(requests[i % n])
                ok = status == 200 and valid(body)
            except (OSError, ValueError):
                ok = False
            finished = clock()
            if started >= begin:
                if ok:
                    latencies.append(finished - started)
                else:
                    errors += 1
            i += 1
        connection.close()
        with lock:
            results.append((latencies, errors, clock()))

    threads = [
        threading.Thread(target=client, args=(k * len(requests) // clients,), daemon=True)
        for k in range(clients)
    ]
    for thread in threads:
        thread.start()
    now = time.perf_counter()
    times |= {"begin": now + warmup, "end": now + warmup + seconds}
    barrier.wait()
    for thread in threads:
        thread.join(timeout=seconds + warmup + 120)
    latencies = sorted(x for lats, _, _ in results for x in lats)
    errors = sum(e for _, e, _ in results) + (clients - len(results)) * 1
    last = max((t for _, _, t in results), default=times["end"])
    return len(latencies), errors, last - times["begin"], latencies


def run_httpx(port: int, path: str, bodies: list[bytes], seconds: float, warmup: float) -> Phase:
    """One httpx.Client in a row, for reference (its own cost is most of the difference)."""
    import httpx

    phase = Phase("", path, 1, client="httpx")
    headers = {"Content-Type": "application/json"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        i, now = 0, time.perf_counter()
        begin, end = now + warmup, now + warmup + seconds
        while (started := time.perf_counter()) < end:
            try:
                answer = client.post(path, content=bodies[i % len(bodies)], headers=headers)
                ok = answer.status_code == 200 and one_prediction(answer.content)
            except httpx.HTTPError:
                ok = False
            if started >= begin:
                if ok:
                    phase.latencies.append(time.perf_counter() - started)
                else:
                    phase.errors += 1
            i += 1
        phase.seconds = time.perf_counter() - begin
    phase.latencies.sort()
    phase.requests = len(phase.latencies)
    return phase


def measure(
    server: str,
    endpoint: str,
    port: int,
    requests: list[bytes],
    clients: int,
    args: argparse.Namespace,
) -> Phase:
    answered, errors, seconds, latencies = run_load(
        port, requests, clients, args.seconds, args.warmup
    )
    phase = Phase(server, endpoint, clients, "socket", answered, errors, seconds, latencies)
    sys.stderr.write(
        f"  {server} {endpoint} x{clients}: {phase.rate:,.0f} req/s, "
        f"p50 {phase.percentile(0.5):.2f} ms, p99 {phase.percentile(0.99):.2f} ms, "
        f"{errors} errors\n"
    )
    return phase


def labels(port: int, requests: list[bytes], predict: bool = False) -> list[int]:
    """The label of each request's row, one request at a time."""
    connection = Connection(port)
    out = []
    for data in requests:
        status, body = connection.request(data)
        if status != 200:
            raise SystemExit(f"a check request got {status}: {body[:500]!r}")
        (prediction,) = json.loads(body)["predictions"]
        out.append(prediction["label"] if predict else prediction)
    connection.close()
    return out


def client_ceiling(args: argparse.Namespace) -> list[Phase]:
    """The load generator against a null server (a fixed answer, no work): its own ceiling."""
    port = free_port()
    seconds = max(2.0, args.seconds / 5)
    process = subprocess.Popen(
        [sys.executable, "-c", NULL_SERVER, str(port), str(4 * seconds + 60)],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the null server did not start") from None
                time.sleep(0.05)
        body = json.dumps({"dataframe_split": {"columns": ["a"], "data": [[1]]}}).encode()
        phases = []
        for clients in (1, args.clients):
            n, errors, elapsed, lats = run_load(
                port, [post("/invocations", body)], clients, seconds, 0.5
            )
            phases.append(
                Phase("null server", "/invocations", clients, "socket", n, errors, elapsed, lats)
            )
        phases.append(run_httpx(port, "/invocations", [body], seconds, 0.5))
        phases[-1].server = "null server"
        return phases
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


# --- the report ---------------------------------------------------------------------------------
def report(
    phases: list[Phase],
    ceiling: list[Phase],
    servers: list[Server],
    agree: dict[str, str],
    command: str,
    load: str,
    rows: int,
) -> list[str]:
    mlflow = {(p.clients, p.client): p for p in phases if p.server == "mlflow"}
    lines = [
        f"\n## Online inference ({dt.date.today().isoformat()}, one worker each, "
        f"{rows:,} test rows cycled)\n",
        f"`{command}`\n",
        f"{code_state()}. Load average (1, 5, 15 min): {load}. "
        "One row per request over keep-alive; the same rows and model version for both "
        "servers; Reprise and MLflow ran one at a time (a baseline, beside Reprise, load by load).\n",
        "| server | endpoint | clients | client | requests | errors | req/s | p50 ms | p95 ms "
        "| p99 ms | req/s vs MLflow | p50 vs MLflow |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in phases:
        ref = mlflow.get((p.clients, p.client))
        ratios = "| |"
        if ref is not None and p.server != "mlflow" and ref.rate:
            ratios = f"| {p.rate / ref.rate:.1f}x | {p.percentile(0.5) / ref.percentile(0.5):.3f} |"
        lines.append(
            f"| {p.server} | {p.endpoint} | {p.clients} | {p.client} | {p.requests:,} | "
            f"{p.errors} | {p.rate:,.1f} | {p.percentile(0.5):.2f} | {p.percentile(0.95):.2f} | "
            f"{p.percentile(0.99):.2f} {ratios}"
        )
    lines += ["", "Targets (Reprise against MLflow, same clients and client library):", ""]
    for p in phases:
        ref = mlflow.get((p.clients, p.client))
        if p.server != "reprise" or ref is None:
            continue
        rate_ok = p.rate >= 10 * ref.rate
        p50_ok = p.percentile(0.5) <= ref.percentile(0.5) / 10
        lines.append(
            f"- {p.endpoint}, {p.clients} client(s) ({p.client}): "
            f"throughput {p.rate / ref.rate:.1f}x (>= 10x: {'met' if rate_ok else 'NOT met'}), "
            f"p50 {p.percentile(0.5):.2f} ms vs "
            f"{ref.percentile(0.5):.2f} ms = 1/{ref.percentile(0.5) / p.percentile(0.5):.1f} "
            f"(<= 1/10: {'met' if p50_ok else 'NOT met'})"
        )
    errors = sum(p.errors for p in phases)
    lines.append(f"- errors: {errors} ({'met' if errors == 0 else 'NOT met'}: target 0)")
    before = {
        (p.endpoint, p.clients, p.client): p for p in phases if p.server.startswith("reprise@")
    }
    if before:
        lines += ["", "This working tree against the baseline, same run:", ""]
    for p in phases:
        old = before.get((p.endpoint, p.clients, p.client))
        if p.server == "reprise" and old is not None and old.rate:
            lines.append(
                f"- {p.endpoint}, {p.clients} client(s) ({p.client}): {p.rate:,.0f} req/s vs "
                f"{old.rate:,.0f} for {old.server} ({p.rate / old.rate - 1:+.1%}), p50 "
                f"{p.percentile(0.5):.2f} ms vs {old.percentile(0.5):.2f} ms"
            )
    lines += [
        "",
        "Load generator alone, against a null server (fixed answer, no work): "
        + ", ".join(
            f"{c.client} x{c.clients} {c.rate:,.0f} req/s (p50 {c.percentile(0.5):.3f} ms)"
            for c in ceiling
        )
        + ".",
        "Server start to first 200: "
        + ", ".join(f"{s.name} {s.start_seconds:.1f} s" for s in servers)
        + ". Labels of the first rows, Reprise vs MLflow: "
        + ", ".join(f"{k} {v}" for k, v in agree.items())
        + ".",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="timed seconds per load")
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed seconds before each")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--tracking-uri", help="use this store instead of making one")
    parser.add_argument("--model-version", help="with --tracking-uri: the version to serve")
    parser.add_argument(
        "--baseline", help="also serve the reprise package of this git ref (or in this folder)"
    )
    parser.add_argument("--no-append", action="store_true", help="print only")
    args = parser.parse_args()
    command = shlex.join([".venv/bin/python", "benchmarks/online.py", *sys.argv[1:]])
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    base = Path(tempfile.mkdtemp(prefix="reprise-bench-online-"))
    servers: list[Server] = []
    try:
        store = make_store(base, args.tracking_uri, args.model_version)
        import pandas as pd

        columns = model_columns(store)
        frame = pd.read_parquet(store.test_table, columns=columns)
        records = frame.astype(object).where(frame.notna(), None).to_dict("records")
        values = [[r[c] for c in columns] for r in records]
        split = [
            json.dumps({"dataframe_split": {"columns": columns, "data": [row]}}).encode()
            for row in values
        ]
        invocations = [post("/invocations", body) for body in split]
        predict = [post("/predict", json.dumps(r).encode()) for r in records]
        sys.stderr.write(f"model version {store.version}, {len(records):,} test rows\n")

        ceiling = client_ceiling(args)
        for c in ceiling:
            sys.stderr.write(f"  client {c.client} x{c.clients}: {c.rate:,.0f} req/s\n")

        uri = f"models:/{MODEL_NAME}/{store.version}"
        phases: list[Phase] = []
        check = {}
        versions = [("reprise", store.env)]
        if args.baseline:
            label = Path(args.baseline).name or args.baseline  # a folder by its name
            versions.append((f"reprise@{label}", baseline_env(base, args.baseline, store)))
        # with a baseline, both are up at once (the idle one costs nothing) and each load runs
        # on one, then at once on the other, so that a change of the machine's load hits both
        running: list[tuple[str, Server]] = []
        try:
            for name, env in versions:
                port = free_port()
                reprise = start_server(
                    f"{name} serve",
                    [sys.executable, "-m", "reprise", "serve", "--model", uri, "--port", str(port)],
                    env,
                    port,
                    "/ready",
                    base,
                )
                servers.append(reprise)
                running.append((name, reprise))
                check[f"{name} /invocations"] = labels(port, invocations[:CHECK_ROWS])
                check[f"{name} /predict"] = labels(port, predict[:CHECK_ROWS], predict=True)
            for endpoint, requests in (("/invocations", invocations), ("/predict", predict)):
                for clients in (1, args.clients):
                    for name, reprise in running:
                        phases.append(
                            measure(name, endpoint, reprise.port, requests, clients, args)
                        )
            for name, reprise in running:
                reference = run_httpx(
                    reprise.port, "/invocations", split, args.seconds, args.warmup
                )
                reference.server = name
                phases.append(reference)
        finally:
            for _, reprise in running:
                stop_server(reprise)

        port = free_port()
        mlflow_bin = str(Path(sys.executable).parent / "mlflow")
        served = start_server(
            "mlflow models serve",
            [mlflow_bin, "models", "serve", "-m", uri, "--env-manager", "local"]
            + ["-p", str(port), "-h", "127.0.0.1", "-w", "1"],
            store.env,
            port,
            "/ping",
            base,
        )
        servers.append(served)
        try:
            theirs = labels(port, invocations[:CHECK_ROWS])
            for clients in (1, args.clients):
                phases.append(measure("mlflow", "/invocations", port, invocations, clients, args))
            reference = run_httpx(port, "/invocations", split, args.seconds, args.warmup)
            reference.server = "mlflow"
            phases.append(reference)
        finally:
            stop_server(served)
    finally:
        for server in servers:
            if server.process.poll() is None:
                stop_server(server)
        shutil.rmtree(base, ignore_errors=True)

    agree = {
        k: f"{sum(a == b for a, b in zip(v, theirs, strict=True))}/{len(theirs)} equal"
        for k, v in check.items()
    }
    load += " at start, " + "/".join(f"{x:.2f}" for x in os.getloadavg()) + " at the end"
    lines = report(phases, ceiling, servers, agree, command, load, len(records))
    record(lines, append=not args.no_append)


if __name__ == "__main__":
    main()
