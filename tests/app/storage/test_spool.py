"""`DiskSpool`: segment files that survive a torn line (skipped and counted), in a folder that
belongs to this user alone."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.settings import Settings
from app.storage.spool import DiskSpool


def test_a_torn_spool_line_is_skipped_and_counted(tmp_path: Path) -> None:
    dropped: list[int] = []
    spool = DiskSpool(tmp_path / "spool", max_bytes=10_000, on_drop=dropped.append)
    at = datetime(2025, 1, 1, tzinfo=UTC)
    spool.append([{"request_id": "a", "created_at": at}])
    segment = spool.oldest()
    assert segment is not None
    with Path(segment.key).open("a") as handle:
        handle.write('{"request_id": "b", "creat')  # a crash in the middle of a line
    again = spool.oldest()
    assert again is not None and again.rows == [{"request_id": "a", "created_at": at}]
    assert dropped == [1]
    spool.remove(again)
    assert spool.pending_rows() == 0
    spool.close()


def test_a_spool_folder_others_can_write_or_own_is_refused(tmp_path: Path) -> None:
    """Issue 21 item 10: the spool trusted its folder, so rows planted there by another user
    were inserted into admin_audit."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match="writable by it alone"):
        DiskSpool(shared, max_bytes=10_000)
    inside = shared / "spool"  # a private folder inside one anybody can rename things in
    inside.mkdir(mode=0o700)
    with pytest.raises(PermissionError, match="another user can change"):
        DiskSpool(inside, max_bytes=10_000)
    if os.geteuid() == 0:  # as root the test can hand a folder to another user
        foreign = tmp_path / "foreign"
        foreign.mkdir(mode=0o700)
        os.chown(foreign, 12_345, 12_345)
        with pytest.raises(PermissionError, match="must belong to uid 0"):
            DiskSpool(foreign, max_bytes=10_000)


def test_folders_the_spool_creates_are_private(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path / "a" / "b" / "spool", max_bytes=10_000)
    for folder in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "spool"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    spool.close()


def test_the_default_spool_folder_is_this_users_own() -> None:
    folder = Settings(database_url="sqlite:///x.db").spool_dir()
    assert folder.parent.name == f"tanp-spool-{os.geteuid()}"
