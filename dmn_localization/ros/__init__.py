"""ROS 2 layer: the node, its parameters, map messages and service calls."""
