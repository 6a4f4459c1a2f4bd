"""One namespace per TensorRT version with exactly the names its binding sources define.

Built from ``tests/trt_api_surfaces.py`` (read from NVIDIA/TensorRT's pyCore.cpp, pyGraph.cpp
and pyFoundationalTypes.cpp at v8.6.1, v10.3.0, v11.1). Classes carry their bound names as
attributes, enums are real ``IntEnum``s with exactly the bound members and the values of the C++
headers (``ENUM_VALUES``), so ``hasattr`` and ``int(flag)`` behave as on the real module. Only the decision functions of
``bisenet_deploy.trt.features`` (and the 8.6 layer pinning) are run against these.
"""

from __future__ import annotations

import enum
from types import SimpleNamespace

from tests.trt_api_surfaces import ENUM_VALUES, SURFACES

VERSIONS = tuple(SURFACES)
CLASSES = ("Runtime", "IExecutionContext", "ICudaEngine", "IBuilderConfig", "Builder", "ILayer")
HELPER_CLASSES = ("OnnxParser", "IOptimizationProfile", "EngineInspector", "IProgressMonitor", "ITimingCache")
ENUMS = ("BuilderFlag", "NetworkDefinitionCreationFlag", "DeviceType", "MemoryPoolType", "ProfilingVerbosity",
         "LayerType", "DataType")


def api(version: str, drop: dict[str, tuple[str, ...]] | None = None) -> SimpleNamespace:
    """The ``tensorrt`` module of ``version`` as far as names go (``drop`` removes some, to
    stand for an older release that lacked them)."""
    surface = {k: tuple(n for n in v if n not in (drop or {}).get(k, ())) for k, v in SURFACES[version].items()}
    ns = SimpleNamespace(__name__="tensorrt", __version__=version)
    for name in CLASSES:
        setattr(ns, name, type(name, (), dict.fromkeys(surface.get(name, ()))))
    for name in HELPER_CLASSES:  # absent where the version binds no such class (8.6: IProgressMonitor)
        if name in surface:
            setattr(ns, name, type(name, (), dict.fromkeys(surface[name])))
    for name in ENUMS:
        bound = surface.get(name, ())
        setattr(ns, name, enum.IntEnum(name, [(m, v) for m, v in ENUM_VALUES[version][name] if m in bound]))
    return ns
