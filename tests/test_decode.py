"""retrieval.decode on real files: every codec, rotation, VFR, one frame, 4K, and each bad-file kind."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest

from retrieval.decode import Video, open_video, probe, read_frames
from retrieval.errors import DecodeError, InvalidInput
from tests.videos import (
    CODECS,
    frame_index,
    make_4k_video,
    make_audio_only,
    make_corrupt,
    make_many_frames,
    make_one_frame_video,
    make_text_as_video,
    make_truncated,
    make_vfr_video,
    make_video,
    make_zero_byte,
    vfr_times,
)


@pytest.fixture(scope="module")
def vids(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode")
    out = {c: make_video(root / f"codec_{c}{CODECS[c][0]}", codec=c, seconds=3, fps=10) for c in CODECS}
    for r in (90, 180, 270):
        out[f"rot{r}"] = make_video(root / f"rot{r}.mp4", seconds=1, fps=10, rotation=r)
    out["vfr"] = make_vfr_video(root / "vfr.mp4")
    out["one"] = make_one_frame_video(root / "one.mp4")
    out["named"] = make_video(root / "a name with spaces — vidéo 日本.mp4", seconds=1)
    out["audio_video"] = make_video(root / "with_audio.mp4", seconds=2, audio=True)
    return out


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_every_codec_probes_and_returns_the_requested_frames(vids, codec):
    info = probe(vids[codec])
    assert info.num_frames == 30
    assert info.fps == pytest.approx(10, rel=1e-3)
    assert info.duration == pytest.approx(3.0, abs=1e-3)
    assert (info.width, info.height, info.rotation) == (64, 48, 0)
    assert info.codec == {"h265": "hevc"}.get(codec, codec)
    want = [29, 0, 7, 7, 15]
    for backend in ("auto", "pyav"):
        frames = read_frames(vids[codec], want, backend=backend)
        assert frames.shape == (5, 48, 64, 3) and frames.dtype == np.uint8
        assert [frame_index(f) for f in frames] == want, backend


def test_av1_is_read_through_the_pyav_fallback(vids):
    with pytest.raises(DecodeError, match="decord cannot read"):
        read_frames(vids["av1"], [0], backend="decord")
    assert frame_index(read_frames(vids["av1"], [12])[0]) == 12


def _ffmpeg_first_frame(path, h, w):
    raw = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(path), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(h, w, 3)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_is_applied_like_a_player(vids, rotation):
    path = vids[f"rot{rotation}"]
    info = probe(path)
    assert info.rotation == rotation
    h, w = (64, 48) if rotation in (90, 270) else (48, 64)
    assert (info.height, info.width) == (h, w)
    ours = read_frames(path, [0])[0]  # decord would return a broken 4-channel image: auto uses PyAV
    assert ours.shape == (h, w, 3)
    reference = _ffmpeg_first_frame(path, h, w)  # ffmpeg's autorotate is the reference
    assert np.abs(ours.astype(int) - reference.astype(int)).mean() < 2.0
    # un-rotating gives back the stored barcode
    assert frame_index(np.rot90(ours, -(rotation // 90))) == 0


def test_variable_frame_rate_times_come_from_the_container(vids):
    with open_video(vids["vfr"]) as v:
        assert v.info.num_frames == 30
        np.testing.assert_allclose(v.frame_times(), vfr_times(), atol=2e-3)
        assert v.info.duration == pytest.approx(2.0, abs=1e-3)
        assert v.index_at(1.1) == 25 and v.index_at(0.0) == 0 and v.index_at(99) == 29
    assert [frame_index(f) for f in read_frames(vids["vfr"], [24, 25, 29])] == [24, 25, 29]


def test_one_frame_video(vids):
    info = probe(vids["one"])
    assert info.num_frames == 1 and 0 < info.duration <= 1.0
    frames = read_frames(vids["one"], [0, 0, 3])  # past the end reads the last frame
    assert frames.shape == (3, 48, 64, 3)


def test_names_with_spaces_and_non_ascii_characters(vids):
    assert probe(vids["named"]).num_frames == 10
    assert frame_index(read_frames(vids["named"], [9])[0]) == 9


def test_a_video_with_an_audio_track(vids):
    info = probe(vids["audio_video"])
    assert info.num_frames == 20 and info.codec == "h264"


def test_4k_video(tmp_path):
    path = make_4k_video(tmp_path / "uhd.mp4", seconds=0.5, fps=4)
    info = probe(path)
    assert (info.width, info.height, info.num_frames) == (3840, 2160, 2)
    frames = read_frames(path, [1])
    assert frames.shape == (1, 2160, 3840, 3) and frame_index(frames[0]) == 1


def test_iter_windows_reads_once_in_order_with_overlaps_and_repeats(vids):
    windows = [[0, 2, 4, 6], [4, 6, 8, 10], [10, 10, 10, 10], [29, 28, 27, 26]]
    with Video(vids["h264"]) as v:
        got = list(v.iter_windows(windows))
        assert v.frames_decoded == 30 and v.incomplete_windows == 0
    assert [w for w, _ in got] == [0, 1, 2, 3]
    for (w, frames), want in zip(got, windows, strict=True):
        assert [frame_index(f) for f in frames] == want


def test_iter_windows_rejects_bad_requests(vids):
    with Video(vids["h264"]) as v:
        with pytest.raises(InvalidInput):
            list(v.iter_windows([[]]))
    with pytest.raises(InvalidInput):
        read_frames(vids["h264"], [-1])
    with pytest.raises(InvalidInput):
        read_frames(vids["h264"], [])
    with pytest.raises(InvalidInput):
        read_frames(vids["h264"], [0], backend="opencv")


# ---------------------------------------------------------------------------------------------
# bad files: a readable DecodeError, never a crash or a hang


@pytest.mark.parametrize(
    "make, message",
    [
        (make_zero_byte, r"empty file \(0 bytes\)"),
        (make_text_as_video, r"not a video file \(it contains text\)"),
        (make_audio_only, r"no video stream \(audio only\)"),
        (lambda p: make_truncated(p, faststart=False), "cannot open as a video"),
    ],
    ids=["zero_byte", "text_renamed", "audio_only", "truncated_no_index"],
)
def test_bad_files_raise_a_readable_decode_error(tmp_path, make, message):
    path = make(tmp_path / "bad file.mp4")
    with pytest.raises(DecodeError, match=message) as exc:
        probe(path)
    assert exc.value.status == 422 and "bad file.mp4" in exc.value.message
    with pytest.raises(DecodeError):
        read_frames(path, [0])


def test_missing_path_and_folder(tmp_path):
    with pytest.raises(DecodeError, match="file not found"):
        probe(tmp_path / "nope.mp4")
    with pytest.raises(DecodeError, match="not a regular file"):
        probe(tmp_path)


def test_corrupt_payload_fails_or_decodes_partially_but_returns(tmp_path):
    path = make_corrupt(tmp_path / "corrupt.mp4")
    try:
        with Video(path) as v:
            got = list(v.iter_windows([[i] for i in range(v.info.num_frames)]))
        assert len(got) <= v.info.num_frames
    except DecodeError as exc:
        assert "corrupt.mp4" in exc.message


def test_truncated_file_with_index_decodes_what_is_there(tmp_path):
    path = make_truncated(tmp_path / "cut.mp4", faststart=True, seconds=4, fps=10)
    with Video(path) as v:
        assert 0 < v.info.num_frames < 40  # index entries past the end of the file are not counted
        assert v.declared_frames == 40
        n = v.info.num_frames
    frames = read_frames(path, [0, n - 1])  # decord cannot open it: PyAV reads it
    assert [frame_index(f) for f in frames] == [0, n - 1]
    with Video(path) as v:  # a window past the readable end is padded with its last decoded frame
        got = dict(v.iter_windows([[0, 1], [n - 1, n + 5]]))
    assert [frame_index(f) for f in got[1]] == [n - 1, n - 1]


def test_frames_larger_than_8k_are_refused(tmp_path):
    path = make_video(tmp_path / "huge.avi", seconds=1, fps=1, size=(8256, 4352), codec="mjpeg")
    with pytest.raises(DecodeError, match="larger than 8K"):
        probe(path)


def test_deadline_stops_a_long_decode(tmp_path):
    # 20000 frames behind one keyframe: reading the last one decodes them all (~0.6 s here)
    path = make_many_frames(tmp_path / "many.mp4", frames=20_000)
    assert read_frames(path, [19_999]).shape == (1, 64, 64, 3)  # no deadline: it completes
    t0 = time.monotonic()
    with pytest.raises(DecodeError, match="many.mp4: decoding took too long"):
        read_frames(path, [0, 19_999], deadline=time.monotonic() + 0.05)
    assert time.monotonic() - t0 < 5.0
    with pytest.raises(DecodeError, match="took too long"):
        probe(path, deadline=time.monotonic() - 1)  # checked before the first packet, too


def test_self_contained_refuses_playlists_and_concat_lists(tmp_path):
    clip = make_video(tmp_path / "clip.mp4", seconds=1)
    hls = tmp_path / "list.m3u8"
    hls.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{clip}\n#EXT-X-ENDLIST\n")
    concat = tmp_path / "list.bin"
    concat.write_text("ffconcat version 1.0\nfile clip.mp4\n")
    assert probe(concat).num_frames > 0  # what ffmpeg does by default: it reads clip.mp4
    for path in (hls, concat):
        with pytest.raises(DecodeError, match="playlist or reference file"):
            probe(path, self_contained=True)
        with pytest.raises(DecodeError, match="playlist or reference file"):
            read_frames(path, [0], self_contained=True)
    assert read_frames(clip, [0, 5], self_contained=True).shape[0] == 2  # a real file is fine
