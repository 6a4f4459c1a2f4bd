"""ROS bags and the ROS 2 node's core, without a ROS installation (``rosbags`` package).

``images``: sensor_msgs/Image and CompressedImage <-> NumPy; ``bags``: read camera topics,
write mask topics (rosbag2 MCAP); ``node_core``: the live node's callback logic. The node
itself is ``bisenet_deploy.ros2`` (imports ``rclpy``).
"""
