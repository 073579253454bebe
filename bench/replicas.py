"""The load and the verdict of `make replicas-smoke` (scripts/replicas_smoke.sh).

`load`: an open-loop load (bench/loadgen.py) of distinct support sets at a fixed rate, each
request with its own X-Request-ID; writes one JSON line per request (due and settled wall-clock
times, status, the X-Served-By header the proxy adds, the answer's model_version). The smoke
runs it in a container on the compose network (the api image: Python and uvloop).
`report`: reads what the smoke left in its folder (the load's lines, HAProxy's log, the events,
the containers' addresses, the CPU counters) and prints the summary tables; exits 1 when a
target is missed. Standard library only, so the host's python3 runs it.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RECOMMEND = "/v1/recommend"
# The proxy-cost target: the proxy's CPU per request against the replica's own (direct).
PROXY_COST_TARGET = 0.10
# Answers settled this long after the reload's 200 must all name the new version.
RELOAD_GRACE_SECONDS = 1.0
# HAProxy's log-format (docker/haproxy/haproxy.cfg): the fields the report reads.
HAPROXY_LINE = re.compile(
    r"\[(?P<accepted>[^\]]+)\] \S+ (?P<backend>[^/\s]+)/(?P<slot>\S+) (?P<address>\S+) "
    r"(?P<timers>\S+) (?P<status>-?\d+) \S+ (?P<termination>\S+) "
    r"\d+/\d+/\d+/\d+/(?P<retries>\+?\d+) \S+ \{(?P<request_id>[^}]*)\}"
)
# `docker compose logs --timestamps api`: "api-2  | 2026-12-02T06:59:39.123456789Z message"
API_LOG_LINE = re.compile(r"(?P<name>\S+)\s+\| (?P<stamp>\S+)Z (?P<message>.*)")


# ----------------------------------------------------------------------------- load


def support_sets(items: list[str], *, count: int, seed: int) -> list[list[dict[str, Any]]]:
    """`count` support sets of 10-20 distinct items, at least one liked; distinct from each
    other (so every request is a cache miss somewhere)."""
    generator = random.Random(seed)
    seen: set[tuple[str, ...]] = set()
    supports: list[list[dict[str, Any]]] = []
    while len(supports) < count:
        chosen = generator.sample(items, generator.randint(10, min(20, len(items))))
        key = tuple(sorted(chosen))
        if key in seen:
            continue
        seen.add(key)
        ratings = [generator.randint(0, 1) for _ in chosen]
        ratings[0] = 1
        supports.append(
            [
                {"item_id": item, "rating": rating}
                for item, rating in zip(chosen, ratings, strict=True)
            ]
        )
    return supports


def parse_answer(response: bytes) -> tuple[str | None, str | None]:
    """(X-Served-By, model_version) of a raw HTTP response; None where absent."""
    head, _, body = response.partition(b"\r\n\r\n")
    served_by = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-served-by":
            served_by = value.strip().decode("ascii", "replace")
    version = None
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("model_version"), str):
        version = parsed["model_version"]
    return served_by, version


def command_load(args: argparse.Namespace) -> int:
    import loadgen  # bench/loadgen.py, beside this file

    items = json.loads(Path(args.items).read_text())
    count = round(args.rate * args.duration)
    payloads = [
        loadgen.post_bytes(
            host=args.host,
            path=RECOMMEND,
            body={"support": support, "k": 10},
            headers={"X-Request-ID": f"{args.name}-{index:06d}"},
        )
        for index, support in enumerate(
            support_sets(items, count=count, seed=zlib.crc32((args.repeat or args.name).encode()))
        )
    ]
    records: list[tuple[int, float, float, int, bytes]] = []

    def record(index: int, due: float, settled: float, status: int, response: bytes) -> None:
        records.append((index, due, settled, status, response))

    wall, perf = time.time(), time.perf_counter()
    sys.stdout.write(f"started {wall:.6f}\n")  # the smoke times its events from here
    sys.stdout.flush()
    outcome = loadgen.drive(
        host=args.host, port=args.port, payloads=payloads, rate=args.rate, record=record
    )
    with open(args.out, "w", encoding="utf-8") as out:
        out.write(json.dumps({"sent": count, "started": wall, "rate": args.rate}) + "\n")
        for index, due, settled, status, response in sorted(records):
            served_by, version = parse_answer(response)
            line = {
                "request_id": f"{args.name}-{index:06d}",
                "due": round(wall + due - perf, 6),
                "settled": round(wall + settled - perf, 6),
                "status": status,
                "served_by": served_by,
                "version": version,
            }
            out.write(json.dumps(line) + "\n")
    latencies = sorted(outcome.latencies)
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000 if latencies else float("nan")
    sys.stdout.write(
        f"{args.name}: sent {count}, 200: {outcome.statuses.get(200, 0)}, errors "
        f"{outcome.errors} ({outcome.last_error}), p99 {p99:.1f} ms\n"
    )
    return 0


# ----------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Answer:
    """What the load generator saw of one request (wall-clock seconds)."""

    request_id: str
    due: float
    settled: float
    status: int  # 0: the connection failed or was dropped
    served_by: str | None
    version: str | None


@dataclass(frozen=True)
class ProxyLine:
    """What HAProxy logged of one request: the replica that answered, when it had answered
    (wall-clock seconds), the retries (`+` in the log: redispatched) and how it ended."""

    slot: str
    address: str
    answered_at: float
    status: int
    termination: str
    retries: int


def read_load(path: Path) -> tuple[dict[str, Any], list[Answer]]:
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    return header, [Answer(**json.loads(line)) for line in lines[1:]]


def utc_seconds(text: str, layout: str) -> float:
    return datetime.strptime(text, layout).replace(tzinfo=UTC).timestamp()


def read_proxy_log(path: Path) -> dict[str, ProxyLine]:
    """Request lines by X-Request-ID (the containers keep UTC, as HAProxy's dates are read)."""
    requests: dict[str, ProxyLine] = {}
    for raw in path.read_text(errors="replace").splitlines():
        match = HAPROXY_LINE.search(raw)
        if match is None:
            continue
        received = utc_seconds(match["accepted"], "%d/%b/%Y:%H:%M:%S.%f")
        active_ms = int(match["timers"].rsplit("/", 1)[1])
        requests[match["request_id"]] = ProxyLine(
            slot=match["slot"],
            address=match["address"].rsplit(":", 1)[0],
            answered_at=received + max(active_ms, 0) / 1000,
            status=int(match["status"]),
            termination=match["termination"],
            retries=int(match["retries"].lstrip("+")),
        )
    return requests


def read_api_log(path: Path, version: str) -> dict[str, dict[str, float]]:
    """Per replica, when it heard of `version` and when it began serving it, from
    `docker compose logs --timestamps api` (app/broadcast.py and app/models_service.py log
    both)."""
    times: dict[str, dict[str, float]] = {}
    for raw in path.read_text(errors="replace").splitlines():
        match = API_LOG_LINE.match(raw)
        if match is None:
            continue
        message = match["message"]
        if f"model {version} announced" in message:
            what = "heard"
        elif f"serving model {version} " in message:
            what = "serving"
        else:
            continue
        stamp = match["stamp"][:26]  # microseconds
        times.setdefault(match["name"], {}).setdefault(
            what, utc_seconds(stamp, "%Y-%m-%dT%H:%M:%S.%f")
        )
    return times


def read_events(path: Path) -> dict[str, tuple[float, list[str]]]:
    """`NAME TIME VALUE...` lines: an event, its wall-clock time and its details."""
    events: dict[str, tuple[float, list[str]]] = {}
    for line in path.read_text().splitlines():
        name, at, *values = line.split()
        events[name] = (float(at), values)
    return events


class Addresses:
    """Which replica had an address when: `NAME ADDRESS TIME` lines, written before the kill,
    after the scale-up and at the end (Docker gives a restarted container a new address and
    may give its old one to a new container)."""

    def __init__(self, path: Path) -> None:
        self.seen: list[tuple[float, str, str]] = sorted(
            (float(at), address, name)
            for name, address, at in (line.split() for line in path.read_text().splitlines())
        )

    def name(self, address: str, at: float) -> str:
        """The replica that had `address` at `at` (the first one to have it, for earlier)."""
        holders = [(when, name) for when, held, name in self.seen if held == address]
        if not holders:
            return address
        before = [name for when, name in holders if when <= at]
        return before[-1] if before else holders[0][1]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[int(fraction * (len(ordered) - 1))] if ordered else float("nan")


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def chaos_report(folder: Path, failures: list[str]) -> str:
    header, answers = read_load(folder / "chaos.jsonl")
    proxy = read_proxy_log(folder / "haproxy.log")
    events = read_events(folder / "events.txt")
    addresses = Addresses(folder / "addresses.txt")
    started, sent = header["started"], header["sent"]
    ok = [answer for answer in answers if answer.status == 200]
    non_200 = [answer for answer in answers if answer.status not in (0, 200)]
    failed_ids = {answer.request_id for answer in answers if answer.status != 200}
    unanswered = sent - len(answers)
    lost = unanswered + sum(1 for answer in answers if answer.status == 0)

    killed_at, (killed_name, _) = events["kill"]

    def replica(request_id: str) -> str:
        line = proxy.get(request_id)
        if line is None:
            return "(not in the proxy's log)"
        return addresses.name(line.address, line.answered_at)

    # In flight on (or sent to) the killed replica: requests that met it dead and were retried
    # on another replica (HAProxy counts the retries; within 10 s of the kill), and requests
    # that failed there (its address in the log, or unlogged and in flight at the kill).
    retried = [
        request_id
        for request_id, line in proxy.items()
        if line.retries > 0
        and killed_at - 1 <= line.answered_at <= killed_at + 10
        and request_id not in failed_ids
    ]
    failed_on_killed = [
        answer.request_id
        for answer in answers
        if answer.request_id in failed_ids
        and (
            replica(answer.request_id) == killed_name
            if answer.request_id in proxy
            else answer.due <= killed_at <= answer.settled
        )
    ]
    unexpected = len(failed_ids) - len(failed_on_killed) + unanswered
    if unexpected:
        failures.append(
            f"{unexpected} requests failed or went unanswered that were not in flight on the "
            "killed replica"
        )

    reloaded_at, (new_version, old_version) = events["reload"]
    switch = read_api_log(folder / "api.log", new_version)

    def answered_at(answer: Answer) -> float:
        line = proxy.get(answer.request_id)
        return line.answered_at if line is not None else answer.settled

    deadline = reloaded_at + RELOAD_GRACE_SECONDS
    per_replica: dict[str, list[Answer]] = {}
    for answer in ok:
        per_replica.setdefault(replica(answer.request_id), []).append(answer)
    _, running = events["running"]
    replica_rows = []
    for name in sorted(set(per_replica) | set(running)):
        served = per_replica.get(name, [])
        late = [answer for answer in served if answered_at(answer) >= deadline]
        stale = [answer for answer in late if answer.version != new_version]
        last_old = max(
            (answered_at(answer) for answer in served if answer.version == old_version),
            default=None,
        )
        heard = switch.get(name, {})
        replica_rows.append(
            [
                name + (" (killed, restarted)" if name == killed_name else ""),
                len(served),
                len(late),
                len(stale),
                " / ".join(
                    "-" if what not in heard else f"{heard[what] - reloaded_at:+.2f}"
                    for what in ("heard", "serving")
                ),
                "-" if last_old is None else f"{last_old - reloaded_at:+.2f}",
            ]
        )
        if stale:
            failures.append(
                f"{name}: {len(stale)} answers after the reload + {RELOAD_GRACE_SECONDS:g} s "
                f"not on {new_version}"
            )
        if name in running and not late:
            failures.append(f"{name} is running but answered nothing after the reload")

    failure_rows = [
        [
            f"{answer.due - started:+.2f}",
            answer.status or "none",
            replica(answer.request_id),
            proxy[answer.request_id].termination if answer.request_id in proxy else "not logged",
        ]
        for answer in sorted(answers, key=lambda answer: answer.due)
        if answer.status != 200
    ]
    latencies = [(answer.settled - answer.due) * 1000 for answer in ok]
    timeline = [
        [f"{at - started:+.1f}", name, " ".join(values)]
        for name, (at, values) in sorted(events.items(), key=lambda item: item[1][0])
        if name != "running"
    ]
    lines = [
        f"Chaos run: {header['rate']:g} req/s for {sent / header['rate']:.0f} s through the proxy",
        "",
        table(["t (s)", "event", "detail"], timeline),
        "",
        table(
            [
                "sent",
                "answered",
                "200",
                "non-200",
                "lost",
                "in flight on the killed replica",
                "p50 ms",
                "p99 ms",
            ],
            [
                [
                    sent,
                    sent - lost,
                    len(ok),
                    len(non_200),
                    lost,
                    f"{len(retried) + len(failed_on_killed)} ({len(retried)} retried on another "
                    f"replica, {len(failed_on_killed)} failed)",
                    f"{percentile(latencies, 0.5):.1f}",
                    f"{percentile(latencies, 0.99):.1f}",
                ]
            ],
        ),
    ]
    if failure_rows:
        lines += [
            "",
            "Requests that failed (due time from the load's start; HAProxy's termination state):",
            "",
            table(["due (s)", "status", "replica", "termination"], failure_rows),
        ]
    lines += [
        "",
        f"Per replica, times in s from the reload's 200 (t = {reloaded_at - started:+.1f} s); "
        f"an answer's time is when HAProxy had it:",
        "",
        table(
            [
                "replica",
                "answers",
                f"after the 200 + {RELOAD_GRACE_SECONDS:g} s",
                f"of those not on {new_version}",
                f"heard of / serving {new_version}",
                f"last answer on {old_version}",
            ],
            replica_rows,
        ),
    ]
    return "\n".join(lines)


def cost_report(folder: Path, failures: list[str]) -> str:
    """The proxy's cost: the same replica loaded directly and through the proxy at one rate,
    CPU time of each container per answered request (cgroup counters, `cpu.txt`)."""
    rows = []
    per_run: dict[str, list[tuple[float, float, float, float]]] = {
        "direct": [],
        "proxy": [],
        "repeat": [],
    }
    for line in (folder / "cpu.txt").read_text().splitlines():
        run, api_ns, proxy_ns = line.split()
        path, _, _ = run.partition("-")
        header, answers = read_load(folder / f"{run}.jsonl")
        ok = [answer for answer in answers if answer.status == 200]
        if len(ok) != header["sent"]:
            failures.append(f"proxy cost run {run}: {len(ok)} of {header['sent']} answered 200")
        latencies = [(answer.settled - answer.due) * 1000 for answer in ok]
        count = max(len(ok), 1)
        api_ms, proxy_ms = int(api_ns) / 1e6 / count, int(proxy_ns) / 1e6 / count
        per_run[path].append(
            (api_ms, proxy_ms, percentile(latencies, 0.5), percentile(latencies, 0.99))
        )
        rows.append(
            [
                run,
                f"{header['rate']:g}",
                len(ok),
                f"{api_ms:.3f}",
                f"{proxy_ms:.3f}",
                f"{percentile(latencies, 0.5):.1f}",
                f"{percentile(latencies, 0.99):.1f}",
            ]
        )
    direct_api = statistics.median(run[0] for run in per_run["direct"])
    proxied_api = statistics.median(run[0] for run in per_run["proxy"])
    proxy_cpu = statistics.median(run[1] for run in per_run["proxy"])
    cost = proxy_cpu / direct_api
    per_cpu_second = direct_api / (proxied_api + proxy_cpu)
    if cost > PROXY_COST_TARGET:
        failures.append(
            f"the proxy costs {cost:.1%} of a replica's CPU per request (target <= "
            f"{PROXY_COST_TARGET:.0%})"
        )
    return "\n".join(
        [
            "Proxy cost: one replica, loaded directly and through HAProxy in turn",
            "",
            table(
                [
                    "run",
                    "req/s",
                    "answered 200",
                    "api CPU ms/req",
                    "proxy CPU ms/req",
                    "p50 ms",
                    "p99 ms",
                ],
                rows,
            ),
            "",
            f"Medians: api {direct_api:.3f} ms/req direct, {proxied_api:.3f} through the proxy; "
            f"proxy {proxy_cpu:.3f} ms/req = {cost:.1%} of the replica's own CPU per request "
            f"(target <= {PROXY_COST_TARGET:.0%}); requests per CPU-second through the proxy: "
            f"{per_cpu_second:.1%} of direct."
            + (
                f" Repeated support sets (answer memo): api "
                f"{statistics.median(run[0] for run in per_run['repeat']):.3f} ms/req."
                if per_run["repeat"]
                else ""
            ),
        ]
    )


def command_report(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    failures: list[str] = []
    sys.stdout.write(cost_report(folder, failures) + "\n\n" + chaos_report(folder, failures) + "\n")
    for failure in failures:
        sys.stdout.write(f"MISSED: {failure}\n")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    load = commands.add_parser("load", help="open-loop load; one JSON line per request")
    load.add_argument("--host", required=True)
    load.add_argument("--port", type=int, required=True)
    load.add_argument("--rate", type=float, required=True)
    load.add_argument("--duration", type=float, required=True)
    load.add_argument("--items", required=True, help="JSON list of catalog item ids")
    load.add_argument("--name", required=True, help="the run's name: request ids and logs")
    load.add_argument(
        "--repeat", metavar="NAME", help="send the support sets of run NAME again (cache hits)"
    )
    load.add_argument("--out", required=True)
    load.set_defaults(handler=command_load)
    report = commands.add_parser("report", help="the summary tables of a smoke's folder")
    report.add_argument("--dir", required=True)
    report.set_defaults(handler=command_report)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
