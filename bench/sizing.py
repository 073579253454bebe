"""The sizing tables of docs/scaling.md, computed from measured inputs.

Reads bench/sizing_inputs.json (each input: value, unit, where it was measured) and prints the
markdown tables: CPU per request at a hit rate, cores and replicas for 1k / 10k / 100k requests a
second, Redis memory for the task states, the request log's write rate, full-catalog scoring.
`--write docs/scaling.md` replaces the part between the sizing markers; `--check` fails when that
part is stale (tests/test_deploy_static.py runs it). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

INPUTS = Path(__file__).with_name("sizing_inputs.json")
BEGIN = "<!-- sizing:begin (bench/sizing.py --write docs/scaling.md) -->"
END = "<!-- sizing:end -->"
RATES = (1_000, 10_000, 100_000)
HIT_RATES = (0.0, 0.5, 0.9)
SAMPLED = 0.01  # a request-log sampling rate to show the effect of (not a setting today)
RETENTION_DAYS = 30


def load_inputs(path: Path = INPUTS) -> dict[str, dict[str, Any]]:
    data = json.loads(path.read_text())
    return {name: entry for name, entry in data.items() if not name.startswith("_")}


def table(header: list[str], rows: list[list[str]], *, text_columns: int = 1) -> str:
    """A markdown table: the first `text_columns` columns left-aligned, the numbers right."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append(
        "|" + "|".join("---" if i < text_columns else "---:" for i in range(len(header))) + "|"
    )
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def count(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def size(n_bytes: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:,.1f} {unit}"
    return f"{n_bytes / 1e3:,.1f} kB"


def cpu_per_request(inputs: dict[str, dict[str, Any]], hit_rate: float, *, affinity: bool) -> float:
    """Server CPU ms per request when `hit_rate` of the requests repeat a support set seen within
    the TTL. With affinity a repeat reaches the replica that answered it (its answer memo);
    without, it reaches any of many replicas: its task state comes from Redis and the catalog
    is decoded again (exact for one replica in N: memo/N + state (N-1)/N; this is the large-N
    bound)."""
    miss = inputs["cpu_miss_ms"]["value"]
    repeat = inputs["cpu_memo_hit_ms"]["value"] if affinity else inputs["cpu_state_hit_ms"]["value"]
    return float(hit_rate * repeat + (1 - hit_rate) * miss)


def render(inputs: dict[str, dict[str, Any]]) -> str:
    value = {name: entry["value"] for name, entry in inputs.items()}
    utilization = value["target_utilization"]
    sections = []

    sections.append(
        "### Inputs\n\n"
        + table(
            ["input", "value", "unit", "measured"],
            [
                [
                    f"`{name}`",
                    "not measured" if e["value"] is None else f"{e['value']:g}",
                    e["unit"],
                    e["source"],
                ]
                for name, e in inputs.items()
            ],
            text_columns=4,
        )
    )

    rows = []
    for hit_rate in HIT_RATES:
        rows.append(
            [
                f"{hit_rate:.0%}",
                f"{cpu_per_request(inputs, hit_rate, affinity=False):.2f}",
                f"{cpu_per_request(inputs, hit_rate, affinity=True):.2f}",
            ]
        )
    sections.append(
        "### CPU per request\n\n"
        "Hit rate: the share of requests that repeat a support set seen within the TTL. "
        "Any replica: a repeat lands on any of many replicas (HAProxy `leastconn`, a Kubernetes "
        "Service), gets its task state from Redis and decodes the catalog again. Affinity: "
        "repeats of a support set reach the same replica and are answered from its memo.\n\n"
        + table(["hit rate", "ms CPU, any replica", "ms CPU, affinity"], rows)
    )

    rows = []
    proxy_ms = value["cpu_proxy_ms"]
    for rate in RATES:
        for hit_rate in HIT_RATES:
            any_cores = (
                rate * cpu_per_request(inputs, hit_rate, affinity=False) / 1000 / utilization
            )
            sticky_cores = (
                rate * cpu_per_request(inputs, hit_rate, affinity=True) / 1000 / utilization
            )
            proxy = "-" if proxy_ms is None else count(rate * proxy_ms / 1000 / utilization)
            rows.append(
                [
                    f"{rate:,}",
                    f"{hit_rate:.0%}",
                    f"{math.ceil(any_cores):,}",
                    f"{math.ceil(sticky_cores):,}",
                    proxy,
                ]
            )
    sections.append(
        f"### Replicas and cores\n\nOne replica = one `tanp-serve` process = one core, run at "
        f"{utilization:.0%} (the autoscaler's target), so replicas = cores = requests/s x CPU "
        f"per request / {utilization:g}. Proxy cores: HAProxy's CPU per request at the same "
        "utilisation (one HAProxy process uses several cores with `nbthread`).\n\n"
        + table(
            [
                "requests/s",
                "hit rate",
                "replicas (cores), any replica",
                "replicas (cores), affinity",
                "proxy cores",
            ],
            rows,
        )
    )

    if value["cpu_replica_miss_ms"] is not None and value["cpu_replica_memo_hit_ms"] is not None:
        rows = []
        for rate in RATES:
            row = [f"{rate:,}"]
            for hit_rate in (0.0, 0.9):
                ms = (
                    hit_rate * value["cpu_replica_memo_hit_ms"]
                    + (1 - hit_rate) * value["cpu_replica_miss_ms"]
                )
                row.append(f"{math.ceil(rate * ms / 1000 / utilization):,}")
            rows.append(row)
        sections.append(
            "### The same, from the replica smoke's containers\n\n"
            f"One api container behind HAProxy in `make replicas-smoke`: "
            f"{value['cpu_replica_miss_ms']:g} ms of container CPU per miss and "
            f"{value['cpu_replica_memo_hit_ms']:g} ms per memo hit (the served demo model, "
            "everything the container does counted, on the shared machine).\n\n"
            + table(["requests/s", "replicas at 0 % hits", "replicas at 90 % hits, affinity"], rows)
        )

    rows = []
    ttl = value["cache_ttl_seconds"]
    for rate in RATES:
        for hit_rate in HIT_RATES[:2]:
            entries = rate * (1 - hit_rate) * ttl
            memory = entries * value["redis_entry_bytes"]
            rows.append(
                [
                    f"{rate:,}",
                    f"{hit_rate:.0%}",
                    f"{entries:,.0f}",
                    size(memory),
                    size(entries * value["redis_entry_bytes_max_support"]),
                    size(2 * memory),
                ]
            )
    sections.append(
        f"### Redis memory for the task states\n\nEvery request that is not a repeat stores a new "
        f"task state for `CACHE_TTL_SECONDS` ({ttl:g} s): entries = requests/s x (1 - hit rate) x "
        f"TTL; `REDIS_MAXMEMORY` = entries x bytes per entry (20 rated items; 100 in the next "
        f"column), the container or instance about twice that.\n\n"
        + table(
            [
                "requests/s",
                "hit rate",
                "task states in the TTL",
                "maxmemory (20 items)",
                "maxmemory (100 items)",
                "memory to provision",
            ],
            rows,
        )
    )

    rows = []
    row_bytes = value["request_log_row_bytes"]
    for rate in RATES:
        per_day = rate * 86_400 * row_bytes
        rows.append(
            [
                f"{rate:,}",
                f"{rate:,}",
                size(per_day),
                size(per_day * RETENTION_DAYS),
                size(per_day * SAMPLED),
            ]
        )
    sections.append(
        "### The request log in Postgres\n\nOne row per request, "
        f"{row_bytes:g} bytes with its indexes.\n\n"
        + table(
            [
                "requests/s",
                "rows written/s",
                "per day",
                f"{RETENTION_DAYS} days kept",
                f"per day at {SAMPLED:.0%} sampling",
            ],
            rows,
        )
    )

    rows = []
    for label, key in (
        ("100,000 items, full catalog", "cpu_full_catalog_100k_ms"),
        ("1,000,000 items, full catalog", "cpu_full_catalog_1m_ms"),
        ("1,000,000 items, candidate stage", "cpu_candidates_1m_ms"),
    ):
        ms = value[key]
        rows.append(
            [label, f"{ms:g}", f"{1000 / ms:,.1f}"]
            + [f"{math.ceil(rate * ms / 1000 / utilization):,}" for rate in RATES[:2]]
        )
    sections.append(
        "### Scoring large catalogs on CPU\n\nThe model's part of a request (in process, one "
        "thread), what one core answers, and the cores that would take.\n\n"
        + table(
            [
                "scoring",
                "ms per request",
                "requests/s per core",
                "cores at 1,000/s",
                "cores at 10,000/s",
            ],
            rows,
        )
    )
    return "\n\n".join(sections) + "\n"


def replace_between_markers(text: str, generated: str) -> str:
    head, found, rest = text.partition(BEGIN)
    _, found_end, tail = rest.partition(END)
    if not found or not found_end:
        raise SystemExit(f"the document lacks the markers {BEGIN!r} ... {END!r}")
    return f"{head}{BEGIN}\n\n{generated}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=Path, default=INPUTS)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", type=Path, metavar="DOC", help="rewrite DOC's sizing part")
    action.add_argument("--check", type=Path, metavar="DOC", help="exit 1 when DOC is stale")
    args = parser.parse_args(argv)
    generated = render(load_inputs(args.inputs))
    if args.write is None and args.check is None:
        sys.stdout.write(generated)
        return 0
    document: Path = args.write or args.check
    text = document.read_text()
    updated = replace_between_markers(text, generated)
    if args.check is not None:
        if updated != text:
            sys.stdout.write(f"{document}: stale; run python bench/sizing.py --write {document}\n")
            return 1
        return 0
    document.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
