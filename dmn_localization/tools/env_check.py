"""
``dmn_env_check``: print what this installation can do, and fail when a piece is missing.

Checked: the ROS distribution and middleware, rclpy and the project's interfaces, the
package in the ament index, PyTorch and the device it would use, the shipped default
model, the image conversion back end. Exit status 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, List, Tuple


def _ros() -> str:
    distro = os.environ.get('ROS_DISTRO', '')
    if distro != 'jazzy':
        raise RuntimeError(f'ROS_DISTRO is {distro!r}, expected jazzy (source the ROS set-up)')
    import rclpy  # noqa: F401
    from rclpy.utilities import get_rmw_implementation_identifier

    return f'ROS 2 {distro}, RMW {get_rmw_implementation_identifier()}'


def _interfaces() -> str:
    from dmn_localization_interfaces.msg import ViewEmbeddingMap  # noqa: F401
    from dmn_localization_interfaces.srv import BuildMap  # noqa: F401

    return 'dmn_localization_interfaces: BuildMap, ViewEmbeddingMap'


def _ament_index() -> str:
    from ament_index_python.packages import get_package_share_directory

    share = get_package_share_directory('dmn_localization')
    missing = [d for d in ('launch', 'config', 'models') if not os.path.isdir(
        os.path.join(share, d))]
    if missing:
        raise RuntimeError(f'{share} lacks {", ".join(missing)}')
    return f'dmn_localization share directory: {share}'


def _torch() -> str:
    import torch

    from dmn_localization.core.device import resolve_device

    device = resolve_device('auto')
    return f'PyTorch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads'


def _model() -> str:
    from dmn_localization.core.checkpoint import load_checkpoint
    from dmn_localization.runtime.default_model import DEFAULT_MODEL, installed_model_path

    path = installed_model_path()
    if not path:
        raise RuntimeError(f'the package ships no default model ({DEFAULT_MODEL})')
    loaded = load_checkpoint(path)
    return f'default model: {loaded.name}, fingerprint {loaded.fingerprint}, {path}'


def _images() -> str:
    from dmn_localization.messages import image_conversion

    return f'image conversion: {image_conversion.select_backend()}'


CHECKS: List[Tuple[str, Callable[[], str]]] = [
    ('ros', _ros), ('interfaces', _interfaces), ('ament index', _ament_index),
    ('torch', _torch), ('model', _model), ('images', _images),
]


def main() -> int:
    """Run every check, print one line each, return the exit status."""
    failed = 0
    for name, check in CHECKS:
        try:
            print(f'  ok    {check()}')
        except Exception as exc:  # noqa: B902 - report every failure, then exit non-zero
            failed += 1
            print(f'  FAIL  {name}: {type(exc).__name__}: {exc}')
    print('environment check: ' + ('all passed' if not failed else f'{failed} failed'))
    print('Next: dmn_demo (the node live over DDS on a simulated robot), or offline: '
          'dmn_sim_bag --domain rooms --seed 5 --out bags/rooms_5 && '
          'dmn_evaluate_bag bags/rooms_5 --out replay/rooms_5 (see README.md).')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
