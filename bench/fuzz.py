"""Fuzz the real server's API with schemathesis: every operation of /openapi.json, a few
hundred examples each, as an anonymous caller and as the admin.

    python bench/fuzz.py --models-dir DIR [--examples 300] [--workers 2] [--seed 1]
    python bench/fuzz.py --base-url http://127.0.0.1:8000 --token "$ADMIN_TOKEN"   # compose

Starts `tanp-serve --workers N` on loopback (its own SQLite registry, the models under DIR,
an admin token), or takes a running deployment (`--base-url`, e.g. `docker compose up`, with
its admin token), then runs `schemathesis run` twice (without and with the bearer token) with
every check and phase (examples, coverage, fuzzing, stateful) and the expectations of
schemathesis.toml. Prints one table row per run: operations, test cases, failures, errors;
exits 1 when any run found a failure. Reports (schemathesis JSON) go to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support

from tests.support.live_server import wait_ready
from tests.support.network import free_port

ROOT = Path(__file__).resolve().parents[1]
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def start_server(
    *, models_dir: Path, workdir: Path, port: int, workers: int, token: str
) -> subprocess.Popen[bytes]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("REDIS_URL", "ACTIVE_MODEL", "DATABASE_URL")
    }
    environment.update(
        MODELS_DIR=str(models_dir),
        DATABASE_URL=f"sqlite:///{workdir / 'fuzz.db'}",
        MIGRATE_ON_START="1",
        ADMIN_TOKEN=token,
        REQUEST_LOG_SPOOL_DIR=str(workdir / "spool"),
        DEVICE="cpu",
        LOG_LEVEL="WARNING",
    )
    command = [sys.executable, "-m", "app.cli", "--port", str(port), "--workers", str(workers)]
    log = (workdir / "serve.log").open("wb")
    return subprocess.Popen(
        command, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def run_schemathesis(
    *, base: str, examples: int, seed: int, headers: list[str], report: Path
) -> dict[str, Any]:
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(ROOT / "schemathesis.toml"),
        "run",
        f"{base}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--no-color",
    ]
    for header in headers:
        command += ["--header", header]
    log = report.with_suffix(".log")
    with log.open("w") as output:
        subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, check=False)
    result: dict[str, Any] = json.loads(report.read_text())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models-dir", type=Path, default=None, help="MODELS_DIR to serve")
    parser.add_argument(
        "--base-url", default=None, help="fuzz this running deployment instead of starting one"
    )
    parser.add_argument("--token", default=None, help="its ADMIN_TOKEN (with --base-url)")
    parser.add_argument("--examples", type=int, default=300, help="examples per operation")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="folder for the reports")
    args = parser.parse_args(argv)
    if (args.models_dir is None) == (args.base_url is None):
        parser.error("give exactly one of --models-dir or --base-url")
    if args.base_url is not None and not args.token:
        parser.error("--base-url needs --token (the deployment's ADMIN_TOKEN)")

    workdir = Path(tempfile.mkdtemp(prefix="tanp-fuzz-"))
    out = args.out or workdir
    out.mkdir(parents=True, exist_ok=True)
    server: subprocess.Popen[bytes] | None = None
    if args.base_url is not None:
        base, token = args.base_url.rstrip("/"), args.token
    else:
        token = secrets.token_hex(16)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = start_server(
            models_dir=args.models_dir,
            workdir=workdir,
            port=port,
            workers=args.workers,
            token=token,
        )
    runs: list[tuple[str, dict[str, Any]]] = []
    try:
        if server is not None:
            wait_ready(base, server, timeout=120)
        for caller, headers in (
            ("anonymous", []),
            ("admin (bearer token)", [f"Authorization: Bearer {token}"]),
        ):
            report = out / f"schemathesis-{caller.split()[0]}.json"
            runs.append(
                (
                    caller,
                    run_schemathesis(
                        base=base,
                        examples=args.examples,
                        seed=args.seed,
                        headers=headers,
                        report=report,
                    ),
                )
            )
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
        if args.out is not None:  # the reports are elsewhere: nothing here worth keeping
            shutil.rmtree(workdir, ignore_errors=True)

    target = (
        f"the deployment at {base}"
        if server is None
        else f"tanp-serve --workers {args.workers}, 127.0.0.1, models {args.models_dir}"
    )
    print(
        f"server: {target}; "
        f"machine: {platform.machine()}, {os.cpu_count()} cores; "
        f"schemathesis {runs[0][1]['schemathesis_version']}, --max-examples {args.examples}, "
        f"--seed {args.seed}, every check and phase; reports in {out}\n"
    )
    print("| caller | operations tested | test cases | with failures | errors | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    failed = False
    for caller, result in runs:
        cases = result["test_cases"]
        failed |= bool(cases["with_failures"] or result["failures"] or result["errors"])
        print(
            f"| {caller} | {result['operations']['tested']}/{result['operations']['total']} "
            f"| {cases['generated']} | {cases['with_failures']} | {len(result['errors'])} "
            f"| {result['running_time']:.0f} |"
        )
    for caller, result in runs:
        for failure in result["failures"][:20]:
            print(f"\n{caller}: {json.dumps(failure)[:2000]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
