"""Finding video files under library roots.

Symlinks are followed (libraries are often assembled from links), but every directory is entered
at most once by its (device, inode), so a link pointing back up the tree cannot loop, and a file
reachable through two links is indexed once, under the first path found. Paths that cannot be read
are reported, not fatal; a link that loops (``a -> b -> a``) is reported as a loop.

``confine`` (the admin API's ``VTR_INDEX_ROOTS``, passed as ``vtr index --within``) checks the *real*
path of every folder the walk enters and every file it yields: a link that leads outside those
folders is not followed and is reported in ``ScanResult.skipped`` with the reason. Hidden folders and files (``.name``, e.g. ``.Trash``, macOS ``._`` resource
forks) are skipped, and so is the data home if it lies inside a root.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from retrieval.utf8 import is_utf8_encodable

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .m2v .ts .mts .m2ts .wmv .asf .flv .3gp .3g2 .ogv .mxf .vob .dv .qt .hevc .h264".split()
)


@dataclass(frozen=True)
class FoundFile:
    root: str  # absolute library root the file was found under
    path: str  # absolute path (symlinks kept as found, not resolved)
    size: int
    mtime_ns: int


@dataclass
class ScanResult:
    files: list[FoundFile] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    roots: list[str] = field(default_factory=list)  # folders scanned completely (for --prune)
    file_roots: list[str] = field(default_factory=list)  # single files given as roots
    # folders whose contents could not be seen (unlistable, or a link to a folder that is not there, e.g.
    # an unmounted drive): their files are not found, but that does not mean they were deleted
    unreadable: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): links leaving ``confine``

    def covers(self, path: str) -> bool:
        """True when this scan looked at ``path``'s location, so its absence means it is gone."""
        return path in self.file_roots or under_roots(path, self.roots)


def is_video_name(name: str, extensions: Iterable[str] = VIDEO_EXTENSIONS) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions


def _abs(path: str | os.PathLike) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(os.fspath(path))))


def scan(
    roots: Iterable[str | os.PathLike],
    *,
    extensions: Iterable[str] = VIDEO_EXTENSIONS,
    exclude: Iterable[str | os.PathLike] = (),
    confine: Iterable[str | os.PathLike] | None = None,
) -> ScanResult:
    """Every video file under ``roots`` (folders or single files), sorted by path within each root.

    With ``confine`` (folders), only files and folders whose real path lies inside one of them are
    entered; links that lead elsewhere are listed in ``skipped``.
    """
    exts = frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    excluded = {_real_key(p) for p in exclude if os.path.exists(p)}
    inside = None if confine is None else _Confinement(confine)
    result = ScanResult()
    seen_files: set[tuple[int, int]] = set()
    for raw in roots:
        root = _abs(raw)
        try:
            st = os.stat(root)
        except OSError as exc:
            result.errors.append((root, _reason(exc, os.path.islink(root))))
            continue
        if inside is not None and not inside(root):
            result.skipped.append((root, OUTSIDE_ROOTS))
            continue
        if stat.S_ISREG(st.st_mode):
            # a single file: its library root is its folder, but only the file itself was scanned
            result.file_roots.append(root)
            key = (st.st_dev, st.st_ino)
            if key not in seen_files:
                seen_files.add(key)
                result.files.append(FoundFile(os.path.dirname(root), root, st.st_size, st.st_mtime_ns))
            continue
        if not stat.S_ISDIR(st.st_mode):
            result.errors.append((root, "not a file or folder"))
            continue
        result.roots.append(root)
        found = list(_walk(root, exts, excluded, seen_files, result, inside))
        found.sort(key=lambda f: f.path)
        result.files.extend(found)
    return result


def _real_key(path) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


OUTSIDE_ROOTS = "symbolic link leads outside the index roots (VTR_INDEX_ROOTS); not followed"
LINK_LOOP = "symbolic link loop (the link leads back to itself)"


def _reason(exc: OSError, is_link: bool = False) -> str:
    if exc.errno == errno.ELOOP:
        return LINK_LOOP
    if is_link and exc.errno == errno.ENOENT:
        return "broken symbolic link"
    return exc.strerror or str(exc)


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class _Confinement:
    """``inside(path)``: whether ``path``'s real path (every link resolved) lies in one of the folders."""

    def __init__(self, folders: Iterable[str | os.PathLike]):
        self.folders = [os.path.realpath(_abs(f)) for f in folders]

    def __call__(self, path: str) -> bool:
        real = os.path.realpath(path)
        return any(_within(real, f) for f in self.folders)


def _walk(
    root: str,
    exts: frozenset[str],
    excluded: set,
    seen_files: set,
    result: ScanResult,
    inside: _Confinement | None,
) -> Iterator[FoundFile]:
    errors, unreadable = result.errors, result.unreadable
    visited_dirs: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            key = _real_key(folder)
        except OSError as exc:
            errors.append((folder, _reason(exc, os.path.islink(folder))))
            unreadable.append(folder)
            continue
        if key in visited_dirs or key in excluded:
            continue
        if inside is not None and not inside(folder):  # entered through a link: check where it really is
            result.skipped.append((folder, OUTSIDE_ROOTS))
            continue
        visited_dirs.add(key)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            errors.append((folder, _reason(exc)))
            unreadable.append(folder)
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError as exc:  # dangling symlink, link loop, permission denied
                if is_video_name(entry.name, exts) or exc.errno == errno.ELOOP:
                    errors.append((entry.path, _reason(exc, entry.is_symlink())))
                else:  # maybe a link to a folder on a drive that is not mounted now
                    unreadable.append(entry.path)
                continue
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(entry.path)
            elif stat.S_ISREG(st.st_mode) and is_video_name(entry.name, exts):
                if not is_utf8_encodable(entry.path):  # the catalog stores text: such a name cannot be recorded
                    errors.append(
                        (
                            os.fsencode(entry.path).decode("utf-8", "backslashreplace"),
                            "file name is not valid UTF-8; rename it",
                        )
                    )
                    continue
                if inside is not None and entry.is_symlink() and not inside(entry.path):
                    result.skipped.append((entry.path, OUTSIDE_ROOTS))
                    continue
                fkey = (st.st_dev, st.st_ino)
                if fkey in seen_files:
                    continue
                if not os.access(entry.path, os.R_OK):
                    errors.append((entry.path, "permission denied"))
                    continue
                seen_files.add(fkey)
                yield FoundFile(root, entry.path, st.st_size, st.st_mtime_ns)
        stack.extend(sorted(subdirs, reverse=True))


def under_roots(path: str, roots: Iterable[str]) -> bool:
    """True when ``path`` lies inside one of ``roots`` (by path, not by resolved link target)."""
    p = Path(path)
    for r in roots:
        try:
            p.relative_to(r)
            return True
        except ValueError:
            continue
    return False
