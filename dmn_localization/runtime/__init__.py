"""What runs for every frame without ROS: the localizer, odometry, status, recovery, saved pose."""
