"""Thumbnails and filmstrips made from the RGB frames the decoder hands the model."""

import io

import numpy as np
import pytest
from PIL import Image

from retrieval.thumbnails import FILMSTRIP_CELL, filmstrip_jpeg, fit_rgb, thumbnail_jpeg


def halves(h: int, w: int) -> np.ndarray:
    """Left half red, right half blue."""
    frame = np.zeros((h, w, 3), np.uint8)
    frame[:, : w // 2, 0] = 220
    frame[:, w // 2 :, 2] = 220
    return frame


@pytest.mark.parametrize(
    ("h", "w", "box"), [(720, 1280, 96), (720, 1280, 320), (1280, 720, 96), (2160, 3840, 320), (50, 80, 96)]
)
def test_fit_keeps_aspect_and_content(h, w, box):
    img = np.asarray(fit_rgb(halves(h, w), box))
    out_h, out_w = img.shape[:2]
    assert max(out_h, out_w) == min(box, max(h, w))  # never enlarged
    assert abs(out_w / out_h - w / h) < 0.05
    left, right = img[:, : out_w // 3].reshape(-1, 3).mean(0), img[:, -out_w // 3 :].reshape(-1, 3).mean(0)
    assert left[0] > left[2] + 80 and right[2] > right[0] + 80  # red stays left, blue right


def test_filmstrip_cells_and_thumbnail_jpegs():
    frames = np.stack([halves(720, 1280)] * 3)
    with Image.open(io.BytesIO(filmstrip_jpeg(frames))) as strip:
        assert strip.format == "JPEG" and strip.size == (3 * FILMSTRIP_CELL, FILMSTRIP_CELL)
        px = np.asarray(strip.convert("RGB"))
    assert px[:10].mean() < 20 and px[-10:].mean() < 20  # letterboxed: 16:9 frames in square cells
    with Image.open(io.BytesIO(thumbnail_jpeg(frames[1], 320))) as thumb:
        assert thumb.size == (320, 180)
