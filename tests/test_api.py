"""JSON API v1 through Flask's test client, over a real indexed home and a real engine."""

from __future__ import annotations

import io
import shutil

import pytest

from retrieval.engine import SearchEngine
from retrieval.home import DataHome
from tests import home as fixtures
from webapp import create_app

CLIP_FIELDS = {
    "clip_id",
    "video_id",
    "video_path",
    "start",
    "end",
    "score",
    "itc_score",
    "match_score",
    "thumbnail_url",
    "video_url",
}
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def client(engine):
    app = create_app({"ENGINE": engine, "RATE_LIMIT": 0, "TESTING": True})
    return app.test_client()


@pytest.fixture
def admin(search_home, tiny, tmp_path):
    """A client with the admin API on, over a writable copy of the home."""
    shutil.copytree(search_home["home"].root, tmp_path / "home")
    eng = SearchEngine(DataHome(tmp_path / "home"), bundle=tiny, rerank_k=4, reload_interval=0.0)
    roots = f"{search_home['lib1']}:{tmp_path / 'incoming'}"
    app = create_app({"ENGINE": eng, "RATE_LIMIT": 0, "ADMIN_TOKEN": TOKEN, "INDEX_ROOTS": roots})
    yield app.test_client(), eng
    eng.close()


def auth(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


def test_text_search_response_shape(client, engine):
    resp = client.get("/api/v1/search", query_string={"q": "a red circle moves left", "k": 5})
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    body = resp.get_json()
    assert body["query"] == "a red circle moves left"
    assert isinstance(body["took_ms"], float) and body["took_ms"] >= 0
    assert len(body["results"]) == 5
    for hit in body["results"]:
        assert CLIP_FIELDS <= set(hit)
        assert hit["thumbnail_url"] == f"/media/thumbs/{hit['clip_id']}.jpg"
        assert hit["video_url"] == f"/media/videos/{hit['video_id']}#t={hit['start']:.3f},{hit['end']:.3f}"
        assert 0 <= hit["start"] < hit["end"]
    direct = engine.search_text("a red circle moves left", k=5)
    assert [h["clip_id"] for h in body["results"]] == [h["clip_id"] for h in direct["results"]]


def test_text_search_options_pass_through(client, engine, search_home):
    lib2 = str(search_home["lib2"])
    q = {"q": "a yellow square grows", "k": 4, "offset": 2, "rerank": "1", "library": lib2}
    body = client.get("/api/v1/search", query_string=q).get_json()
    from retrieval.engine import SearchFilters

    direct = engine.search_text(
        "a yellow square grows", k=4, offset=2, rerank=True, filters=SearchFilters(library=lib2)
    )
    assert [h["clip_id"] for h in body["results"]] == [h["clip_id"] for h in direct["results"]]
    assert body["reranked"] == engine.rerank_k
    assert all(h["video_path"].startswith(lib2) for h in body["results"])
    grouped = client.get("/api/v1/search", query_string={"q": "a", "group_by_video": "true", "k": 50}).get_json()
    vids = [h["video_id"] for h in grouped["results"]]
    assert len(vids) == len(set(vids)) and all("moments" in h for h in grouped["results"])
    for h in grouped["results"]:
        for m in h["moments"]:
            assert m["video_id"] == h["video_id"] and m["thumbnail_url"].startswith("/media/thumbs/")
    dur = client.get("/api/v1/search", query_string={"q": "a", "min_duration": "2.5", "max_duration": 100}).get_json()
    assert dur["results"] and all(engine.get_video(h["video_id"])["duration"] >= 2.5 for h in dur["results"])
    pre = client.get("/api/v1/search", query_string={"q": "a", "path_prefix": lib2 + "/barcodes"}).get_json()
    assert pre["results"] and all("/barcodes/" in h["video_path"] for h in pre["results"])


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({}, "q is required"),
        ({"q": ""}, "q must not be empty"),
        ({"q": "   "}, "q must not be empty"),
        ({"q": "x" * 1001}, "too long"),
        ({"q": "x", "k": "0"}, "k must be between 1 and 1000"),
        ({"q": "x", "k": "1001"}, "k must be between 1 and 1000"),
        ({"q": "x", "k": "ten"}, "k must be an integer"),
        ({"q": "x", "k": "1e3"}, "k must be an integer"),
        ({"q": "x", "offset": "-1"}, "offset must be between"),
        ({"q": "x", "offset": "99999999999999999999999"}, "offset must be between"),
        ({"q": "x", "rerank": "maybe"}, "rerank must be true or false"),
        ({"q": "x", "group_by_video": "2"}, "group_by_video must be true or false"),
        ({"q": "x", "min_duration": "nan"}, "min_duration must be a number between"),
        ({"q": "x", "min_duration": "-3"}, "min_duration must be a number between"),
        ({"q": "x", "max_duration": "inf"}, "max_duration must be a number between"),
        ({"q": "x\x00y"}, "NUL"),
    ],
)
def test_text_search_rejects_bad_parameters(client, params, fragment):
    resp = client.get("/api/v1/search", query_string=params)
    assert resp.status_code == 422
    body = resp.get_json()
    assert body["error"]["code"] == "invalid_input" and fragment in body["error"]["message"]


def test_an_empty_duration_range_matches_nothing(client):
    resp = client.get("/api/v1/search", query_string={"q": "x", "min_duration": "5", "max_duration": "1"})
    assert resp.status_code == 200 and resp.get_json()["results"] == []


def test_video_search_checks_query_and_body_values_alike(client, search_home):
    """A body value overriding an invalid query value does not hide it (nor does an empty one)."""
    video = (search_home["lib1"] / "videos" / "test_000000.mp4").read_bytes()
    for query, form in [({"target": "AAA"}, {"target": ""}), ({"k": "0"}, {"k": "5"}), ({}, {"target": ""})]:
        resp = client.post(
            "/api/v1/search/video", query_string=query, data={"file": (io.BytesIO(video), "q.mp4"), **form}
        )
        assert resp.status_code == 422, (query, form, resp.get_json())
    resp = client.post("/api/v1/search/video", query_string={"target": "AAA"}, json={"clip_id": 1, "target": "clips"})
    assert resp.status_code == 422 and "target must be one of" in resp.get_json()["error"]["message"]
    ok = client.post("/api/v1/search/video", query_string={"k": 3}, json={"clip_id": 1, "target": "texts"})
    assert ok.status_code == 200 and ok.get_json()["target"] == "texts" and len(ok.get_json()["results"]) == 3


def test_unknown_library_is_404(client):
    resp = client.get("/api/v1/search", query_string={"q": "x", "library": "/no/such"})
    assert resp.status_code == 404 and "no library" in resp.get_json()["error"]["message"]


def test_unicode_and_markup_queries_are_just_text(client):
    for q in ["<script>alert(1)</script>", "日本語の動画", "emoji 🎬🎥", "'; DROP TABLE clips; --"]:
        resp = client.get("/api/v1/search", query_string={"q": q, "k": 3})
        assert resp.status_code == 200 and resp.get_json()["query"] == q


def test_video_search_by_clip_id(client, search_home):
    (cid,) = search_home["clip_ids"][str(search_home["one_second"])]
    resp = client.post("/api/v1/search/video", json={"clip_id": cid, "k": 3})
    body = resp.get_json()
    assert resp.status_code == 200 and body["target"] == "clips"
    assert body["results"][0]["clip_id"] == cid and CLIP_FIELDS <= set(body["results"][0])
    texts = client.post("/api/v1/search/video", json={"clip_id": cid, "target": "texts", "k": 5}).get_json()
    assert texts["target"] == "texts" and len(texts["results"]) == 5
    assert {"text_id", "text", "score", "itc_score", "match_score"} <= set(texts["results"][0])
    # a body without Content-Type is still JSON
    raw = client.post("/api/v1/search/video", data=f'{{"clip_id": {cid}}}', content_type=None)
    assert raw.status_code == 200 and raw.get_json()["results"][0]["clip_id"] == cid


def test_video_search_by_upload(client, search_home):
    path = search_home["one_second"]
    (cid,) = search_home["clip_ids"][str(path)]
    data = {"file": (io.BytesIO(path.read_bytes()), "my clip.mp4"), "target": "clips", "k": "2"}
    resp = client.post("/api/v1/search/video", data=data, content_type="multipart/form-data")
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert body["query"] == {"file": "my clip.mp4"} and body["results"][0]["clip_id"] == cid
    data = {"file": (io.BytesIO(path.read_bytes()), "x.mp4")}
    texts = client.post("/api/v1/search/video?target=texts&k=4", data=data).get_json()
    assert texts["target"] == "texts" and len(texts["results"]) == 4


@pytest.mark.parametrize(
    "kwargs, status, fragment",
    [
        ({"json": {}}, 422, "clip_id"),
        ({"json": {"clip_id": "abc"}}, 422, "clip_id must be an integer"),
        ({"json": {"clip_id": 987654}}, 404, "no clip with id 987654"),
        ({"json": {"clip_id": 1, "target": "frames"}}, 422, "target must be one of"),
        ({"json": [1, 2]}, 422, "JSON object"),
        ({"data": "{not json", "content_type": "application/json"}, 422, "JSON object"),
        ({"data": {"other": (io.BytesIO(b"x"), "a.mp4")}}, 422, "'file'"),
        ({"data": {"file": (io.BytesIO(b""), "empty.mp4")}}, 422, "empty"),
        ({"data": {"file": (io.BytesIO(b"not a video at all\n" * 20), "notes.mp4")}}, 422, "not a video"),
        ({"data": {"file": (io.BytesIO(bytes(range(256)) * 40), "noise.mp4")}}, 422, "cannot open"),
        ({"data": {"file": (io.BytesIO(b"x"), "a.mp4"), "clip_id": "3"}}, 422, "not both"),
    ],
)
def test_video_search_rejects_bad_input(client, kwargs, status, fragment):
    resp = client.post("/api/v1/search/video", **kwargs)
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert fragment in resp.get_json()["error"]["message"]


def test_slow_to_decode_upload_times_out_with_a_422(search_home, tiny, tmp_path):
    # a small upload can hold far more frames than a request may spend decoding: refused, named as sent
    from tests.videos import make_many_frames

    eng = fixtures.make_engine(search_home, tiny, query_timeout=0.05)
    try:
        client = create_app({"ENGINE": eng, "RATE_LIMIT": 0}).test_client()
        data = make_many_frames(tmp_path / "many.mp4", frames=20_000).read_bytes()
        resp = client.post("/api/v1/search/video", data={"file": (io.BytesIO(data), "my long clip.mp4")})
        assert resp.status_code == 422, resp.get_data(as_text=True)
        err = resp.get_json()["error"]
        assert err["code"] == "decode_error" and err["message"].startswith("my long clip.mp4: decoding took too long")
        ok = client.post("/api/v1/search/video", data={"file": (io.BytesIO(b"plain text\n" * 9), "notes.mp4")})
        assert ok.get_json()["error"]["message"].startswith("notes.mp4: ")  # not the server's temp file name
    finally:
        eng.close()


def test_playlist_uploads_cannot_make_the_server_read_its_files(client, search_home):
    # an HLS playlist or an ffconcat list naming a file on the server would make ffmpeg decode that file
    target = search_home["one_second"]
    hls = f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{target}\n#EXT-X-ENDLIST\n".encode()
    concat = f"ffconcat version 1.0\nfile {target.name}\n".encode()  # relative: next to the temp file
    for data, name in [(hls, "list.m3u8"), (concat, "list.mp4"), (concat, "list.txt")]:
        resp = client.post("/api/v1/search/video", data={"file": (io.BytesIO(data), name), "k": "1"})
        assert resp.status_code == 422, (name, resp.get_data(as_text=True))
        assert resp.get_json()["error"]["code"] == "decode_error", name


def test_truncated_upload_is_handled(client, search_home, tmp_path):
    data = search_home["one_second"].read_bytes()
    resp = client.post("/api/v1/search/video", data={"file": (io.BytesIO(data[: len(data) // 2]), "cut.mp4")})
    assert resp.status_code in (200, 422)  # a readable head is searched, an unreadable one refused
    if resp.status_code == 422:
        assert resp.get_json()["error"]["code"] == "decode_error"


def test_clip_and_video_lookups(client, search_home):
    path = str(search_home["one_second"])
    (cid,) = search_home["clip_ids"][path]
    clip = client.get(f"/api/v1/clips/{cid}").get_json()
    assert clip["clip_id"] == cid and clip["video_path"] == path
    assert clip["thumbnail_url"] == f"/media/thumbs/{cid}.jpg" and clip["video_url"].startswith("/media/videos/")
    video = client.get(f"/api/v1/videos/{clip['video_id']}").get_json()
    assert video["path"] == path and video["video_url"] == f"/media/videos/{clip['video_id']}"
    assert [c["clip_id"] for c in video["clips"]] == [cid]
    assert video["duration"] == pytest.approx(1.0, abs=0.01)
    for url in ("/api/v1/clips/999999", "/api/v1/videos/999999", "/api/v1/clips/abc", "/api/v1/clips/-1"):
        resp = client.get(url)
        assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"


def test_stats_and_health(client, search_home):
    stats = client.get("/api/v1/stats").get_json()
    n_clips = sum(len(v) for v in search_home["clip_ids"].values())
    assert stats["clips"] == n_clips and stats["videos"] == len(search_home["clip_ids"])
    assert stats["clip_index"]["vectors"] == n_clips and stats["model"] == "viclip-tiny-test"
    assert {lib["root"] for lib in stats["libraries"]} == {str(search_home["lib1"]), str(search_home["lib2"])}
    health = client.get("/api/v1/health").get_json()
    assert health["status"] == "ok" and health["indexed_vectors"] == n_clips


def test_health_reports_a_missing_catalog_as_503(tmp_path, tiny):
    eng = SearchEngine(DataHome(tmp_path / "empty"), bundle=tiny)
    resp = create_app({"ENGINE": eng, "RATE_LIMIT": 0}).test_client().get("/api/v1/health")
    assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "store_error"
    assert "vtr index" in resp.get_json()["error"]["message"]


@pytest.mark.parametrize(
    "body", [b'{"clip_id": 1, "path_prefix": "/a\\ud800"}', b'{"clip_id": 1, "library": "\\udfff"}']
)
def test_lone_surrogates_in_json_are_422(client, body):
    # JSON may escape half a UTF-16 pair; SQLite and the tokenizer cannot encode it (was a 500)
    resp = client.post("/api/v1/search/video", data=body, content_type="application/json")
    assert resp.status_code == 422 and "lone surrogate" in resp.get_json()["error"]["message"]


# -- admin


def test_admin_routes_are_off_without_a_token(client, search_home):
    for method, url, body in [
        ("post", "/api/v1/texts", {"texts": ["x"]}),
        ("post", "/api/v1/index", {"path": str(search_home["lib1"])}),
        ("delete", "/api/v1/videos/1", None),
    ]:
        resp = getattr(client, method)(url, json=body, headers=auth())
        assert resp.status_code == 403
        assert (
            resp.get_json()["error"]["code"] == "admin_disabled"
            and "VTR_ADMIN_TOKEN" in resp.get_json()["error"]["message"]
        )


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer ", "Bearer wrong", "Basic czNjcmV0LXRva2Vu", TOKEN])
def test_admin_routes_need_the_right_bearer_token(admin, header):
    client, _ = admin
    headers = {"Authorization": header} if header else {}
    resp = client.post("/api/v1/texts", json={"texts": ["x"]}, headers=headers)
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_admin_add_texts(admin, search_home):
    client, eng = admin
    resp = client.post("/api/v1/texts", json={"texts": ["a violet star spins", "a violet star spins"]}, headers=auth())
    assert resp.status_code == 201
    ids = resp.get_json()["ids"]
    assert len(ids) == 2 and ids[0] == ids[1]
    (cid,) = search_home["clip_ids"][str(search_home["one_second"])]
    found = client.post("/api/v1/search/video", json={"clip_id": cid, "target": "texts", "k": 1000}).get_json()
    assert ids[0] in [h["text_id"] for h in found["results"]]
    for body in (
        {},
        {"texts": []},
        {"texts": "one"},
        {"texts": [1]},
        {"texts": [""]},
        {"texts": ["x" * 5000]},
        {"texts": ["half a pair \ud800"]},
    ):
        bad = client.post("/api/v1/texts", json=body, headers=auth())
        assert bad.status_code == 422, body


def test_admin_delete_video(admin, search_home):
    client, eng = admin
    (cid,) = search_home["clip_ids"][str(search_home["one_second"])]
    vid = eng.get_clip(cid)["video_id"]
    resp = client.delete(f"/api/v1/videos/{vid}", headers=auth())
    assert resp.status_code == 200 and resp.get_json()["clips_removed"] == 1
    assert client.get(f"/api/v1/videos/{vid}").status_code == 404
    assert client.get(f"/media/thumbs/{cid}.jpg").status_code == 404
    hits = client.get("/api/v1/search", query_string={"q": "yellow", "k": 1000}).get_json()["results"]
    assert cid not in [h["clip_id"] for h in hits]
    assert client.delete(f"/api/v1/videos/{vid}", headers=auth()).status_code == 404


def test_admin_queue_index_only_under_allowed_roots(admin, search_home, tmp_path):
    client, _ = admin
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "incoming").mkdir()
    link = tmp_path / "incoming" / "escape"
    link.symlink_to(outside)
    for path in ["/etc", str(outside), str(search_home["lib1"]) + "/../lib2", str(link), "relative/path"]:
        resp = client.post("/api/v1/index", json={"path": path}, headers=auth())
        assert resp.status_code == 403, path
        assert resp.get_json()["error"]["code"] == "forbidden"
    missing = client.post("/api/v1/index", json={"path": str(tmp_path / "incoming" / "nope")}, headers=auth())
    assert missing.status_code == 404
    bad = client.post("/api/v1/index", json={"path": 5}, headers=auth())
    assert bad.status_code == 422


def test_admin_queue_index_runs_vtr_index(admin, search_home, tmp_path):
    from tests.videos import make_video

    client, eng = admin
    incoming = tmp_path / "incoming"
    make_video(incoming / "fresh.mp4", seconds=1.0, fps=10, color=(200, 20, 120))
    resp = client.post("/api/v1/index", json={"path": str(incoming)}, headers=auth())
    assert resp.status_code == 202
    job = resp.get_json()
    assert job["status"] in ("queued", "running") and job["path"] == str(incoming.resolve())
    queue = client.application.extensions["vtr.index_queue"]
    assert queue.wait(timeout=300)
    done = client.get(job["status_url"], headers=auth()).get_json()
    assert done["status"] == "done" and done["exit_code"] == 0, done
    # the running engine sees the new file without a restart
    hits = client.post(
        "/api/v1/search/video", data={"file": (io.BytesIO((incoming / "fresh.mp4").read_bytes()), "f.mp4")}
    )
    top = hits.get_json()["results"][0]
    assert top["video_path"] == str(incoming.resolve() / "fresh.mp4") and top["itc_score"] > 0.99
    assert client.get("/api/v1/index/jobs", headers=auth()).get_json()["jobs"][0]["job_id"] == job["job_id"]
    assert client.get("/api/v1/index/jobs/999", headers=auth()).status_code == 404
    assert client.get("/api/v1/index/jobs").status_code == 401


def test_app_built_from_settings_uses_the_indexed_model(search_home, monkeypatch):
    """No ENGINE injected: the app builds its own from HOME and picks the model the index was built with."""
    monkeypatch.delenv("VTR_MODEL", raising=False)
    app = create_app({"HOME": str(search_home["home"].root), "RATE_LIMIT": 0})
    client = app.test_client()
    body = client.get("/api/v1/search", query_string={"q": "a red circle", "k": 3}).get_json()
    assert len(body["results"]) == 3
    assert client.get("/api/v1/stats").get_json()["model"] == fixtures.MODEL
    lower = create_app({"home": str(search_home["home"].root), "rate_limit": 0})  # lower-case keys work too
    assert lower.config["HOME"] == str(search_home["home"].root) and lower.config["RATE_LIMIT"] == 0


def test_symlink_escape_from_index_roots_is_neither_indexed_nor_served(admin, tmp_path):
    """A link inside VTR_INDEX_ROOTS that points outside: the admin job skips it, and media is not served."""
    from retrieval.catalog import Catalog
    from tests.home import index_paths
    from tests.videos import make_video

    client, eng = admin
    incoming, outside = tmp_path / "incoming", tmp_path / "outside"
    make_video(incoming / "fresh.mp4", seconds=1.0, fps=10, color=(200, 20, 120))
    make_video(outside / "secret.mp4", seconds=1.0, fps=10, color=(20, 200, 120))
    make_video(outside / "deep" / "secret2.mp4", seconds=1.0, fps=10, color=(20, 20, 220))
    (incoming / "escape").symlink_to(outside)
    (incoming / "link.mp4").symlink_to(outside / "secret.mp4")
    resp = client.post("/api/v1/index", json={"path": str(incoming)}, headers=auth())
    assert resp.status_code == 202
    assert client.application.extensions["vtr.index_queue"].wait(timeout=300)
    job = client.get(resp.get_json()["status_url"], headers=auth()).get_json()
    assert job["status"] == "done" and job["exit_code"] == 0, job
    assert "skipped 2 link(s)" in job["output"] and "outside the index roots" in job["output"]
    catalog = Catalog(eng.home.db_url())
    try:
        paths = set(catalog.video_states())
    finally:
        catalog.close()
    assert str(incoming.resolve() / "fresh.mp4") in paths
    leaked = [p for p in paths if p.startswith(str(incoming.resolve())) and not p.endswith("/fresh.mp4")]
    assert not leaked and not [p for p in paths if p.startswith(str(outside))], paths

    # the same link indexed by a local `vtr index` (no --within) is in the catalog, but not served
    indexed = index_paths(eng.home, [incoming / "escape"])
    (escaped_path,) = [p for p in indexed if p.endswith("secret.mp4")]
    catalog = Catalog(eng.home.db_url())
    try:
        escaped = catalog.video_by_path(escaped_path).id
        fresh = catalog.video_by_path(str(incoming.resolve() / "fresh.mp4")).id
    finally:
        catalog.close()
    served = client.get(f"/media/videos/{fresh}")
    assert served.status_code == 200
    served.close()
    denied = client.get(f"/media/videos/{escaped}")
    assert denied.status_code == 404 and "outside the index roots" in denied.get_json()["error"]["message"]
    # and a link swapped at serve time is judged by where it points now
    (incoming / "fresh.mp4").rename(outside / "moved.mp4")
    (incoming / "fresh.mp4").symlink_to(outside / "moved.mp4")
    assert client.get(f"/media/videos/{fresh}").status_code == 404
