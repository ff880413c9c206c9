"""SearchEngine against a real indexed home (tiny random model): oracle checks that hold for any model."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest
import torch

from retrieval.batching import MicroBatcher
from retrieval.engine import SearchEngine, SearchFilters
from retrieval.errors import DecodeError, IndexMismatch, InvalidInput, NotFound, StoreError
from tests.home import index_paths

QUERIES = ["a red circle moves left", "a small green cross moving downward", "a yellow square grows"]


def _all_vectors(home):
    from retrieval.token_store import TokenStore

    store = TokenStore(home.tokens_dir, readonly=True)
    ids = store.ids()
    return ids, store.get_vectors(ids), store


def _brute_force(engine, query: str, allowed=None):
    """Every clip ranked by cosine with the query, straight from the stored vectors."""
    ids, vecs, _ = _all_vectors(engine.home)
    q = engine.encode_text(query).vector
    scores = vecs @ q
    if allowed is not None:
        keep = np.isin(ids, allowed)
        ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))
    return ids[order].tolist(), scores[order]


@pytest.mark.parametrize("query", QUERIES)
def test_itc_ranking_is_brute_force(engine, query):
    res = engine.search_text(query, k=30, rerank=False)
    want, scores = _brute_force(engine, query)
    assert [h["clip_id"] for h in res["results"]] == want[:30]
    np.testing.assert_allclose([h["itc_score"] for h in res["results"]], scores[:30], rtol=1e-5, atol=1e-6)
    assert res["reranked"] == 0
    assert all(h["match_score"] is None and h["score"] == h["itc_score"] for h in res["results"])


@pytest.mark.parametrize("query", QUERIES)
def test_rerank_permutes_itc_head_and_sorts_by_match(engine, tiny, query):
    r = engine.rerank_k
    plain = engine.search_text(query, k=20, rerank=False)["results"]
    ranked = engine.search_text(query, k=20, rerank=True)
    hits = ranked["results"]
    assert ranked["reranked"] == r
    # the re-ranked head is a permutation of the ITC top r, sorted by match score
    assert sorted(h["clip_id"] for h in hits[:r]) == sorted(h["clip_id"] for h in plain[:r])
    match = [h["match_score"] for h in hits[:r]]
    assert match == sorted(match, reverse=True)
    assert all(h["reranked"] and h["score"] == h["match_score"] for h in hits[:r])
    # everything after it follows in ITC order, untouched
    assert [h["clip_id"] for h in hits[r:]] == [h["clip_id"] for h in plain[r:]]
    assert all(not h["reranked"] and h["match_score"] is None for h in hits[r:])
    # the match scores are the model's own, for the stored token sets
    model, _, tokenizer = tiny
    _, _, store = _all_vectors(engine.home)
    ids = tokenizer([query])
    with torch.no_grad():
        _, states = model.encode_text(ids, normalize=True, return_tokens=True)
        video = torch.from_numpy(store.get_tokens([h["clip_id"] for h in hits[:r]]).astype(np.float32))
        want = model.match_score(states.expand(r, -1, -1), ids.expand(r, -1), video).numpy()
    np.testing.assert_allclose(match, np.sort(want)[::-1], rtol=1e-4, atol=1e-5)


def test_rerank_default_follows_whether_the_head_is_trained(engine, tiny):
    assert tiny[0].match_head_trained is False
    assert engine.search_text(QUERIES[0], k=5)["reranked"] == 0  # a random head would only shuffle
    off = make_engine_like(engine, tiny, rerank_k=0)
    assert off.search_text(QUERIES[0], k=5, rerank=True)["reranked"] == 0


def make_engine_like(engine, tiny, **kw):
    return SearchEngine(engine.home, bundle=tiny, reload_interval=0.0, **kw)


@pytest.mark.parametrize("rerank", [False, True])
def test_pages_concatenate_to_one_ranking(engine, rerank):
    whole = [h["clip_id"] for h in engine.search_text(QUERIES[1], k=30, rerank=rerank)["results"]]
    pages = []
    for offset in range(0, 30, 7):
        res = engine.search_text(QUERIES[1], k=7, offset=offset, rerank=rerank)
        assert res["offset"] == offset and res["k"] == 7
        pages += [h["clip_id"] for h in res["results"]]
    assert pages[:30] == whole
    ranks = [h["rank"] for h in engine.search_text(QUERIES[1], k=5, offset=10, rerank=rerank)["results"]]
    assert ranks == [11, 12, 13, 14, 15]


def test_offset_past_the_end_is_empty_not_an_error(engine):
    res = engine.search_text(QUERIES[0], k=10, offset=5000)
    assert res["results"] == []


def test_filters_agree_with_brute_force(engine, search_home):
    cat = engine.catalog
    lib2 = str(search_home["lib2"])
    cases = [
        (SearchFilters(library=lib2), cat.clip_ids(root=lib2)),
        (SearchFilters(library="1"), cat.clip_ids(root=str(search_home["lib1"]))),
        (SearchFilters(path_prefix=lib2 + "/barcodes/"), cat.clip_ids(path_prefix=lib2 + "/barcodes/")),
        (SearchFilters(min_duration=2.5), cat.clip_ids(min_duration=2.5)),
        (SearchFilters(max_duration=2.0), cat.clip_ids(max_duration=2.0)),
        (SearchFilters(library=lib2, max_duration=3.5), cat.clip_ids(root=lib2, max_duration=3.5)),
    ]
    for filters, allowed in cases:
        assert 0 < len(allowed) < 43
        want, _ = _brute_force(engine, QUERIES[2], allowed)
        got = engine.search_text(QUERIES[2], k=1000, rerank=False, filters=filters)["results"]
        assert [h["clip_id"] for h in got] == want, filters
        page = engine.search_text(QUERIES[2], k=3, offset=2, rerank=False, filters=filters)["results"]
        assert [h["clip_id"] for h in page] == want[2:5]
    # durations really are the videos' durations
    longish = engine.search_text(QUERIES[0], k=100, filters=SearchFilters(min_duration=2.5))["results"]
    assert all(engine.get_video(h["video_id"])["duration"] >= 2.5 for h in longish)


def test_filter_with_no_match_and_unknown_library(engine):
    assert engine.search_text(QUERIES[0], filters=SearchFilters(path_prefix="/nowhere/"))["results"] == []
    with pytest.raises(NotFound, match="no library"):
        engine.search_text(QUERIES[0], filters=SearchFilters(library="/not/a/library"))


def test_path_prefix_is_literal_not_a_pattern(engine, search_home):
    # '%' and '_' would be SQL wildcards; a prefix made of them matches nothing
    assert engine.search_text(QUERIES[0], filters=SearchFilters(path_prefix="%"))["results"] == []
    assert engine.search_text(QUERIES[0], filters=SearchFilters(path_prefix="/_"))["results"] == []


def test_group_by_video(engine):
    flat = engine.search_text(QUERIES[0], k=1000, rerank=True)["results"]
    grouped = engine.search_text(QUERIES[0], k=1000, rerank=True, group_by_video=True)["results"]
    first_seen = list(dict.fromkeys(h["video_id"] for h in flat))
    assert [g["video_id"] for g in grouped] == first_seen
    for g in grouped:
        mine = [h for h in flat if h["video_id"] == g["video_id"]]
        assert g["clip_id"] == mine[0]["clip_id"]  # best moment first
        assert [m["clip_id"] for m in g["moments"]] == [h["clip_id"] for h in mine[1:]]
    assert [g["rank"] for g in grouped] == list(range(1, len(grouped) + 1))
    page = engine.search_text(QUERIES[0], k=2, offset=3, rerank=True, group_by_video=True)["results"]
    assert [g["video_id"] for g in page] == first_seen[3:5]


def test_clip_is_its_own_top_hit(engine, search_home):
    for ids in list(search_home["clip_ids"].values())[::3]:
        cid = ids[-1]
        res = engine.search_video(clip_id=cid, target="clips", k=3)
        top = res["results"][0]
        assert top["clip_id"] == cid and top["itc_score"] == pytest.approx(1.0, abs=1e-4)
        assert res["query"] == {"clip_id": cid}


def test_video_to_clips_rerank_compares_token_sets(engine, search_home):
    r = engine.rerank_k
    for ids in list(search_home["clip_ids"].values())[::4]:
        cid = ids[0]
        plain = engine.search_video(clip_id=cid, target="clips", k=20)
        assert plain["reranked"] == 0  # off unless asked for: there is no head score for two videos
        ranked = engine.search_video(clip_id=cid, target="clips", k=20, rerank=True)
        hits = ranked["results"]
        assert ranked["reranked"] == r
        assert sorted(h["clip_id"] for h in hits[:r]) == sorted(h["clip_id"] for h in plain["results"][:r])
        scores = [h["match_score"] for h in hits[:r]]
        assert scores == sorted(scores, reverse=True) and all(-1.0 <= x <= 1.0 + 1e-5 for x in scores)
        assert [h["clip_id"] for h in hits[r:]] == [h["clip_id"] for h in plain["results"][r:]]
        assert hits[0]["clip_id"] == cid and hits[0]["match_score"] == pytest.approx(1.0, abs=1e-5)


def test_uploaded_file_finds_its_clip(engine, search_home):
    path = search_home["one_second"]
    res = engine.search_video(path=path, target="clips", k=5)
    (cid,) = search_home["clip_ids"][str(path)]
    assert res["results"][0]["clip_id"] == cid
    assert res["results"][0]["itc_score"] == pytest.approx(1.0, abs=1e-3)
    assert res["query"] == {"file": "one_second.mp4"}


def test_video_to_texts_rerank_is_a_permutation(engine, search_home):
    cid = search_home["clip_ids"][str(search_home["lib1"] / search_home["captions"][0]["path"])][0]
    plain = engine.search_video(clip_id=cid, target="texts", k=18, rerank=False)["results"]
    ranked = engine.search_video(clip_id=cid, target="texts", k=18, rerank=True)
    r = engine.rerank_k
    assert ranked["reranked"] == r and ranked["target"] == "texts"
    hits = ranked["results"]
    assert sorted(h["text_id"] for h in hits[:r]) == sorted(h["text_id"] for h in plain[:r])
    scores = [h["match_score"] for h in hits[:r]]
    assert scores == sorted(scores, reverse=True)
    assert [h["text_id"] for h in hits[r:]] == [h["text_id"] for h in plain[r:]]
    assert {h["text"] for h in plain} <= set(search_home["texts"])
    itc = [h["itc_score"] for h in plain]
    assert itc == sorted(itc, reverse=True)


def test_search_embedding_matches_text_search(engine):
    vec = engine.embed_text(QUERIES[0])
    by_vec = engine.search_embedding(vec, target="clips", k=10)["results"]
    by_text = engine.search_text(QUERIES[0], k=10, rerank=False)["results"]
    assert [h["clip_id"] for h in by_vec] == [h["clip_id"] for h in by_text]
    with pytest.raises(InvalidInput, match="needs 32"):
        engine.search_embedding([1.0, 2.0], target="clips")
    with pytest.raises(InvalidInput):
        engine.search_embedding([0.0] * 32, target="clips")


def test_bad_input_gives_clear_errors(engine, tmp_path):
    for bad in ["", "   ", None, 42]:
        with pytest.raises(InvalidInput):
            engine.search_text(bad)
    for k in (0, -1, 1001):
        with pytest.raises(InvalidInput, match="k must be"):
            engine.search_text("x", k=k)
    with pytest.raises(InvalidInput, match="offset"):
        engine.search_text("x", offset=-1)
    with pytest.raises(NotFound, match="no clip with id 999999"):
        engine.search_video(clip_id=999999)
    with pytest.raises(InvalidInput, match="target"):
        engine.search_video(clip_id=1, target="frames")
    with pytest.raises(InvalidInput, match="exactly one"):
        engine.search_video()
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("hello, not a video\n" * 10)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    for f in (empty, text, junk):
        with pytest.raises(DecodeError):
            engine.search_video(path=f)


def test_long_query_is_truncated_not_refused(engine):
    res = engine.search_text("a red circle " * 500, k=3)
    assert len(res["results"]) == 3


def test_missing_home_and_model_mismatch(tmp_path, search_home, tiny):
    with pytest.raises(StoreError, match="no catalog"):
        SearchEngine(tmp_path / "nothing", bundle=tiny).search_text("x")
    elsewhere = tmp_path / "elsewhere" / "c.db"
    with pytest.raises(StoreError, match="no catalog in sqlite:///"):
        SearchEngine(tmp_path / "h", db=f"sqlite:///{elsewhere}", bundle=tiny).search_text("x")
    assert not elsewhere.exists()  # a mistyped --db leaves no empty catalog behind
    with pytest.raises(IndexMismatch, match="viclip-tiny-test"):
        SearchEngine(search_home["home"], model="viclip-tiny-synth", checkpoint="random").load()


def test_catalog_views(engine, search_home):
    path = str(search_home["one_second"])
    (cid,) = search_home["clip_ids"][path]
    clip = engine.get_clip(cid)
    assert clip["video_path"] == path and clip["start"] == 0.0 and clip["end"] == pytest.approx(1.0)
    video = engine.get_video(clip["video_id"])
    assert video["path"] == path and [c["clip_id"] for c in video["clips"]] == [cid]
    assert engine.video_file(clip["video_id"]).samefile(path)
    thumb = engine.thumbnail_file(cid)
    assert thumb.read_bytes()[:3] == b"\xff\xd8\xff"
    stats = engine.stats()
    assert stats["clips"] == sum(len(v) for v in search_home["clip_ids"].values())
    assert stats["clip_index"]["vectors"] == stats["clips"]
    assert stats["texts"] == len(set(search_home["texts"]))
    assert engine.health()["status"] == "ok"
    with pytest.raises(NotFound):
        engine.get_video(12345)


def test_concurrent_queries_are_batched_and_correct(engine):
    want = {q: [h["clip_id"] for h in engine.search_text(q + " now", k=10)["results"]] for q in QUERIES}
    engine.encoder.clear_cache()
    before = engine.text_batcher.items
    got, errors = {}, []

    def worker(i):
        q = QUERIES[i % 3]
        try:
            got[i] = (q, [h["clip_id"] for h in engine.search_text(q + " now", k=10)["results"]])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(ids == want[q] for q, ids in got.values())
    assert engine.text_batcher.items > before


def test_microbatcher_batches_concurrent_calls():
    calls = []
    gate = threading.Event()

    def slow_double(items):
        calls.append(list(items))
        if len(calls) == 1:
            gate.wait(5)  # hold the first batch so the others pile up behind it
        return [2 * x for x in items]

    mb = MicroBatcher(slow_double, max_batch=4)
    results = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, mb(i))) for i in range(9)]
    threads[0].start()
    time.sleep(0.1)
    for t in threads[1:]:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join(5)
    assert results == {i: 2 * i for i in range(9)}
    assert calls[0] == [0]
    assert max(len(c) for c in calls) == 4 and len(calls) == 3  # 1 + 4 + 4
    assert sorted(x for c in calls for x in c) == list(range(9))


def test_microbatcher_passes_errors_to_every_caller():
    def boom(items):
        raise ValueError("bad batch")

    mb = MicroBatcher(boom)
    with pytest.raises(ValueError, match="bad batch"):
        mb(1)
    assert mb.batches == 1
    with pytest.raises(ValueError):  # and the batcher is usable again afterwards
        mb(2)


@pytest.fixture
def fresh_home(search_home, tmp_path):
    """A writable copy of the session home."""
    dst = tmp_path / "home"
    shutil.copytree(search_home["home"].root, dst)
    from retrieval.home import DataHome

    return DataHome(dst)


def test_new_data_from_a_running_indexer_is_picked_up(fresh_home, tiny, tmp_path):
    from tests.videos import make_video

    eng = SearchEngine(fresh_home, bundle=tiny, rerank_k=4, reload_interval=0.0)
    before = eng.stats()["clips"]
    old_ids = {h["clip_id"] for h in eng.search_text(QUERIES[0], k=1000)["results"]}
    new = make_video(tmp_path / "lib3" / "new.mp4", seconds=1.0, fps=10, color=(10, 250, 250))
    # what another process (`vtr index` on a new folder) does to the live home
    (cid,) = index_paths(fresh_home, [tmp_path / "lib3"])[str(new)]
    assert cid not in old_ids
    assert eng.stats()["clips"] == before + 1
    assert eng.search_video(path=new, target="clips", k=1)["results"][0]["clip_id"] == cid
    assert cid in {h["clip_id"] for h in eng.search_text(QUERIES[0], k=1000)["results"]}
    ranked = eng.search_text(QUERIES[0], k=1000, rerank=True)  # its token set is found too
    assert ranked["reranked"] == 4


def test_add_texts_and_delete_video(fresh_home, tiny, search_home):
    eng = SearchEngine(fresh_home, bundle=tiny, rerank_k=4, reload_interval=0.0)
    n_texts = eng.stats()["texts"]
    ids = eng.add_texts(["a purple banana dances", "a purple banana dances", search_home["texts"][0]])
    assert ids[0] == ids[1] and len(set(ids)) == 2
    assert eng.stats()["texts"] == n_texts + 1 and eng.stats()["text_index"]["vectors"] == n_texts + 1
    cid = search_home["clip_ids"][str(search_home["one_second"])][0]
    hits = eng.search_video(clip_id=cid, target="texts", k=1000)["results"]
    assert ids[0] in [h["text_id"] for h in hits]
    # delete a video: its clips vanish from results, catalog and index
    vid = eng.get_clip(cid)["video_id"]
    out = eng.delete_video(vid)
    assert out["clips_removed"] == 1
    assert cid not in [h["clip_id"] for h in eng.search_text(QUERIES[0], k=1000)["results"]]
    with pytest.raises(NotFound):
        eng.get_clip(cid)
    assert eng.stats()["clip_index"]["vectors"] == eng.stats()["clips"]
    assert not fresh_home.thumbnail_path(cid).exists()
    assert search_home["one_second"].exists()  # the file itself stays
    with pytest.raises(NotFound):
        eng.delete_video(vid)


def test_missing_thumbnail_is_made_from_the_video(fresh_home, tiny, search_home):
    eng = SearchEngine(fresh_home, bundle=tiny, reload_interval=0.0)
    cid = search_home["clip_ids"][str(search_home["one_second"])][0]
    fresh_home.thumbnail_path(cid).unlink()
    path = eng.thumbnail_file(cid)
    assert path == fresh_home.thumbnail_path(cid) and path.read_bytes()[:2] == b"\xff\xd8"


@pytest.mark.postgres
def test_engine_and_api_on_a_postgresql_catalog(tmp_path, tiny, postgres_url):
    """The same searches with the catalog in PostgreSQL (the multi-process deployment)."""
    from indexer.pipeline import IndexOptions, run_index
    from retrieval.home import DataHome
    from tests.videos import make_library
    from webapp import create_app

    lib = tmp_path / "lib_%_x"  # '%' and '_' in the path: prefixes must match literally
    make_library(lib, count=3, seconds=2.0)
    home = DataHome(tmp_path / "home")
    report = run_index(
        IndexOptions(
            paths=[str(lib)],
            home=str(home.root),
            db=postgres_url,
            model="viclip-tiny-test",
            clip_seconds=1.0,
            workers=1,
            progress=False,
        )  # fmt: skip
    )
    assert not report.failed and report.clips == 6
    eng = SearchEngine(home, db=postgres_url, bundle=tiny, rerank_k=4, reload_interval=0.0)
    assert eng.stats()["clips"] == 6 and eng.catalog.dialect == "postgresql"
    hits = eng.search_text(QUERIES[0], k=10, rerank=True)["results"]
    assert len(hits) == 6 and [h["rank"] for h in hits] == list(range(1, 7))
    prefix = str(lib / "sub")
    sub = eng.search_text(QUERIES[0], k=10, filters=SearchFilters(path_prefix=prefix))["results"]
    assert len(sub) == 2 and all(h["video_path"].startswith(prefix) for h in sub)
    assert eng.search_text(QUERIES[0], filters=SearchFilters(path_prefix=str(tmp_path / "lib__")))["results"] == []
    assert len(eng.add_texts(["a red circle moves left", "a green square"])) == 2
    client = create_app({"ENGINE": eng, "RATE_LIMIT": 0}).test_client()
    body = client.get("/api/v1/search", query_string={"q": "a red circle", "k": 3}).get_json()
    assert len(body["results"]) == 3
    out = eng.delete_video(hits[0]["video_id"])
    assert out["clips_removed"] == 2 and eng.stats()["clips"] == 4
    eng.close()


def test_microbatcher_lanes_run_batches_side_by_side():
    """Two lanes: two batches at once, each caller's result its own, no item run twice or lost."""
    running, peak, seen = [0], [0], []
    lock = threading.Lock()

    def slow_double(items):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            seen.extend(items)
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return [2 * x for x in items]

    mb = MicroBatcher(slow_double, max_batch=3, lanes=2)
    results = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, mb(i))) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {i: 2 * i for i in range(20)}
    assert sorted(seen) == list(range(20)) and peak[0] == 2
    assert mb.items == 20 and mb._running == 0 and not mb._pending


def test_a_clip_deleted_by_another_process_is_not_on_the_page(fresh_home, tiny, monkeypatch):
    """Re-ranked pages read only their own records: a clip deleted since this engine loaded its index
    (by another process) is left out, and ranks stay contiguous."""
    from retrieval import candidates

    pages = []
    real = candidates.with_records
    monkeypatch.setattr(candidates, "with_records", lambda *a: pages.append(real(*a)) or pages[-1])
    reader = SearchEngine(fresh_home, bundle=tiny, rerank_k=8, reload_interval=3600.0)
    before = reader.search_text(QUERIES[0], k=3, rerank=True)["results"]
    top = before[0]
    writer = SearchEngine(fresh_home, bundle=tiny, reload_interval=0.0)
    writer.delete_video(top["video_id"])
    writer.close()
    after = reader.search_text(QUERIES[0], k=3, rerank=True)["results"]
    assert top["clip_id"] not in [h["clip_id"] for h in after]
    assert [h["rank"] for h in after] == list(range(1, len(after) + 1)) and len(after) == 3
    assert all(h["reranked"] for h in after)
    assert pages[0] is not None and pages[-1] is None  # the second page found a record missing
    reader.close()
