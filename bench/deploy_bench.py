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
import statistics
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


def _cpu() -> float:
    """CPU seconds this process has used, user and kernel."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _layout(params: int):  # type: ignore[no-untyped-def]
    from fedloom.linear import LinearRegression

    return LinearRegression(params - 1).layout  # the engine's model: weight and bias


def _probe(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The memory probe, if asked for; first glibc's malloc set, as ``fedloom server`` sets it
    at its start, before any other thread (the probe's) makes an arena."""
    if args.malloc_arenas:
        from fedloom.transport.allocator import tune_malloc

        tune_malloc(args.malloc_arenas)
    if not args.probe:
        return None
    from memory_probe import Probe

    return Probe(trace=args.probe == "trace")


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
        **({"uploads": args.uploads} if args.uploads else {}),
        **({"chunk_bytes": args.chunk_bytes} if args.chunk_bytes else {}),
    )
    credentials = ServerCredentials(
        fed.cert("server").read_bytes(), fed.key("server").read_bytes(), fed.ca_cert.read_bytes()
    )
    params = np.random.default_rng(0).standard_normal(args.params).astype(np.float32)
    probe = _probe(args)
    with GrpcExecutor(
        config, address=f"127.0.0.1:{args.port}", credentials=credentials, deadline=600
    ) as executor:
        print("ready", flush=True)
        executor.wait_for_sites(len(sites))
        cpu = _cpu()
        rounds = []
        for r in range(args.rounds):
            before = executor.traffic()
            started = time.perf_counter()
            tasks = [TrainTask(i, Broadcast(r, params, seed=i)) for i in range(len(sites))]
            fold = WeightedMean().fold(args.params)

            def consume(position: int, reply: object, fold: Fold = fold) -> None:
                assert isinstance(reply, ClientResult), reply
                if probe is not None:
                    probe.phase("fold")
                fold.add(reply.update, reply.num_examples)
                if probe is not None:
                    probe.phase("send and receive")

            if probe is not None:
                probe.phase("send and receive")
            executor.run_each(tasks, consume)  # as the engine's streamed rounds do
            if probe is not None:
                probe.phase("result")
            params = fold.result()
            seconds = time.perf_counter() - started
            down, up = (a - b for a, b in zip(executor.traffic(), before, strict=True))
            rounds.append({"seconds": seconds, "bytes_down": down, "bytes_up": up})
        cpu = _cpu() - cpu
    _finish(rounds, probe, cpu)


def _finish(rounds: list[dict[str, float]], probe: object, cpu: float | None = None) -> None:
    out: dict[str, object] = {"rounds": rounds, "peak_mb": _peak_mb(), "cpu_seconds": cpu}
    if probe is not None:
        out["probe"] = probe.report()  # type: ignore[attr-defined]
    print(json.dumps(out), flush=True)


def engine_server(args: argparse.Namespace) -> None:
    """The real server: ``fl.serve`` (the engine's streamed rounds, the run store with a
    checkpoint every round, the audit trail's hashes, federated evaluation) on a linear model of
    ``--params`` parameters, FedAvg over every site each round."""
    import fedloom as fl
    from fedloom.deploy import ServerOptions
    from fedloom.linear import LinearRegression
    from fedloom.pki import Federation, Verifier
    from fedloom.store import RunStore
    from fedloom.transport import ServerCredentials

    probe = _probe(args)
    if probe is not None:
        _phases(probe)
    fed = Federation(Path(args.federation))
    sites = tuple(f"site-{i}" for i in range(args.sites))
    options = ServerOptions(
        address=f"127.0.0.1:{args.port}",
        sites=sites,
        credentials=ServerCredentials(
            fed.cert("server").read_bytes(),
            fed.key("server").read_bytes(),
            fed.ca_cert.read_bytes(),
        ),
        verifier=Verifier(fed.root),
        deadline=600,
        heartbeat=60.0,
        **({"uploads": args.uploads} if args.uploads else {}),
        **({"chunk_bytes": args.chunk_bytes} if args.chunk_bytes else {}),
        malloc_arenas=args.malloc_arenas or None,
    )
    algorithm = fl.fedavg(fl.local_sgd(LinearRegression(args.params - 1), lr=0.1))
    rounds: list[dict[str, float]] = []

    def on_round(record, state) -> None:  # type: ignore[no-untyped-def]
        m = record.metrics
        rounds.append(
            {
                "seconds": record.seconds,
                "bytes_down": m["wire_bytes_down"],
                "bytes_up": m["wire_bytes_up"],
            }
        )

    with RunStore.open(Path(args.federation).parent / "runs.db") as store:
        fl.serve(  # type: ignore[operator]
            algorithm, store, options, rounds=args.rounds, cohort=args.sites, seed=0,
            on_round=on_round, on_listening=lambda port, run: print("ready", flush=True),
        )  # fmt: skip
    _finish(rounds, probe)


def _phases(probe) -> None:  # type: ignore[no-untyped-def]
    """Label the real server's phases for the probe by wrapping the functions that run them
    (measurement only: the wrapped functions run unchanged)."""
    import fedloom.auditing as auditing
    import fedloom.engine.rounds as rounds
    import fedloom.reducers as reducers
    import fedloom.store.runstore as runstore
    from fedloom.transport import GrpcExecutor

    def labelled(owner: object, name: str, phase: str) -> None:
        original = getattr(owner, name)

        def wrapper(*a: object, **k: object) -> object:
            with probe.during(phase):
                return original(*a, **k)

        setattr(owner, name, wrapper)

    labelled(GrpcExecutor, "run_each", "send and receive")
    labelled(GrpcExecutor, "run", "evaluate (federated)")
    labelled(reducers.Fold, "add", "fold")
    labelled(rounds, "check_reply", "check reply")
    labelled(rounds, "apply_results", "apply (result, optimizer, norm)")
    labelled(rounds, "broadcast_models", "broadcast models")
    labelled(runstore.RunStore, "record_round", "store (checkpoint)")
    labelled(auditing.RunAuditor, "round", "audit")


def site(args: argparse.Namespace) -> None:
    from fedloom.core.messages import Broadcast, ClientResult
    from fedloom.engine.tasks import Evaluation
    from fedloom.pki import Federation
    from fedloom.transport import Site, SiteCredentials

    class Echo:
        def train(self, broadcast: Broadcast) -> ClientResult:
            return ClientResult(broadcast.params, 1)

        def evaluate(self, params: object) -> Evaluation:
            return Evaluation(1, {"loss": 0.0})

    if args.malloc_arenas:  # as `fedloom client` does, before gRPC's threads start
        from fedloom.transport.allocator import tune_malloc

        tune_malloc(args.malloc_arenas)
    fed = Federation(Path(args.federation))
    name = f"site-{args.index}"
    joined: list[float] = []

    def prepare(_: object) -> Echo:  # at the server's Welcome, before the first task
        joined.append(_cpu())
        return Echo()

    credentials = SiteCredentials(
        fed.cert(name).read_bytes(), fed.key(name).read_bytes(), fed.ca_cert.read_bytes()
    )
    Site(
        target=f"127.0.0.1:{args.port}",
        name=name,
        layout=_layout(args.params),
        prepare=prepare,
        credentials=credentials,
    ).run()
    print(json.dumps({"peak_mb": _peak_mb(), "cpu_seconds": _cpu() - joined[0]}), flush=True)


def bare_tls(federation: Path, total: int, chunk: int = MB) -> tuple[float, float]:
    """Seconds to push ``total`` bytes through one TLS socket from this process to a child, and
    the CPU seconds both ends used for it."""
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
        started, cpu = time.perf_counter(), _cpu()
        sent = 0
        while sent < total:
            tls.sendall(payload[: min(chunk, total - sent)])
            sent += min(chunk, total - sent)
        tls.recv(1)  # the sink's acknowledgement: everything arrived
        seconds, cpu = time.perf_counter() - started, _cpu() - cpu
    out, _ = receiver.communicate()
    listener.close()
    return seconds, cpu + json.loads(out)["cpu_seconds"]


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
        got, cpu = 0, _cpu()
        while got < args.total:
            n = tls.recv_into(buffer)
            if n == 0:
                break
            got += n
        tls.sendall(b"k")
        print(json.dumps({"cpu_seconds": _cpu() - cpu}), flush=True)


def drive(args: argparse.Namespace, *, engine: bool, probe_mode: str | None) -> dict[str, object]:
    """One measurement: a server (``engine``: the real one, ``fl.serve``) and its sites."""
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
    role = "engine" if engine else "server"
    probe = ["--probe", probe_mode] if probe_mode else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    srv = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--role",
            role,
            *probe,
            *(["--uploads", str(args.uploads)] if args.uploads else []),
            *(["--chunk-bytes", str(args.chunk_bytes)] if args.chunk_bytes else []),
            "--malloc-arenas",
            str(args.malloc_arenas),
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
            [
                sys.executable,
                __file__,
                "--role",
                "site",
                "--index",
                str(i),
                "--malloc-arenas",
                str(args.malloc_arenas),
                *common,
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(args.sites)
    ]
    out = json.loads(srv.stdout.read().strip().splitlines()[-1])
    srv.wait()
    site_reports = [json.loads(s.communicate()[0].strip().splitlines()[-1]) for s in sites]
    site_peaks = [report["peak_mb"] for report in site_reports]
    wall = time.perf_counter() - started
    rounds = out["rounds"]
    moved = sum(r["bytes_down"] + r["bytes_up"] for r in rounds)
    grpc_seconds = sum(r["seconds"] for r in rounds)
    # The machine is shared and noisy: the median round against the median of three bare TLS
    # runs (the first round also pays the sites' first touches of their buffers).
    round_rates = [(r["bytes_down"] + r["bytes_up"]) / MB / r["seconds"] for r in rounds]
    tls_runs = [] if probe_mode else [bare_tls(fed.root, moved) for _ in range(3)]
    tls_rates = [moved / MB / seconds for seconds, _ in tls_runs]
    grpc_rate = statistics.median(round_rates)
    tls_rate = statistics.median(tls_rates) if tls_rates else float("nan")
    # CPU per MB moved, all processes together (on a machine with fewer cores than processes,
    # throughput follows it): the server over its rounds, each site from its Welcome to its end.
    grpc_cpu = (
        None
        if out["cpu_seconds"] is None
        else out["cpu_seconds"] + sum(report["cpu_seconds"] for report in site_reports)
    )
    tls_cpu = statistics.median(cpu for _, cpu in tls_runs) if tls_runs else float("nan")
    model_mb = 4 * args.params / MB
    return {
        "sites": args.sites,
        "params": args.params,
        "rounds": args.rounds,
        "model_mb": model_mb,
        "round_seconds": [r["seconds"] for r in rounds],
        "bytes_moved": moved,
        "bytes_per_round": moved / len(rounds),
        "grpc_mb_per_s": grpc_rate,
        "grpc_mb_per_s_all_rounds": moved / MB / grpc_seconds,
        "bare_tls_mb_per_s": tls_rate,
        "bare_tls_mb_per_s_runs": tls_rates,
        "ratio": grpc_rate / tls_rate,
        "grpc_cpu_ms_per_mb": None if grpc_cpu is None else 1000 * grpc_cpu / (moved / MB),
        "server_cpu_ms_per_mb": None
        if out["cpu_seconds"] is None
        else 1000 * out["cpu_seconds"] / (moved / MB),
        "bare_tls_cpu_ms_per_mb": 1000 * tls_cpu / (moved / MB),
        "server_peak_mb": out["peak_mb"],
        "site_peak_mb_max": max(site_peaks),
        "site_peak_mb_mean": sum(site_peaks) / len(site_peaks),
        "wall_seconds": wall,
        "cpus": os.cpu_count(),
        "server": "fl.serve" if engine else "GrpcExecutor.run_each",
        "malloc_arenas": args.malloc_arenas,
        **({"probe": out["probe"]} if "probe" in out else {}),
    }


PHASES = (
    ("broadcast models", "choosing what each site is sent"),
    ("send and receive", "sending the model to every site, reassembling replies"),
    ("check reply", "checking a reply whole (shape, finite, example count)"),
    ("fold", "folding an update into the float64 sum"),
    ("apply (result, optimizer, norm)", "the mean, the server optimizer, the update's norm"),
    ("evaluate (federated)", "sending the model to every site to evaluate"),
    ("audit", "hashing the new model into the audit trail"),
    ("store (checkpoint)", "writing the round and its checkpoint to the run store"),
    ("other", "everything else (between the phases above)"),
)


def markdown(result: dict[str, object], command: str) -> str:
    r = result
    times = ", ".join(f"{t:.2f}" for t in r["round_seconds"])  # type: ignore[attr-defined]
    real = r["real_server"]
    assert isinstance(real, dict)
    peaks = real["probe"]["rss_peak_mb_by_phase"]
    phases = "\n".join(
        f"| {name}: {what} | {peaks[name]:,.0f} MB |" for name, what in PHASES if name in peaks
    )
    count = r.get("malloc_arenas")
    arenas = (
        "glibc's malloc as it is"
        if not count
        else "one malloc arena"
        if count == 1
        else f"at most {count} malloc arenas"
    )
    if count:
        arenas += " and chunks kept on the heap, in the server and in every site"
    real_times = ", ".join(f"{t:.2f}" for t in real["round_seconds"])
    runs = ", ".join(f"{t:,.0f}" for t in r["bare_tls_mb_per_s_runs"])  # type: ignore[attr-defined]
    tls = f"{r['bare_tls_mb_per_s']:,.0f} MB/s (runs: {runs})"
    cpu = f"{r['grpc_cpu_ms_per_mb']:.2f} ms (the server {r['server_cpu_ms_per_mb']:.2f})"
    return f"""# Deployment benchmark: gRPC with mutual TLS on loopback

Made by `{command}` on a machine with {r["cpus"]} CPUs (sites, server and the TLS sink share
them). Every site is its own process; its program answers at once, so this measures the
transport: per round each of {r["sites"]} sites receives the {r["params"]:,}-parameter model
({r["model_mb"]:.1f} MB of float32) and sends an update of the same size.

## The transport

The server is `GrpcExecutor.run_each` with a float64 running mean, as the engine's streamed rounds
drive it, with {arenas} (`--malloc-arenas` of `fedloom server` and `fedloom client`). CPU
is each process's own (`getrusage`, user and kernel): the server's over its rounds, each site's
from the server's Welcome to its exit, the bare socket's sender and receiver over the
transfer. With more processes than CPUs, throughput follows it.

| measure | value |
|---|---|
| seconds per round | {times} |
| bytes moved per round (both ways, gRPC frames) | {r["bytes_per_round"] / MB:,.1f} MB |
| effective gRPC throughput, median round | {r["grpc_mb_per_s"]:,.0f} MB/s |
| effective gRPC throughput, all rounds together | {r["grpc_mb_per_s_all_rounds"]:,.0f} MB/s |
| bare TLS socket, same bytes, same machine: median of 3 runs | {tls} |
| gRPC / bare TLS (medians) | {r["ratio"]:.2f} (target: at least 0.5) |
| CPU per MB moved, server and sites together | {cpu} |
| CPU per MB moved, bare TLS, both ends (median run) | {r["bare_tls_cpu_ms_per_mb"]:.2f} ms |
| server peak resident memory | {r["server_peak_mb"]:,.0f} MB |
| site peak resident memory, max | {r["site_peak_mb_max"]:,.0f} MB |
| site peak resident memory, mean | {r["site_peak_mb_mean"]:,.0f} MB |

## The real server

The same sites and model served by `fl.serve` (FedAvg on a linear model of
{r["params"]:,} parameters: the engine's streamed rounds with every reply checked whole, the audit
trail's hashes, federated evaluation, and a checkpoint in the run store every round), its
resident memory read every 3 ms (`bench/memory_probe.py`) and kept at its highest in each phase.
Seconds per round: {real_times}.

| phase | peak resident memory |
|---|---|
{phases}
| **the whole run** | **{real["server_peak_mb"]:,.0f} MB** |

The server holds the model, the float64 sum (two model copies) and at most two replies
(`ServiceConfig.uploads`: a reply keeps its slot from reassembly until the engine has folded it
in, so the others wait at their sites); the rest is gRPC's and OpenSSL's native buffers (the
chunks in flight to and from every site, in one malloc arena: `ServerOptions.malloc_arenas`) and
the interpreter with its libraries. What each part is, measured, is in
[deployment.md](deployment.md#memory). A site holds the model it received, its update and one
chunk in flight.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--role", default="drive", choices=["drive", "server", "engine", "site", "sink"]
    )
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--federation")
    parser.add_argument("--port", type=int)
    parser.add_argument("--index", type=int)
    parser.add_argument("--total", type=int)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--uploads", type=int, help="the server's ServiceConfig.uploads (default: its own)"
    )
    parser.add_argument(
        "--chunk-bytes",
        type=int,
        help="the server's ServiceConfig.chunk_bytes, which is also its HTTP/2 window per stream "
        "(default: its own, 1 MiB)",
    )
    parser.add_argument(
        "--malloc-arenas",
        type=int,
        default=1,
        help="glibc malloc arenas the server and each site may use, with chunks kept on the heap "
        "(ServerOptions.malloc_arenas, fedloom client --malloc-arenas; 0: leave the allocator as "
        "it is)",
    )
    parser.add_argument(
        "--engine", action="store_true", help="serve with the real server (fl.serve), not run_each"
    )
    parser.add_argument(
        "--probe",
        choices=["rss", "trace"],
        help="report the server's resident memory by phase (rss), and Python's allocations at "
        "their peak (trace); implies --no-write",
    )
    args = parser.parse_args()
    if args.role != "drive":
        roles = {"server": server, "engine": engine_server, "site": site, "sink": sink}
        roles[args.role](args)
        return
    command = "python bench/deploy_bench.py " + " ".join(sys.argv[1:])
    if args.probe:
        result = drive(args, engine=args.engine, probe_mode=args.probe)
        print(json.dumps(result, indent=2))
        return
    result = drive(args, engine=False, probe_mode=None)
    real = drive(args, engine=True, probe_mode="rss")  # the real server, memory by phase
    result["real_server"] = {
        key: real[key] for key in ("server_peak_mb", "round_seconds", "site_peak_mb_max", "probe")
    }
    print(json.dumps(result, indent=2))
    if not args.no_write:
        (BENCH / "deploy_results.json").write_text(json.dumps(result, indent=2) + "\n")
        (ROOT / "docs" / "deploy-benchmark.md").write_text(markdown(result, command.strip()))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
