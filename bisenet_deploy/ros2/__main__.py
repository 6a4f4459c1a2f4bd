"""ROS 2 node: several camera topics through one streaming runtime; masks, LabelInfo, diagnostics.

    python -m bisenet_deploy.ros2 --ros-args -p model:=model.onnx \\
        -p topics:="['/cam/front/image_raw', '/cam/rear/image_raw']" -p confidence:=true

Parameters: ``model`` (required), ``topics`` (camera topics; default: ``[topic]``), ``topic``
(one camera, default ``/camera/image_raw``), ``compressed`` (subscribe to
sensor_msgs/CompressedImage; default false), ``mask_suffix`` (default ``/segmentation``),
``backend`` (default: by file type, as Segmenter), ``device`` (``auto``), ``output_size``
(``frame`` or ``network``), ``mode`` (``latency`` or ``throughput``: the streaming runtime's),
``color`` (also ``<mask topic>/color``, rgb8 in the model's palette), ``confidence`` (also
``<mask topic>/confidence``, mono8 top-class probability x 255 for Nav2), ``overlay`` (also
``<mask topic>/overlay``), ``diagnostics_period`` (seconds between ``/diagnostics`` reports;
default 1), ``stats_period`` (seconds between log lines; default 10).

Every subscription (sensor-data QoS: best effort, keep last 1) pushes into its own
latest-frame slot of one ``StreamRuntime``: frames that arrive while the model is busy replace
the one waiting (counted as drops), never queue. Masks carry the camera message's header.
One ``vision_msgs/LabelInfo`` (class id -> name) is published once on ``<namespace>/label_info``
with transient-local QoS (the namespace holding every mask topic: ``rosbag.topics``), and
``diagnostic_msgs/DiagnosticArray`` figures per topic (rate, drops, latency) on ``/diagnostics``.
The logic is ``bisenet_deploy.rosbag.stream_node``, tested without ROS.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    try:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image
        from vision_msgs.msg import LabelInfo, VisionClass
    except ImportError as exc:
        print(f"bisenet_deploy.ros2: error: {exc.name or 'rclpy'} is not importable here: source a ROS 2 installation "
              "with vision_msgs and diagnostic_msgs (e.g. /opt/ros/humble/setup.bash; apt install "
              "ros-humble-vision-msgs) in this shell first", file=sys.stderr)
        return 2
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from ..errors import UserError
    from ..rosbag import messages
    from ..rosbag.stream_node import StreamNodeCore, scoring
    from ..runtime import Segmenter
    from ..runtime.confidence import open_scoring
    from ..runtime.streaming import StreamRuntime

    types = {"sensor_msgs/msg/Image": Image, "std_msgs/msg/Header": Header, "builtin_interfaces/msg/Time": Time,
             messages.LABEL_INFO: LabelInfo, messages.VISION_CLASS: VisionClass,
             messages.DIAGNOSTIC_ARRAY: DiagnosticArray, messages.DIAGNOSTIC_STATUS: DiagnosticStatus,
             messages.KEY_VALUE: KeyValue}

    class SegmentationNode(Node):
        def __init__(self) -> None:
            super().__init__("bisenet_segmentation")
            p = {name: self.declare_parameter(name, default).value for name, default in (
                ("model", ""), ("topics", [""]), ("topic", "/camera/image_raw"), ("compressed", False),
                ("mask_suffix", "/segmentation"), ("backend", ""), ("device", "auto"), ("output_size", "frame"),
                ("mode", "latency"), ("color", False), ("confidence", False), ("overlay", False),
                ("diagnostics_period", 1.0), ("stats_period", 10.0))}
            if not p["model"]:
                raise UserError("parameter 'model' is required: --ros-args -p model:=path/to/model.onnx")
            topics = [t for t in p["topics"] if t] or [p["topic"]]
            backend = p["backend"] or None
            model = open_scoring(p["model"], backend, device=p["device"]) if p["confidence"] else p["model"]
            self.seg = Segmenter(model, backend=backend, device=p["device"], output_size=p["output_size"])
            self.runtime = StreamRuntime(scoring(self.seg) if p["confidence"] else self.seg, mode=p["mode"],
                                         on_result=self._publish)
            for topic in topics:
                self.runtime.add_push(topic)
            self.core = StreamNodeCore(self.runtime, self.seg.spec, topics, types, p["mask_suffix"],
                                       color=bool(p["color"]), confidence=bool(p["confidence"]),
                                       overlay=bool(p["overlay"]), data_as_bytes=True, node=self.get_name(),
                                       hardware_id=self.seg.backend.name)
            self.publishers_ = {name: self.create_publisher(Image, name, 1)
                                for outs in self.core.names.cameras.values() for name in outs.topics()}
            latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            label_topic, label_info = self.core.label_info(self.get_clock().now().nanoseconds)
            self.create_publisher(LabelInfo, label_topic, latched).publish(label_info)
            self.diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
            msg_type = CompressedImage if p["compressed"] else Image
            msgtype = "sensor_msgs/msg/CompressedImage" if p["compressed"] else "sensor_msgs/msg/Image"
            for topic in topics:
                self.create_subscription(msg_type, topic, lambda msg, t=topic: self.core.on_message(t, msg, msgtype),
                                         qos_profile_sensor_data)
            self.create_timer(float(p["diagnostics_period"]), lambda: self.diagnostics.publish(
                self.core.diagnostics(self.get_clock().now().nanoseconds)))
            self.create_timer(float(p["stats_period"]), self._log_stats)
            self.runtime.start()
            self.get_logger().info(f"segmenting {', '.join(topics)} with {self.seg!r}; LabelInfo on {label_topic}")

        def _publish(self, result) -> None:  # noqa: ANN001 - a StreamResult, on a runtime thread
            for topic, msg in self.core.outputs(result):
                self.publishers_[topic].publish(msg)

        def _log_stats(self) -> None:
            for topic, s in self.runtime.stats().items():
                latency = s.latency_ms()
                self.get_logger().info(f"{topic}: received {s.received}, segmented {s.delivered}, dropped "
                                       f"{s.dropped} (stale)" + (f"; latency p50 {latency['p50']:.1f} ms, "
                                                                  f"p90 {latency['p90']:.1f} ms" if latency else ""))

        def close(self) -> None:
            self.runtime.close()
            self.seg.close()

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
            node.close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
