"""The node declares exactly the parameters of parameters.py; YAML, launch, README agree."""

import ast
from pathlib import Path

from dmn_localization.ros import parameters
from dmn_localization.ros.node import DmnLocalizationNode
import pytest
import rclpy
from rclpy.parameter import Parameter
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_yaml_holds_every_declared_parameter_with_its_default():
    doc = yaml.safe_load((ROOT / 'config' / 'dmn_localization.yaml').read_text())
    assert list(doc) == [parameters.NODE_NAME]
    values = doc[parameters.NODE_NAME]['ros__parameters']
    assert set(values) == set(parameters.BY_NAME), 'YAML and parameters.py name different sets'
    for name, value in values.items():
        assert value == parameters.BY_NAME[name].default, name


def _launch_node_call():
    tree = ast.parse((ROOT / 'launch' / 'dmn_localization.launch.py').read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and getattr(n.func, 'id', None) == 'Node']
    assert len(calls) == 1
    return {kw.arg: kw.value for kw in calls[0].keywords}


def test_launch_file_names_the_node_and_only_declared_parameters():
    kwargs = _launch_node_call()
    tree = ast.parse((ROOT / 'launch' / 'dmn_localization.launch.py').read_text())
    assert ast.literal_eval(kwargs['name']) == parameters.NODE_NAME
    declared = {ast.literal_eval(n.args[0]) for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, 'id', None) == 'DeclareLaunchArgument'}
    assert {'namespace', 'params_file', 'model_path', 'use_sim_time', 'image_topic',
            'odom_topic'} <= declared
    assert ast.literal_eval(kwargs['executable']) == 'dmn_localization_node'
    assert 'dmn_localization_node = ' in (ROOT / 'setup.py').read_text()
    tree = ast.parse((ROOT / 'launch' / 'dmn_localization.launch.py').read_text())
    named = {ast.literal_eval(key) for node in ast.walk(tree) if isinstance(node, ast.Dict)
             for key in node.keys if isinstance(key, ast.Constant)}
    assert 'model_path' in named  # the launch argument overrides the YAML when given
    assert named <= set(parameters.BY_NAME) | {'use_sim_time'}, named


def test_readme_table_matches_the_declarations():
    readme = (ROOT / 'README.md').read_text()
    assert parameters.render_markdown_table() in readme, (
        'README parameter table is stale: paste `python -m dmn_localization.ros.parameters`')


@pytest.fixture
def context():
    """Give a test its own rclpy context."""
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)


@pytest.mark.ros
def test_node_declares_exactly_these_parameters(context):
    node = DmnLocalizationNode(context=context)
    try:
        declared = set(node._parameters) - {'use_sim_time', 'start_type_description_service'}
        assert declared == set(parameters.BY_NAME)
        for spec in parameters.PARAMETERS:
            descriptor = node.describe_parameter(spec.name)
            assert descriptor.description == spec.description
        assert node.get_parameter('max_map_views').value == 256
    finally:
        node.destroy_node()


@pytest.mark.ros
@pytest.mark.parametrize('name, value, match', [
    ('device', 'tpu', 'device must be one of auto, cpu, cuda'),
    # rclpy enforces the declared integer range itself and names the parameter
    ('max_map_views', 0, r'max_map_views out of range.*|max_map_views must be in'),
])
def test_out_of_range_values_are_refused_with_the_parameter_named(context, name, value, match):
    override = Parameter(name, value=value)
    with pytest.raises(Exception, match=match):
        DmnLocalizationNode(context=context, parameter_overrides=[override])


def test_rviz_config_shows_the_node_topics():
    config = yaml.safe_load((ROOT / 'config' / 'dmn_localization.rviz').read_text())
    manager = config['Visualization Manager']
    topics = {d['Class'].split('/')[-1]: d['Topic']['Value'] for d in manager['Displays']
              if 'Topic' in d}
    assert topics == {'PoseArray': 'particle_cloud', 'PoseWithCovariance': 'pose',
                      'Image': 'image'}
    assert manager['Global Options']['Fixed Frame'] == parameters.BY_NAME[
        'global_frame_id'].default
    tools = {t['Class']: t for t in manager['Tools']}
    assert tools['rviz_default_plugins/SetInitialPose']['Topic']['Value'] == 'initialpose'
