"""The ROS-free core of the multi-camera node: several camera topics served by one streaming
runtime, per-topic outputs, one LabelInfo, and ``/diagnostics`` figures.

A subscription callback hands its message to ``on_message``: decoded to BGR and pushed into
the runtime's latest-frame slot for that topic (a newer frame replaces one still waiting:
a drop, counted by the runtime), with the camera's header as the frame's stamp. The runtime
overlaps pre/post-processing with inference across all cameras and delivers each topic's
masks in capture order; ``outputs`` turns one result into the messages to publish on the
topics ``rosbag.topics`` names (the same names as an output bag's): the ``mono8`` mask, and
where asked the ``rgb8`` colour mask and the ``mono8`` confidence image, all with the camera's
header. ``label_info`` is the one ``vision_msgs/LabelInfo`` (published once, transient local);
``diagnostics`` the ``diagnostic_msgs/DiagnosticArray`` of the period since the last one.

Message classes come in as arguments (``types``: message name -> class), so the node passes
rclpy's and the tests pass rosbags'.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError, UserError
from ..runtime.rendering import Renderer
from ..runtime.segmenter import Segmenter
from . import messages
from .diagnostics import Diagnostics
from .images import array_to_image, message_to_bgr
from .topics import output_topics

IMAGE = "sensor_msgs/msg/Image"


class StreamNodeCore:
    """Args:
        runtime: a streaming runtime with ``push(stream_id, frame, stamp)`` and per-stream
            ``stats()``; its stream ids are the camera topics.
        spec: the model's ModelSpec (class names, palette, threshold).
        topics: camera topics.
        types: message name -> class, for ``sensor_msgs/msg/Image``, ``std_msgs/msg/Header``,
            ``builtin_interfaces/msg/Time`` and the ``messages`` names.
        data_as_bytes: image ``data`` as bytes (rclpy) instead of a NumPy array (rosbags).
    """

    def __init__(self, runtime: Any, spec: Any, topics: Sequence[str], types: dict[str, Any],
                 suffix: str = "/segmentation", color: bool = False, confidence: bool = False, overlay: bool = False,
                 data_as_bytes: bool = False, node: str = "bisenet_segmentation", hardware_id: str = "") -> None:
        self.runtime, self.spec, self.types, self.data_as_bytes = runtime, spec, types, data_as_bytes
        self.names = output_topics(list(topics), suffix, color, confidence, "overlay" if overlay else "")
        renderer = Renderer.for_spec(spec)  # the palette and names of the bag path's outputs
        self.palette, self.class_names = renderer.palette, renderer.names()
        self.overlay = Renderer.for_spec(spec, mode="overlay") if overlay else None
        self.diagnostics_ = Diagnostics(node, list(topics), hardware_id=hardware_id)

    # --- in ------------------------------------------------------------------------------

    def on_message(self, topic: str, msg: Any, msgtype: str = IMAGE) -> bool:
        """A camera message into the runtime (False: it could not be decoded; counted)."""
        self.diagnostics_.received(topic)
        try:
            frame = message_to_bgr(msg, msgtype)
            self.runtime.push(topic, frame, stamp=msg.header)
        except UserError as exc:  # an encoding we cannot read; a stream closed while shutting down
            self.diagnostics_.failed(topic, str(exc))
            return False
        return True

    # --- out -----------------------------------------------------------------------------

    def outputs(self, result: Any) -> list[tuple[str, Any]]:
        """(topic, message) pairs for one runtime result, all with the camera's header."""
        names = self.names.cameras[result.stream_id]
        header, mask = result.stamp, result.mask
        out = [(names.mask, self._image(header, mask, "mono8"))]
        if names.color:  # the palette is BGR like the frames
            out.append((names.color, self._image(header, self.palette[mask][:, :, ::-1], "rgb8")))
        confidence = getattr(mask, "confidence", None)  # see ``scoring``
        if names.confidence and confidence is not None:
            out.append((names.confidence, self._image(header, confidence, "mono8")))
        if names.picture and self.overlay is not None:
            out.append((names.picture, self._image(header, self.overlay.picture(result.frame, mask), "bgr8")))
        self.diagnostics_.segmented(result.stream_id, float(result.latency))
        return out

    def failed(self, topic: str, why: str) -> None:
        self.diagnostics_.failed(topic, why)

    def label_info(self, stamp_ns: int = 0) -> tuple[str, Any]:
        t = self.types
        msg = messages.label_info(t[messages.LABEL_INFO], t[messages.VISION_CLASS], self._header(stamp_ns),
                                  self.class_names, messages.label_threshold(self.spec))
        return self.names.label_info, msg

    def diagnostics(self, stamp_ns: int | None = None) -> Any:
        """The ``DiagnosticArray`` of the period since the previous call (drops from the runtime)."""
        for topic, stats in self._stats().items():
            if topic in self.diagnostics_.topics:
                self.diagnostics_.dropped(topic, stats.dropped)
                if getattr(stats, "error", None):
                    self.diagnostics_.topics[topic].last_error = str(stats.error)
        stamp = time.time_ns() if stamp_ns is None else stamp_ns
        return messages.diagnostic_array(self.types, self._header(stamp), self.diagnostics_.statuses())

    # --- helpers -------------------------------------------------------------------------

    def _stats(self) -> dict[str, Any]:
        stats = self.runtime.stats()
        return stats if isinstance(stats, dict) else {s.stream_id: s for s in stats}

    def _image(self, header: Any, array: np.ndarray, encoding: str) -> Any:
        return array_to_image(self.types[IMAGE], header, array, encoding, self.data_as_bytes)

    def _header(self, stamp_ns: int) -> Any:
        sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
        return self.types["std_msgs/msg/Header"](stamp=self.types["builtin_interfaces/msg/Time"](
            sec=sec, nanosec=nanosec), frame_id="")


class _MaskWithConfidence(np.ndarray):
    """A mask that carries its confidence image through the runtime (``confidence``)."""

    confidence: np.ndarray | None = None


class _ScoringSegmenter(Segmenter):
    """A Segmenter whose ``postprocess`` also derives each mask's confidence from the same
    scores: the runtime calls ``postprocess`` once per batch, so the network runs once."""

    def postprocess(self, output: np.ndarray, frame_sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        masks = super().postprocess(output, frame_sizes)
        out = []
        for mask, confidence in zip(masks, self.confidence_images(output, masks)):
            carried = mask.view(_MaskWithConfidence)
            carried.confidence = confidence
            out.append(carried)
        return out


def scoring(seg: Segmenter) -> Segmenter:
    """``seg`` (sharing its backend; close ``seg``, not this) whose masks carry ``.confidence``.
    Its backend must return class scores (``runtime.confidence.open_scoring``)."""
    if seg.spec.output_kind != "logits":
        raise InputError("confidence images need class scores, but this model computes labels in its graph "
                         "(exported with --argmax): export it without --argmax")
    twin = object.__new__(_ScoringSegmenter)
    twin.__dict__.update(seg.__dict__)
    return twin
