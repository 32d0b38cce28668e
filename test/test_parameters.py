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


def flatten(tree, prefix=''):
    """Return nested YAML parameters as ROS names them: ``{'initial_pose.x': 0.0}``."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f'{prefix}{key}.'))
        else:
            out[f'{prefix}{key}'] = value
    return out


def test_yaml_holds_every_declared_parameter_with_its_default():
    doc = yaml.safe_load((ROOT / 'config' / 'dmn_localization.yaml').read_text())
    assert list(doc) == [parameters.YAML_KEY]
    values = flatten(doc[parameters.YAML_KEY]['ros__parameters'])
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
            'odom_topic', 'autostart'} <= declared
    assert ast.literal_eval(kwargs['executable']) == 'dmn_localization_node'
    assert 'dmn_localization_node = ' in (ROOT / 'setup.py').read_text()
    tree = ast.parse((ROOT / 'launch' / 'dmn_localization.launch.py').read_text())
    named = {ast.literal_eval(key) for node in ast.walk(tree) if isinstance(node, ast.Dict)
             for key in node.keys if isinstance(key, ast.Constant)}
    assert 'model_path' in named  # the launch argument overrides the YAML when given
    assert 'autostart' in named  # the launch argument reaches the node's parameter
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


@pytest.mark.ros
def test_the_yaml_applies_to_the_node_in_any_namespace(start_process, tmp_path):
    from conftest import wait_until

    custom = tmp_path / 'robot.yaml'
    custom.write_text((ROOT / 'config' / 'dmn_localization.yaml').read_text().replace(
        'num_particles: 2048', 'num_particles: 123'))
    for ns in ('/', '/robot7'):
        node = start_process('dmn_localization_node', '--ros-args', '-r', f'__ns:={ns}',
                             '--params-file', str(custom))
        assert wait_until(lambda: 'particles' in node.log(), 60.0), node.log()
        assert ', 123 particles' in node.log(), node.log()
        node.stop()


def test_multi_robot_launch_file_uses_the_fleet_plan_and_declared_parameters():
    from dmn_localization.ros.fleet import fleet_plan

    source = (ROOT / 'launch' / 'multi_robot.launch.py').read_text()
    tree = ast.parse(source)
    declared = {ast.literal_eval(n.args[0]) for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, 'id', None) == 'DeclareLaunchArgument'}
    assert {'namespaces', 'mapper', 'map_topic', 'map_update', 'params_file', 'model_path',
            'use_sim_time'} == declared
    named = {ast.literal_eval(key) for node in ast.walk(tree) if isinstance(node, ast.Dict)
             for key in node.keys if isinstance(key, ast.Constant)}
    assert named <= set(parameters.BY_NAME) | {'use_sim_time'}, named
    assert 'fleet_plan(' in source
    plan = fleet_plan('robot1, /robot2 robot3', map_update='merge')
    assert [r.namespace for r in plan] == ['robot1', 'robot2', 'robot3']
    assert [r.parameters['map_source'] for r in plan] == ['service', 'topic', 'topic']
    assert set(plan[0].parameters) <= set(parameters.BY_NAME)
    for robot in plan:
        assert robot.parameters['map_update'] == 'merge'
        assert robot.remappings == [('view_embedding_map', '/shared/view_embedding_map')]
    assert [r.parameters['map_source'] for r in fleet_plan('a,b', mapper='b')] == [
        'topic', 'service']
    assert parameters.BY_NAME['map_update'].choices == ('replace', 'merge')


@pytest.mark.parametrize('namespaces, mapper, topic, match', [
    ('', '', '/shared/m', 'empty'),
    ('robot1,robot1', '', '/shared/m', 'repeat: robot1'),
    ('robot-1', '', '/shared/m', 'not a valid ROS name'),
    ('robot1,robot2', 'robot9', '/shared/m', 'mapper'),
    ('robot1,robot2', '', 'shared/m', 'absolute'),
])
def test_bad_fleets_are_refused(namespaces, mapper, topic, match):
    from dmn_localization.ros.fleet import fleet_plan, FleetError

    with pytest.raises(FleetError, match=match):
        fleet_plan(namespaces, mapper, topic)


def test_the_transform_is_future_dated_by_transform_tolerance():
    from dmn_localization.messages.conversions import later_stamp

    assert later_stamp(10, 900_000_000, 0.25) == (11, 150_000_000)
    assert later_stamp(10, 0, 0.0) == (10, 0)
    assert later_stamp(3, 999_999_999, 1e-9) == (4, 0)
    assert parameters.BY_NAME['transform_tolerance'].default == 1.0  # AMCL's default
