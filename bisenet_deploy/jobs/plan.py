"""Inputs -> sources, each with its own output name; the output folder may hold no input.

The naming rule (the same for local and Ray runs):

* a file given directly is named by its stem (``photos/a.jpg`` -> ``a``); an image inside a
  folder given as input by its path relative to that folder (``frames/left/0001.png`` with
  input ``frames`` -> ``left/0001``); camera ``N`` is ``cameraN``;
* the same file given twice (directly, through a folder or a link) is read once;
* names that would collide (compared case-insensitively, as on macOS and Windows file
  systems) are made distinct, in this order: the input's suffix is kept (``dup.jpg``,
  ``dup.png``); else the path relative to the colliding files' common folder (``a/x``,
  ``b/x``); else that path with the suffix; else a counter (``x~2``).
* a video's mask frames go into a folder named after the video, so no image may be named
  inside it (``clip`` vs ``clip/000001``): the video is renamed as above.

Outputs then follow from the name and the mode (``outputs``), so distinct names mean
distinct files and no result is ever written over another.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, UserError
from ..fileio import check_output_folder

SOURCE_KINDS = ("image", "video", "camera", "bag")


def is_url(target: object) -> bool:
    """A stream's address (``rtsp://``, ``http://``, ...), read by OpenCV like a camera."""
    return isinstance(target, str) and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", target) is not None


@dataclass(frozen=True)
class Source:
    """One input: an image file, a video file or a camera."""

    kind: str
    target: Path | int
    name: str  # output name: posix path relative to the output folder, without suffix
    origin: str = ""  # the command-line input it came from

    @property
    def label(self) -> str:
        """How reports and the summary name this input."""
        if self.kind == "camera":  # a camera index, or a stream's URL (``--live``)
            return self.target if is_url(self.target) else f"camera {self.target}"
        return str(Path(self.target).resolve())

    @property
    def is_stream(self) -> bool:
        """Videos, cameras and bags: many frames, outputs in a folder, a video or a bag."""
        return self.kind in ("video", "camera", "bag")


@dataclass
class Plan:
    sources: list[Source]
    notes: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (folder, why): failed rows


@dataclass
class _Candidate:
    kind: str
    target: Path | int
    base: str
    origin: str
    resolved: Path | None


def collect_sources(inputs: Sequence[str]) -> Plan:
    """Image files, folders of images (recursively), videos and camera indices -> a Plan."""
    from ..rosbag.bags import is_bag
    from ..runtime.sources import is_image, is_video

    candidates: list[_Candidate] = []
    notes: list[str] = []
    unreadable: list[tuple[str, str]] = []
    seen: dict[Path, tuple[str, str]] = {}

    def add(kind: str, path: Path, base: str, origin: str) -> None:
        resolved = path.resolve()
        if resolved in seen:
            first, first_origin = seen[resolved]
            how = (f"inputs '{first_origin}' and '{origin}' both hold it" if first_origin != origin
                   else f"it is also given as '{first}'")
            notes.append(f"'{path}' is given more than once ({how}); it is read once")
            return
        seen[resolved] = (str(path), origin)
        candidates.append(_Candidate(kind, path, base, origin, resolved))

    devices: dict[int | str, str] = {}  # cameras and URLs given, as first typed: one reader each

    def add_device(target: int | str, base: str, item: str) -> None:
        if target in devices:  # a device cannot be opened twice
            first = devices[target]
            how = "given twice" if first == item else f"also given as '{first}'"
            notes.append(f"'{item}' is {how}; it is read once")
            return
        devices[target] = item
        candidates.append(_Candidate("camera", target, base, item, None))

    for item in inputs:
        path = Path(item)
        if item.isdigit() and not path.exists():
            add_device(int(item), f"camera{item}", item)
        elif is_url(item):  # a network camera or stream (rtsp://, http://, udp://): read live
            base = re.sub(r"[^0-9A-Za-z._-]+", "_", item.split("://", 1)[1]).strip("_.") or "stream"
            add_device(item, base, item)
        elif path.exists() and is_bag(path):
            add("bag", path, path.stem if path.is_file() else path.name, item)
        elif path.is_dir():
            images = walk_images(path, notes, unreadable)
            if not images and not unreadable:
                raise InputError(f"folder '{path}' contains no images")
            for image in images:
                add("image", image, image.relative_to(path).with_suffix("").as_posix(), item)
        elif not path.exists():
            raise InputError(f"input '{item}' does not exist")
        elif is_image(path):
            add("image", path, path.stem, item)
        elif is_video(path):
            add("video", path, path.stem, item)
        else:
            raise InputError(f"'{item}' is neither an image nor a video file (nor a folder, bag or camera index)")
    names = unique_names(candidates)
    renamed = [(c, n) for c, n in zip(candidates, names) if n != c.base]
    if renamed:
        shown = ", ".join(f"{c.target} -> {n}" for c, n in renamed[:4])
        more = f" and {len(renamed) - 4} more" if len(renamed) > 4 else ""
        notes.append(f"{len(renamed)} inputs would share an output name; renamed: {shown}{more}")
    sources = [Source(c.kind, c.target, n, c.origin) for c, n in zip(candidates, names)]
    return Plan(sources, notes, unreadable)


def walk_images(folder: Path, notes: list[str], unreadable: list[tuple[str, str]]) -> list[Path]:
    """Images under ``folder``, following links to folders, each folder once (a link that loops
    back is not followed again). A dangling link named like an image is listed, so the run
    reports it as a failed input; any other dangling link is a note; a folder that cannot be
    listed is a failed input of its own."""
    from ..runtime.sources import is_image

    seen: set[tuple[int, int]] = set()
    found: list[Path] = []
    def failed(exc: OSError) -> None:
        unreadable.append((str(Path(exc.filename).resolve()), f"cannot list folder '{exc.filename}': {exc.strerror}"))

    for root, dirs, files in os.walk(folder, followlinks=True, onerror=failed):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        for name in [*files, *dirs]:
            path = Path(root, name)
            if is_image(path) and name in files:
                found.append(path)
            elif path.is_symlink() and not path.exists():
                notes.append(f"'{path}' is a link to nothing ('{os.readlink(path)}'); skipped")
    return sorted(found)


def _collisions(names: list[str], kinds: list[str]) -> list[list[int]]:
    """Groups of indices whose outputs would meet (case-insensitively). A video whose frame
    folder would hold another input's output is a group of its own: only it is renamed."""
    by_key: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        by_key.setdefault(name.casefold(), []).append(i)
    groups = [g for g in by_key.values() if len(g) > 1]
    streams = {names[i].casefold(): i for i, k in enumerate(kinds) if k in ("video", "camera", "bag")}
    if streams:
        for i, name in enumerate(names):
            key = name.casefold()
            for parent in _parents(key):
                if parent in streams and streams[parent] != i:
                    groups.append([streams[parent]])
    return groups


def _parents(key: str) -> list[str]:
    parts = key.split("/")
    return ["/".join(parts[:n]) for n in range(1, len(parts))]


def _common_root(paths: list[Path]) -> Path:
    return Path(os.path.commonpath([str(p.parent) for p in paths]))


def unique_names(candidates: list[_Candidate]) -> list[str]:
    """Output names following the module's rule (see the docstring)."""
    stage = [0] * len(candidates)
    roots: list[Path | None] = [None] * len(candidates)
    kinds = [c.kind for c in candidates]

    def name(i: int) -> str:
        c = candidates[i]
        if stage[i] == 0 or c.resolved is None:
            return c.base
        tag = c.resolved.suffix[1:]
        if stage[i] == 1:
            return f"{c.base}.{tag}" if tag else c.base
        rel = c.resolved.relative_to(roots[i]).as_posix()
        return rel.rsplit(".", 1)[0] if stage[i] == 2 and tag else rel

    for _ in range(4):
        names = [name(i) for i in range(len(candidates))]
        groups = _collisions(names, kinds)
        if not groups:
            return names
        for group in groups:
            files = [i for i in group if candidates[i].resolved is not None]
            if not files:
                continue
            root = _common_root([candidates[i].resolved for i in files])
            next_stage = min(3, min(stage[i] for i in files) + 1)
            for i in files:
                stage[i] = max(stage[i], next_stage)
                roots[i] = root
    names = [name(i) for i in range(len(candidates))]
    taken = {n.casefold() for n in names}
    for group in _collisions(names, kinds):  # a counter as the last resort
        for n, i in enumerate(group[1:], start=2):
            while f"{names[i]}~{n}".casefold() in taken:
                n += 1
            names[i] = f"{names[i]}~{n}"
            taken.add(names[i].casefold())
    return names


def check_output_against_inputs(output: Path, inputs: Sequence[str]) -> Path:
    """Refuse an output folder that is an input, holds an input, or lies inside an input
    folder (its results would be read as inputs by the next run); then check it can be
    written. Nothing is created here."""
    out = output.resolve()
    for item in inputs:
        path = Path(item)
        if item.isdigit() and not path.exists() or is_url(item):
            continue
        src = path.resolve()
        if src == out:
            raise UserError(
                f"output folder '{output}' is the input '{item}': results would be written over the inputs; "
                "choose another -o"
            )
        if out in src.parents:
            raise UserError(f"output folder '{output}' contains the input '{item}'; choose an -o outside the inputs")
        if src.is_dir() and src in out.parents:
            raise UserError(
                f"output folder '{output}' is inside the input folder '{item}': its results would be read as "
                "inputs by the next run; choose an -o outside it"
            )
    return check_output_folder(output)
