"""The one table of user-facing settings.

Every knob a user can turn (CLI flag, environment variable, config-file key) is declared here
once, with its default and help text. The CLI, the web app and README are all checked against
this table by ``tests/test_docs.py`` so that a setting cannot exist without being documented.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Setting:
    name: str  # config-file key, e.g. "home"
    env: str | None  # environment variable, e.g. "VTR_HOME"
    default: Any  # value when neither flag, env nor config sets it
    help: str  # one line for README and --help
    cast: Callable[[str], Any] = str  # parser for values coming from the environment
    flag: str | None = None  # CLI flag, e.g. "--home"


def _default_home() -> str:
    return str(Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "vtr")


# One setting per line, so the table reads as a table.
# fmt: off
SETTINGS: list[Setting] = [
    Setting("home", "VTR_HOME", _default_home(), "Data home: catalog database, FAISS indexes, token store, thumbnails.", flag="--home"),
    Setting("db", "VTR_DB", None, "SQLAlchemy URL of the catalog; default sqlite:///<home>/catalog.db (postgresql+psycopg://… for multi-process).", flag="--db"),
    Setting("model", "VTR_MODEL", "viclip-tiny-synth", "Model name (see `vtr models`) used for indexing and search.", flag="--model"),
    Setting("checkpoint", "VTR_CHECKPOINT", None, "Weights file: project .safetensors, InternVideo ViCLIP .pth, or open_clip checkpoint.", flag="--checkpoint"),
    Setting("host", "VTR_HOST", "127.0.0.1", "Address `vtr serve` listens on (0.0.0.0 exposes it to the network).", flag="--host"),
    Setting("port", "VTR_PORT", 8000, "TCP port of `vtr serve`.", cast=int, flag="--port"),
    Setting("server_threads", "VTR_SERVER_THREADS", 8, "Worker threads of the WSGI server; concurrent text queries are batched into one encode.", cast=int, flag="--threads"),
    Setting("server_workers", "VTR_SERVER_WORKERS", 1, "Server processes of `vtr serve`, each with --threads threads and its own model, sharing one listening socket (more than 1: queries use more than one core).", cast=int, flag="--workers"),
    Setting("rerank_k", "VTR_RERANK_K", 64, "How many top embedding (ITC) candidates the matching head re-ranks per query (0 turns re-ranking off).", cast=int, flag="--rerank-k"),
    Setting("min_match_probability", "VTR_MIN_MATCH_PROBABILITY", 0.5, "A search answers no_good_match=true when its best hit's match_probability is below this (the UI then says nothing matches well); null when the hit has no probability.", cast=float, flag="--min-match-probability"),
    Setting("relative_paths", "VTR_RELATIVE_PATHS", False, "API and UI show video paths relative to their library root instead of absolute server paths.", cast=lambda v: v.lower() in ("1", "true", "yes", "on")),
    Setting("admin_token", "VTR_ADMIN_TOKEN", None, "Bearer token for the admin API (add texts, queue indexing, delete videos); admin routes are off when unset."),
    Setting("index_roots", "VTR_INDEX_ROOTS", None, "Folders (separated by ':') under which `POST /api/v1/index` may queue paths; none when unset."),
    Setting("max_upload_mb", "VTR_MAX_UPLOAD_MB", 64, "Largest accepted upload (query clip) in MiB; bigger requests get 413.", cast=int),
    Setting("max_query_chars", "VTR_MAX_QUERY_CHARS", 1000, "Longest accepted text query in characters; longer ones get 422.", cast=int),
    Setting("rate_limit", "VTR_RATE_LIMIT", 600, "Requests per minute per client address for the API (0 = unlimited); over it: 429.", cast=int),
    Setting("trust_proxy", "VTR_TRUST_PROXY", False, "Take the client address from X-Forwarded-For (only behind a reverse proxy you control).", cast=lambda v: v.lower() in ("1", "true", "yes", "on")),
    Setting("clip_seconds", "VTR_CLIP_SECONDS", 4.0, "Length of the clips `vtr index` cuts videos into, in seconds (a shorter video is one clip).", cast=float, flag="--clip-seconds"),
    Setting("clip_stride", "VTR_CLIP_STRIDE", None, "Seconds between clip starts; default = clip length (back-to-back clips); smaller overlaps them.", cast=float, flag="--stride"),
    Setting("index_workers", "VTR_INDEX_WORKERS", None, "Decoder processes of `vtr index`; default = number of CPU cores.", cast=int, flag="--workers"),
    Setting("index_batch_size", "VTR_INDEX_BATCH_SIZE", 32, "Clips per model forward pass while indexing.", cast=int, flag="--batch-size"),
    Setting("file_timeout", "VTR_FILE_TIMEOUT", 120.0, "Seconds a file may go without decoding progress before `vtr index` gives up on it (recorded as failed).", cast=float, flag="--file-timeout"),
    Setting("frame_tolerance", "VTR_FRAME_TOLERANCE", 0.1, "Seconds a sampled frame may be from its target while indexing: above 0, files whose frames are closer together than this are decoded from their reference frames only (non-reference B-frames skipped, no deblocking; ~1.7-2x faster at 720p H.264) and each sampled frame is the nearest decoded one within this (the largest distance used is recorded per video as frame_offset); 0 = every frame decoded, exact frames.", cast=float, flag="--frame-tolerance"),
    Setting("index_executor", "VTR_INDEX_EXECUTOR", "local", "Where `vtr index` decodes and embeds: local (decoder processes on this machine) or ray (Ray Data on a local runtime or the cluster at --ray-address; needs the distributed extra).", flag="--executor"),
    Setting("ray_address", "RAY_ADDRESS", None, "Ray cluster `vtr index --executor ray` joins (e.g. 10.0.0.5:6379 or ray://head:10001); unset: a local Ray runtime sized to this machine.", flag="--ray-address"),
    Setting("index_factory", "VTR_INDEX_FACTORY", "auto", "FAISS factory string of the clip index (e.g. Flat, HNSW32, IVF4096,SQ8); auto picks by library size.", flag="--index-factory"),
    Setting("index_flat_max", "VTR_INDEX_FLAT_MAX", None, "auto index type: exact Flat up to this many clips, IVF above (fp16 codes; fast-scan PQ + fp16 refine past clips x dim = 2**28); unset: Flat while clips x dim <= 1,048,576 (measured: as fast as IVF there).", cast=int),
    Setting("index_recall", "VTR_INDEX_RECALL", 0.95, "Target recall@20 of an approximate index: its nprobe/efSearch is raised at build time until a sample of its own vectors finds this share of the exact top 20.", cast=float),
    Setting("thumbnail_size", "VTR_THUMBNAIL_SIZE", 320, "Longest side in pixels of the JPEG thumbnail saved per clip (0 = no thumbnails).", cast=int),
    Setting("save_interval", "VTR_SAVE_INTERVAL", 60.0, "Seconds between index checkpoints during `vtr index` (the catalog itself commits every batch).", cast=float),
    Setting("torch_threads", "VTR_TORCH_THREADS", None, "CPU threads per model call while searching; default 1 under `vtr serve` (concurrent requests use the other cores), all cores for `vtr search`.", cast=int),
]
# fmt: on


def get_setting(name: str) -> Setting:
    for s in SETTINGS:
        if s.name == name:
            return s
    raise KeyError(name)


def flag_help(name: str) -> str:
    """``--help`` text of the flag for setting ``name``: its help line and the variable that also sets it.

    Here, not in each CLI, so that ``indexer`` and ``webapp`` (which never import each other) word it alike.
    """
    s = get_setting(name)
    env = f" [env {s.env}]" if s.env else ""
    return s.help + env


def resolve(name: str, value: Any = None) -> Any:
    """Explicit value beats environment variable beats default."""
    s = get_setting(name)
    if value is not None:
        return value
    if s.env and os.environ.get(s.env) not in (None, ""):
        return s.cast(os.environ[s.env])
    return s.default
