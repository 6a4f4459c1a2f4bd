"""Real photographs that ship inside installed Python packages (no download needed).

scikit-image, scikit-learn and matplotlib carry sample photos in their wheels. They serve
as offline verification, benchmark and calibration inputs and as backgrounds for the
synthetic training task. Only packages that are installed contribute.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

# Colour photographs of natural scenes (textures and gray test charts left out).
_PHOTOS = {
    "skimage": ("data", ["astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png",
                         "motorcycle_right.png", "rocket.jpg", "hubble_deep_field.jpg", "retina.jpg"]),
    "sklearn": ("datasets/images", ["china.jpg", "flower.jpg"]),
    "matplotlib": ("mpl-data/sample_data", ["grace_hopper.jpg"]),
}


def sample_photo_paths() -> list[Path]:
    """Paths of the sample photos available in this environment, in a fixed order."""
    paths = []
    for package, (folder, names) in _PHOTOS.items():
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(list(spec.submodule_search_locations)[0]) / folder
        paths.extend(root / name for name in names if (root / name).is_file())
    return paths


def sample_photos(limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """(name, BGR uint8 image) for each available sample photo."""
    photos = []
    for path in sample_photo_paths()[:limit]:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is not None:
            photos.append((path.name, image))
    return photos
