"""Conversions between ROS message objects and arrays, with no ROS import (for data/, replay/)."""
