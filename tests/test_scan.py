"""indexer.scan: which files a run sees, which it reports, and which folders it covers."""

from __future__ import annotations

import os
import shutil

from indexer.scan import is_video_name, scan, under_roots
from tests.videos import make_video


def test_scan_follows_symlinks_without_loops(tmp_path):
    lib = tmp_path / "lib"
    a = make_video(lib / "a.mp4", seconds=1)
    (lib / "sub").mkdir()
    os.symlink(lib, lib / "sub" / "loop")  # a cycle
    os.symlink(a, lib / "sub" / "alias.mp4")  # the same file twice
    os.symlink(tmp_path / "gone.mp4", lib / "broken.mp4")
    (lib / ".hidden").mkdir()
    make_video(lib / ".hidden" / "h.mp4", seconds=1)
    (lib / "notes.txt").write_text("x")
    bad_name = os.fsencode(lib) + b"/bad-\xff-name.mp4"  # not UTF-8: cannot be stored as text
    shutil.copy(a, bad_name)
    res = scan([lib, lib / "a.mp4"])
    assert [f.path for f in res.files] == [str(a)]
    assert res.errors == [
        (str(lib / "bad-\\xff-name.mp4"), "file name is not valid UTF-8; rename it"),
        (str(lib / "broken.mp4"), "broken symbolic link"),
    ]
    assert res.covers(str(lib / "x.mp4")) and not res.covers(str(tmp_path / "elsewhere.mp4"))


def test_video_names_and_roots():
    assert is_video_name("a.MP4") and is_video_name("b.mkv") and not is_video_name("notes.txt")
    assert under_roots("/lib/a/b.mp4", ["/lib/a"]) and under_roots("/lib/a", ["/lib/a"])
    assert not under_roots("/lib/ab/c.mp4", ["/lib/a"])  # a prefix of the name is not a parent folder
