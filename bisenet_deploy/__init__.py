"""bisenet-deploy: BiSeNet from a PyTorch checkpoint to verified ONNX, TensorRT engines and a
lightweight runtime.

The top-level package imports nothing heavy; ``bisenet_deploy.runtime`` never imports torch.
"""

__version__ = "0.1.0"

from .spec import ModelSpec  # noqa: E402

__all__ = ["ModelSpec", "__version__"]
