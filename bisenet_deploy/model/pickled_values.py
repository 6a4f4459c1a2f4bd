"""What a restricted unpickle can produce: inert stand-ins and reviewed pure-data values.

``unpickling`` decides, per global a pickle names, between refusing it, one of the builders
here (called with the pickle's arguments: they construct data and nothing else) and a
``ForeignObject`` stand-in (never called for effect). numpy values are rebuilt from their
bytes by ``np.frombuffer`` through placeholders (``_DType``, ``_Array``) that
``resolve_values`` replaces by the real dtype / array once the pickle is read.
"""

from __future__ import annotations

import builtins
import codecs
import collections
import datetime
import pathlib
import pickle
from collections.abc import Callable, Iterator
from typing import Any


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global whose call has an effect."""

    def __init__(self, name: str) -> None:
        super().__init__(f"refused global {name}")
        self.name = name


class ForeignObject:
    """Inert stand-in for an object of a class that is not installed or not trusted.

    Keeps what the pickle gives it (constructor arguments, dict items, list items, state) for
    inspection, and never runs code: unpickling can set items and state, nothing else."""

    _foreign_name = "?"
    #: the member name of an Enum pickled as getattr(cls, name)
    attribute: str | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> ForeignObject:
        self = object.__new__(cls)
        object.__setattr__(self, "args", args)
        object.__setattr__(self, "kwargs", kwargs)
        object.__setattr__(self, "state", None)
        object.__setattr__(self, "items", {})
        object.__setattr__(self, "listitems", [])
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # arguments kept by __new__
        pass

    def __setstate__(self, state: Any) -> None:
        object.__setattr__(self, "state", state)

    def __setattr__(self, name: str, value: Any) -> None:
        # BUILD with a (state, slotstate) pair sets slots through setattr; keep them as data.
        if not isinstance(self.state, dict):
            object.__setattr__(self, "state", {})
        self.state[name] = value

    # dict and list subclasses (yacs' CfgNode, OmegaConf's containers) get their items so.
    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.listitems.append(value)

    def extend(self, values: Any) -> None:
        self.listitems.extend(values)

    @property
    def value(self) -> Any:
        """The single constructor argument (an Enum member's value), else None."""
        return self.args[0] if len(self.args) == 1 else None

    def __repr__(self) -> str:
        return f"<foreign {self._foreign_name}>"


def stand_in(qualified_name: str) -> type:
    short = qualified_name.rsplit(".", 1)[-1] or "Foreign"
    return type(short, (ForeignObject,), {"_foreign_name": qualified_name, "__module__": __name__})


# --- pure values ---------------------------------------------------------------------------


def _strings(args: tuple) -> tuple[str, ...]:
    if not all(isinstance(a, str) for a in args):
        raise pickle.UnpicklingError("a pickled path holds something other than strings")
    return args


def _posix_path(*parts: Any) -> pathlib.PurePosixPath:
    # Pure paths: the value of the path, with no way to touch the file system from it.
    return pathlib.PurePosixPath(*_strings(parts))


def _windows_path(*parts: Any) -> pathlib.PureWindowsPath:
    return pathlib.PureWindowsPath(*_strings(parts))


def _datetime(cls: type) -> Callable[..., Any]:
    def build(*args: Any) -> Any:
        try:
            return cls(*args)
        except TypeError:
            # A tzinfo from an untrusted library (pytz, dateutil) is a stand-in: keep the naive time.
            if len(args) == 2 and isinstance(args[1], ForeignObject):
                return cls(args[0])
            raise

    build.__name__ = cls.__name__
    return build


def _encode(text: str, encoding: str = "latin1") -> bytes:
    # Protocol 2 stores bytes as _codecs.encode(str, 'latin1'); other codecs are not data.
    # Matched by name, not codecs.lookup: a lookup imports the codec's module.
    name = encoding.lower().replace("_", "-") if isinstance(encoding, str) else None
    if name not in ("latin1", "latin-1", "iso-8859-1", "iso8859-1", "utf-8", "utf8", "ascii") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused codec {encoding!r}")
    return codecs.encode(text, encoding)


def _bytearray(*args: Any) -> bytearray:
    # bytearray(10**12) would allocate a terabyte: only the (text, codec) and bytes forms pickle uses.
    if args and not isinstance(args[0], (str, bytes)):
        raise pickle.UnpicklingError("a pickled bytearray holds something other than bytes")
    return bytearray(*args)


def _bytes(*args: Any) -> bytes:
    return bytes(_bytearray(*args))


def _defaultdict(factory: Any = None, *args: Any) -> dict:
    # The factory would be called on a missing key later; the items are the value.
    return dict(*args)


def _getattr(owner: Any, name: Any, *default: Any) -> Any:
    # Enum members pickle as getattr(EnumClass, "MEMBER") (Python >= 3.11), bound methods as
    # getattr(instance, "method"). Only stand-ins may be asked, and the answer is an inert record
    # of the name. getattr on anything real (a module, a function, pathlib's builder) is how
    # pickles reach methods that run code.
    if isinstance(owner, type) and issubclass(owner, ForeignObject) and isinstance(name, str):
        member = owner.__new__(owner)
        object.__setattr__(member, "attribute", name)
        return member
    if isinstance(owner, ForeignObject) and isinstance(name, str):
        method = stand_in(f"{owner._foreign_name}.{name}")()
        object.__setattr__(method, "attribute", name)
        return method
    raise RefusedGlobal(f"builtins.getattr({getattr(owner, '__name__', type(owner).__name__)}, {name!r})")


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
    # copyreg._reconstructor (protocol 0/1 objects): only ever makes a stand-in.
    if isinstance(cls, type) and issubclass(cls, ForeignObject):
        return cls.__new__(cls)
    return stand_in(getattr(cls, "__name__", "object"))()


class _DType:
    """A numpy dtype, named by its type code; numeric, bool and string kinds only."""

    def __init__(self, code: Any, align: Any = False, copy: Any = True) -> None:
        import numpy as np

        if not isinstance(code, str) or len(code) > 8:
            raise pickle.UnpicklingError(f"unsupported numpy dtype {code!r}")
        try:
            dtype = np.dtype(code)
        except (TypeError, ValueError, SyntaxError):
            raise pickle.UnpicklingError(f"unsupported numpy dtype {code!r}") from None
        self.dtype = dtype if dtype.kind in "biufcSU" and dtype.names is None else None
        self.code = code

    def __setstate__(self, state: Any) -> None:
        # (version, byte order, ...): only the byte order matters for these kinds.
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">") and self.dtype is not None:
            self.dtype = self.dtype.newbyteorder(state[1])

    def resolve(self) -> Any:
        if self.dtype is None:
            return ForeignObject(self.code)
        return self.dtype


def _dtype_of(value: Any) -> Any:
    if not isinstance(value, _DType) or value.dtype is None:
        return None
    return value.dtype


def _np_scalar(dtype: Any, data: Any = b"") -> Any:
    import numpy as np

    resolved = _dtype_of(dtype)
    if resolved is None or not isinstance(data, bytes) or len(data) != resolved.itemsize:
        return ForeignObject(dtype, data)
    return np.frombuffer(data, dtype=resolved)[0].copy()


class _NdarrayType:
    """What a pickle gets for ``numpy.ndarray``: a marker, never numpy's constructor."""


class _Array:
    """A numpy array being unpickled; its data arrives in ``__setstate__``."""

    def __init__(self, *args: Any) -> None:
        self.array: Any = None

    def __setstate__(self, state: Any) -> None:
        import numpy as np

        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("unsupported numpy array state")
        _, shape, dtype, fortran, data = state
        if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise pickle.UnpicklingError("bad numpy array shape")
        resolved = _dtype_of(dtype)
        if isinstance(data, list):  # an object array: its items are already unpickled (inert) values
            self.array = data
            return
        if resolved is None or not isinstance(data, (bytes, bytearray)):
            raise pickle.UnpicklingError("unsupported numpy array data")
        count = 1
        for n in shape:
            count *= n
        if len(data) != count * resolved.itemsize:
            raise pickle.UnpicklingError("numpy array data does not match its shape")
        flat = np.frombuffer(bytes(data), dtype=resolved).copy()
        self.array = flat.reshape(shape, order="F" if fortran else "C")


def _np_reconstruct(cls: Any, shape: Any = (0,), typecode: Any = b"b") -> _Array:
    if cls is not _NdarrayType:
        raise pickle.UnpicklingError("numpy _reconstruct of something other than an ndarray")
    return _Array()


def _np_frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any = "C") -> Any:
    array = _Array()
    array.__setstate__((1, tuple(shape), dtype, order == "F", buffer))
    return array


def _numpy_values() -> dict[str, Any]:
    values: dict[str, Any] = {"numpy.dtype": _DType, "numpy.ndarray": _NdarrayType}
    for core in ("numpy.core", "numpy._core"):
        values[f"{core}.multiarray._reconstruct"] = _np_reconstruct
        values[f"{core}.multiarray.scalar"] = _np_scalar
        values[f"{core}.numeric._frombuffer"] = _np_frombuffer
    try:
        import numpy as np
    except ImportError:
        return values
    for name in ("bool_", "float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
                 "uint16", "uint32", "uint64", "complex64", "complex128"):
        values[f"numpy.{name}"] = getattr(np, name)  # type objects, referenced as values (dtype=np.float32)
    return values


def _torch_values() -> dict[str, Any]:
    import torch
    from torch import _weights_only_unpickler as wo

    # Tensors, storages, dtypes, devices and their rebuild functions: PyTorch's own weights-only
    # allowlist (reviewed by PyTorch for exactly this use).
    values = dict(wo._get_allowed_globals())
    values.pop("_codecs.encode", None)
    values.pop("builtins.bytearray", None)
    values["torch.nn.parameter.Parameter"] = torch.nn.Parameter
    return values


_PURE_BUILTINS = ("int", "float", "complex", "str", "bool", "tuple", "list", "dict", "set", "frozenset",
                  "slice", "range", "object", "NoneType", "Ellipsis", "NotImplemented")


def _values() -> dict[str, Any]:
    values: dict[str, Any] = {f"builtins.{name}": getattr(builtins, name, type(None)) for name in _PURE_BUILTINS}
    values.update({
        "builtins.bytearray": _bytearray,
        "builtins.bytes": _bytes,
        "builtins.getattr": _getattr,
        "_codecs.encode": _encode,
        "collections.OrderedDict": collections.OrderedDict,
        "collections.Counter": collections.Counter,
        "collections.deque": collections.deque,
        "collections.defaultdict": _defaultdict,
        "copyreg._reconstructor": _reconstructor,
        "argparse.Namespace": __import__("argparse").Namespace,  # __dict__ only, no __setstate__
        "datetime.datetime": _datetime(datetime.datetime),
        "datetime.date": _datetime(datetime.date),
        "datetime.time": _datetime(datetime.time),
        "datetime.timedelta": datetime.timedelta,
        "datetime.timezone": datetime.timezone,
    })
    for module in ("pathlib", "pathlib._local"):
        for name in ("Path", "PosixPath", "PurePath", "PurePosixPath"):
            values[f"{module}.{name}"] = _posix_path
        for name in ("WindowsPath", "PureWindowsPath"):
            values[f"{module}.{name}"] = _windows_path
    values.update(_numpy_values())
    values.update(_torch_values())
    return values


_VALUES: dict[str, Any] | None = None


def value_globals() -> dict[str, Any]:
    global _VALUES
    if _VALUES is None:
        _VALUES = _values()
    return _VALUES


def resolve_values(obj: Any) -> Any:
    """Replace the numpy placeholders by their arrays/dtypes, in place where containers allow."""
    seen: set[int] = set()

    def walk(value: Any) -> Any:
        if isinstance(value, _Array):
            return value.array
        if isinstance(value, _DType):
            return value.resolve()
        if id(value) in seen:
            return value
        if isinstance(value, dict):
            seen.add(id(value))
            for key, item in list(value.items()):
                value[key] = walk(item)
        elif isinstance(value, list):
            seen.add(id(value))
            value[:] = [walk(item) for item in value]
        elif isinstance(value, tuple):
            return type(value)(*map(walk, value)) if hasattr(value, "_fields") else tuple(map(walk, value))
        elif isinstance(value, ForeignObject):
            seen.add(id(value))
            object.__setattr__(value, "args", tuple(walk(a) for a in value.args))
            object.__setattr__(value, "state", walk(value.state))
            walk(value.items)
            walk(value.listitems)
            walk(value.kwargs)
        elif hasattr(value, "__dict__") and type(value).__module__ == "argparse":
            seen.add(id(value))
            walk(vars(value))
        return value

    return walk(obj)


def foreign_items(obj: ForeignObject) -> Iterator[tuple[Any, Any]]:
    """The dict-like content of a stand-in: its items, else a dict state."""
    if obj.items:
        yield from obj.items.items()
    elif isinstance(obj.state, dict):
        yield from obj.state.items()
