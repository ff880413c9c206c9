"""`vtr index --executor ray` on real Ray runtimes: the same home as the local executor, and as crash-safe.

Real everything: a local Ray runtime started by the run itself, a two-node ``ray.cluster_utils.Cluster``
on loopback, real encoded videos, SQLite, FAISS and the token store. Faults are real too: the driver
SIGKILLs itself at a named point (``VTR_TEST_CRASH_AT``), an embedding actor is SIGKILLed from outside,
and the decoder and Ray worker processes die on the files named by ``decoder:`` / ``ray-task:`` points.
Skipped with a reason when Ray is not installed (``pip install -e '.[distributed]'``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from indexer.cli import main
from indexer.distributed import LOCAL_SYSTEM_CONFIG
from indexer.pipeline import IndexOptions, run_index
from retrieval.catalog import Catalog
from retrieval.home import DataHome
from retrieval.index import VectorIndex
from retrieval.token_store import TokenStore
from tests.home import indexed_count
from tests.videos import make_bad_library, make_library, make_video

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(
    not HAVE_RAY, reason="Ray is not installed: pip install -e '.[distributed]' (the distributed extra)"
)
if HAVE_RAY:
    import ray

MODEL = "viclip-tiny-test"
ACTOR_TITLE = "MapWorker(MapBatches(EmbedActor))"


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """Good videos and one of each awkward kind, plus the local executor's home as the reference."""
    root = tmp_path_factory.mktemp("raylib")
    lib = root / "lib"
    make_library(lib / "good", count=8, seconds=9, fps=10)
    make_bad_library(lib / "odd")
    local = root / "local"
    rep = run_index(IndexOptions(paths=[str(lib)], home=str(local), model=MODEL, workers=2, progress=False))
    assert rep.exit_code == 1 and rep.clips > 0
    return {"root": root, "lib": lib, "local": local, "report": rep}


@pytest.fixture
def no_ray():
    """Tests that start their own runtime need none running; they leave none behind."""
    if ray.is_initialized():
        ray.shutdown()
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on this machine, one CPU each (fractional shares keep both stages running)."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    # the nodes take this machine's address: a driver joining by address has 127.0.0.1 rewritten to it
    # (ray._private.services.resolve_ip_for_localhost), so loopback-only nodes could not be joined
    node = {"num_cpus": 1, "object_store_memory": 150 << 20}
    head = {**node, "include_dashboard": False, "_system_config": LOCAL_SYSTEM_CONFIG}
    c = Cluster(initialize_head=True, head_node_args=head)
    c.add_node(**node)
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="WARNING", log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


def snapshot(home: Path) -> dict:
    """What a home holds, independent of clip ids: per video its status, reason, clip spans and vectors."""
    h = DataHome(home)
    cat = Catalog(h.db_url(), create=False)
    tokens = TokenStore(h.tokens_dir, readonly=True)
    index = VectorIndex.load(h.clip_index_path, model=MODEL)
    ids = cat.all_clip_ids()
    assert np.array_equal(index.ids(), ids), "FAISS holds exactly the catalog's clips"
    assert tokens.contains(ids).all()
    assert {int(p.stem) for p in h.thumbs_dir.glob("*.jpg")} == set(ids.tolist())
    out = {}
    for v in cat.list_videos():
        clips = cat.clips_of_video(v.id)
        vecs = tokens.get_vectors(np.array([c.id for c in clips], dtype=np.int64)) if clips else None
        spans = [(c.start, c.end, c.start_frame, c.end_frame) for c in clips]
        out[v.path] = {"status": v.status, "error": v.error, "spans": spans, "vectors": vecs}
    cat.close()
    return out


def assert_same_home(home: Path, reference: Path) -> None:
    got, want = snapshot(home), snapshot(reference)
    assert sorted(got) == sorted(want)
    for path, w in want.items():
        g = got[path]
        assert (g["status"], g["error"], g["spans"]) == (w["status"], w["error"], w["spans"]), path
        if w["vectors"] is not None:
            np.testing.assert_allclose(g["vectors"], w["vectors"], atol=1e-5, err_msg=path)


@needs_ray
def test_cli_starts_a_local_runtime_and_matches_the_local_executor(library, tmp_path, no_ray):
    home = tmp_path / "home"
    res = CliRunner().invoke(
        main,
        ["index", str(library["lib"]), "--home", str(home), "--model", MODEL, "--executor", "ray", "--json"],
    )
    assert res.exit_code == 1, res.output  # the bad files failed, everything else is committed
    rep = json.loads(res.stdout)
    local = library["report"]
    assert rep["executor"] == "ray" and rep["clips"] == local.clips and rep["indexed"] == len(local.indexed)
    assert {(f["path"], f["reason"]) for f in rep["failed"]} == {(f["path"], f["reason"]) for f in local.failed}
    assert rep["warnings"] == local.warnings
    assert set(rep["stages"]) == {"decode", "embed", "write"} and rep["stages"]["embed"]["clips"] == local.clips
    assert not ray.is_initialized()  # the runtime it started is gone
    assert_same_home(home, library["local"])
    # a second run has nothing to do, as on the local path
    again = run_index(IndexOptions(paths=[str(library["lib"])], home=str(home), model=MODEL, executor="ray",
                                   progress=False))  # fmt: skip
    assert again.indexed == [] and again.unchanged == len(local.indexed)


@needs_ray
@pytest.mark.slow  # a two-node cluster costs minutes on 2 cores; `make test-all` runs it
def test_two_node_cluster_matches_and_survives_a_killed_driver(library, tmp_path, cluster):
    """The driver SIGKILLs itself after its first commit; the next run completes to the same home."""
    home = tmp_path / "home"
    env = {**os.environ, "VTR_TEST_CRASH_AT": "commit@1", "RAY_ADDRESS": cluster.address}
    cmd = [sys.executable, "-c", "from indexer.cli import main; main()", "index", str(library["lib"]),
           "--home", str(home), "--model", MODEL, "--executor", "ray", "--batch-size", "2", "-q"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    cat = Catalog(DataHome(home).db_url(), create=False)
    committed = sum(v.status == "indexed" for v in cat.list_videos())
    cat.close()
    assert 0 < committed < len(library["report"].indexed)

    rep = run_index(IndexOptions(paths=[str(library["lib"])], home=str(home), model=MODEL, executor="ray",
                                 ray_address=cluster.address, progress=False))  # fmt: skip
    assert rep.unchanged == committed and len(rep.indexed) == len(library["report"].indexed) - committed
    assert_same_home(home, library["local"])


def _actor_pids() -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if ACTOR_TITLE in (p / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(p.name))
            except OSError:
                continue
    return pids


@needs_ray
@pytest.mark.slow  # a two-node cluster costs minutes on 2 cores; `make test-all` runs it
def test_killed_actor_and_worker_deaths_on_a_two_node_cluster(library, tmp_path, cluster, monkeypatch):
    """An embedding actor SIGKILLed mid-run is restarted by Ray; files that kill their decoder or their
    Ray worker every time are retried once, then recorded as failed with the reason."""
    lib = tmp_path / "lib"
    shutil.copytree(library["lib"] / "good", lib / "good")
    make_video(lib / "crash-decoder.mp4", seconds=2)
    make_video(lib / "crash-task.mp4", seconds=2)
    monkeypatch.setenv("VTR_TEST_CRASH_AT", "decoder:crash-decoder.mp4,ray-task:crash-task.mp4")
    home = tmp_path / "home"
    killed: list[tuple[int, int]] = []  # (pid, videos committed then)

    def kill_an_actor_after_the_first_commit() -> None:
        db = home / "catalog.db"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            n = indexed_count(db)
            pids = _actor_pids()
            if n >= 1 and pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append((pids[0], n))
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_an_actor_after_the_first_commit, daemon=True)
    watcher.start()
    rep = run_index(IndexOptions(paths=[str(lib)], home=str(home), model=MODEL, executor="ray", batch_size=1,
                                 progress=False))  # fmt: skip
    watcher.join(timeout=5)
    good = sorted(str(p) for p in (lib / "good").rglob("*.mp4"))
    assert killed and killed[0][1] < len(good), "the actor was killed mid-run"
    reasons = {f["path"]: f["reason"] for f in rep.failed}
    assert reasons == {
        str(lib / "crash-decoder.mp4"): "the decoder process crashed on this file (twice)",
        str(
            lib / "crash-task.mp4"
        ): "the Ray worker decoding this file died twice (out of memory, or the node was lost)",
    }
    assert sorted(rep.indexed) == good
    got = snapshot(home)
    want = {p.replace(str(library["lib"]), str(lib)): v for p, v in snapshot(library["local"]).items()}
    for path in good:
        assert got[path]["spans"] == want[path]["spans"]
        np.testing.assert_allclose(got[path]["vectors"], want[path]["vectors"], atol=1e-5)
    assert {p for p, v in got.items() if v["status"] == "failed"} == set(reasons)


def test_without_ray_the_executor_is_a_one_line_error_naming_the_extra(tmp_path, monkeypatch):
    """Runs with or without Ray: a None entry in sys.modules is how Python marks a module unimportable."""
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    make_video(tmp_path / "lib" / "a.mp4", seconds=1)
    res = CliRunner().invoke(main, ["index", str(tmp_path / "lib"), "--home", str(tmp_path / "home"),
                                    "--model", MODEL, "--executor", "ray"])  # fmt: skip
    assert res.exit_code == 1
    assert res.output.startswith("error: --executor ray needs Ray Data") and "[distributed]" in res.output
    assert not (tmp_path / "home").exists()  # nothing was opened
    res = CliRunner().invoke(main, ["index", str(tmp_path / "lib"), "--executor", "spark"])
    assert res.exit_code == 2 and "spark" in res.output
