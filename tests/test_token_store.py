"""retrieval.token_store: append, read back by id, refresh from another process's appends, compact."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.errors import IndexMismatch, NotFound, StoreError
from retrieval.token_store import StoreLayout, TokenStore

LAYOUT = StoreLayout("m", n_tokens=3, width=4, dim=5)


def _rows(ids, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((len(ids), 5)).astype(np.float32), rng.standard_normal((len(ids), 3, 4))


def test_append_and_read_back_in_request_order(tmp_path):
    store = TokenStore(tmp_path, LAYOUT)
    vec, tok = _rows([3, 1, 2])
    store.append([3, 1, 2], vec, tok)
    assert store.ids().tolist() == [1, 2, 3] and len(store) == 3
    np.testing.assert_array_equal(store.get_vectors([2, 3]), vec[[2, 0]])
    np.testing.assert_allclose(store.get_tokens([1]), tok[[1]].astype(np.float16))
    assert store.contains([1, 9]).tolist() == [True, False] and 3 in store
    with pytest.raises(NotFound):
        store.get_vectors([9])


def test_a_reused_id_reads_its_latest_row(tmp_path):
    store = TokenStore(tmp_path, LAYOUT)
    v1, t1 = _rows([7], seed=1)
    v2, t2 = _rows([7], seed=2)
    store.append([7], v1, t1)
    store.append([7], v2, t2)
    np.testing.assert_array_equal(store.get_vectors([7]), v2)
    assert TokenStore(tmp_path).get_vectors([7]).tolist() == v2.tolist()  # also after re-opening


def test_a_reader_sees_appends_after_refresh_and_compaction(tmp_path):
    writer = TokenStore(tmp_path, LAYOUT)
    writer.append([1, 2], *_rows([1, 2]))
    reader = TokenStore(tmp_path, readonly=True)
    writer.append([3], *_rows([3], seed=3))
    assert 3 not in reader
    reader.refresh()
    assert 3 in reader
    assert writer.compact([1, 3]) == 1 and writer.rows() == 2
    reader.refresh()
    assert reader.ids().tolist() == [1, 3]


def test_layout_and_mode_are_checked(tmp_path):
    with pytest.raises(StoreError):
        TokenStore(tmp_path / "none")
    TokenStore(tmp_path, LAYOUT)
    with pytest.raises(IndexMismatch):
        TokenStore(tmp_path, StoreLayout("other", 3, 4, 5))
    with pytest.raises(StoreError):
        TokenStore(tmp_path, readonly=True).append([1], *_rows([1]))
