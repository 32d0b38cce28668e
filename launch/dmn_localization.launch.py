"""
Start dmn_localization_node with its parameter file.

Usage: ros2 launch dmn_localization dmn_localization.launch.py [namespace:=robot1]
[params_file:=/path/to/params.yaml] [use_sim_time:=true] [log_level:=debug]
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    """Declare the launch arguments and the node."""
    share = get_package_share_directory('dmn_localization')
    namespace = LaunchConfiguration('namespace')
    params_file = LaunchConfiguration('params_file')
    use_sim_time = LaunchConfiguration('use_sim_time')
    log_level = LaunchConfiguration('log_level')

    return LaunchDescription([
        DeclareLaunchArgument(
            'namespace', default_value='',
            description='Namespace of the node, e.g. robot1 on a multi-robot system.'),
        DeclareLaunchArgument(
            'params_file',
            default_value=os.path.join(share, 'config', 'dmn_localization.yaml'),
            description='Parameter YAML of the node (parameters under dmn_localization).'),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false',
            description='Use the /clock topic (simulation or bag replay) instead of wall time.'),
        DeclareLaunchArgument(
            'log_level', default_value='info',
            description='Logging level of the node: debug, info, warn, error or fatal.'),
        Node(
            package='dmn_localization',
            executable='dmn_localization_node',
            name='dmn_localization',
            namespace=namespace,
            output='screen',
            parameters=[params_file, {'use_sim_time': use_sim_time}],
            arguments=['--ros-args', '--log-level', log_level],
        ),
    ])
