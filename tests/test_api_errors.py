"""One error shape for every failure, limits (size, rate), and the OpenAPI document's coverage."""

from __future__ import annotations

import pytest

from webapp import create_app
from webapp.openapi import build_document
from webapp.ratelimit import RateLimiter


@pytest.fixture(scope="module")
def app(engine):
    app = create_app({"ENGINE": engine, "RATE_LIMIT": 0, "MAX_UPLOAD_MB": 1})

    @app.get("/test-only/boom")
    def boom():  # an unexpected bug inside a view
        raise RuntimeError("secret internal detail")

    return app


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def assert_error(resp, status, code):
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]["message"]


@pytest.mark.parametrize(
    "method, url, status, code",
    [
        ("get", "/api/v1/nope", 404, "not_found"),
        ("get", "/nope.html", 404, "not_found"),
        ("get", "/media/videos/abc", 404, "not_found"),
        ("post", "/api/v1/search", 405, "method_not_allowed"),
        ("get", "/api/v1/search/video", 405, "method_not_allowed"),
        ("put", "/api/v1/clips/1", 405, "method_not_allowed"),
        ("delete", "/api/v1/stats", 405, "method_not_allowed"),
        ("get", "/knn-service", 405, "method_not_allowed"),
        ("get", "/api/v1/search", 422, "invalid_input"),
        # ids past 64 bits match no route (SQLite would raise OverflowError on them)
        ("get", "/api/v1/clips/9223372036854775808", 404, "not_found"),
        ("get", "/api/v1/videos/99999999999999999999999", 404, "not_found"),
        ("get", "/media/thumbs/9223372036854775808.jpg", 404, "not_found"),
        ("get", "/media/videos/9223372036854775808", 404, "not_found"),
    ],
)
def test_http_errors_share_the_shape(client, method, url, status, code):
    resp = getattr(client, method)(url)
    assert_error(resp, status, code)
    if status == 405:
        assert resp.headers.get("Allow")


def test_largest_id_is_an_ordinary_404(client):
    assert "no clip with id" in assert_error(client.get("/api/v1/clips/9223372036854775807"), 404, "not_found")


def test_deeply_nested_json_is_422_not_500(client):
    body = b"[" * 50000 + b"]" * 50000  # json.loads raises RecursionError, which is not a ValueError
    msg = assert_error(
        client.post("/api/v1/search/video", data=body, content_type="application/json"), 422, "invalid_input"
    )
    assert "nested too deeply" in msg


def test_damaged_catalog_is_503_in_the_error_shape(tmp_path, tiny):
    from retrieval.engine import SearchEngine
    from retrieval.home import DataHome

    (tmp_path / "catalog.db").write_bytes(b"not sqlite at all " * 64)
    eng = SearchEngine(DataHome(tmp_path), bundle=tiny, reload_interval=0.0)
    try:
        client = create_app({"ENGINE": eng, "RATE_LIMIT": 0}).test_client()
        for url in ("/api/v1/health", "/api/v1/stats", "/api/v1/search?q=red", "/api/v1/clips/1"):
            msg = assert_error(client.get(url), 503, "store_error")
            assert "file is not a database" in msg
    finally:
        eng.close()


def test_unexpected_errors_are_500_without_details(client):
    msg = assert_error(client.get("/test-only/boom"), 500, "internal_error")
    assert "secret" not in msg and "Traceback" not in msg


def test_oversize_upload_is_413(client):
    # the multipart body is built by hand: the test client would spool a 2 MiB form to a temp file
    # that it never closes when the app refuses the body unread
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n'
            "Content-Type: video/mp4\r\n\r\n"
        ).encode()
        + b"\0" * (2 * 2**20)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    resp = client.post("/api/v1/search/video", data=body, content_type=f"multipart/form-data; boundary={boundary}")
    assert "1 MiB" in assert_error(resp, 413, "payload_too_large")
    raw = client.post("/knn-service", data=b"{" + b" " * (2 * 2**20) + b"}")
    assert_error(raw, 413, "payload_too_large")


def test_rate_limit_gives_429_with_retry_after(engine):
    client = create_app({"ENGINE": engine, "RATE_LIMIT": 3}).test_client()
    codes = [client.get("/api/v1/stats").status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    resp = client.get("/api/v1/stats")
    assert "limit 3 per minute" in assert_error(resp, 429, "rate_limited")
    assert int(resp.headers["Retry-After"]) >= 1
    # other clients have their own budget; pages and media are not limited
    other = client.get("/api/v1/stats", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert other.status_code == 200
    assert client.get("/").status_code == 200


def test_rate_limiter_refills_over_time():
    now = [0.0]
    lim = RateLimiter(60, clock=lambda: now[0])  # one per second, bursts of 60
    assert all(lim.acquire("a") == 0.0 for _ in range(60))
    wait = lim.acquire("a")
    assert wait == pytest.approx(1.0)
    now[0] += 1.0
    assert lim.acquire("a") == 0.0
    assert lim.acquire("b") == 0.0
    assert RateLimiter(0).acquire("a") == 0.0  # 0 = unlimited


def test_rate_limiter_forgets_idle_clients():
    now = [0.0]
    lim = RateLimiter(60, clock=lambda: now[0], max_clients=10)
    for i in range(10):
        lim.acquire(f"c{i}")
    now[0] += 120
    lim.acquire("new")
    assert len(lim._buckets) <= 2


def test_forwarded_for_is_ignored_unless_trusted(engine):
    plain = create_app({"ENGINE": engine, "RATE_LIMIT": 1}).test_client()
    assert plain.get("/api/v1/stats", headers={"X-Forwarded-For": "1.1.1.1"}).status_code == 200
    assert plain.get("/api/v1/stats", headers={"X-Forwarded-For": "2.2.2.2"}).status_code == 429
    proxied = create_app({"ENGINE": engine, "RATE_LIMIT": 1, "TRUST_PROXY": True}).test_client()
    assert proxied.get("/api/v1/stats", headers={"X-Forwarded-For": "1.1.1.1"}).status_code == 200
    assert proxied.get("/api/v1/stats", headers={"X-Forwarded-For": "2.2.2.2"}).status_code == 200


def test_openapi_document_covers_every_api_route(app, client):
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc == build_document() and doc["openapi"].startswith("3.")
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    routes = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        path = rule.rule.replace("<int:", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((path, method.lower()))
    assert routes == documented
    # every $ref resolves
    import json

    text = json.dumps(doc)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "#/')[1:]}:
        node = doc
        for key in ref.split("/"):
            node = node[key]


@pytest.mark.parametrize(
    "url, word",
    [
        ("/api/v1/suggestions?n=&n=7", "2 times"),
        ("/api/v1/search?q=a+red+circle&k=5&k=6", "2 times"),
        ("/api/v1/search?q=a+red+circle&min_duration=", "empty"),
        ("/api/v1/search?q=a+red+circle&rerank=", "empty"),
    ],
)
def test_repeated_or_empty_typed_query_parameters_are_422(client, url, word):
    assert word in assert_error(client.get(url), 422, "invalid_input")


def test_typed_query_parameters_match_the_openapi_document():
    from webapp.guards import TYPED_QUERY_PARAMS

    typed = set()
    for ops in build_document()["paths"].values():
        for op in ops.values():
            for p in op.get("parameters", []):
                p = build_document()["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p
                if p.get("in") == "query" and p.get("schema", {}).get("type") in ("integer", "number", "boolean"):
                    typed.add(p["name"])
    assert typed == set(TYPED_QUERY_PARAMS)
