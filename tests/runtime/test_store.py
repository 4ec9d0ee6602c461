"""Atomic writes, leftovers of killed writers, paths read from a run folder, and no hidden global state."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from crashcast.runtime.store import atomic_path, atomic_write_text, inside, remove_partial


def test_import_leaves_the_umask_alone_and_files_follow_it(tmp_path):
    code = ("import os; os.umask(0o027); import crashcast.runtime.store as s, crashcast.cli; "
            f"s.atomic_write_text({str(tmp_path / 'f.txt')!r}, 'x'); print(oct(os.umask(0o022)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0o27"  # still the caller's umask after importing and writing
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o640  # 0666 under umask 027


def test_a_failed_write_leaves_neither_the_file_nor_a_partial(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_remove_partial_deletes_only_what_a_dead_writer_left(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (tmp_path / f".kf0.png.{dead}-1a2b3c4d.part.png").write_bytes(b"half")  # as atomic_path names them
    (tmp_path / f".kf1.png.{os.getppid()}-1a2b3c4d.part.png").write_bytes(b"in flight")  # a live writer's
    (tmp_path / "kf0.png").write_bytes(b"done")
    for name in (".hidden", ".particles.csv", ".x.12-zz.part"):
        (tmp_path / name).write_text("user's")
    assert remove_partial(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".hidden", ".particles.csv", ".x.12-zz.part", "kf0.png",
                                                                 f".kf1.png.{os.getppid()}-1a2b3c4d.part.png"])


def test_inside_refuses_paths_that_leave_the_folder(tmp_path):
    run = tmp_path / "run"
    (run / "clips").mkdir(parents=True)
    (run / "clips" / "kf0.png").write_bytes(b"png")
    assert inside(run, "clips/kf0.png") == (run / "clips" / "kf0.png").resolve()
    os.symlink("/etc/hostname", run / "clips" / "link.png")
    for bad in ("../x", "/etc/passwd", "clips/../../x", "clips/link.png"):
        with pytest.raises(ValueError, match="outside"):
            inside(run, bad)
