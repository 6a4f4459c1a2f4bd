"""Restricted unpickling of training checkpoints: the data comes out, no foreign code runs.

Training code pickles its own objects next to the weights: a pytorch-template ``ConfigParser``
with ``pathlib`` paths, ``np.float64`` best scores, ``datetime`` stamps, ``Enum`` members,
argparse namespaces, OmegaConf and yacs configs. None of them is needed to rebuild the
network, and none of their classes may be imported or run. Every global a pickle names is
resolved here (the ``find_class`` hook of the Python docs' "Restricting Globals"), in order:

1. **refused** when calling it has an effect (``exec``/``eval``, ``os``/``subprocess``/``socket``
   calls, file opens, imports, nested unpickling): such a file is hostile or at least not data;
2. **a value builder** for pure data whose construction runs no code: tensors (PyTorch's own
   weights-only list), builtin containers, paths, dates, numpy dtypes/scalars/arrays (rebuilt
   from their bytes by ``np.frombuffer``, never by numpy's own ``__setstate__``);
3. **an inert stand-in** (``ForeignObject``) for everything else: it records the arguments,
   items and state it is given and never calls anything, whatever its name.

So the allowlist decides what is *called*; the denylist only decides what is *reported as
hostile* (an unknown global is never called, listed or not). PyTorch's ``torch.load`` runs the
zip/legacy container and the tensor storages; only its pickle module is ours.
"""

from __future__ import annotations

import _compat_pickle
import collections
import contextvars
import pickle
from collections.abc import Callable
from typing import Any

from .pickled_values import (
    ForeignObject,
    RefusedGlobal,
    _Array,
    _DType,
    foreign_items,
    resolve_values,
    stand_in,
    value_globals,
)

__all__ = ["ForeignObject", "RefusedGlobal", "Unpickler", "foreign_items", "load", "read_restricted",
           "resolve_values", "runs_code", "stand_in"]

# --- what is refused -------------------------------------------------------------------------

#: Modules whose callables have effects (processes, files, network, imports, code, unpickling).
_EFFECT_MODULES = frozenset({
    "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "_posixsubprocess", "sys", "shutil",
    "importlib", "imp", "zipimport", "pkgutil", "runpy", "site", "pickle", "_pickle", "cPickle",
    "pickletools", "marshal", "dill", "cloudpickle", "joblib", "shelve", "socket", "_socket", "ssl",
    "select", "selectors", "ctypes", "_ctypes", "cffi", "code", "codeop", "pty", "tty", "webbrowser",
    "multiprocessing", "concurrent", "threading", "_thread", "signal", "asyncio", "urllib", "urllib2",
    "urllib3", "requests", "http", "ftplib", "smtplib", "telnetlib", "xmlrpc", "io", "_io", "tempfile",
    "types", "operator", "_operator", "timeit", "cProfile", "profile", "pdb", "bdb", "trace",
    "doctest", "platform", "pydoc", "glob", "fileinput", "linecache", "gc", "resource", "fcntl",
    "mmap", "inspect", "ast", "setuptools", "distutils", "pip", "yaml", "IPython",
})
#: Sub-packages of otherwise harmless libraries that load, compile or run things.
_EFFECT_PREFIXES = ("numpy.testing", "numpy.f2py", "numpy.distutils", "numpy.lib.npyio", "torch.hub",
                    "torch.jit", "torch.package", "torch.utils.cpp_extension", "torch.serialization",
                    "torch._dynamo", "torch._inductor", "torch.ops", "torch.cuda")
#: Builtins whose call has an effect or reaches arbitrary attributes.
_EFFECT_BUILTINS = frozenset({
    "exec", "eval", "compile", "__import__", "getattr", "setattr", "delattr", "open", "input",
    "breakpoint", "globals", "locals", "vars", "exit", "quit", "help", "print", "__build_class__",
    "memoryview", "type", "super", "classmethod", "staticmethod", "property",
})
#: Attribute names that load, run or write, whatever module they come from (``numpy.load``,
#: ``torch.load``, ``pathlib.Path.write_text``, ``yaml.unsafe_load``, ``codecs.open``).
_EFFECT_LEAVES = frozenset({
    "system", "popen", "spawn", "exec", "eval", "execfile", "compile", "load", "loads", "unsafe_load",
    "full_load", "load_all", "open", "urlopen", "import_module", "__import__", "getattr", "setattr",
    "delattr", "__getattribute__", "__getattr__", "__reduce__", "__reduce_ex__", "__setstate__",
    "__globals__", "__builtins__", "__subclasses__", "__init_subclass__", "write_text", "write_bytes",
    "unlink", "rmdir", "rmtree", "mkdir", "touch", "chmod", "chown", "symlink_to", "hardlink_to",
    "link_to", "read_text", "read_bytes", "fromfile", "tofile", "memmap",
})


def runs_code(module: str, name: str) -> bool:
    """Whether calling global ``module.name`` (as a pickle would) can have an effect.

    ``name`` may be dotted (protocol 4 reaches attributes of classes: ``Path.write_text``)."""
    attrs = name.split(".")
    if module in ("builtins", "__builtin__"):
        return attrs[0] in _EFFECT_BUILTINS or len(attrs) > 1
    full = f"{module}.{name}"
    if module.split(".")[0] in _EFFECT_MODULES:
        return True
    if any(full == p or full.startswith(p + ".") for p in _EFFECT_PREFIXES):
        return True
    return any(a in _EFFECT_LEAVES or a.startswith(("exec", "spawn", "popen", "system")) for a in attrs)


# --- the unpickler -------------------------------------------------------------------------


class _Session:
    def __init__(self) -> None:
        self.stand_ins: dict[str, type] = {}


_session: contextvars.ContextVar[_Session | None] = contextvars.ContextVar("bisenet_unpickling", default=None)


def _canonical(module: str, name: str) -> tuple[str, str]:
    # Protocol 0-2 pickles name Python 2 modules (__builtin__.long, copy_reg); the default
    # find_class maps them, ours must too, before any decision.
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _buildable(inst: Any) -> bool:
    """Objects whose state a pickle may set (BUILD): our stand-ins and placeholders, plain data
    objects and tensors; never a class, a function or a module (that would patch them for the
    whole process)."""
    if isinstance(inst, (ForeignObject, _DType, _Array)):
        return True
    import argparse

    import torch

    return type(inst) in (argparse.Namespace, collections.OrderedDict, collections.Counter,
                          torch.Tensor, torch.nn.Parameter)


#: The pure-Python unpickler: unlike the C one, its BUILD can be restricted (``_buildable``).
_BaseUnpickler = getattr(pickle, "_Unpickler", pickle.Unpickler)


class Unpickler(_BaseUnpickler):  # type: ignore[misc,valid-type]
    """An unpickler that resolves globals as the module docstring says."""

    dispatch = dict(getattr(_BaseUnpickler, "dispatch", {}))

    def find_class(self, module: str, name: str) -> Any:
        module, name = _canonical(str(module), str(name))
        full = f"{module}.{name}"
        values = value_globals()
        if full in values:  # reviewed pure-data builders come first: they run no code
            return values[full]
        if runs_code(module, name):
            raise RefusedGlobal(full)
        session = _session.get() or _Session()
        if full not in session.stand_ins:
            session.stand_ins[full] = stand_in(full)
        return session.stand_ins[full]


    def load_build(self) -> None:
        stack = self.stack
        if not _buildable(stack[-2]):
            raise pickle.UnpicklingError(f"refused to set the state of {type(stack[-2]).__name__} objects")
        _BaseUnpickler.load_build(self)

    if dispatch:
        dispatch[pickle.BUILD[0]] = load_build


def load(file: Any, **kwargs: Any) -> Any:
    """``pickle.load`` with the restricted unpickler (torch reads legacy headers with it)."""
    return Unpickler(file, **kwargs).load()


def read_restricted(reader: Callable[[Any], Any]) -> tuple[Any, list[str]]:
    """Run ``reader(this_module)`` (a ``torch.load`` with ``pickle_module=``) and return the
    object, with numpy arrays resolved, and the names of the classes stood in for."""
    import sys

    session = _Session()
    token = _session.set(session)
    try:
        obj = reader(sys.modules[__name__])
    finally:
        _session.reset(token)
    return resolve_values(obj), sorted(session.stand_ins)


