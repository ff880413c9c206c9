"""retrieval.settings and the options built from it: one declaration per setting."""

from __future__ import annotations

import pytest

from indexer.options import IndexOptions
from retrieval.errors import InvalidInput
from retrieval.settings import SETTINGS, flag_help, get_setting, resolve


def test_explicit_value_beats_environment_beats_default(monkeypatch):
    monkeypatch.delenv("VTR_RERANK_K", raising=False)
    assert resolve("rerank_k") == get_setting("rerank_k").default
    monkeypatch.setenv("VTR_RERANK_K", "7")
    assert resolve("rerank_k") == 7  # cast from the environment
    assert resolve("rerank_k", 3) == 3
    monkeypatch.setenv("VTR_RERANK_K", "")
    assert resolve("rerank_k") == get_setting("rerank_k").default  # empty counts as unset


def test_settings_are_unique_and_helped():
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    assert "[env VTR_HOME]" in flag_help("home")
    with pytest.raises(KeyError):
        get_setting("nope")


def test_index_options_are_declared_once_from_settings(monkeypatch):
    fields = IndexOptions.setting_fields()
    assert [f.name for f in fields][:2] == ["home", "db"]
    assert all(get_setting(f.metadata["setting"]).flag for f in fields)  # each has a CLI flag
    monkeypatch.setenv("VTR_CLIP_SECONDS", "2.5")
    o = IndexOptions(paths=["x"]).resolved()
    assert o.clip_seconds == 2.5 and o.stride == 2.5 and o.index_factory == "auto"
    with pytest.raises(InvalidInput):
        IndexOptions(paths=[]).resolved()
