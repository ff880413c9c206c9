"""`vtr index`'s options, declared once, and the report a run returns.

Why one declaration: each tunable option is a field of :class:`IndexOptions` whose metadata names
its row in the settings table (:data:`retrieval.settings.SETTINGS`: flag, environment variable,
default, help) and its lower bound. The click options of ``vtr index`` are built from these fields
(:func:`indexer.cli.index_cmds.setting_options`), and :meth:`IndexOptions.resolved` fills and
checks them from the same rows, so a new option is one new field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

from retrieval.errors import ConfigError, InvalidInput
from retrieval.settings import resolve

EXECUTORS = ("local", "ray")


def setting(name: str, kind: type = str, minimum: float | None = None) -> Any:
    """A field set from setting ``name`` (flag, env, default), parsed as ``kind`` with a lower bound."""
    return field(default=None, metadata={"setting": name, "kind": kind, "min": minimum})


@dataclass
class IndexOptions:
    paths: list[str]
    home: str | None = setting("home")
    db: str | None = setting("db")
    model: str | None = setting("model")
    checkpoint: str | None = setting("checkpoint")
    clip_seconds: float | None = setting("clip_seconds", float, 0.1)
    stride: float | None = setting("clip_stride", float, 0.1)
    workers: int | None = setting("index_workers", int, 1)
    batch_size: int | None = setting("index_batch_size", int, 1)
    file_timeout: float | None = setting("file_timeout", float, 0.1)
    frame_tolerance: float | None = setting("frame_tolerance", float, 0.0)
    index_factory: str | None = setting("index_factory")
    executor: str | None = setting("index_executor")
    ray_address: str | None = setting("ray_address")
    thumbnail_size: int | None = None
    save_interval: float | None = None
    prune: bool = False
    within: list[str] | None = None  # only index files whose real path is inside these folders (admin jobs)
    device: str | None = None
    progress: bool = True
    workers_auto: bool = False  # set by resolved(): --workers was not given (Ray then sizes decoding to the cluster)

    @classmethod
    def setting_fields(cls) -> list:
        """The fields a CLI flag sets (those with a ``setting``), in declaration order."""
        return [f for f in fields(cls) if f.metadata.get("setting")]

    def resolved(self) -> IndexOptions:
        """Fill unset options from the settings table (flag > environment > default) and validate."""
        from retrieval.model_spec import default_model_name

        o = IndexOptions(**self.__dict__)
        o.checkpoint = resolve("checkpoint", o.checkpoint)
        o.model = default_model_name(o.model, o.checkpoint)
        o.clip_seconds = float(resolve("clip_seconds", o.clip_seconds))
        o.stride = float(resolve("clip_stride", o.stride) or o.clip_seconds)
        o.workers_auto = not resolve("index_workers", o.workers)
        o.workers = int(resolve("index_workers", o.workers) or os.cpu_count() or 1)
        o.batch_size = int(resolve("index_batch_size", o.batch_size))
        o.file_timeout = float(resolve("file_timeout", o.file_timeout))
        o.frame_tolerance = float(resolve("frame_tolerance", o.frame_tolerance))
        o.index_factory = resolve("index_factory", o.index_factory) or "auto"
        o.executor = (resolve("index_executor", o.executor) or "local").lower()
        o.ray_address = resolve("ray_address", o.ray_address) or None
        o.thumbnail_size = int(resolve("thumbnail_size", o.thumbnail_size))
        o.save_interval = float(resolve("save_interval", o.save_interval))
        if not o.paths:
            raise InvalidInput("give at least one folder or file to index")
        if o.clip_seconds <= 0 or o.stride <= 0:
            raise InvalidInput("--clip-seconds and --stride must be positive")
        if o.workers < 1:
            raise InvalidInput("--workers must be at least 1")
        if o.batch_size < 1:
            raise InvalidInput("--batch-size must be at least 1")
        if o.file_timeout <= 0:
            raise InvalidInput("--file-timeout must be positive")
        if o.frame_tolerance < 0:
            raise InvalidInput("--frame-tolerance must be 0 (exact frames) or positive")
        if o.executor not in EXECUTORS:
            raise InvalidInput(f"--executor must be one of {', '.join(EXECUTORS)}, not {o.executor!r}")
        return o


@dataclass
class IndexReport:
    indexed: list[str] = field(default_factory=list)
    unchanged: int = 0
    failed: list[dict] = field(default_factory=list)  # {path, reason}
    warnings: list[dict] = field(default_factory=list)  # {path, warning}: indexed, but partly readable
    pruned: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # gone from disk, kept because --prune was not given
    requeued: list[str] = field(default_factory=list)  # re-indexed because their stored vectors were lost
    skipped: list[dict] = field(default_factory=list)  # {path, reason}: links leaving --within, not followed
    clips: int = 0
    seconds: float = 0.0
    model: str = ""
    index_factory: str = ""
    vectors: int = 0
    executor: str = "local"
    # per stage: clips through it and busy seconds summed over its workers (decode, embed, write)
    stages: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    @property
    def clips_per_second(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "indexed": len(self.indexed),
            "unchanged": self.unchanged,
            "failed": self.failed,
            "warnings": self.warnings,
            "pruned": len(self.pruned),
            "missing": self.missing,
            "skipped": self.skipped,
            "clips": self.clips,
            "seconds": round(self.seconds, 3),
            "clips_per_second": round(self.clips_per_second, 2),
            "model": self.model,
            "index_factory": self.index_factory,
            "vectors": self.vectors,
            "executor": self.executor,
            "stages": self.stage_rates(),
        }

    def stage_rates(self) -> dict:
        """{stage: {clips, busy_seconds, clips_per_busy_second, workers}}: which stage bounds the run.

        Busy seconds are summed over the stage's workers, so ``clips_per_busy_second`` is what one
        worker of the stage sustains; ``workers`` of them run at once.
        """
        out = {}
        for name, st in self.stages.items():
            busy = st.get("seconds", 0.0)
            out[name] = {
                "clips": int(st.get("clips", 0)),
                "busy_seconds": round(busy, 3),
                "clips_per_busy_second": round(st.get("clips", 0) / busy, 2) if busy > 0 else None,
                "workers": st.get("workers"),
            }
        return out


def check_model_name(name: str | None, checkpoint: str | None) -> None:
    """Fail early, with the list of known models, on a misspelt ``--model``."""
    from retrieval.model_spec import list_models

    if name and not checkpoint and name not in list_models():
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
