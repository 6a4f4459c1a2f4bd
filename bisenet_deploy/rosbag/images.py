"""``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` <-> NumPy, without ROS.

The functions read and write message *fields* (``height``, ``width``, ``encoding``, ``step``,
``is_bigendian``, ``data``, ``header``), so they work alike on the message classes of the
``rosbags`` package (bags) and of ``rclpy`` (the live node).

Encodings read: ``bgr8``, ``rgb8``, ``mono8``, ``bgra8``, ``rgba8``, ``mono16``/``16UC1`` (scaled
to 8 bits), ``8UC1``/``8UC3``/``8UC4`` (as mono8/bgr8/bgra8); compressed ``jpeg`` and ``png``.
Row padding (``step`` larger than ``width`` x bytes per pixel) and big-endian 16-bit data are
honoured. Written: masks as ``mono8`` (pixel value = class id), overlays as ``bgr8``.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ..errors import InputError

#: encoding -> (channels, bytes per channel, conversion to BGR or None)
ENCODINGS: dict[str, tuple[int, int, int | None]] = {
    "bgr8": (3, 1, None),
    "rgb8": (3, 1, cv2.COLOR_RGB2BGR),
    "mono8": (1, 1, cv2.COLOR_GRAY2BGR),
    "bgra8": (4, 1, cv2.COLOR_BGRA2BGR),
    "rgba8": (4, 1, cv2.COLOR_RGBA2BGR),
    "mono16": (1, 2, cv2.COLOR_GRAY2BGR),
    "16UC1": (1, 2, cv2.COLOR_GRAY2BGR),
    "8UC1": (1, 1, cv2.COLOR_GRAY2BGR),
    "8UC3": (3, 1, None),
    "8UC4": (4, 1, cv2.COLOR_BGRA2BGR),
}
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/Image")
COMPRESSED_TYPES = ("sensor_msgs/msg/CompressedImage", "sensor_msgs/CompressedImage")


class EncodingError(InputError):
    """An image encoding we cannot turn into a BGR frame."""


def _buffer(msg: Any) -> np.ndarray:
    """A message's ``data`` as uint8 (a NumPy array from rosbags, bytes or an array from rclpy)."""
    return np.frombuffer(msg.data.tobytes() if isinstance(msg.data, np.ndarray) else bytes(msg.data), np.uint8)


def image_to_bgr(msg: Any) -> np.ndarray:
    """BGR uint8 H x W x 3 from a ``sensor_msgs/Image``."""
    encoding = str(msg.encoding)
    if encoding not in ENCODINGS:
        raise EncodingError(f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    channels, depth, conversion = ENCODINGS[encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row = w * channels * depth
    data = _buffer(msg)
    if step < row or data.size < step * h:
        raise InputError(f"{encoding} image {w}x{h} needs {row} bytes per row and {step * h} in all; "
                         f"the message has step {step} and {data.size} bytes")
    rows = data[: step * h].reshape(h, step)[:, :row]  # drops the row padding
    if depth == 2:
        dtype = ">u2" if int(msg.is_bigendian) else "<u2"
        pixels = np.ascontiguousarray(rows).view(dtype).reshape(h, w, channels)
        pixels = (pixels >> 8).astype(np.uint8)  # 16-bit to 8 bits for the network
    else:
        pixels = rows.reshape(h, w, channels)
    if conversion is None:
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(np.ascontiguousarray(pixels.reshape(h, w) if channels == 1 else pixels), conversion)


def compressed_to_bgr(msg: Any) -> np.ndarray:
    """BGR uint8 from a ``sensor_msgs/CompressedImage`` (jpeg or png)."""
    fmt = str(msg.format).lower()
    if "jpeg" not in fmt and "jpg" not in fmt and "png" not in fmt:
        raise EncodingError(f"unsupported compressed image format {msg.format!r}; supported: jpeg, png")
    data = _buffer(msg)
    frame = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if frame is None:
        raise InputError(f"cannot decode the {msg.format} image in the message")
    return frame


def message_to_bgr(msg: Any, msgtype: str) -> np.ndarray:
    if msgtype in COMPRESSED_TYPES:
        return compressed_to_bgr(msg)
    return image_to_bgr(msg)


def array_to_image(image_type: Any, header: Any, array: np.ndarray, encoding: str, as_bytes: bool = False) -> Any:
    """A ``sensor_msgs/Image`` of ``image_type`` (the class) holding ``array``: ``mono8``
    (H x W uint8) or ``bgr8`` (H x W x 3 uint8), rows unpadded, little endian; ``data`` as a
    NumPy array (rosbags) or, ``as_bytes``, as bytes (rclpy)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    channels = 1 if array.ndim == 2 else array.shape[2]
    return image_type(header=header, height=array.shape[0], width=array.shape[1], encoding=encoding,
                      is_bigendian=0, step=array.shape[1] * channels,
                      data=array.tobytes() if as_bytes else array.reshape(-1))
