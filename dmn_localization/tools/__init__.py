"""Command-line tools around the node: the demo, the environment check, the map tool."""
