"""A model served by Triton (``bisenet-serve``) behind the one Backend interface:
``Segmenter("grpc://127.0.0.1:8001/bisenet")`` or ``http://127.0.0.1:8000/bisenet``.

The served model runs the project's Segmenter: it takes uint8 BGR frames of any size and
returns uint8 labels. So this backend describes itself with the served ModelSpec (read from
the model's config ``parameters``) as taking uint8 frames (``NHWC_UINT8``) and returning
labels: the local Segmenter resizes frames to the network size before sending them (less
data on the wire) and upscales the labels that come back, exactly as for a local model; the
labels equal a local Segmenter's on the same artifact.

Every call has a timeout: a dead or unreachable server is one clear error in seconds, never
a hang. Calls from several threads are safe (one client per thread).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ...errors import ArtifactError, UserError
from ...spec import ModelSpec, SpecError
from .base import Backend, TensorInfo

SPEC_PARAMETER = "bisenet_deploy.spec"
SCHEMES = ("grpc", "http", "https")


def is_url(model: Any) -> bool:
    return isinstance(model, str) and model.split("://", 1)[0].lower() in SCHEMES and "://" in model


def parse_url(url: str) -> tuple[str, str, str, str]:
    """``grpc://host:port/model[/version]`` -> (scheme, host:port, model, version)."""
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    parts = [p for p in parsed.path.split("/") if p]
    if scheme not in SCHEMES or not parsed.netloc or not parts or len(parts) > 2:
        raise UserError(f"'{url}' is not a served model: use grpc://HOST:PORT/MODEL or http://HOST:PORT/MODEL")
    port = parsed.port or (8001 if scheme == "grpc" else 8000)
    return scheme, f"{parsed.hostname}:{port}", parts[0], parts[1] if len(parts) > 1 else ""


class TritonBackend(Backend):
    """A model on a Triton server.

    Args:
        path: ``grpc://host:port/model`` or ``http://host:port/model`` (optionally ``/version``).
        timeout: seconds for connecting and for each call.
    """

    name = "triton"
    thread_safe = True

    def __init__(self, path: str, device: str = "auto", timeout: float = 10.0, threads: int = 0) -> None:
        self.url = str(path)
        self.scheme, self.address, self.model, self.version = parse_url(self.url)
        super().__init__(self.model)
        self.path = Path(self.model)  # messages name the model
        self.timeout = float(timeout)
        try:
            if self.scheme == "grpc":
                import tritonclient.grpc as client_module
            else:
                import tritonclient.http as client_module
        except ImportError:
            raise UserError("the Triton client is not installed: pip install 'bisenet-deploy[triton-client]'") from None
        self._module = client_module
        self._local = threading.local()
        client = self._client()
        try:
            live = client.is_server_live(**self._timeout_kw())
        except Exception as exc:  # noqa: BLE001 - grpc/http raise many types
            raise UserError(f"no Triton server answers at {self.scheme}://{self.address}: {_first(exc)}") from None
        if not live:
            raise UserError(f"the Triton server at {self.address} is not live")
        try:
            ready = client.is_model_ready(self.model, self.version, **self._timeout_kw())
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"cannot ask {self.address} about model '{self.model}': {_first(exc)}") from None
        if not ready:
            raise ArtifactError(f"the Triton server at {self.address} has no ready model '{self.model}'"
                                f"{' version ' + self.version if self.version else ''}")
        config = client.get_model_config(self.model, self.version, **self._config_kw())
        config = config["config"] if isinstance(config, dict) and "config" in config else config
        params = config.get("parameters", {}) if isinstance(config, dict) else {}
        text = (params.get(SPEC_PARAMETER) or {}).get("string_value")
        if not text:
            raise ArtifactError(f"model '{self.model}' on {self.address} was not written by bisenet-serve (its "
                                "config has no ModelSpec parameter)")
        try:
            served = ModelSpec.from_json(text)
        except SpecError as exc:
            raise ArtifactError(f"model '{self.model}' carries an unreadable ModelSpec: {exc}") from None
        self.served_spec = served
        self.spec = served.replace(input_layout="NHWC_UINT8", frame_color_order="BGR", output_kind="labels", upsample=None,
                                   dynamic_axes=("batch", "height", "width"))
        self.device = f"{self.scheme}://{self.address}"
        self.precision = served.extra.get("precision", "served")
        self.max_batch = int(config.get("max_batch_size", 0) or 0) if isinstance(config, dict) else 0
        self._inputs = [TensorInfo("frames", (None, None, None, 3), np.dtype(np.uint8))]
        self._outputs = [TensorInfo("labels", (None, None, None), np.dtype(np.uint8))]

    def _timeout_kw(self) -> dict[str, Any]:
        return {"client_timeout": self.timeout} if self.scheme == "grpc" else {}

    def _config_kw(self) -> dict[str, Any]:
        """Calls that return a message: JSON from gRPC, as HTTP gives it."""
        return {"as_json": True, "client_timeout": self.timeout} if self.scheme == "grpc" else {}

    def _client(self):  # noqa: ANN202
        client = getattr(self._local, "client", None)
        if client is None:
            if self.scheme == "grpc":
                client = self._module.InferenceServerClient(self.address)
            else:
                client = self._module.InferenceServerClient(self.address, connection_timeout=self.timeout,
                                                            network_timeout=self.timeout,
                                                            ssl=self.scheme == "https")
            self._local.client = client
        return client

    def infer_impl(self, batch: Any) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.uint8)
        inp = self._module.InferInput("frames", list(batch.shape), "UINT8")
        inp.set_data_from_numpy(batch)
        wanted = [self._module.InferRequestedOutput("labels")]
        start = time.perf_counter()
        try:
            result = self._client().infer(self.model, [inp], model_version=self.version, outputs=wanted,
                                          **self._timeout_kw())
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"Triton at {self.address} did not answer for '{self.model}': {_first(exc)}") from None
        self.last_stage_times = {"compute": time.perf_counter() - start}
        return result.as_numpy("labels")

    def statistics(self) -> dict[str, int]:
        """Inferences and model executions so far (how much dynamic batching merged)."""
        stats = self._client().get_inference_statistics(self.model, self.version, **self._config_kw())
        entries = stats.get("model_stats", []) if isinstance(stats, dict) else []
        total = {"inference_count": 0, "execution_count": 0}
        for entry in entries:
            for key in total:
                total[key] += int(entry.get(key, 0))
        return total

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(url=self.url, max_batch=self.max_batch, served_arch=self.served_spec.arch)
        return info

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass
        super().close()


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
