"""ROS 2 layer: the node and the conversions between messages and arrays."""
