"""Reference-frame-only decoding (``frame_tolerance``): every sampled frame is a real frame of the
file (decoded without the deblocking filter) within the tolerance of its target, windows keep their exact membership, and a tolerance no
reference frame meets falls back to exact decoding."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from indexer.clips import plan_clips
from retrieval.decode import Video

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


@pytest.fixture(scope="module")
def bframes_video(tmp_path_factory):
    """6 s of 30 fps H.264 with B-frames (x264 defaults: 3 B-frames, pyramid): every frame differs."""
    path = tmp_path_factory.mktemp("ref") / "b.mp4"
    cmd = ["ffmpeg", "-y", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
           "testsrc2=size=160x120:rate=30:duration=6", "-c:v", "libx264", "-preset", "veryfast",
           "-bf", "3", "-g", "60", "-pix_fmt", "yuv420p", str(path)]  # fmt: skip
    subprocess.run(cmd, check=True)
    return path


def _windows(path):
    with Video(path) as v:
        plans = plan_clips(v.frame_times(), v.info.duration, 2.0, 2.0, 8)
        return [p.indices for p in plans], v.frame_times()


def _all_frames(path, n):
    with Video(path) as v:
        return v.read(list(range(n)))


def test_sampled_frames_are_real_frames_within_the_tolerance(bframes_video):
    windows, times = _windows(bframes_video)
    every = _all_frames(bframes_video, len(times))
    with Video(bframes_video, frame_tolerance=0.1) as v:
        got = dict(v.iter_windows(windows))
        offset = v.max_frame_offset
    assert sorted(got) == list(range(len(windows)))
    substituted = 0
    for w, idx in enumerate(windows):
        assert got[w].shape == (len(idx), *every.shape[1:])
        for slot, target in enumerate(idx):
            # decoded without the deblocking filter: a few levels from the frame it stands for (measured
            # here: 1.5 on average, 3 at most) and clearly nearer to it than to any other frame of the file
            diffs = np.abs(every.astype(np.int16) - got[w][slot]).mean(axis=(1, 2, 3))
            j, second = np.argsort(diffs)[:2]
            assert diffs[j] < 6.0 and diffs[j] < 0.75 * diffs[second], "a sampled frame is not a frame of the file"
            assert abs(times[j] - times[target]) <= 0.1 + 1e-9
            substituted += j != target
    assert substituted > 0 and 0 < offset <= 0.1  # B-frames were skipped, within the tolerance


def test_exact_by_default_and_when_no_reference_frame_is_close_enough(bframes_video):
    windows, times = _windows(bframes_video)
    with Video(bframes_video) as v:
        exact = dict(v.iter_windows(windows))
        assert v.max_frame_offset == 0.0
    with Video(bframes_video, frame_tolerance=0.001) as v:  # under one frame: B-frame targets redo exactly
        strict = dict(v.iter_windows(windows))
        assert v.max_frame_offset <= 0.001
    assert sorted(strict) == sorted(exact)
    for w in exact:
        np.testing.assert_array_equal(strict[w], exact[w])


def test_windows_past_the_end_are_padded_as_in_exact_decoding(bframes_video):
    windows, times = _windows(bframes_video)
    beyond = [[len(times) - 2, len(times) - 1, len(times) + 5]]  # a frame the file does not have
    with Video(bframes_video) as v:
        exact = dict(v.iter_windows(beyond))
    with Video(bframes_video, frame_tolerance=0.1) as v:
        fast = dict(v.iter_windows(beyond))
    np.testing.assert_array_equal(fast[0], exact[0])


def test_vtr_index_takes_the_tolerance_from_flag_or_environment(monkeypatch):
    from indexer.options import IndexOptions
    from retrieval.errors import InvalidInput

    assert IndexOptions(["x"]).resolved().frame_tolerance == 0.1  # the default: one frame at 10-60 fps
    monkeypatch.setenv("VTR_FRAME_TOLERANCE", "0")
    assert IndexOptions(["x"]).resolved().frame_tolerance == 0.0  # exact frames, when asked
    assert IndexOptions(["x"], frame_tolerance=0.05).resolved().frame_tolerance == 0.05
    with pytest.raises(InvalidInput, match="frame-tolerance"):
        IndexOptions(["x"], frame_tolerance=-1).resolved()


def test_the_frame_offset_used_is_recorded_per_video(bframes_video, tmp_path):
    """The catalog says how far from their targets a video's sampled frames may be (0: exact frames)."""
    from indexer.pipeline import IndexOptions, run_index
    from retrieval.catalog import Catalog
    from retrieval.home import DataHome

    offsets = {}
    for tol in (0.1, 0.0):
        home = tmp_path / f"home{tol}"
        opts = IndexOptions(paths=[str(bframes_video)], home=str(home), model="viclip-tiny-test", progress=False,
                            frame_tolerance=tol, clip_seconds=2.0, workers=1)  # fmt: skip
        assert run_index(opts).exit_code == 0
        cat = Catalog(DataHome(home).db_url(), create=False)
        (video,) = cat.list_videos()
        offsets[tol] = video.frame_offset
        cat.close()
    assert 0 < offsets[0.1] <= 0.1 + 1e-9 and offsets[0.0] == 0.0
