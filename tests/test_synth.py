"""The synthetic benchmark: determinism, unique test captions, and captions that need the time axis."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from retrieval.errors import InvalidInput
from retrieval.synth import generate, read_captions
from retrieval.synth import scenes as S
from retrieval.synth import vocab as V
from retrieval.synth.render import render


def _decode_all(path):
    from retrieval.decode import probe, read_frames

    return read_frames(path, range(probe(path).num_frames))


def test_same_seed_same_clips_other_seed_other_clips(tmp_path):
    a = generate(tmp_path / "a", 6, seed=3, split="test")
    b = generate(tmp_path / "b", 6, seed=3, split="test")
    c = generate(tmp_path / "c", 6, seed=4, split="test")
    assert a.read_text() == b.read_text()
    assert a.read_text() != c.read_text()
    for rec in read_captions(tmp_path / "a"):
        assert (tmp_path / "a" / rec["path"]).read_bytes() == (tmp_path / "b" / rec["path"]).read_bytes()


def test_clip_i_does_not_depend_on_count(tmp_path):
    small = read_captions(generate(tmp_path / "s", 4, seed=0, split="train").parent)
    big = read_captions(generate(tmp_path / "b", 8, seed=0, split="train").parent)
    assert [r["caption"] for r in small] == [r["caption"] for r in big[:4]]


@pytest.mark.parametrize("motion", [m for m in V.MOTIONS if m != "still"])
def test_reversed_video_is_the_opposite_caption(motion):
    rng = np.random.default_rng(0)
    shape = "triangle" if motion in ("clockwise", "counterclockwise") else "square"
    attrs = {"motion": motion, "colour": "red", "shape": shape, "size": None if motion in ("grow", "shrink") else "small",
             "background": "black"}  # fmt: skip
    scene = S.build("single", attrs, rng)
    rev = scene.reversed()
    assert rev.attrs["motion"] == V.OPPOSITE[motion] != motion
    frames = render(scene)
    np.testing.assert_array_equal(frames[::-1], render(rev))
    assert not np.array_equal(frames, frames[::-1])  # the clip really changes over time
    # the opposite caption's video contains exactly the same set of frames: no single frame tells them apart
    assert {f.tobytes() for f in frames} == {f.tobytes() for f in render(rev)}


def test_order_reversed_swaps_first_and_then():
    scene = S.build("order", {"a": "red circle", "b": "blue square", "background": "gray"}, np.random.default_rng(1))
    rev = scene.reversed()
    assert (rev.attrs["a"], rev.attrs["b"]) == ("blue square", "red circle")
    np.testing.assert_array_equal(render(scene)[::-1], render(rev))
    cap = S.caption(scene, np.random.default_rng(0), canonical=True)
    assert cap.index("red circle") < cap.index("blue square")


def test_reversal_survives_the_mp4_round_trip(tmp_path):
    from retrieval.synth.writer import write_mp4

    scene = S.build("single", {"motion": "left", "colour": "green", "shape": "cross", "size": "large",
                               "background": "white"}, np.random.default_rng(2))  # fmt: skip
    write_mp4(tmp_path / "a.mp4", render(scene))
    write_mp4(tmp_path / "b.mp4", render(scene.reversed()))
    a, b = _decode_all(tmp_path / "a.mp4"), _decode_all(tmp_path / "b.mp4")
    assert a.shape == (S.NUM_FRAMES, 96, 96, 3)
    assert np.abs(a[::-1].astype(int) - b.astype(int)).mean() < 2.0
    # and the object really moved left: its colour mass shifts towards x=0
    mass = [np.argwhere((f[..., 1] > 150) & (f[..., 0] < 120))[:, 1].mean() for f in (a[0], a[-1])]
    assert mass[1] < mass[0] - 10


def test_test_split_has_unique_meanings_and_held_out_combinations(tmp_path):
    recs = read_captions(generate(tmp_path, 300, seed=0, split="test").parent)
    assert len(recs) == 300
    assert len({r["key"] for r in recs}) == 300 and len({r["caption"] for r in recs}) == 300
    assert any(r["held_out"] for r in recs)
    assert {"direction", "order", "binding"} <= {r["subset"] for r in recs}


def test_train_split_never_shows_held_out_combinations_and_pairs_twins(tmp_path):
    recs = read_captions(generate(tmp_path, 120, seed=0, split="train").parent)
    assert not any(r["held_out"] for r in recs)
    groups: dict = {}
    for r in recs:
        groups.setdefault(r["group"], []).append(r)
    assert all(len(g) == 2 for g in groups.values())
    assert all(a["key"] != b["key"] for a, b in groups.values())


def test_long_videos_have_consecutive_event_times(tmp_path):
    recs = read_captions(generate(tmp_path, 2, seed=0, long=True).parent)
    for r in recs:
        ev = r["events"]
        assert 3 <= len(ev) <= 6 and ev[0]["start"] == 0.0
        assert all(a["end"] == b["start"] for a, b in zip(ev, ev[1:], strict=False))
        assert r["num_frames"] == len(ev) * S.NUM_FRAMES
        assert len(_decode_all(tmp_path / r["path"])) == r["num_frames"]


def test_bad_requests_are_clear_errors(tmp_path):
    with pytest.raises(InvalidInput, match="split"):
        generate(tmp_path, 2, split="nope")
    with pytest.raises(InvalidInput, match="unique captions"):
        generate(tmp_path, 10**6, split="test")
    with pytest.raises(InvalidInput, match="no captions.jsonl"):
        read_captions(tmp_path / "missing")
    (tmp_path / "captions.jsonl").write_text('{"path": "x.mp4"}\n')
    with pytest.raises(InvalidInput, match="needs 'path' and 'caption'"):
        read_captions(tmp_path)
    (tmp_path / "captions.jsonl").write_text("not json\n")
    with pytest.raises(InvalidInput, match="not JSON"):
        read_captions(tmp_path)


def test_vtr_synth_cli(tmp_path):
    from indexer.cli import main

    res = CliRunner().invoke(main, ["synth", str(tmp_path / "out"), "--count", "3", "--seed", "5", "--split", "val"])
    assert res.exit_code == 0, res.output
    lines = (tmp_path / "out" / "captions.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all((tmp_path / "out" / json.loads(x)["path"]).is_file() for x in lines)
    assert CliRunner().invoke(main, ["synth", str(tmp_path / "o2"), "--split", "bogus"]).exit_code == 2
