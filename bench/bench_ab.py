"""Compare teletap variants with one plain mitmdump in the same run, slice by slice.

    python bench/bench_ab.py [--case "large POST (200 KB)"] [--rounds 16] [--slice 2]
                             [--baseline mitmdump|mitmdump-indexed] VARIANT [VARIANT ...]

A VARIANT is NAME, or NAME=SPEC where SPEC is a comma-separated list of
    set:OPTION=VALUE   run that teletap with --set OPTION=VALUE
    tree:PATH          run teletap from another checkout (PATH holds its addons/), e.g. a git worktree:
                       git worktree add /tmp/before HEAD~1 && python bench/bench_ab.py before=tree:/tmp/before now

bench_proxy.py restarts each proxy for every round, so a round measures a fresh proxy and an empty database,
and rounds minutes apart see a different machine. Here mitmdump and every variant start once and stay up,
their databases growing as in a long capture, and the case's load (wrk, or for the HTTPS cases the asyncio
TLS client of bench_proxy.py) drives each in turn for a short slice, the order rotating every round; after
a teletap's slice the next one waits until its ingest worker is idle, so no slice runs next to another
proxy's left-over work. A variant's figure for a round is its requests/s over mitmdump's in the same round;
the table gives the ratio of the sums with its 95 % interval (bench_proxy.ratio_interval), the median and
the interquartile range of those ratios, and the proxy process's CPU per request over mitmdump's. The
interval covers this run's spread only: runs an hour apart on the reference VM can disagree beyond it.
With ``--baseline mitmdump-indexed`` the baseline is mitmdump with teletap's event dispatch
(mitmdump_indexed.py): the ratio then leaves out what that dispatch saves and shows what teletap's own work
costs. Use it to decide between two versions or settings: on the 2-vCPU reference VM the spread between
rounds (machine noise) hides differences of a few per cent in bench_proxy.py's means, while here both sides
of a comparison see the same seconds.

Traffic stays on 127.0.0.1 (wrk or the TLS client, and nginx, as in bench_proxy.py); each slice's databases
hold what was recorded so far, so a long run of 200 KB POSTs needs a few GB in the temporary directory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_proxy
from loadgen import free_port


def parse_variant(text: str, links: Path) -> tuple[str, list[str], dict[str, str]]:
    """NAME[=SPEC] → (name, teletap --set options, environment)."""
    name, _, spec = text.partition("=")
    options: list[str] = []
    env = dict(os.environ)
    for part in filter(None, spec.split(",")):
        kind, _, value = part.partition(":")
        if kind == "set" and "=" in value:
            options.append(value)
        elif kind == "tree":
            addons = Path(value).expanduser().resolve() / "addons"
            if not (addons / "__init__.py").exists():
                raise SystemExit(f"{name}: {addons} is not a teletap checkout's addons/ folder")
            # The package is installed as "teletap" from this checkout; a folder earlier on the path with
            # "teletap" pointing at the other checkout's addons/ wins for that proxy and its ingest process.
            folder = links / name
            folder.mkdir(parents=True)
            (folder / "teletap").symlink_to(addons)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(folder), env.get("PYTHONPATH"))))
        else:
            raise SystemExit(f"{name}: cannot read {part!r} (set:OPTION=VALUE or tree:PATH)")
    if not name.isidentifier():
        raise SystemExit(f"variant name {name!r}: use letters, digits and _")
    return name, options, env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", metavar="VARIANT")
    parser.add_argument("--case", default="large POST (200 KB)", choices=list(bench_proxy.CASES))
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--slice", type=int, default=2, help="seconds of load per proxy and round")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--baseline", choices=["mitmdump", "mitmdump-indexed"], default="mitmdump",
                        help="what every variant is compared with: plain mitmdump, or mitmdump with teletap's "
                             "event dispatch (mitmdump_indexed.py), which leaves teletap's own cost")
    args = parser.parse_args()
    if bench_proxy.default_client() != "wrk":
        sys.exit("bench_ab needs wrk and nginx (Debian packages wrk, nginx-light)")
    if args.rounds < 2:
        sys.exit("--rounds: at least 2")
    body, ctype, tls = bench_proxy.CASES[args.case]
    with tempfile.TemporaryDirectory(prefix="teletap-bench-ab-") as tmp:
        workdir = Path(tmp)
        variants = [parse_variant(v, workdir / "trees") for v in args.variants]
        base = args.baseline.replace("-", "_")
        names = [base, *(name for name, _, _ in variants)]
        if len(set(names)) != len(names):
            sys.exit(f"variant names must differ from each other and from {base}")
        plain_port, tls_port = free_port(), free_port()
        nginx = bench_proxy.start_nginx(plain_port, workdir, tls_port)
        upstream = tls_port if tls else plain_port

        def run_slice(name: str, seconds: float, warm_up: bool) -> bench_proxy.LoadResult:
            return bench_proxy.load(ports[name], upstream, body=body, content_type=ctype, tls=tls, client="wrk",
                                    connections=args.connections, seconds=seconds, workdir=workdir,
                                    warm_up=warm_up)

        procs: dict[str, subprocess.Popen] = {}
        ports: dict[str, int] = {}
        rps: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        try:
            ports[base] = free_port()
            procs[base] = bench_proxy.start_proxy(args.baseline, ports[base], workdir)
            for name, options, env in variants:
                ports[name] = free_port()
                procs[name] = bench_proxy.start_proxy("teletap", ports[name], workdir, options, env=env)
            for name in names:
                run_slice(name, 2, warm_up=True)  # warm-up, not counted
            client = "asyncio TLS client" if tls else "wrk"
            print(f"{args.case}, {client} -c{args.connections}, {args.rounds} rounds of {args.slice} s slices; "
                  f"req/s per round:")
            print("round " + " ".join(f"{n:>10}" for n in names))
            for i in range(args.rounds):
                shift = i % len(names)
                for name in names[shift:] + names[:shift]:
                    pid = procs[name].pid
                    before = bench_proxy._cpu_seconds([pid])
                    result = run_slice(name, args.slice, warm_up=False)
                    rps[name].append(result.rps)
                    cpu[name].append((bench_proxy._cpu_seconds([pid]) - before) / max(1, result.requests))
                    bench_proxy.wait_ingest_idle(pid)
                print(f"{i:5d} " + " ".join(f"{rps[n][-1]:10.0f}" for n in names), flush=True)
        finally:
            for name, proc in procs.items():
                stderr = bench_proxy.stop_proxy(proc)
                for line in bench_proxy.teletap_notes(stderr) if name != base else ():
                    print(f"  {name}: {line}")
            nginx.terminate()
            nginx.wait(10)
    print(f"\n{'variant':<12} {'ratio of sums':>13} {'95 % interval':>13} {'median':>7} {'IQR':>13} "
          f"{'CPU/request':>12}   (over {base})")
    base_cpu = statistics.median(cpu[base])
    for name in names[1:]:
        ratios = [t / m for t, m in zip(rps[name], rps[base], strict=True) if m]
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        low, high = bench_proxy.ratio_interval(rps[name], rps[base])
        print(f"{name:<12} {sum(rps[name]) / sum(rps[base]):13.3f} {low:6.3f}–{high:.3f} "
              f"{statistics.median(ratios):7.3f} {q1:6.3f}–{q3:.3f} {statistics.median(cpu[name]) / base_cpu:12.3f}")


if __name__ == "__main__":
    main()
