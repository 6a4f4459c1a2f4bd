"""ROS 2 node: subscribe to a camera topic, publish class-id masks (and overlays).

    python -m bisenet_deploy.ros2 --ros-args -p model:=model.onnx -p topic:=/camera/image_raw

Parameters: ``model`` (required), ``topic`` (default ``/camera/image_raw``), ``compressed``
(subscribe to sensor_msgs/CompressedImage; default false), ``mask_suffix`` (default
``/segmentation``), ``backend`` (default: by file type, as Segmenter), ``device`` (``auto``),
``output_size`` (``frame`` or ``network``), ``overlay`` (also publish ``<mask topic>/overlay``),
``stats_period`` (seconds between latency lines in the log; default 10).

The subscription uses the sensor-data QoS (best effort, keep last 1); frames that arrive
while the model is busy replace the one waiting (depth-1 mailbox): stale frames are dropped,
never queued. Masks carry the camera message's header (stamp, frame_id).
"""

from __future__ import annotations

import sys
import threading


def main(argv: list[str] | None = None) -> int:
    try:
        import rclpy
        from rclpy.node import Node
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image
    except ImportError:
        print("bisenet_deploy.ros2: error: rclpy and sensor_msgs are not importable here: source a ROS 2 "
              "installation (e.g. /opt/ros/humble/setup.bash) in this shell first", file=sys.stderr)
        return 2
    from ..errors import UserError
    from ..rosbag.node_core import LatestOnly, SegmentationCore
    from ..runtime import Segmenter

    class SegmentationNode(Node):
        def __init__(self) -> None:
            super().__init__("bisenet_segmentation")
            p = {name: self.declare_parameter(name, default).value for name, default in (
                ("model", ""), ("topic", "/camera/image_raw"), ("compressed", False), ("mask_suffix", "/segmentation"),
                ("backend", ""), ("device", "auto"), ("output_size", "frame"), ("overlay", False),
                ("stats_period", 10.0))}
            if not p["model"]:
                raise UserError("parameter 'model' is required: --ros-args -p model:=path/to/model.onnx")
            seg = Segmenter(p["model"], backend=p["backend"] or None, device=p["device"],
                            output_size=p["output_size"])
            self.core = SegmentationCore(seg, Image, overlay=bool(p["overlay"]), data_as_bytes=True)
            self.mailbox = LatestOnly()
            mask_topic = p["topic"].rstrip("/") + p["mask_suffix"]
            self.publishers_ = {"": self.create_publisher(Image, mask_topic, 1)}
            if p["overlay"]:
                self.publishers_["/overlay"] = self.create_publisher(Image, mask_topic + "/overlay", 1)
            msg_type = CompressedImage if p["compressed"] else Image
            self.msgtype = "sensor_msgs/msg/CompressedImage" if p["compressed"] else "sensor_msgs/msg/Image"
            self.create_subscription(msg_type, p["topic"], self.mailbox.put, qos_profile_sensor_data)
            self.create_timer(float(p["stats_period"]), lambda: self.get_logger().info(
                self.core.stats.line(self.mailbox)))
            self.worker = threading.Thread(target=self._work, daemon=True)
            self.worker.start()
            self.get_logger().info(f"segmenting {p['topic']} -> {mask_topic} with {seg!r}")

        def _work(self) -> None:
            while rclpy.ok():
                msg = self.mailbox.take(timeout=0.5)
                if msg is None:
                    continue
                try:
                    for suffix, out in self.core.handle(msg, self.msgtype):
                        self.publishers_[suffix].publish(out)
                except UserError as exc:
                    self.get_logger().warning(str(exc))

    rclpy.init(args=argv)
    node = None
    try:
        node = SegmentationNode()
        rclpy.spin(node)
    except UserError as exc:
        print(f"bisenet_deploy.ros2: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        if node is not None:
            node.mailbox.close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
