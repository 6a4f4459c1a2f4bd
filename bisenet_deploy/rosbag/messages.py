"""The ROS messages robot stacks read next to a mask, without a ROS installation.

``vision_msgs/LabelInfo`` (class id -> name, so a consumer such as Nav2's
semantic_segmentation_layer can map mask values to classes) and ``diagnostic_msgs/
DiagnosticArray`` (rate, drops, latency per camera on ``/diagnostics``). Their definitions
are registered in a ``rosbags`` type store from the message text below, copied from
ros-perception/vision_msgs (4.1.1) and ros2/common_interfaces (comments left out), so bags
written here carry the real definitions and open in any ROS 2 tool.

Builders take the message classes as arguments, so the same code makes ``rosbags``
messages (bags, tests) and ``rclpy`` messages (the node).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

VISION_CLASS = "vision_msgs/msg/VisionClass"
LABEL_INFO = "vision_msgs/msg/LabelInfo"
DIAGNOSTIC_ARRAY = "diagnostic_msgs/msg/DiagnosticArray"
DIAGNOSTIC_STATUS = "diagnostic_msgs/msg/DiagnosticStatus"
KEY_VALUE = "diagnostic_msgs/msg/KeyValue"

#: message name -> definition (ROS 2 .msg text)
DEFINITIONS = {
    VISION_CLASS: "uint16 class_id\nstring class_name\n",
    LABEL_INFO: "std_msgs/Header header\nvision_msgs/VisionClass[] class_map\nfloat32 threshold\n",
    KEY_VALUE: "string key\nstring value\n",
    DIAGNOSTIC_STATUS: ("byte OK=0\nbyte WARN=1\nbyte ERROR=2\nbyte STALE=3\nbyte level\nstring name\n"
                        "string message\nstring hardware_id\nKeyValue[] values\n"),
    DIAGNOSTIC_ARRAY: "std_msgs/Header header\nDiagnosticStatus[] status\n",
}


def register(typestore: Any) -> Any:
    """``typestore`` (a rosbags Typestore) with vision_msgs and diagnostic_msgs added."""
    from rosbags.typesys import get_types_from_msg

    types: dict = {}
    for name, text in DEFINITIONS.items():
        types.update(get_types_from_msg(text, name))
    typestore.register(types)
    return typestore


def typestore() -> Any:
    """A ROS 2 Humble type store that also knows vision_msgs and diagnostic_msgs."""
    from rosbags.typesys import Stores, get_typestore

    return register(get_typestore(Stores.ROS2_HUMBLE))


def label_threshold(spec: Any) -> float:
    """LabelInfo's ``threshold`` ("the value between 0-1 used as confidence threshold"):
    a binary model's logit threshold as a probability; none (0) for an argmax over classes."""
    if spec.is_binary:
        return float(1.0 / (1.0 + np.exp(-float(spec.binary_threshold))))
    return 0.0


def label_info(label_info_type: Any, vision_class_type: Any, header: Any, class_names: Sequence[str],
               threshold: float) -> Any:
    """A ``vision_msgs/LabelInfo``: class id i is ``class_names[i]`` (the mask's pixel values)."""
    return label_info_type(header=header, threshold=float(threshold),
                           class_map=[vision_class_type(class_id=i, class_name=str(n))
                                      for i, n in enumerate(class_names)])


def diagnostic_array(types: dict[str, Any], header: Any, statuses: Sequence[dict[str, Any]]) -> Any:
    """A ``diagnostic_msgs/DiagnosticArray`` from plain dicts (``level``, ``name``, ``message``,
    ``hardware_id``, ``values``: {key: value}); ``types`` maps the three message names to classes."""
    Status, KeyValue = types[DIAGNOSTIC_STATUS], types[KEY_VALUE]
    # the class's own constants: ints in rosbags, one-byte ``bytes`` in rclpy (``byte`` fields)
    levels = (Status.OK, Status.WARN, Status.ERROR, Status.STALE)
    return types[DIAGNOSTIC_ARRAY](header=header, status=[
        Status(level=levels[int(s["level"])], name=str(s["name"]), message=str(s["message"]),
               hardware_id=str(s.get("hardware_id", "")),
               values=[KeyValue(key=str(k), value=str(v)) for k, v in s["values"].items()])
        for s in statuses])
