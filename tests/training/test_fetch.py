"""Tests for training.fetch against a real HTTP server on 127.0.0.1 serving zips made here.

Only loopback addresses and bounded timeouts; the fake HetRec files are tiny and use CRLF endings
like the GroupLens zip, so the expected digests are those of their LF-normalised bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import socket
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from training.fetch import (
    EXTRA_SHA256,
    HETREC_SHA256,
    HETREC_URL,
    ITEM_MAPPING_FILE,
    MARKER_FILE,
    FetchError,
    add_fetch_parser,
    default_data_dir,
    describe,
    fetch_data,
    run_fetch,
)

USER_ARTISTS_LF = b"userID\tartistID\tweight\n2\t51\t13883\n2\t52\t11690\n3\t51\t77\n"
ARTISTS_LF = (
    "id\tname\turl\tpictureURL\n"
    "51\tDuran Duran\thttp://www.last.fm/music/Duran+Duran\t\n"
    "52\tMorcheeba\thttp://www.last.fm/music/Morcheeba\t\n"
    "53\tБи-2\thttp://www.last.fm/music/Би-2\t\n"
).encode()
EXPECTED = {
    "user_artists.dat": hashlib.sha256(USER_ARTISTS_LF).hexdigest(),
    "artists.dat": hashlib.sha256(ARTISTS_LF).hexdigest(),
}
TIMEOUT_SECONDS = 5.0
SHARED_LASTFM = Path(__file__).resolve().parents[3] / "shared" / "data" / "lastfm"


def crlf(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


GOOD_ZIP = make_zip(
    {
        "user_artists.dat": crlf(USER_ARTISTS_LF),
        "artists.dat": crlf(ARTISTS_LF),
        "tags.dat": b"tagID\ttagValue\r\n1\tmetal\r\n",
        "readme.txt": b"HetRec 2011 (fake)\r\n",
    }
)
TAMPERED_ZIP = make_zip(
    {
        "user_artists.dat": crlf(USER_ARTISTS_LF.replace(b"13883", b"13884")),
        "artists.dat": crlf(ARTISTS_LF),
    }
)
MISSING_MEMBER_ZIP = make_zip({"user_artists.dat": crlf(USER_ARTISTS_LF)})


class Server:
    """A loopback HTTP server that counts requests; routes map a path to a zip body."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        routes = {
            "/hetrec.zip": GOOD_ZIP,
            "/tampered.zip": TAMPERED_ZIP,
            "/missing-member.zip": MISSING_MEMBER_ZIP,
        }
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                if self.path == "/truncated.zip":
                    # Announce the whole zip, send half of it, then close the connection.
                    self.send_response(200)
                    self.send_header("Content-Type", "application/zip")
                    self.send_header("Content-Length", str(len(GOOD_ZIP)))
                    self.end_headers()
                    self.wfile.write(GOOD_ZIP[: len(GOOD_ZIP) // 2])
                    self.close_connection = True
                    return
                body = routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}{path}"


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    running = Server()
    running.thread.start()
    yield running
    running.httpd.shutdown()
    running.httpd.server_close()
    running.thread.join(timeout=TIMEOUT_SECONDS)


@pytest.fixture
def closed_port_url() -> Iterator[str]:
    # Bound but not listening: connecting is refused at once, and no other process can take it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        yield f"http://127.0.0.1:{port}/hetrec.zip"


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def test_download_verifies_extracts_lf_and_caches(
    server: Server, tmp_path: Path, closed_port_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "lastfm"
    before = len(server.requests)

    with caplog.at_level(logging.INFO, logger="training.fetch"):
        returned = fetch_data(
            to=target, url=server.url("/hetrec.zip"), timeout=TIMEOUT_SECONDS, expected=EXPECTED
        )

    assert returned == target
    # The GroupLens zip has no KGCN item mapping: the log and the CLI line say so.
    assert "only the raw HetRec files" in caplog.text
    assert "only the raw HetRec files" in describe(target)
    assert len(server.requests) == before + 1
    assert (target / "user_artists.dat").read_bytes() == USER_ARTISTS_LF
    assert (target / "artists.dat").read_bytes() == ARTISTS_LF
    assert leftovers(target) == sorted([MARKER_FILE, "artists.dat", "user_artists.dat"])
    marker = json.loads((target / MARKER_FILE).read_text())
    assert marker["source"] == server.url("/hetrec.zip")
    assert marker["zip_sha256"] == hashlib.sha256(GOOD_ZIP).hexdigest()
    assert marker["files"] == EXPECTED
    assert marker["fetched_at"]

    # Second call: the verified files are the cache; the network is never touched.
    again = fetch_data(to=target, url=closed_port_url, timeout=TIMEOUT_SECONDS, expected=EXPECTED)
    assert again == target
    assert len(server.requests) == before + 1


def test_cache_is_not_trusted_when_a_file_changed(server: Server, tmp_path: Path) -> None:
    url = server.url("/hetrec.zip")
    fetch_data(to=tmp_path, url=url, timeout=TIMEOUT_SECONDS, expected=EXPECTED)
    (tmp_path / "artists.dat").write_bytes(b"id\tname\n")
    before = len(server.requests)

    fetch_data(to=tmp_path, url=url, timeout=TIMEOUT_SECONDS, expected=EXPECTED)

    assert len(server.requests) == before + 1
    assert (tmp_path / "artists.dat").read_bytes() == ARTISTS_LF


def test_bad_checksum_names_the_file_and_both_digests(server: Server, tmp_path: Path) -> None:
    target = tmp_path / "lastfm"
    with pytest.raises(FetchError) as caught:
        fetch_data(
            to=target, url=server.url("/tampered.zip"), timeout=TIMEOUT_SECONDS, expected=EXPECTED
        )
    message = str(caught.value)
    tampered = crlf(USER_ARTISTS_LF.replace(b"13883", b"13884")).replace(b"\r\n", b"\n")
    assert "user_artists.dat" in message
    assert EXPECTED["user_artists.dat"] in message
    assert hashlib.sha256(tampered).hexdigest() in message
    assert "\n" not in message
    assert leftovers(target) == []


def test_truncated_download_is_an_error(server: Server, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="truncated download") as caught:
        fetch_data(
            to=tmp_path,
            url=server.url("/truncated.zip"),
            timeout=TIMEOUT_SECONDS,
            expected=EXPECTED,
        )
    assert str(len(GOOD_ZIP)) in str(caught.value)
    assert leftovers(tmp_path) == []


def test_missing_member_is_named(server: Server, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"has no member artists\.dat"):
        fetch_data(
            to=tmp_path,
            url=server.url("/missing-member.zip"),
            timeout=TIMEOUT_SECONDS,
            expected=EXPECTED,
        )
    assert leftovers(tmp_path) == []


def test_http_error_is_reported(server: Server, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_data(
            to=tmp_path, url=server.url("/nope.zip"), timeout=TIMEOUT_SECONDS, expected=EXPECTED
        )


def test_unreachable_host_suggests_from(tmp_path: Path, closed_port_url: str) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_data(to=tmp_path, url=closed_port_url, timeout=TIMEOUT_SECONDS, expected=EXPECTED)
    message = str(caught.value)
    assert message.startswith("cannot reach 127.0.0.1:")
    assert "--from DIR" in message
    assert leftovers(tmp_path) == []


def test_from_folder_copies_verifies_and_normalises(tmp_path: Path) -> None:
    source = tmp_path / "copy"
    source.mkdir()
    (source / "user_artists.dat").write_bytes(crlf(USER_ARTISTS_LF))
    (source / "artists.dat").write_bytes(ARTISTS_LF)
    mapping = b"51\t0\n52\t1\n"
    (source / ITEM_MAPPING_FILE).write_bytes(mapping)
    extras = {ITEM_MAPPING_FILE: hashlib.sha256(mapping).hexdigest(), "absent.txt": "0" * 64}
    target = tmp_path / "lastfm"

    fetch_data(to=target, source=source, expected=EXPECTED, extras=extras)

    assert (target / "user_artists.dat").read_bytes() == USER_ARTISTS_LF
    assert (target / "artists.dat").read_bytes() == ARTISTS_LF
    assert (target / ITEM_MAPPING_FILE).read_bytes() == mapping
    marker = json.loads((target / MARKER_FILE).read_text())
    assert marker["source"] == str(source)
    assert marker["zip_sha256"] is None


def test_from_folder_checks_digests_and_presence(tmp_path: Path) -> None:
    source = tmp_path / "copy"
    source.mkdir()
    (source / "user_artists.dat").write_bytes(USER_ARTISTS_LF)
    with pytest.raises(FetchError, match=r"has no artists\.dat"):
        fetch_data(to=tmp_path / "a", source=source, expected=EXPECTED, extras={})
    (source / "artists.dat").write_bytes(ARTISTS_LF + b"extra\n")
    with pytest.raises(FetchError, match=r"checksum mismatch for artists\.dat"):
        fetch_data(to=tmp_path / "b", source=source, expected=EXPECTED, extras={})
    with pytest.raises(FetchError, match="does not exist"):
        fetch_data(to=tmp_path / "c", source=tmp_path / "nowhere", expected=EXPECTED)


def test_target_that_is_a_file_is_a_fetch_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(FetchError, match="cannot create"):
        fetch_data(to=blocker / "lastfm", source=tmp_path, expected=EXPECTED)


def test_from_zip_file(tmp_path: Path) -> None:
    archive = tmp_path / "hetrec2011-lastfm-2k.zip"
    archive.write_bytes(GOOD_ZIP)
    target = tmp_path / "lastfm"

    fetch_data(to=target, source=archive, expected=EXPECTED)

    assert (target / "artists.dat").read_bytes() == ARTISTS_LF
    marker = json.loads((target / MARKER_FILE).read_text())
    assert marker["zip_sha256"] == hashlib.sha256(GOOD_ZIP).hexdigest()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tanp-train")
    add_fetch_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_parser_defaults_and_options(tmp_path: Path) -> None:
    defaults = parse(["fetch-data"])
    assert defaults.handler is run_fetch
    assert (defaults.to, defaults.source, defaults.url) == (None, None, HETREC_URL)
    assert (defaults.timeout, defaults.expect) == (30.0, [])

    given = parse(["fetch-data", "--to", str(tmp_path), "--from", "/x", "--url", "http://h/z"])
    assert (given.to, given.source, given.url) == (tmp_path, Path("/x"), "http://h/z")


def test_expect_overrides_a_digest_and_rejects_garbage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "copy"
    source.mkdir()
    (source / "user_artists.dat").write_bytes(crlf(USER_ARTISTS_LF))
    (source / "artists.dat").write_bytes(ARTISTS_LF)
    target = tmp_path / "lastfm"
    expect = [f"--expect={name}={digest}" for name, digest in EXPECTED.items()]

    assert (
        run_fetch(parse(["fetch-data", "--to", str(target), "--from", str(source), *expect])) == 0
    )
    assert (target / "user_artists.dat").read_bytes() == USER_ARTISTS_LF
    assert "only the raw HetRec files" in capsys.readouterr().out

    # With the real defaults the fake files fail verification.
    assert run_fetch(parse(["fetch-data", "--to", str(tmp_path / "b"), "--from", str(source)])) == 2
    assert "checksum mismatch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["fetch-data", "--expect", "tags.dat=" + "0" * 64])
    with pytest.raises(SystemExit):
        parse(["fetch-data", "--expect", "artists.dat=xyz"])


def test_default_data_dir_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TANP_DATA_DIR", str(tmp_path / "data"))
    assert default_data_dir() == tmp_path / "data"
    monkeypatch.delenv("TANP_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / ".cache" / "tanp-rec" / "lastfm"


def test_run_fetch_offline_prints_one_line_and_returns_2(
    tmp_path: Path, closed_port_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(["fetch-data", "--to", str(tmp_path), "--url", closed_port_url, "--timeout", "5"])

    assert run_fetch(args) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("tanp-train fetch-data: error: cannot reach")
    assert "--from DIR" in captured.err


@pytest.mark.integration
@pytest.mark.skipif(not SHARED_LASTFM.is_dir(), reason="../shared/data/lastfm is not present")
def test_run_fetch_from_the_shared_copy_with_the_real_digests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "lastfm"
    args = parse(["fetch-data", "--to", str(target), "--from", str(SHARED_LASTFM)])

    assert run_fetch(args) == 0

    for name in [*HETREC_SHA256, *EXTRA_SHA256]:
        assert (target / name).read_bytes() == (SHARED_LASTFM / name).read_bytes()
    assert "3,846 items" in capsys.readouterr().out
