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


def test_symlink_loops_are_reported_as_loops(tmp_path):
    lib = tmp_path / "lib"
    make_video(lib / "a.mp4", seconds=1)
    os.symlink(lib / "self.mp4", lib / "self.mp4")  # a link to itself
    os.symlink(lib / "pong.mp4", lib / "ping.mp4")  # two links pointing at each other
    os.symlink(lib / "ping.mp4", lib / "pong.mp4")
    os.symlink(lib / "dir_loop", lib / "dir_loop")  # a folder-like name looping
    res = scan([lib])
    assert [f.path for f in res.files] == [str(lib / "a.mp4")]
    reasons = dict(res.errors)
    for name in ("self.mp4", "ping.mp4", "pong.mp4", "dir_loop"):
        assert reasons[str(lib / name)].startswith("symbolic link loop"), (name, reasons)
    assert "broken" not in " ".join(reasons.values())
    root_loop = scan([lib / "self.mp4"])
    assert root_loop.errors == [(str(lib / "self.mp4"), reasons[str(lib / "self.mp4")])]


def test_confined_scan_skips_links_leaving_the_roots(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    inside_file = make_video(root / "in.mp4", seconds=1)
    far = make_video(outside / "far.mp4", seconds=1)
    make_video(outside / "deep" / "deeper.mp4", seconds=1)
    os.symlink(outside, root / "escape")  # a folder link out
    os.symlink(far, root / "far_link.mp4")  # a file link out
    (root / "sub").mkdir()
    os.symlink(root / "sub", root / "inner")  # a link that stays inside is followed
    make_video(root / "sub" / "s.mp4", seconds=1)
    open_scan = scan([root])
    assert str(root / "escape" / "deep" / "deeper.mp4") in {f.path for f in open_scan.files}  # unconfined: followed
    res = scan([root], confine=[root])
    assert sorted(f.path for f in res.files) == [str(inside_file), str(root / "inner" / "s.mp4")]
    skipped = dict(res.skipped)
    assert set(skipped) == {str(root / "escape"), str(root / "far_link.mp4")}
    assert all("outside the index roots" in r for r in skipped.values())
    # a root given through a link that leaves the allowed folders is skipped whole
    assert scan([root / "escape"], confine=[root]).files == []
    link_root = scan([root / "far_link.mp4"], confine=[root])
    assert link_root.files == [] and link_root.skipped == [
        (str(root / "far_link.mp4"), skipped[str(root / "far_link.mp4")])
    ]
    # confine is by real path: a root reached through a link into it is fine
    os.symlink(root, tmp_path / "alias")
    assert len(scan([tmp_path / "alias"], confine=[root]).files) == 2
