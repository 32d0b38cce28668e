"""After `make setup` the venv is a ROS prefix that knows this package and its interfaces."""

import os
from pathlib import Path
import subprocess
import sys

from ament_index_python.packages import get_package_prefix, get_package_share_directory

ROOT = Path(__file__).resolve().parents[1]


def test_ament_index_knows_the_package():
    share = Path(get_package_share_directory('dmn_localization'))
    for item in ('package.xml', 'launch/dmn_localization.launch.py',
                 'config/dmn_localization.yaml', 'models'):
        assert (share / item).exists(), item
    marker = (Path(get_package_prefix('dmn_localization')) / 'share' / 'ament_index'
              / 'resource_index' / 'packages' / 'dmn_localization')
    assert marker.is_file()


def test_interfaces_have_the_documented_fields():
    from dmn_localization_interfaces.msg import ViewEmbeddingMap
    from dmn_localization_interfaces.srv import BuildMap

    assert {'header', 'images', 'poses', 'extent'} <= set(
        BuildMap.Request.get_fields_and_field_types())
    assert set(BuildMap.Response.get_fields_and_field_types()) == {
        'success', 'message', 'num_views', 'fingerprint'}
    fields = ViewEmbeddingMap.get_fields_and_field_types()
    assert {'header', 'model_name', 'fingerprint', 'view_poses', 'extent', 'shape', 'dtype',
            'data'} <= set(fields)
    assert ViewEmbeddingMap.DTYPE_FLOAT16 != ViewEmbeddingMap.DTYPE_FLOAT32


def test_activate_alone_gives_the_ros_environment():
    """A clean shell that only sources .venv/bin/activate can import the interfaces."""
    activate = Path(sys.prefix) / 'bin' / 'activate'
    env = {'PATH': '/usr/bin:/bin', 'HOME': os.environ.get('HOME', '/tmp')}
    script = ('from dmn_localization_interfaces.srv import BuildMap; import os; '
              'print(*(os.environ[k] for k in '
              '("AMENT_PREFIX_PATH", "RMW_IMPLEMENTATION", "ROS_DISTRO")))')
    out = subprocess.run(['bash', '-c', f". {activate} && python -c '{script}'"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [sys.prefix, 'rmw_fastrtps_cpp', 'jazzy']


def test_package_xml_and_license_agree():
    package_xml = (ROOT / 'package.xml').read_text()
    assert '<license>Apache-2.0</license>' in package_xml
    assert 'Apache License' in (ROOT / 'LICENSE').read_text()
    assert '<license>Apache-2.0</license>' in (
        ROOT / 'dmn_localization_interfaces' / 'package.xml').read_text()


def test_executables_are_where_ros2_launch_looks():
    """launch_ros and `ros2 run` look in <prefix>/lib/<package>/, where colcon installs."""
    import importlib.metadata as md

    libexec = Path(get_package_prefix('dmn_localization')) / 'lib' / 'dmn_localization'
    scripts = {e.name for e in md.distribution('dmn_localization').entry_points
               if e.group == 'console_scripts'}
    assert 'dmn_localization_node' in scripts
    for name in scripts:
        path = libexec / name
        assert path.is_file() and os.access(path, os.X_OK), path
    out = subprocess.run([str(libexec / 'dmn_map'), '--help'],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and 'usage: dmn_map' in out.stdout, out.stderr
