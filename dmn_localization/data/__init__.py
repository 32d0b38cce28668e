"""Simulated Rooms and Mazes, datasets, episode samplers and bag tools (no rclpy)."""
