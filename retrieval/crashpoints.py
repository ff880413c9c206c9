"""Named crash points for the reliability tests (a test hook; nothing happens unless it is asked for).

``VTR_TEST_CRASH_AT=NAME`` (or ``NAME@N``: the N-th time the point is reached, default the first) makes
the process SIGKILL itself at that point, exactly as ``kill -9`` would, so a test can kill the indexer
at a moment chosen by progress rather than by a timer. NAME may be a glob; several points are separated by
commas (``decoder:a.mp4,ray-task:b.mp4``), each counted on its own. The points:

``commit``                      after a group of videos is committed to the catalog (and the token store)
``embedded``                    after a batch of clips is embedded, before their videos are committed (mid-file)
``replace:<file name>``         an atomic file write, after the temp file is written and fsynced, before the
                                rename (``replace:clips.faiss``: during a FAISS save)
``token_compact:written``       a token-store compaction, new generation written, before the switch
``token_compact:switched``      after the switch, before the old generation's files are removed
``decoder:<file name>``         a decoder process starts on that file (every decoder that tries it dies)
``ray-task:<file name>``        a Ray decode task (its Ray worker process) starts on that file
``ray-embed``                   a Ray embedding actor received a batch (``ray-embed@2``: its second)

Unset (always, outside tests), :func:`crash_point` is one dictionary lookup.
"""

from __future__ import annotations

import fnmatch
import os
import signal

ENV = "VTR_TEST_CRASH_AT"
_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        pattern, _, nth = item.strip().partition("@")
        if not fnmatch.fnmatchcase(name, pattern):
            continue
        _hits[item] = _hits.get(item, 0) + 1
        if _hits[item] >= int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)
