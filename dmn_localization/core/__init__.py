"""
DMN core in pure PyTorch: geometry, encoders, attention, observation models, filter.

Nothing here imports ROS; training, evaluation, benchmarks, the bag tools and the node
all build on it.
"""
