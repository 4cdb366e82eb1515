"""Paths a user may hand scenerec: symlinks are followed; an unreadable file or directory and a full disk
give one line on stderr and a non-zero exit, never a traceback, and lose nothing already stored."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scenerec.recommend.recommender import Recommender
from scenerec.settings import Settings, load_settings
from scenerec.stores.embeddings import Encoder
from scenerec.stores.ingest import ingest_catalog

from .conftest import TINY_HISTORIES, TINY_ITEMS, write_catalog

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """`scenerec ARGS` in this process (so a failure can be simulated): exit code, stdout, stderr."""
    from scenerec.cli import main

    monkeypatch.setattr(sys, "argv", ["scenerec", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(autouse=True)
def shared_encoder(monkeypatch: pytest.MonkeyPatch, encoder: Encoder) -> None:
    """Commands run in this process reuse the session's encoder instead of loading their own."""
    monkeypatch.setattr("scenerec.stores.sync.make_encoder", lambda settings: encoder)
    monkeypatch.setenv("SCENEREC_EMBEDDING__SHOW_PROGRESS", "false")


def assert_one_line_error(code: int, err: str, *expected: str) -> None:
    """A non-zero exit, no traceback, and the error on one line of its own (progress bars aside)."""
    assert code != 0
    assert "Traceback" not in err, err
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip() and "%|" not in line]
    assert len(lines) == 1 and lines[0].startswith(("error: ", "catalog error: ")), err
    for text in expected:
        assert text in lines[0], err


def alice_films(settings: Settings, encoder: Encoder) -> list[str]:
    with Recommender(settings, encoder=encoder) as recommender:
        return [r.item_id for r in recommender.recommend("alice", "films", 5)]


def stored_ids(settings: Settings, encoder: Encoder) -> set[str]:
    with Recommender(settings, encoder=encoder) as recommender:
        return {
            i.item_id for scene in recommender.items.scenes() for i in recommender.items.items_in_scene(scene)
        }


# --- symlinks are followed ----------------------------------------------------------------------


def test_a_symlinked_catalog_ingests_like_the_real_one(
    tiny_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    link = tmp_path / "link-to-catalog"
    link.symlink_to(tiny_catalog, target_is_directory=True)
    code, out, err = run_cli(monkeypatch, capsys, "ingest", str(link), "--data-dir", str(tmp_path / "data"))
    assert code == 0, err
    assert "ingested 18 items" in out


def test_a_symlinked_data_dir_is_used_and_written_through(
    tiny_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    link = tmp_path / "link-to-data"
    link.symlink_to(tiny_settings.data_dir, target_is_directory=True)
    code, out, err = run_cli(monkeypatch, capsys, "scenes", "--data-dir", str(link))
    assert code == 0, err
    assert "books" in out and "films" in out
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "recommend",
        "--user",
        "alice",
        "--scene",
        "films",
        "-k",
        "3",
        "--data-dir",
        str(link),
    )
    assert code == 0 and out.strip(), err


def test_a_dangling_data_dir_symlink_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tiny_catalog: Path
) -> None:
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "gone", target_is_directory=True)
    code, _, err = run_cli(monkeypatch, capsys, "ingest", str(tiny_catalog), "--data-dir", str(link))
    assert_one_line_error(code, err, str(link))


def test_a_data_dir_that_is_a_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "not-a-dir"
    file.write_text("x")
    code, _, err = run_cli(monkeypatch, capsys, "scenes", "--data-dir", str(file))
    assert_one_line_error(code, err, str(file))


# --- unreadable -----------------------------------------------------------------------------------


@pytest.mark.skipif(IS_ROOT, reason="running as root: chmod 000 does not stop reads (simulated below)")
def test_an_unreadable_catalog_file_is_named(
    tiny_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tiny_catalog / "items.jsonl").chmod(0)
    try:
        code, _, err = run_cli(
            monkeypatch, capsys, "ingest", str(tiny_catalog), "--data-dir", str(tmp_path / "d")
        )
    finally:
        (tiny_catalog / "items.jsonl").chmod(0o644)
    assert_one_line_error(code, err, "items.jsonl", "ermission denied")


def test_a_catalog_file_that_cannot_be_opened_is_named(
    tiny_settings: Settings,
    tiny_catalog: Path,
    encoder: Encoder,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The chmod case simulated with a failing open, so it runs as root too."""
    before = alice_films(tiny_settings, encoder)
    real_open = Path.open

    def failing_open(self: Path, *args: object, **kwargs: object):
        if self.name == "interactions.csv":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", failing_open)
    code, _, err = run_cli(
        monkeypatch, capsys, "ingest", str(tiny_catalog), "--data-dir", str(tiny_settings.data_dir)
    )
    monkeypatch.setattr(Path, "open", real_open)
    assert_one_line_error(code, err, "interactions.csv", "Permission denied")
    assert alice_films(tiny_settings, encoder) == before


@pytest.mark.skipif(IS_ROOT, reason="running as root: chmod 000 does not stop reads or writes")
def test_an_unreadable_data_dir_is_a_clear_error(
    tiny_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = Path(tiny_settings.data_dir)
    data.chmod(0)
    try:
        code, _, err = run_cli(monkeypatch, capsys, "scenes", "--data-dir", str(data))
    finally:
        data.chmod(0o755)
    assert_one_line_error(code, err, str(data))


# --- a full disk ----------------------------------------------------------------------------------


def bigger_catalog(directory: Path) -> Path:
    """The tiny catalog plus 40 books with long texts."""
    extra = [(f"n{i}", "books", f"new book {i}", "long description " * 100) for i in range(40)]
    histories = {**TINY_HISTORIES, "erin": [f"n{i}" for i in range(10)]}
    return write_catalog(directory, TINY_ITEMS + extra, histories)


def test_a_full_disk_while_writing_an_index_is_one_line_and_keeps_the_store(
    tiny_settings: Settings,
    encoder: Encoder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Simulated: the BM25 writer fails with ENOSPC after the item table is written."""
    from scenerec.stores import lexical

    before_ids, before = stored_ids(tiny_settings, encoder), alice_films(tiny_settings, encoder)

    def full(self: object, path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    real_save = lexical.BM25Index.save
    monkeypatch.setattr(lexical.BM25Index, "save", full)
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "ingest",
        str(bigger_catalog(tmp_path / "big")),
        "--data-dir",
        str(tiny_settings.data_dir),
    )
    monkeypatch.setattr(lexical.BM25Index, "save", real_save)
    assert_one_line_error(code, err, "No space left on device")
    assert before_ids <= stored_ids(tiny_settings, encoder)
    assert alice_films(tiny_settings, encoder) == before


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs, where the system lets this process mount one (root in a container); else skip."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); see the simulated test"
        )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; return it (delete it to free the space)."""
    filler = directory / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * (1 << 20))
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_really_full_disk_is_one_line_and_keeps_the_store(
    small_tmpfs: Path,
    tiny_catalog: Path,
    encoder: Encoder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = load_settings(data_dir=small_tmpfs / "data")
    ingest_catalog(tiny_catalog, settings, encoder=encoder)
    before_ids, before = stored_ids(settings, encoder), alice_films(settings, encoder)
    filler = fill(small_tmpfs)
    try:
        code, _, err = run_cli(
            monkeypatch,
            capsys,
            "ingest",
            str(bigger_catalog(tmp_path / "big")),
            "--data-dir",
            str(settings.data_dir),
        )
    finally:
        filler.unlink()
    assert_one_line_error(code, err)
    assert "full" in err or "space" in err, err
    assert before_ids <= stored_ids(settings, encoder)
    assert alice_films(settings, encoder) == before
