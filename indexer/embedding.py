"""The model side of `vtr index`: embedding decoded clips, and loading the model while decoding starts.

Why a module of its own: the run (:mod:`indexer.pipeline`) only queues clips and asks for vectors;
how the model is loaded (in a thread, so its seconds of imports overlap decoding), how many CPU
threads it gets beside the decoders, and the shapes it must produce are this module's concern.
The Ray executor's embedding actors use the same :class:`Embedder`.
"""

from __future__ import annotations

import os

import numpy as np

from indexer.options import IndexOptions
from retrieval.errors import ConfigError
from retrieval.token_store import StoreLayout


def token_layout(model) -> StoreLayout:
    """Shape of the model's per-clip token set, from one forward pass on a black clip."""
    import torch

    device = next(model.parameters()).device
    x = torch.zeros(1, model.num_frames, 3, model.image_size, model.image_size, device=device)
    with torch.inference_mode():
        emb, tokens = model.encode_video(x, normalize=True, return_tokens=True)
    return StoreLayout(model.name, int(tokens.shape[1]), int(tokens.shape[2]), int(emb.shape[1]))


class Embedder:
    ready = True  # the model is loaded (see LoadingEmbedder.ready)

    def __init__(self, model):
        import torch

        self.torch = torch
        self.model = model
        self.device = next(model.parameters()).device

    def __call__(self, pixels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        x = torch.from_numpy(np.stack(pixels)).to(self.device)
        with torch.inference_mode():
            emb, tokens = self.model.encode_video(x, normalize=True, return_tokens=True)
        return emb.float().cpu().numpy(), tokens.to(torch.float16).cpu().numpy()


class LoadingEmbedder:
    """An :class:`Embedder` whose model loads in a background thread while the decoders start.

    Why: importing torch and open_clip and building the model takes seconds of one core, and the
    decoders need none of it (the run's shapes come from the model's config). Clips decoded in the
    meantime wait in the embed queue; the run blocks on the model only when nothing else is left.

    CPU threads for the model while decoders run: the cores the decoders leave free, at least one.
    With every core busy decoding, a multi-threaded forward pass waits at each parallel region for a
    descheduled thread (measured here: a 2 ms batch took 300 ms), and indexing fell to 0.6x the
    decode-only bound. One thread keeps it at ~1x for small models; for a large model on the CPU, give
    it cores by using fewer ``--workers``.
    """

    def __init__(self, opts: IndexOptions, layout: StoreLayout):
        import threading

        self._opts, self._layout = opts, layout
        self._embedder: Embedder | None = None
        self._error: BaseException | None = None
        self._threads_before: int | None = None
        self._thread = threading.Thread(target=self._load, name="vtr-model-load", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        try:
            import torch

            from retrieval.factory import load_model

            model, _, _ = load_model(self._opts.model, self._opts.checkpoint, self._opts.device)
            if next(model.parameters()).device.type == "cpu":
                self._threads_before = torch.get_num_threads()
                torch.set_num_threads(max(1, (os.cpu_count() or 1) - self._opts.workers))
            got = token_layout(model)
            if got != self._layout:  # the config-derived shapes the store was opened with
                raise ConfigError(f"model {model.name}: produces {got}, its config says {self._layout}")
            self._embedder = Embedder(model)
        except BaseException as exc:  # surfaced on the run's thread by wait()
            self._error = exc

    @property
    def ready(self) -> bool:
        return not self._thread.is_alive()

    def wait(self) -> Embedder:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._embedder is not None
        return self._embedder

    def __call__(self, pixels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return self.wait()(pixels)

    def close(self) -> None:
        """Wait for the loader (no thread outlives the run) and give torch back its thread count."""
        self._thread.join()
        if self._threads_before is not None:
            import torch

            torch.set_num_threads(self._threads_before)
            self._threads_before = None
