"""Media routes: thumbnails and videos with HTTP Range; only catalog files are ever served."""

from __future__ import annotations

import shutil

import pytest

from retrieval.engine import SearchEngine
from retrieval.home import DataHome
from tests import home as fixtures
from tests.home import index_paths
from webapp import create_app


class BufferedClient:
    """Test client whose responses are read and closed at once (send_file keeps the file open until then)."""

    def __init__(self, client):
        self._client = client

    def get(self, url, **kw):
        return self._client.get(url, buffered=True, **kw)

    def head(self, url, **kw):
        return self._client.head(url, buffered=True, **kw)


@pytest.fixture(scope="module")
def client(engine):
    return BufferedClient(create_app({"ENGINE": engine, "RATE_LIMIT": 0}).test_client())


@pytest.fixture(scope="module")
def video(engine, search_home):
    path = search_home["one_second"]
    (cid,) = search_home["clip_ids"][str(path)]
    return {"path": path, "clip_id": cid, "video_id": engine.get_clip(cid)["video_id"], "bytes": path.read_bytes()}


def test_full_video(client, video):
    resp = client.get(f"/media/videos/{video['video_id']}")
    assert resp.status_code == 200
    assert resp.mimetype == "video/mp4"
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.data == video["bytes"]
    assert int(resp.headers["Content-Length"]) == len(video["bytes"])
    head = client.head(f"/media/videos/{video['video_id']}")
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(video["bytes"]) and head.data == b""


@pytest.mark.parametrize(
    "spec, start, stop",
    [("bytes=0-99", 0, 100), ("bytes=100-", 100, None), ("bytes=-50", -50, None), ("bytes=10-10", 10, 11)],
)
def test_range_requests(client, video, spec, start, stop):
    data = video["bytes"]
    size = len(data)
    resp = client.get(f"/media/videos/{video['video_id']}", headers={"Range": spec})
    assert resp.status_code == 206
    want = data[start:stop]
    assert resp.data == want
    first = start % size
    assert resp.headers["Content-Range"] == f"bytes {first}-{first + len(want) - 1}/{size}"
    assert int(resp.headers["Content-Length"]) == len(want)


def test_range_past_the_end_is_416_in_the_error_shape(client, video):
    size = len(video["bytes"])
    resp = client.get(f"/media/videos/{video['video_id']}", headers={"Range": f"bytes={size + 10}-"})
    assert resp.status_code == 416
    assert resp.get_json()["error"]["code"] == "range_not_satisfiable"
    assert resp.headers["Content-Range"] == f"bytes */{size}"


@pytest.mark.parametrize(
    "spec",
    [
        "bytes=abc",
        "lines=0-10",
        "bytes=5-2",
        "bytes=0-1,5-6",
        "bytes=" + "9" * 40 + "-",
        "bytes=-" + "9" * 5000,  # int() refuses more than 4300 digits: was a 500
        "bytes=" + "9" * 5000 + "-,0-1",
    ],
)
def test_malformed_range_is_ignored_or_416(client, video, spec):
    # RFC 9110: a server may ignore a Range it cannot satisfy or parse; either way never a 500
    resp = client.get(f"/media/videos/{video['video_id']}", headers={"Range": spec})
    if resp.status_code == 416:
        assert resp.get_json()["error"]["code"] == "range_not_satisfiable"
    else:
        assert resp.status_code == 200 and resp.data == video["bytes"], spec


def test_suffix_range_longer_than_the_file_is_the_whole_file(client, video):
    # RFC 9110 14.1.2: a suffix-length beyond the representation selects all of it (werkzeug says 416)
    data = video["bytes"]
    resp = client.get(f"/media/videos/{video['video_id']}", headers={"Range": f"bytes=-{len(data) + 1000}"})
    assert resp.status_code == 206 and resp.data == data
    assert resp.headers["Content-Range"] == f"bytes 0-{len(data) - 1}/{len(data)}"
    zero = client.get(f"/media/videos/{video['video_id']}", headers={"Range": "bytes=-0"})
    assert zero.status_code == 416 and zero.get_json()["error"]["code"] == "range_not_satisfiable"


@pytest.mark.parametrize("spec", ["bytes=0-1,5-6", "bytes=0-9, -5", "items=0-5", "bytes=5-2,0-1"])
def test_multiple_ranges_and_other_units_get_the_whole_file(client, video, spec):
    # no multipart/byteranges here: ignoring Range (200) is what RFC 9110 allows; an unknown unit MUST be ignored
    resp = client.get(f"/media/videos/{video['video_id']}", headers={"Range": spec})
    assert resp.status_code == 200 and resp.data == video["bytes"] and "Content-Range" not in resp.headers


def test_several_unsatisfiable_ranges_are_416(client, video):
    size = len(video["bytes"])
    resp = client.get(f"/media/videos/{video['video_id']}", headers={"Range": f"bytes={size}-,{size + 5}-"})
    assert resp.status_code == 416 and resp.headers["Content-Range"] == f"bytes */{size}"


def test_conditional_requests(client, video):
    first = client.get(f"/media/videos/{video['video_id']}")
    etag = first.headers["ETag"]
    again = client.get(f"/media/videos/{video['video_id']}", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    stale = client.get(f"/media/videos/{video['video_id']}", headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.data == video["bytes"]


def test_thumbnail(client, video, engine):
    resp = client.get(f"/media/thumbs/{video['clip_id']}.jpg")
    assert resp.status_code == 200 and resp.mimetype == "image/jpeg"
    assert resp.data[:3] == b"\xff\xd8\xff"
    assert resp.data == engine.home.thumbnail_path(video["clip_id"]).read_bytes()


@pytest.mark.parametrize(
    "url",
    [
        "/media/videos/999999",
        "/media/thumbs/999999.jpg",
        "/media/videos/-1",
        "/media/videos/1.0",
        "/media/videos/../../etc/passwd",
        "/media/videos/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/media/videos/1/../../../etc/passwd",
        "/media/thumbs/..%2f..%2fcatalog.db.jpg",
        "/media/thumbs/1.jpg%00.png",
        "/media/thumbs/1.png",
        "/media/catalog.db",
        "/media/../catalog.db",
        "/static/../catalog.db",
        "/static/..%2f..%2fretrieval%2fengine.py",
        "/media/videos/%00",
        "/media/thumbs/1%2f..%2f2.jpg",
    ],
)
def test_no_request_path_reaches_the_filesystem(client, url):
    resp = client.get(url)
    assert resp.status_code == 404, (url, resp.status_code)
    assert resp.get_json()["error"]["code"] == "not_found"


def test_file_gone_from_disk_is_404_not_500(search_home, tiny, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    src = shutil.copy(search_home["one_second"], lib / "gone.mp4")
    home = DataHome(tmp_path / "home")
    (cid,) = index_paths(home, [lib])[str(src)]
    eng = SearchEngine(home, bundle=tiny, reload_interval=0.0)
    client = BufferedClient(create_app({"ENGINE": eng, "RATE_LIMIT": 0}).test_client())
    vid = eng.get_clip(cid)["video_id"]
    assert client.get(f"/media/videos/{vid}").status_code == 200
    (lib / "gone.mp4").unlink()
    home.thumbnail_path(cid).unlink()
    resp = client.get(f"/media/videos/{vid}")
    assert resp.status_code == 404 and "no longer" in resp.get_json()["error"]["message"]
    thumb = client.get(f"/media/thumbs/{cid}.jpg")
    assert thumb.status_code == 404 and thumb.get_json()["error"]["code"] == "not_found"
    eng.close()


def test_a_file_that_failed_to_index_is_not_served(search_home, tiny, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    good = shutil.copy(search_home["one_second"], lib / "good.mp4")
    (lib / "notes.mp4").write_text("not a video\n")
    home = DataHome(tmp_path / "home")
    from indexer.pipeline import IndexOptions, run_index

    opts = IndexOptions(paths=[str(lib)], home=str(home.root), model=fixtures.MODEL, workers=1, progress=False)
    report = run_index(opts)
    assert [f["path"] for f in report.failed] == [str(lib / "notes.mp4")] and report.indexed == [str(good)]
    eng = SearchEngine(home, bundle=tiny, reload_interval=0.0)
    client = BufferedClient(create_app({"ENGINE": eng, "RATE_LIMIT": 0}).test_client())
    bad_id = eng.catalog.video_by_path(str(lib / "notes.mp4")).id
    resp = client.get(f"/media/videos/{bad_id}")
    assert resp.status_code == 404 and "not indexed" in resp.get_json()["error"]["message"]
    good_id = eng.catalog.video_by_path(str(good)).id
    assert client.get(f"/media/videos/{good_id}").status_code == 200
    eng.close()
