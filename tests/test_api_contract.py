"""The API agrees with its own OpenAPI document: schemathesis, all checks, against a live `vtr serve`.

Positive cases (schema-valid requests must be accepted, responses must match the schema, statuses must be
documented) and negative ones (schema-violating requests must be rejected), with and without the admin
token, with a fixed seed and a bounded number of examples per operation. The default suite runs a short
pass; the ``slow`` one runs many more examples. Settings: ``tests/data/schemathesis.toml``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.home import MODEL
from tests.live import LiveServer

pytest.importorskip("schemathesis")

CONFIG = Path(__file__).parent / "data" / "schemathesis.toml"
TOKEN = "contract-token"


@pytest.fixture(scope="module")
def live(search_home, tmp_path_factory):
    """A server over a copy of the test home (the admin runs delete videos and add texts)."""
    root = tmp_path_factory.mktemp("contract")
    shutil.copytree(search_home["home"].root, root / "home")
    (root / "roots").mkdir()
    env = {"VTR_ADMIN_TOKEN": TOKEN, "VTR_INDEX_ROOTS": str(root / "roots")}
    with LiveServer(root / "home", model=MODEL, env=env, log=root / "serve.log") as srv:
        yield srv


def run_schemathesis(url: str, *, examples: int, seed: int, token: str | None, cwd: Path) -> tuple[int, str]:
    st = Path(sys.executable).with_name("st")
    cmd = [str(st), "--config-file", str(CONFIG), "--no-color", "run", f"{url}/api/v1/openapi.json"]
    cmd += ["--checks", "all", "--seed", str(seed), "--max-examples", str(examples), "--workers", "1"]
    cmd += ["--generation-database", "none", "--request-timeout", "60"]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=900)
    return proc.returncode, proc.stdout + proc.stderr


def _check(out: str, rc: int) -> int:
    generated = re.search(r"(\d+) generated", out)
    assert rc == 0 and generated, out[-6000:]
    assert not re.search(r"\d+ failures?\b", out.splitlines()[-1]), out[-6000:]
    return int(generated.group(1))


@pytest.mark.parametrize("token", [None, TOKEN], ids=["anonymous", "admin"])
def test_schemathesis_all_checks_pass(live, token, tmp_path):
    rc, out = run_schemathesis(live.url, examples=15, seed=12, token=token, cwd=tmp_path)
    assert _check(out, rc) > 200


@pytest.mark.slow
@pytest.mark.parametrize("token", [None, TOKEN], ids=["anonymous", "admin"])
def test_schemathesis_all_checks_pass_long(live, token, tmp_path):
    rc, out = run_schemathesis(live.url, examples=300, seed=1212, token=token, cwd=tmp_path)
    assert _check(out, rc) > 2000
