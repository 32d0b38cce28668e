"""ament_python build of dmn_localization (colcon, or pip inside the project's venv)."""

from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = 'dmn_localization'


def _share(subdir: str, pattern: str = '*') -> tuple:
    """Install every file matching ``subdir/pattern`` under ``share/<package>/subdir``."""
    files = [f for f in glob(os.path.join(subdir, pattern)) if os.path.isfile(f)]
    return (os.path.join('share', PACKAGE, subdir), files)


setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        (os.path.join('share', PACKAGE), ['package.xml']),
        _share('launch', '*.launch.py'),
        _share('config'),
        _share('models'),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='dmn_localization developers',
    maintainer_email='dmn-localization@example.com',
    description='Camera localization against a learned view-embedding map (DMN) for ROS 2.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'dmn_localization_node = dmn_localization.ros.node:main',
            'dmn_env_check = dmn_localization.tools.env_check:main',
            'dmn_dataset = dmn_localization.data.cli:main',
            'dmn_sim_bag = dmn_localization.data.sim_bag:main',
            'dmn_train = dmn_localization.learning.train_cli:main',
            'dmn_evaluate = dmn_localization.learning.evaluate_cli:main',
            'dmn_results = dmn_localization.learning.results:main',
            'dmn_evaluate_bag = dmn_localization.replay.cli:main',
            'dmn_map = dmn_localization.tools.map_tool:main',
            'dmn_demo = dmn_localization.tools.demo:main',
        ],
    },
)
