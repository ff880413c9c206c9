"""Shared fixtures: expensive objects (the tiny model) are session-scoped; storage is per test."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny():
    """(model, preprocess, tokenizer) of the registered tiny test architecture, random init, seeded."""
    from retrieval import create_model_and_transforms

    torch.manual_seed(0)
    return create_model_and_transforms("viclip-tiny-test", pretrained="random")
