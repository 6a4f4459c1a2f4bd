"""Where each output goes: one naming rule for the output bag and the live node.

Per camera topic ``T`` (suffix ``/segmentation`` by default):

| output | topic | type |
|---|---|---|
| class mask (pixel = class id) | ``T/segmentation`` | ``sensor_msgs/Image`` ``mono8`` |
| colour mask (ModelSpec palette) | ``T/segmentation/color`` | ``sensor_msgs/Image`` ``rgb8`` |
| confidence (top class, 0-255) | ``T/segmentation/confidence`` | ``sensor_msgs/Image`` ``mono8`` |
| overlay / background picture | ``T/segmentation/overlay`` (``/background``) | ``sensor_msgs/Image`` ``bgr8`` |

and one ``vision_msgs/LabelInfo`` for them all on ``<namespace>/label_info``, the namespace
being the deepest one that holds every mask topic (vision_msgs puts LabelInfo "at the same
namespace level as the associated image": ``/cam/image_raw/segmentation`` ->
``/cam/image_raw/label_info``; ``/cam/front/...`` and ``/cam/rear/...`` -> ``/cam/label_info``).
One pipeline, one model, one class map. Every output topic is distinct from every other and
from a copied camera topic, or the input is refused with one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InputError

COLOR, CONFIDENCE, LABEL_INFO = "/color", "/confidence", "/label_info"


@dataclass(frozen=True)
class CameraOutputs:
    mask: str
    color: str = ""
    confidence: str = ""
    picture: str = ""  # overlay / background

    def topics(self) -> list[str]:
        return [t for t in (self.mask, self.color, self.confidence, self.picture) if t]


@dataclass(frozen=True)
class OutputTopics:
    cameras: dict[str, CameraOutputs]
    label_info: str


def namespace(topic: str) -> list[str]:
    return [p for p in topic.split("/") if p][:-1]


def label_info_topic(mask_topics: Sequence[str]) -> str:
    """``<deepest namespace holding every mask topic>/label_info``."""
    spaces = [namespace(t) for t in mask_topics]
    common: list[str] = []
    for parts in zip(*spaces):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return "/" + "/".join(common + ["label_info"])


def output_topics(camera_topics: Sequence[str], suffix: str = "/segmentation", color: bool = False,
                  confidence: bool = False, picture: str = "", copied: Sequence[str] = ()) -> OutputTopics:
    """The topics of every output of ``camera_topics`` (``picture``: ``overlay``/``background``
    or empty; ``copied``: camera topics copied into the same bag). InputError on a collision."""
    cameras = {}
    for topic in camera_topics:
        mask = topic.rstrip("/") + suffix
        cameras[topic] = CameraOutputs(mask, mask + COLOR if color else "", mask + CONFIDENCE if confidence else "",
                                       f"{mask}/{picture}" if picture else "")
    label_info = label_info_topic([c.mask for c in cameras.values()])
    owners: dict[str, str] = {t: f"the copy of camera {t}" for t in copied}
    for topic, outs in cameras.items():
        for out in outs.topics():
            if out in owners:
                raise InputError(f"output topic {out} (of camera {topic}) is also {owners[out]}: choose other "
                                 "--topic/--mask-topic values")
            owners[out] = f"an output of camera {topic}"
    if label_info in owners:
        raise InputError(f"the LabelInfo topic {label_info} is also {owners[label_info]}: choose another --mask-topic")
    return OutputTopics(cameras, label_info)
