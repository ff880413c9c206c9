"""A small real data home for the search tests (no tests here; imported by test_engine/test_api/...).

Two libraries of real H.264 files: synthetic scenes with captions (``retrieval.synth``) and barcoded
clips of other lengths (``tests.videos``), cut into 1-second clips, embedded with the tiny test
model, written through the catalog, the token store and a FAISS index the way ``vtr index`` does,
plus the captions as the text corpus.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

MODEL = "viclip-tiny-test"
CLIP_SECONDS = 1.0


def _windows(times: np.ndarray, duration: float, n_frames: int):
    from retrieval.catalog import ClipSpan
    from retrieval.frames import middle_indices

    spans, windows = [], []
    starts = np.arange(0.0, max(duration, 1e-6), CLIP_SECONDS)
    for idx, start in enumerate(starts):
        end = min(duration, start + CLIP_SECONDS)
        sel = np.nonzero((times >= start - 1e-6) & (times < end - 1e-6))[0]
        if len(sel) == 0:
            continue
        f0, f1 = int(sel[0]), int(sel[-1]) + 1
        spans.append(ClipSpan(idx, float(start), float(end), f0, f1))
        windows.append([f0 + i for i in middle_indices(f1 - f0, n_frames)])
    return spans, windows


def index_files(home, paths_by_root: dict[Path, list[Path]], model, preprocess) -> dict:
    """Embed ``paths`` (grouped by library root) into ``home`` (new or existing); returns {path: [clip ids]}."""
    from PIL import Image

    from retrieval.catalog import Catalog, VideoMeta
    from retrieval.decode import open_video
    from retrieval.index import VectorIndex
    from retrieval.token_store import StoreLayout, TokenStore

    home.ensure()
    catalog = Catalog(home.db_url())
    items, payload = [], []
    for root, paths in paths_by_root.items():
        for path in paths:
            with open_video(path) as video:
                info = video.info
                spans, windows = _windows(video.frame_times(), info.duration, model.num_frames)
                frames = dict(video.iter_windows(windows))
            pixels = torch.stack([preprocess(frames[w]) for w in range(len(windows))])
            with torch.inference_mode():
                emb, tok = model.encode_video(pixels, normalize=True, return_tokens=True)
            st = path.stat()
            meta = VideoMeta(
                root=str(root),
                path=str(path),
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                fingerprint=f"test-{st.st_size}",
                duration=info.duration,
                fps=info.fps,
                num_frames=info.num_frames,
                width=info.width,
                height=info.height,
                codec=info.codec,
                rotation=info.rotation,
                model=model.name,
                clip_seconds=CLIP_SECONDS,
                stride=CLIP_SECONDS,
            )
            items.append((meta, spans))
            payload.append((emb.numpy(), tok.numpy(), [frames[w][len(frames[w]) // 2] for w in range(len(windows))]))
    layout = StoreLayout(model.name, payload[0][1].shape[1], payload[0][1].shape[2], payload[0][0].shape[1])
    store = TokenStore(home.tokens_dir, layout)
    all_vecs, all_ids = [], []

    def write(new_ids, _old):
        for ids, (emb, tok, _) in zip(new_ids, payload, strict=True):
            store.append(ids, emb, tok)
            all_vecs.append(emb)
            all_ids.extend(ids)

    new_ids, _ = catalog.commit_videos(items, before_commit=write)
    vecs, ids = np.concatenate(all_vecs), np.asarray(all_ids, np.int64)
    if home.clip_index_path.exists():  # a later run adds to the index, as `vtr index` does
        index = VectorIndex.load(home.clip_index_path, model=model.name)
        index.add(vecs, ids)
    else:
        index = VectorIndex.build(vecs, ids, model=model.name, factory="Flat")
    index.save(home.clip_index_path)
    for ids, (_, _, thumbs) in zip(new_ids, payload, strict=True):
        for cid, frame in zip(ids, thumbs, strict=True):
            Image.fromarray(frame).save(home.thumbnail_path(cid), format="JPEG")
    catalog.close()
    return {str(meta.path): ids for (meta, _), ids in zip(items, new_ids, strict=True)}


def build_home(root: Path, tiny) -> dict:
    """Generate the two libraries under ``root`` and index them into ``root/home``."""
    from retrieval.home import DataHome
    from retrieval.synth import generate, read_captions
    from tests.videos import make_library, make_video

    model, preprocess, _ = tiny
    lib1, lib2 = root / "lib1", root / "lib2"
    generate(lib1, 8, seed=1, split="test")
    generate(lib2 / "long", 2, seed=1, split="test", long=True)
    extra = make_library(lib2 / "barcodes", count=2, seconds=3.0, fps=10)
    one = make_video(lib2 / "one_second.mp4", seconds=1.0, fps=10, color=(250, 250, 20))  # exactly one clip
    captions = read_captions(lib1)
    long_caps = read_captions(lib2 / "long")
    paths_by_root = {
        lib1: [lib1 / r["path"] for r in captions],
        lib2: [lib2 / "long" / r["path"] for r in long_caps] + list(extra) + [one],
    }
    home = DataHome(root / "home")
    clip_ids = index_files(home, paths_by_root, model, preprocess)
    texts = [r["caption"] for r in captions] + [e["caption"] for r in long_caps for e in r["events"]]
    return {
        "home": home,
        "lib1": lib1,
        "lib2": lib2,
        "clip_ids": clip_ids,
        "captions": captions,
        "texts": texts,
        "one_second": one,
    }


@pytest.fixture(scope="session")
def search_home(tmp_path_factory, tiny):
    """The indexed home with its caption corpus (read-only for tests: copy it before writing).

    ``checkpoint`` is the tiny model saved as a project checkpoint, so engines built from settings
    (CLI, server) load exactly the weights that embedded the clips.
    """
    from retrieval.checkpoints import save_checkpoint
    from retrieval.engine import SearchEngine

    root = tmp_path_factory.mktemp("search")
    built = build_home(root, tiny)
    built["checkpoint"] = save_checkpoint(tiny[0], root / "tiny.safetensors")
    eng = SearchEngine(built["home"], bundle=tiny)
    built["text_ids"] = eng.add_texts(built["texts"], source="captions")
    eng.close()
    return built


def make_engine(search_home, tiny, **kw):
    from retrieval.engine import SearchEngine

    kw.setdefault("rerank_k", 8)
    kw.setdefault("reload_interval", 0.0)
    return SearchEngine(search_home["home"], bundle=tiny, **kw)


@pytest.fixture(scope="session")
def engine(search_home, tiny):
    """A SearchEngine over ``search_home`` sharing the session's tiny model."""
    eng = make_engine(search_home, tiny)
    yield eng
    eng.close()
