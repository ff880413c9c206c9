"""The matching head sees frame order only when it has frame positions (cross-attention alone is order-blind)."""

from __future__ import annotations

import pytest
import torch

from retrieval.config import MatchHeadCfg
from retrieval.errors import InvalidInput
from retrieval.match_head import MatchHead


def _head(frame_positions: int) -> MatchHead:
    torch.manual_seed(0)
    head = MatchHead(MatchHeadCfg(width=32, layers=2, heads=4, frame_positions=frame_positions), 16, 24, torch.nn.GELU)
    if head.frame_embedding is not None:
        torch.nn.init.normal_(head.frame_embedding, std=0.5)  # as after training; zero at init
    return head.eval()


def _inputs():
    g = torch.Generator().manual_seed(1)
    ids = torch.zeros(2, 6, dtype=torch.long)
    ids[:, :4] = torch.tensor([49406, 320, 1000, 49407])
    return torch.randn(2, 6, 16, generator=g), ids, torch.randn(2, 9, 24, generator=g)


def _reversed_frames(video: torch.Tensor) -> torch.Tensor:
    return torch.cat([video[:, :1], video[:, 1:].flip(1)], dim=1)  # class token first, frames reversed


def test_an_order_blind_head_scores_a_reversed_clip_the_same():
    head, (text, ids, video) = _head(0), _inputs()
    with torch.no_grad():
        torch.testing.assert_close(head(text, ids, video), head(text, ids, _reversed_frames(video)))


def test_frame_positions_make_the_head_see_frame_order():
    head, (text, ids, video) = _head(9), _inputs()
    with torch.no_grad():
        diff = (head(text, ids, video) - head(text, ids, _reversed_frames(video))).abs().max()
    assert diff > 1e-3


def test_a_token_set_of_the_wrong_length_is_a_clear_error():
    head, (text, ids, video) = _head(9), _inputs()
    with pytest.raises(InvalidInput, match="expects 9 video tokens, got 5"):
        head(text, ids, video[:, :5])
