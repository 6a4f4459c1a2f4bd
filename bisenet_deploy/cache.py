"""The user's cache folder for bisenet-deploy: compiled OpenVINO models, backend choices.

``$BISENET_DEPLOY_CACHE`` if set, else ``$XDG_CACHE_HOME/bisenet-deploy``, else
``~/.cache/bisenet-deploy``. Everything in it can be deleted at any time; it is only
ever a shortcut.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The cache folder (or a subfolder of it), created on first use."""
    root = os.environ.get("BISENET_DEPLOY_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "bisenet-deploy"
    folder = base.joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
