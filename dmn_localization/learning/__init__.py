"""Training and evaluation of DMN and its baselines (no ROS)."""
