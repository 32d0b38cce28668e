"""
Start one dmn_localization_node per robot; one robot maps, the others share its map.

Usage: ros2 launch dmn_localization multi_robot.launch.py namespaces:=robot1,robot2,robot3
[mapper:=robot1] [map_topic:=/shared/view_embedding_map] [map_update:=replace|merge]
[params_file:=...] [model_path:=...] [use_sim_time:=true]

Every node's view_embedding_map is remapped to map_topic: the mapper (map_source
service) publishes there the maps its ~/build_map builds, latched; the others
(map_source topic) receive them, also when they start later. Each robot's image and
odom are relative to its namespace (/robot2/image, /robot2/odom).
"""

import os

from ament_index_python.packages import get_package_share_directory
from dmn_localization.ros.fleet import fleet_plan
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _nodes(context, *args, **kwargs):
    """Create one node per namespace from the fleet plan."""
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    model_path = arg('model_path')
    nodes = []
    for robot in fleet_plan(arg('namespaces'), arg('mapper'), arg('map_topic'),
                            arg('map_update')):
        parameters = [arg('params_file'), {'use_sim_time': arg('use_sim_time') == 'true'},
                      {'map_source': robot.parameters['map_source'],
                       'map_update': robot.parameters['map_update']}]
        if model_path:
            parameters.append({'model_path': model_path})
        nodes.append(Node(
            package='dmn_localization',
            executable='dmn_localization_node',
            name='dmn_localization',
            namespace=robot.namespace,
            output='screen',
            parameters=parameters,
            remappings=robot.remappings,
        ))
    return nodes


def generate_launch_description():
    """Declare the launch arguments and the fleet."""
    share = get_package_share_directory('dmn_localization')
    return LaunchDescription([
        DeclareLaunchArgument(
            'namespaces', default_value='robot1,robot2',
            description='Comma-separated namespaces, one node each.'),
        DeclareLaunchArgument(
            'mapper', default_value='',
            description='Namespace whose ~/build_map builds the shared map; empty: the first.'),
        DeclareLaunchArgument(
            'map_topic', default_value='/shared/view_embedding_map',
            description='Absolute topic every view_embedding_map is remapped to.'),
        DeclareLaunchArgument(
            'map_update', default_value='replace',
            description='What a later map does on the receiving robots: replace or merge.'),
        DeclareLaunchArgument(
            'params_file',
            default_value=os.path.join(share, 'config', 'dmn_localization.yaml'),
            description='Parameter YAML for every node (parameters under dmn_localization).'),
        DeclareLaunchArgument(
            'model_path', default_value='',
            description='Model checkpoint for every robot; empty: params_file or the shipped '
                        'model. All robots need the same encoder to share maps.'),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false',
            description='Use the /clock topic (simulation or bag replay) instead of wall time.'),
        OpaqueFunction(function=_nodes),
    ])
