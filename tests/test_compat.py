"""clip-retrieval compatibility: the real ``ClipClient`` against a real server on 127.0.0.1.

``clip_retrieval/__init__.py`` imports its whole back end (faiss, torch, flask_restful, ...), so the
client module is loaded from its file when the package is installed (``pip install --no-deps
clip-retrieval``). Without it, the request ClipClient sends is replayed byte for byte (recorded
from clip-retrieval 2.45.0's ``ClipClient.__search_knn_api__``: ``requests.post(url,
data=json.dumps({...}))``, no Content-Type header), so the protocol stays pinned either way.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import threading

import pytest
import requests

from webapp import create_app


def load_clip_client():
    spec = importlib.util.find_spec("clip_retrieval")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = f"{spec.submodule_search_locations[0]}/clip_client.py"
    mod_spec = importlib.util.spec_from_file_location("clip_retrieval_clip_client", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def recorded_knn_body(text=None, image=None, embedding_input=None, modality="image", num_images=40) -> bytes:
    """Exactly what ClipClient 2.45.0 posts (its defaults: dedup/safety/violence on, aesthetic 9/0.5)."""
    return json.dumps(
        {
            "text": text,
            "image": image,
            "image_url": None,
            "embedding_input": embedding_input,
            "deduplicate": True,
            "use_safety_model": True,
            "use_violence_detector": True,
            "indice_name": "vtr",
            "use_mclip": False,
            "aesthetic_score": 9,
            "aesthetic_weight": 0.5,
            "modality": modality,
            "num_images": num_images,
            "num_result_ids": num_images,
        }
    ).encode()


@pytest.fixture(scope="module")
def server(engine):
    """A real waitress server in this process on a free port; shut down after the module."""
    from waitress.server import create_server

    app = create_app({"ENGINE": engine, "RATE_LIMIT": 0})
    srv = create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.effective_port}"
    srv.close()
    thread.join(5)


@pytest.fixture(scope="module")
def clip_client():
    module = load_clip_client()
    if module is None:
        pytest.skip("clip-retrieval is not installed (pip install --no-deps clip-retrieval); replay tests cover it")
    return module


def post_raw(url: str, body: bytes):
    """POST like ClipClient: a JSON body and no Content-Type header."""
    resp = requests.post(url, data=body, timeout=60)
    assert "Content-Type" not in resp.request.headers
    return resp


def test_clip_client_text_query(server, clip_client, engine):
    client = clip_client.ClipClient(url=f"{server}/knn-service", indice_name="vtr", num_images=5)
    results = client.query(text="a red circle moves left")
    want = engine.search_text("a red circle moves left", k=5)["results"]
    assert [r["id"] for r in results] == [h["clip_id"] for h in want]
    for r, h in zip(results, want, strict=True):
        assert r["similarity"] == pytest.approx(h["score"])
        assert r["url"] == f"{server}/media/thumbs/{h['clip_id']}.jpg"
        assert r["start"] == h["start"] and r["end"] == h["end"] and r["video_id"] == h["video_id"]
        assert r["video_url"].startswith(f"{server}/media/videos/{h['video_id']}#t=")
        assert isinstance(r["caption"], str) and r["caption"]
        thumb = requests.get(r["url"], timeout=30)
        assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/jpeg"


def test_clip_client_caption_search(server, clip_client, search_home):
    client = clip_client.ClipClient(
        url=f"{server}/knn-service", indice_name="vtr", num_images=3, modality=clip_client.Modality.TEXT
    )
    results = client.query(text=search_home["texts"][0])
    assert len(results) == 3 and results[0]["caption"] == search_home["texts"][0]
    assert results[0]["similarity"] == pytest.approx(1.0, abs=1e-4)


def test_clip_client_image_and_embedding_queries(server, clip_client, engine, search_home):
    (cid,) = search_home["clip_ids"][str(search_home["one_second"])]
    client = clip_client.ClipClient(url=f"{server}/knn-service", indice_name="vtr", num_images=4)
    by_image = client.query(image=str(engine.home.thumbnail_path(cid)))  # a JPEG: a one-frame video
    assert len(by_image) == 4 and all("url" in r for r in by_image)
    vec = engine.embed_text("a yellow square grows")
    by_vec = client.query(embedding_input=vec)
    want = engine.search_embedding(vec, target="clips", k=4)["results"]
    assert [r["id"] for r in by_vec] == [h["clip_id"] for h in want]


def test_clip_client_unknown_index_gets_a_json_error(server, clip_client):
    client = clip_client.ClipClient(url=f"{server}/knn-service", indice_name="laion5B")
    out = client.query(text="x")  # clip-retrieval's own back end answers this with a bare 500
    assert out["error"]["code"] == "not_found" and "vtr" in out["error"]["message"]


def test_replayed_clip_client_request(server, engine):
    resp = post_raw(f"{server}/knn-service", recorded_knn_body(text="a yellow square grows", num_images=6))
    assert resp.status_code == 200 and resp.headers["Access-Control-Allow-Origin"] == "*"
    results = resp.json()
    want = engine.search_text("a yellow square grows", k=6)["results"]
    assert [r["id"] for r in results] == [h["clip_id"] for h in want]
    assert {"id", "similarity", "url", "caption", "start", "end", "video_url"} <= set(results[0])


def test_replayed_image_request(server, engine, search_home):
    (cid,) = search_home["clip_ids"][str(search_home["one_second"])]
    video = base64.b64encode(search_home["one_second"].read_bytes()).decode()  # a short video works too
    resp = post_raw(f"{server}/knn-service", recorded_knn_body(image=video, num_images=3))
    assert resp.status_code == 200 and resp.json()[0]["id"] == cid


def test_front_end_requests(server, engine):
    """What clip-retrieval's web front sends: strings for aesthetic options, more ids than items."""
    body = {
        "text": "a red circle",
        "image": None,
        "image_url": None,
        "embedding_input": None,
        "modality": "image",
        "num_images": 3,
        "indice_name": "vtr",
        "num_result_ids": 10,
        "use_mclip": False,
        "deduplicate": True,
        "use_safety_model": True,
        "use_violence_detector": True,
        "aesthetic_score": "",
        "aesthetic_weight": "0.5",
    }
    results = post_raw(f"{server}/knn-service", json.dumps(body).encode()).json()
    assert len(results) == 10
    assert all(set(r) == {"id", "similarity"} for r in results[3:]) and "url" in results[0]
    ids = [r["id"] for r in results[3:6]]
    meta = post_raw(f"{server}/metadata", json.dumps({"ids": ids, "indice_name": "vtr"}).encode()).json()
    assert [m["id"] for m in meta] == ids
    assert all(m["metadata"]["url"].endswith(f"/media/thumbs/{m['id']}.jpg") for m in meta)
    assert post_raw(f"{server}/metadata", b'{"ids": [], "indice_name": "vtr"}').json() == []
    unknown = post_raw(f"{server}/metadata", b'{"ids": [99999999], "indice_name": "vtr"}').json()
    assert unknown == [{"id": 99999999, "metadata": {}}]
    assert requests.get(f"{server}/indices-list", timeout=30).json() == ["vtr"]
    config = requests.get(f"{server}/config.json", timeout=30).json()
    assert config == {"defaultBackend": server, "defaultIndex": "vtr", "urlColumn": "url"}


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (b"", 422, "JSON object"),
        (b"not json", 422, "JSON object"),
        (b"[]", 422, "JSON object"),
        (b'{"modality": "image", "num_images": 5}', 422, "indice_name is required"),
        (b'{"indice_name": "vtr", "num_images": 5, "text": "x"}', 422, "modality"),
        (b'{"indice_name": "vtr", "modality": "audio", "num_images": 5, "text": "x"}', 422, "modality"),
        (b'{"indice_name": "vtr", "modality": ["image"], "num_images": 5, "text": "x"}', 422, "modality"),
        (b'{"indice_name": "vtr", "modality": {"a": 1}, "num_images": 5, "text": "x"}', 422, "modality"),
        (b"[" * 50000 + b"]" * 50000, 422, "nested too deeply"),
        (b'{"indice_name": "vtr", "modality": "image", "text": "x"}', 422, "num_images is required"),
        (b'{"indice_name": "vtr", "modality": "image", "num_images": 5000, "text": "x"}', 422, "num_images"),
        (b'{"indice_name": "vtr", "modality": "image", "num_images": 5}', 422, "send one of"),
        (
            b'{"indice_name": "vtr", "modality": "image", "num_images": 5, "image_url": "http://x/a.jpg"}',
            422,
            "never fetches",
        ),  # fmt: skip
        (b'{"indice_name": "vtr", "modality": "image", "num_images": 5, "image": "!!!"}', 422, "base64"),
        (b'{"indice_name": "vtr", "modality": "image", "num_images": 5, "image": "aGVsbG8="}', 422, "not a video"),
        (
            b'{"indice_name": "vtr", "modality": "image", "num_images": 5, "embedding_input": [1, 2]}',
            422,
            "needs 32",
        ),  # fmt: skip
        (b'{"indice_name": "vtr", "modality": "image", "num_images": 5, "embedding_input": ["a"]}', 422, "numbers"),
        (b'{"indice_name": "vtr", "ids": "1"}', 422, "ids must be a list"),
    ],
)
def test_bad_requests_get_json_errors(server, body, status, fragment):
    url = f"{server}/metadata" if b'"ids"' in body else f"{server}/knn-service"
    resp = post_raw(url, body)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert fragment in err["message"], err


def test_front_default_of_3000_ids_is_capped_not_refused(server):
    # clip-front asks for num_result_ids=3000 (10000 to download): the first 1000 are served
    body = {"indice_name": "vtr", "modality": "image", "num_images": 2, "num_result_ids": 3000, "text": "a red circle"}
    resp = post_raw(f"{server}/knn-service", json.dumps(body).encode())
    assert resp.status_code == 200, resp.text
    results = resp.json()
    assert len(results) > 2 and "url" in results[0] and set(results[2]) == {"id", "similarity"}
    body["num_result_ids"] = 10**9
    assert post_raw(f"{server}/knn-service", json.dumps(body).encode()).status_code == 422


def test_zero_results_requested_is_an_empty_list(server):
    body = b'{"indice_name": "vtr", "modality": "image", "num_images": 0, "text": "x"}'
    assert post_raw(f"{server}/knn-service", body).json() == []


def test_cors_preflight(server):
    resp = requests.options(f"{server}/knn-service", headers={"Origin": "https://rom1504.github.io"}, timeout=30)
    assert resp.status_code == 200 and resp.headers["Access-Control-Allow-Origin"] == "*"
