"""
Start dmn_localization_node with its parameter file.

Usage: ros2 launch dmn_localization dmn_localization.launch.py [namespace:=robot1]
[params_file:=/path/to/params.yaml] [model_path:=/path/to/model.pt] [use_sim_time:=true]
[image_topic:=/camera/image_raw] [odom_topic:=/odom] [log_level:=debug] [autostart:=false]

With autostart:=false the node waits unconfigured for a lifecycle manager, e.g. nav2's
lifecycle_manager with dmn_localization in its node_names and bond_timeout: 0.0 (rclpy
nodes have no bond).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _node(context, *args, **kwargs):
    """Create the node; model_path overrides the YAML only when it is given."""
    parameters = [LaunchConfiguration('params_file'),
                  {'use_sim_time': LaunchConfiguration('use_sim_time'),
                   'autostart': LaunchConfiguration('autostart')}]
    model_path = LaunchConfiguration('model_path').perform(context)
    if model_path:
        parameters.append({'model_path': model_path})
    return [Node(
        package='dmn_localization',
        executable='dmn_localization_node',
        name='dmn_localization',
        namespace=LaunchConfiguration('namespace'),
        output='screen',
        parameters=parameters,
        remappings=[('image', LaunchConfiguration('image_topic')),
                    ('odom', LaunchConfiguration('odom_topic'))],
        arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level')],
    )]


def generate_launch_description():
    """Declare the launch arguments and the node."""
    share = get_package_share_directory('dmn_localization')
    return LaunchDescription([
        DeclareLaunchArgument(
            'namespace', default_value='',
            description='Namespace of the node, e.g. robot1 on a multi-robot system.'),
        DeclareLaunchArgument(
            'params_file',
            default_value=os.path.join(share, 'config', 'dmn_localization.yaml'),
            description='Parameter YAML of the node (parameters under dmn_localization).'),
        DeclareLaunchArgument(
            'model_path', default_value='',
            description='Model checkpoint; empty: the one in params_file, else the shipped '
                        'default model.'),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false',
            description='Use the /clock topic (simulation or bag replay) instead of wall time.'),
        DeclareLaunchArgument(
            'image_topic', default_value='image',
            description='Camera topic (sensor_msgs/Image) the node subscribes as image.'),
        DeclareLaunchArgument(
            'odom_topic', default_value='odom',
            description='Odometry topic (nav_msgs/Odometry) the node subscribes as odom.'),
        DeclareLaunchArgument(
            'autostart', default_value='true',
            description='Configure and activate the lifecycle node at start; false: leave it '
                        'to a lifecycle manager (nav2: bond_timeout 0.0, rclpy has no bond).'),
        DeclareLaunchArgument(
            'log_level', default_value='info',
            description='Logging level of the node: debug, info, warn, error or fatal.'),
        OpaqueFunction(function=_node),
    ])
