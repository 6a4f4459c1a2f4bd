"""The ROS 2 node: ``python -m bisenet_deploy.ros2 --ros-args -p model:=model.onnx``.

Imports ``rclpy`` only when run (``__main__``); the logic it runs is
``bisenet_deploy.rosbag.node_core``, tested without ROS.
"""
