"""The indexer end to end on real generated files: bad inputs, incremental runs, CLI, texts."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from indexer.cli import main
from indexer.pipeline import IndexOptions, run_index
from indexer.scan import scan
from retrieval.catalog import Catalog
from retrieval.errors import IndexMismatch, StoreError
from retrieval.home import DataHome
from retrieval.index import VectorIndex
from retrieval.lock import HomeLock
from retrieval.token_store import TokenStore
from tests.videos import make_4k_video, make_bad_library, make_library, make_video

MODEL = "viclip-tiny-test"


def _opts(paths, home, **kw) -> IndexOptions:
    kw.setdefault("workers", 2)
    return IndexOptions(paths=[str(p) for p in paths], home=str(home), model=MODEL, progress=False, **kw)


def _stores(home: Path):
    h = DataHome(home)
    cat = Catalog(h.db_url(), create=False)
    index = VectorIndex.load(h.clip_index_path, model=MODEL)
    tokens = TokenStore(h.tokens_dir, readonly=True)
    return h, cat, index, tokens


def _assert_consistent(home: Path) -> np.ndarray:
    """Catalog, FAISS, token store and thumbnails agree; returns the clip ids."""
    h, cat, index, tokens = _stores(home)
    ids = cat.all_clip_ids()
    assert np.array_equal(index.ids(), ids)
    assert tokens.contains(ids).all()
    thumbs = {int(p.stem) for p in h.thumbs_dir.glob("*.jpg")}
    assert thumbs == set(ids.tolist())
    cat.close()
    return ids


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A library with good files and one of each awkward kind, indexed once."""
    root = tmp_path_factory.mktemp("indexer")
    lib = root / "lib"
    good = make_library(lib, count=3, seconds=9, fps=10)
    bad = make_bad_library(lib / "odd")
    uhd = make_4k_video(lib / "uhd.mp4", seconds=1, fps=4)
    home = root / "home"
    report = run_index(_opts([lib], home))
    return {"lib": lib, "home": home, "good": good, "bad": bad, "uhd": uhd, "report": report}


def test_every_bad_kind_is_recorded_with_a_reason_and_the_rest_is_indexed(indexed):
    rep, bad = indexed["report"], indexed["bad"]
    assert rep.exit_code == 1
    reasons = {f["path"]: f["reason"] for f in rep.failed}
    assert set(reasons) == {str(bad[k]) for k in ("zero_byte", "text", "audio_only", "truncated_no_index")}
    assert reasons[str(bad["zero_byte"])] == "empty file (0 bytes)"
    assert reasons[str(bad["text"])] == "not a video file (it contains text)"
    assert reasons[str(bad["audio_only"])] == "no video stream (audio only)"
    assert "cannot open as a video" in reasons[str(bad["truncated_no_index"])]
    ok = {str(p) for p in indexed["good"]} | {
        str(bad[k]) for k in ("one_frame", "rotated", "vfr", "non_ascii", "truncated")
    }
    assert set(rep.indexed) == ok | {str(indexed["uhd"])}
    assert [w["path"] for w in rep.warnings] == [str(bad["truncated"])]
    assert "truncated" in rep.warnings[0]["warning"]


def test_clips_vectors_tokens_and_thumbnails_agree(indexed):
    ids = _assert_consistent(indexed["home"])
    h, cat, index, tokens = _stores(indexed["home"])
    assert len(ids) == indexed["report"].clips == index.ntotal
    video = cat.video_by_path(str(indexed["good"][0]))
    clips = cat.clips_of_video(video.id)
    assert [(c.start, c.end) for c in clips] == [(0.0, 4.0), (4.0, 8.0), (5.0, 9.0)]  # last clip end-aligned
    assert [(c.start_frame, c.end_frame) for c in clips] == [(0, 40), (40, 80), (50, 90)]
    assert (video.duration, video.fps, video.codec, video.model) == (9.0, 10.0, "h264", MODEL)
    assert cat.clips_of_video(cat.video_by_path(str(indexed["bad"]["one_frame"])).id)[0].end_frame == 1
    vecs = tokens.get_vectors(ids)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert tokens.get_tokens(ids[:2]).shape == (2, 1 + 4, 64)
    rotated = cat.clips_of_video(cat.video_by_path(str(indexed["bad"]["rotated"])).id)[0]
    with Image.open(h.root / rotated.thumbnail) as im:
        assert im.format == "JPEG" and im.height > im.width  # thumbnails are shown the right way up
    with Image.open(h.thumbnail_path(cat.clips_of_video(cat.video_by_path(str(indexed["uhd"])).id)[0].id)) as im:
        assert max(im.size) == 320
    cat.close()


def test_status_json(indexed):
    res = CliRunner().invoke(main, ["status", "--json", "--home", str(indexed["home"])])
    assert res.exit_code == 0, res.output
    st = json.loads(res.output)
    assert {"videos", "clips", "vectors", "texts", "failed"} <= set(st)
    assert st["videos"] == len(indexed["report"].indexed) and st["clips"] == st["vectors"] == indexed["report"].clips
    assert len(st["failed"]) == 4 and all(set(f) == {"path", "reason"} for f in st["failed"])
    assert st["model"] == MODEL and st["index_factory"] == "Flat"
    text = CliRunner().invoke(main, ["status", "--home", str(indexed["home"])]).output
    assert "empty file (0 bytes)" in text and f"clips     {st['clips']}" in text


def test_rerun_skips_unchanged_and_touch_is_not_a_change(indexed, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(indexed["home"], home)
    before = _assert_consistent(home)
    rep = run_index(_opts([indexed["lib"]], home))
    assert rep.indexed == [] and rep.unchanged == len(indexed["report"].indexed)
    assert np.array_equal(_assert_consistent(home), before)
    target = indexed["good"][1]
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    try:
        rep = run_index(_opts([target], home))
        assert rep.indexed == [] and rep.unchanged == 1
    finally:
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_changed_files_are_reindexed_and_deleted_ones_pruned(tmp_path):
    lib = tmp_path / "lib"
    a, b, c = make_library(lib, count=3, seconds=5)
    home = tmp_path / "home"
    assert run_index(_opts([lib], home)).exit_code == 0
    _, cat, _, _ = _stores(home)
    old_a = {x.id for x in cat.clips_of_video(cat.video_by_path(str(a)).id)}
    make_video(a, seconds=13, color=(10, 250, 10))  # same path, new content
    c.unlink()
    rep = run_index(_opts([lib], home))
    assert rep.indexed == [str(a)] and rep.missing == [str(c)] and rep.unchanged == 1
    ids = _assert_consistent(home)
    new_a = {x.id for x in cat.clips_of_video(cat.video_by_path(str(a)).id)}
    assert len(new_a) == 4 and not (old_a & set(ids.tolist()))
    assert cat.video_by_path(str(c)) is not None  # kept without --prune
    rep = run_index(_opts([lib], home, prune=True))
    assert rep.pruned == [str(c)] and cat.video_by_path(str(c)) is None
    _assert_consistent(home)
    rep = run_index(_opts([lib], home, clip_seconds=2.0))  # new clip length: everything again
    assert sorted(rep.indexed) == sorted([str(a), str(b)]) and rep.clips == 7 + 3
    _assert_consistent(home)
    cat.close()


def test_prune_keeps_videos_behind_a_folder_link_that_went_dangling(tmp_path):
    # a library assembled from links to drives: an unmounted drive is not a deleted library
    drive, lib, home = tmp_path / "drive", tmp_path / "lib", tmp_path / "home"
    (kept,) = make_library(drive / "films", count=1, seconds=2)
    local = make_video(lib / "local.mp4", seconds=2)
    lib.joinpath("external").symlink_to(drive / "films", target_is_directory=True)
    assert run_index(_opts([lib], home)).exit_code == 0
    linked = str(lib / "external" / kept.name)
    shutil.move(drive / "films", tmp_path / "unmounted")  # the link now points nowhere
    found = scan([lib])
    assert found.unreadable == [str(lib / "external")] and not found.errors
    rep = run_index(_opts([lib], home, prune=True))
    assert rep.pruned == [] and rep.exit_code == 0
    _, cat, _, _ = _stores(home)
    assert cat.video_by_path(linked) is not None and cat.video_by_path(str(local)) is not None
    local.unlink()  # a file that is really gone is still pruned
    assert run_index(_opts([lib], home, prune=True)).pruned == [str(local)]
    assert cat.video_by_path(linked) is not None
    cat.close()
    _assert_consistent(home)


def test_a_file_that_stalls_the_decoder_times_out_and_the_run_goes_on(tmp_path):
    lib = tmp_path / "lib"
    # one 4-s clip: ~0.53 s between its info and clip messages here, 1.75x the timeout (at 12 fps it was
    # 0.27-0.30 s once thumbnails stopped costing 4K swscale passes: too close to 0.3 to time out reliably)
    slow = make_4k_video(lib / "a_slow_4k.mp4", seconds=4, fps=30)
    fine = make_video(lib / "b_fine.mp4", seconds=2)
    rep = run_index(_opts([lib], tmp_path / "home", workers=1, file_timeout=0.3))
    assert [f["path"] for f in rep.failed] == [str(slow)]
    assert rep.failed[0]["reason"].startswith("timed out")
    assert rep.indexed == [str(fine)]
    _assert_consistent(tmp_path / "home")


def test_another_model_refuses_the_index(tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    make_video(lib / "a.mp4", seconds=1)
    home = tmp_path / "home"
    assert run_index(_opts([lib], home)).exit_code == 0
    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir()
    cfg = json.loads((Path(__file__).parents[1] / "retrieval/model_configs/viclip-tiny-test.json").read_text())
    cfg["embed_dim"] = 16
    (cfg_dir / "tiny-other.json").write_text(json.dumps(cfg))
    monkeypatch.setenv("VTR_MODEL_CONFIGS", str(cfg_dir))
    with pytest.raises(IndexMismatch, match="built with model 'viclip-tiny-test'"):
        run_index(IndexOptions(paths=[str(lib)], home=str(home), model="tiny-other", progress=False))
    res = CliRunner().invoke(main, ["index", str(lib), "--home", str(home), "--model", "tiny-other", "-q"])
    assert res.exit_code == 1 and "error: the index at" in res.output
    assert json.loads(CliRunner().invoke(main, ["status", "--json", "--home", str(home)]).output)["clips"] == 1


def test_one_writer_per_home(tmp_path):
    home = DataHome(tmp_path / "home").ensure()
    with HomeLock(home.lock_path):
        with pytest.raises(StoreError, match="being written by vtr index"):
            run_index(_opts([tmp_path], home.root))


def test_cli_exit_codes_and_summary(tmp_path):
    lib = tmp_path / "lib"
    make_video(lib / "a.mp4", seconds=1)
    runner = CliRunner()
    home = ["--home", str(tmp_path / "home"), "--model", MODEL]
    res = runner.invoke(main, ["index", str(lib), *home, "-q"])
    assert res.exit_code == 0, res.output
    assert "indexed 1 file(s), 1 clips" in res.output
    res = runner.invoke(main, ["index", str(lib), *home, "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["unchanged"] == 1
    assert runner.invoke(main, ["index", str(tmp_path / "missing"), *home]).exit_code == 2
    assert runner.invoke(main, ["index", str(lib), *home, "--workers", "0"]).exit_code == 2
    assert runner.invoke(main, ["index", *home]).exit_code == 2
    res = runner.invoke(main, ["index", str(lib), "--home", str(tmp_path / "h2"), "--model", "no-such-model"])
    assert res.exit_code == 1 and "unknown model 'no-such-model'" in res.output


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("surrogate.jsonl", '{"text": "half a pair \\ud800"}\n', "caption 1 is not valid Unicode"),
        ("deep.jsonl", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (
            "deep_line.jsonl",
            '{"a": ' * 100_000 + "1" + "}" * 100_000 + "\n",
            "line 1: invalid JSON (nested too deeply)",
        ),
    ],
)
def test_texts_add_refuses_json_python_cannot_store_with_one_line(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    res = CliRunner().invoke(
        main, ["texts", "add", str(tmp_path / name), "--home", str(tmp_path / "h"), "--model", MODEL]
    )
    assert res.exit_code == 1 and message in res.output and isinstance(res.exception, SystemExit), res.output


def test_texts_add_formats_duplicates_and_reconciliation(tmp_path):
    runner = CliRunner()
    home = tmp_path / "home"
    args = ["--home", str(home), "--model", MODEL]
    (tmp_path / "a.txt").write_text("a dog runs on the beach\n\na cat sleeps\na dog runs on the beach\n")
    (tmp_path / "b.jsonl").write_text('{"caption": "a red car"}\n"a blue bird"\n{"text": "a cat sleeps"}\n')
    (tmp_path / "c.csv").write_text('id,caption\n1,"fireworks, at night"\n2,a boat\n')
    (tmp_path / "bad.jsonl").write_text('"ok"\n{"no": 1}\n')
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02")
    res = runner.invoke(main, ["texts", "add", str(tmp_path / "a.txt"), *args, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["added"] == 2
    assert runner.invoke(main, ["texts", "add", str(tmp_path / "b.jsonl"), *args]).exit_code == 0
    res = runner.invoke(main, ["texts", "add", str(tmp_path / "c.csv"), *args])
    assert res.exit_code == 0 and "added 2 text(s)" in res.output
    res = runner.invoke(main, ["texts", "add", str(tmp_path / "bad.jsonl"), *args])
    assert res.exit_code == 1 and "line 2" in res.output
    res = runner.invoke(main, ["texts", "add", str(tmp_path / "bin.txt"), *args])
    assert res.exit_code == 1 and "binary" in res.output
    h = DataHome(home)
    cat = Catalog(h.db_url(), create=False)
    assert {t.text for t in cat.texts_by_ids(cat.all_text_ids())} == {
        "a dog runs on the beach", "a cat sleeps", "a red car", "a blue bird", "fireworks, at night", "a boat",
    }  # fmt: skip
    index = VectorIndex.load(h.text_index_path, model=MODEL)
    assert np.array_equal(index.ids(), cat.all_text_ids())
    h.text_index_path.unlink()  # lost index: the next run embeds every text again
    res = runner.invoke(main, ["texts", "add", str(tmp_path / "a.txt"), *args, "--json"])
    out = json.loads(res.output)
    assert (out["added"], out["reembedded"], out["vectors"]) == (0, 6, 6)
    assert json.loads(runner.invoke(main, ["status", "--json", "--home", str(home)]).output)["texts"] == 6
    cat.close()


def test_status_of_an_empty_home(tmp_path):
    res = CliRunner().invoke(main, ["status", "--json", "--home", str(tmp_path / "nothing")])
    assert res.exit_code == 0
    st = json.loads(res.output)
    assert (st["videos"], st["clips"], st["vectors"], st["texts"], st["failed"]) == (0, 0, 0, 0, [])
    missing = tmp_path / "elsewhere" / "c.db"
    res = CliRunner().invoke(main, ["status", "--json", "--home", str(tmp_path / "h"), "--db", f"sqlite:///{missing}"])
    assert res.exit_code == 0 and json.loads(res.output)["videos"] == 0 and not missing.exists()


def test_status_with_a_bad_database_url_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(main, ["status", "--home", str(tmp_path / "h"), "--db", "nonsense"])
    assert res.exit_code == 1 and "not a database URL: 'nonsense'" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)  # no traceback


def test_status_of_a_damaged_catalog_is_one_line_not_a_traceback(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    (home / "catalog.db").write_bytes(b"not sqlite at all " * 64)
    res = CliRunner().invoke(main, ["status", "--home", str(home)])
    assert res.exit_code == 1 and "error: the catalog database failed: file is not a database" in res.output
    assert isinstance(res.exception, SystemExit) and "Traceback" not in res.output


def test_progress_is_bounded_in_time(tmp_path):
    """A library of small files indexes at a sane rate (guards against per-file stalls in the loop)."""
    lib = tmp_path / "lib"
    make_library(lib, count=6, seconds=2)
    t0 = time.monotonic()
    rep = run_index(_opts([lib], tmp_path / "home"))
    assert rep.exit_code == 0 and len(rep.indexed) == 6
    assert time.monotonic() - t0 < 60


def test_decoders_wait_for_a_slow_model_without_timing_out(tmp_path, monkeypatch):
    """Clips decoded while the model loads are bounded: past the backlog the decoders wait, and that
    wait is not charged to their files' timeout."""
    import indexer.embedding as embedding
    import indexer.pipeline as pipeline

    lib = tmp_path / "lib"
    make_library(lib, count=4, seconds=3)
    monkeypatch.setattr(pipeline, "_BACKLOG_BYTES", 1)  # one queued clip is a full backlog
    real_load = embedding.LoadingEmbedder._load
    held = []

    def slow_load(self):
        time.sleep(2.0)  # longer than the file timeout below
        held.append(True)
        real_load(self)

    monkeypatch.setattr(embedding.LoadingEmbedder, "_load", slow_load)
    rep = run_index(_opts([lib], tmp_path / "home", file_timeout=0.5))
    assert rep.exit_code == 0 and rep.failed == [] and len(rep.indexed) == 4 and held
    _assert_consistent(tmp_path / "home")


def test_console_script_exits_fast_with_complete_output_and_status(tmp_path):
    """The installed ``vtr`` skips torch's teardown (indexer.cli.run) but loses no output or exit status."""
    import subprocess
    import sys

    lib = tmp_path / "lib"
    make_library(lib, count=2, seconds=2.0)
    vtr = str(Path(sys.executable).with_name("vtr"))
    args = [vtr, "index", str(lib), "--home", str(tmp_path / "home"), "--model", MODEL, "--json"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # the whole JSON report arrived through the pipe
    assert report["clips"] >= 2 and report["indexed"] == 2
    bad = subprocess.run([*args[:2], str(tmp_path / "missing"), *args[3:]], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "missing" in bad.stderr
    st = subprocess.run([vtr, "status", "--json", "--home", str(tmp_path / "home")], capture_output=True, text=True)
    assert st.returncode == 0 and json.loads(st.stdout)["clips"] == report["clips"]  # the index run committed


def test_exit_status_mapping():
    from indexer.cli import _exit_status

    assert (_exit_status(None), _exit_status(0), _exit_status(3), _exit_status("boom")) == (0, 0, 3, 1)
