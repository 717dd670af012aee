"""The gRPC transport's cost: sites, a large model and mutual TLS on loopback, beside the bare
TLS socket limit on the same machine.

    python bench/deploy_bench.py                              # 20 sites, 10M parameters, 5 rounds
    python bench/deploy_bench.py --sites 4 --rounds 3         # smaller, for a 2-core machine

A server process runs the engine's executor interface (`GrpcExecutor`) over mutual TLS, folding
each update into a float64 running mean as it arrives (`run_each`, as the engine's streamed rounds
do); each site is its own process running `fedloom.transport.Site` with a program that answers at
once (its update is the parameters it received), so the numbers are the transport's alone. Per
round every site receives the model and sends one update back. Each process reports its own peak
resident memory (``ru_maxrss``). The limit is the same number of bytes pushed through one plain TLS
socket (Python's ``ssl``, the same certificates) between two processes. Results go to
``docs/deploy-benchmark.md`` and ``bench/deploy_results.json`` unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MB = 1 << 20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _layout(params: int):  # type: ignore[no-untyped-def]
    from fedloom.core.layout import Field, Layout

    return Layout((Field("w", (params,)),))


def server(args: argparse.Namespace) -> None:
    from fedloom.core.messages import Broadcast, ClientResult
    from fedloom.engine.tasks import TrainTask
    from fedloom.pki import Federation, Verifier
    from fedloom.reducers import Fold, WeightedMean
    from fedloom.transport import GrpcExecutor, ServerCredentials, ServiceConfig, TrainingConfig

    fed = Federation(Path(args.federation))
    sites = tuple(f"site-{i}" for i in range(args.sites))
    config = ServiceConfig(
        run="bench",
        layout=_layout(args.params),
        training=TrainingConfig("fedavg", {"lr": 0.1}),
        sites=sites,
        verifier=Verifier(fed.root),
        heartbeat=60.0,
    )
    credentials = ServerCredentials(
        fed.cert("server").read_bytes(), fed.key("server").read_bytes(), fed.ca_cert.read_bytes()
    )
    params = np.random.default_rng(0).standard_normal(args.params).astype(np.float32)
    with GrpcExecutor(
        config, address=f"127.0.0.1:{args.port}", credentials=credentials, deadline=600
    ) as executor:
        print("ready", flush=True)
        executor.wait_for_sites(len(sites))
        rounds = []
        for r in range(args.rounds):
            before = executor.traffic()
            started = time.perf_counter()
            tasks = [TrainTask(i, Broadcast(r, params, seed=i)) for i in range(len(sites))]
            fold = WeightedMean().fold(args.params)

            def consume(position: int, reply: object, fold: Fold = fold) -> None:
                assert isinstance(reply, ClientResult), reply
                fold.add(reply.update, reply.num_examples)

            executor.run_each(tasks, consume)  # as the engine's streamed rounds do
            params = fold.result()
            seconds = time.perf_counter() - started
            down, up = (a - b for a, b in zip(executor.traffic(), before, strict=True))
            rounds.append({"seconds": seconds, "bytes_down": down, "bytes_up": up})
    print(json.dumps({"rounds": rounds, "peak_mb": _peak_mb()}), flush=True)


def site(args: argparse.Namespace) -> None:
    from fedloom.core.messages import Broadcast, ClientResult
    from fedloom.engine.tasks import Evaluation
    from fedloom.pki import Federation
    from fedloom.transport import Site, SiteCredentials

    class Echo:
        def train(self, broadcast: Broadcast) -> ClientResult:
            return ClientResult(broadcast.params, 1)

        def evaluate(self, params: object) -> Evaluation:
            return Evaluation(0)

    fed = Federation(Path(args.federation))
    name = f"site-{args.index}"
    credentials = SiteCredentials(
        fed.cert(name).read_bytes(), fed.key(name).read_bytes(), fed.ca_cert.read_bytes()
    )
    Site(
        target=f"127.0.0.1:{args.port}",
        name=name,
        layout=_layout(args.params),
        prepare=lambda _: Echo(),
        credentials=credentials,
    ).run()
    print(json.dumps({"peak_mb": _peak_mb()}), flush=True)


def bare_tls(federation: Path, total: int, chunk: int = MB) -> float:
    """Seconds to push ``total`` bytes through one TLS socket from this process to a child."""
    from fedloom.pki import Federation

    fed = Federation(federation)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(fed.ca_cert))
    context.load_cert_chain(fed.cert("server"), fed.key("server"))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    receiver = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--role",
            "sink",
            "--federation",
            str(federation),
            "--port",
            str(port),
            "--total",
            str(total),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    connection, _ = listener.accept()
    payload = memoryview(np.random.default_rng(1).bytes(chunk))
    with context.wrap_socket(connection, server_side=True) as tls:
        started = time.perf_counter()
        sent = 0
        while sent < total:
            tls.sendall(payload[: min(chunk, total - sent)])
            sent += min(chunk, total - sent)
        tls.recv(1)  # the sink's acknowledgement: everything arrived
        seconds = time.perf_counter() - started
    receiver.wait()
    listener.close()
    return seconds


def sink(args: argparse.Namespace) -> None:
    from fedloom.pki import Federation

    fed = Federation(Path(args.federation))
    context = ssl.create_default_context(cafile=str(fed.ca_cert))
    context.load_cert_chain(fed.cert("site-0"), fed.key("site-0"))
    with (
        socket.create_connection(("127.0.0.1", args.port)) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        buffer = bytearray(MB)
        got = 0
        while got < args.total:
            n = tls.recv_into(buffer)
            if n == 0:
                break
            got += n
        tls.sendall(b"k")


def drive(args: argparse.Namespace) -> dict[str, object]:
    from fedloom.pki import init_ca, issue

    work = Path(tempfile.mkdtemp(prefix="fedloom-deploy-bench-"))
    fed = init_ca(work / "fed")
    issue(fed.root, "server", server=True)
    for i in range(args.sites):
        issue(fed.root, f"site-{i}")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    common = ["--federation", str(fed.root), "--port", str(port), "--params", str(args.params)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    srv = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--role",
            "server",
            "--sites",
            str(args.sites),
            "--rounds",
            str(args.rounds),
            *common,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert srv.stdout is not None
    assert srv.stdout.readline().strip() == "ready"
    sites = [
        subprocess.Popen(
            [sys.executable, __file__, "--role", "site", "--index", str(i), *common],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(args.sites)
    ]
    out = json.loads(srv.stdout.read().strip().splitlines()[-1])
    srv.wait()
    site_peaks = [json.loads(s.communicate()[0].strip().splitlines()[-1])["peak_mb"] for s in sites]
    wall = time.perf_counter() - started
    rounds = out["rounds"]
    moved = sum(r["bytes_down"] + r["bytes_up"] for r in rounds)
    grpc_seconds = sum(r["seconds"] for r in rounds)
    tls_seconds = bare_tls(fed.root, moved)
    model_mb = 4 * args.params / MB
    return {
        "sites": args.sites,
        "params": args.params,
        "rounds": args.rounds,
        "model_mb": model_mb,
        "round_seconds": [r["seconds"] for r in rounds],
        "bytes_moved": moved,
        "bytes_per_round": moved / len(rounds),
        "grpc_mb_per_s": moved / MB / grpc_seconds,
        "bare_tls_mb_per_s": moved / MB / tls_seconds,
        "ratio": (moved / grpc_seconds) / (moved / tls_seconds),
        "server_peak_mb": out["peak_mb"],
        "site_peak_mb_max": max(site_peaks),
        "site_peak_mb_mean": sum(site_peaks) / len(site_peaks),
        "wall_seconds": wall,
        "cpus": os.cpu_count(),
    }


def markdown(result: dict[str, object], command: str) -> str:
    r = result
    times = ", ".join(f"{t:.2f}" for t in r["round_seconds"])  # type: ignore[attr-defined]
    return f"""# Deployment benchmark: gRPC with mutual TLS on loopback

Made by `{command}` on a machine with {r["cpus"]} CPUs (sites, server and the TLS sink share
them). Every site is its own process; its program answers at once, so this measures the
transport: per round each of {r["sites"]} sites receives the {r["params"]:,}-parameter model
({r["model_mb"]:.1f} MB of float32) and sends an update of the same size.

| measure | value |
|---|---|
| seconds per round | {times} |
| bytes moved per round (both ways, gRPC frames) | {r["bytes_per_round"] / MB:,.1f} MB |
| effective gRPC throughput | {r["grpc_mb_per_s"]:,.0f} MB/s |
| bare TLS socket, same bytes, same machine | {r["bare_tls_mb_per_s"]:,.0f} MB/s |
| gRPC / bare TLS | {r["ratio"]:.2f} (target: at least 0.5) |
| server peak resident memory | {r["server_peak_mb"]:,.0f} MB |
| site peak resident memory, max | {r["site_peak_mb_max"]:,.0f} MB |
| site peak resident memory, mean | {r["site_peak_mb_mean"]:,.0f} MB |

The server folds each update into a float64 running mean as it arrives and drops it
(`GrpcExecutor.run_each`, the engine's streamed rounds); it reassembles at most two sites' replies
at once (`ServiceConfig.uploads`), and HTTP/2 windows of one chunk per stream bound what waits in
gRPC's buffers. Its peak is the model, the float64 sum (two model copies), the replies being
reassembled or folded, and a window per site, rather than one update per site. A site holds the
model it received, its update and one chunk in flight.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", default="drive", choices=["drive", "server", "site", "sink"])
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--federation")
    parser.add_argument("--port", type=int)
    parser.add_argument("--index", type=int)
    parser.add_argument("--total", type=int)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.role != "drive":
        {"server": server, "site": site, "sink": sink}[args.role](args)
        return
    result = drive(args)
    command = "python bench/deploy_bench.py " + " ".join(sys.argv[1:])
    print(json.dumps(result, indent=2))
    if not args.no_write:
        (BENCH / "deploy_results.json").write_text(json.dumps(result, indent=2) + "\n")
        (ROOT / "docs" / "deploy-benchmark.md").write_text(markdown(result, command.strip()))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
