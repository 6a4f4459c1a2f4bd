"""PyTorch side: the BiSeNet network definitions and safe checkpoint loading (imports torch)."""

from .bisenet import BiSeNet
from .checkpoint import LoadedCheckpoint, load_checkpoint
from .families import Family, families, get_family

__all__ = ["BiSeNet", "Family", "LoadedCheckpoint", "families", "get_family", "load_checkpoint"]
