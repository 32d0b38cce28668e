"""
Where the shipped default model is: the installed package's share, else the source tree.

One file name for the node, the bag tools, the environment check and the model cards.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

#: File name of the default model in share/dmn_localization/models (and models/).
DEFAULT_MODEL = 'dmn-pf-rooms.pt'

#: The source tree's models/ directory (used when the package is not installed).
SOURCE_MODELS = Path(__file__).resolve().parents[2] / 'models'


def installed_model_path() -> str:
    """Return the default model in the package's installed share ('' when it has none)."""
    try:
        from ament_index_python.packages import get_package_share_directory

        path = os.path.join(get_package_share_directory('dmn_localization'), 'models',
                            DEFAULT_MODEL)
    except Exception:  # noqa: B902 - package not in the ament index
        return ''
    return path if os.path.isfile(path) else ''


def default_model() -> Optional[Path]:
    """Return the shipped default model (installed share, else the source tree), if any."""
    path = installed_model_path()
    if path:
        return Path(path)
    candidate = SOURCE_MODELS / DEFAULT_MODEL
    return candidate if candidate.is_file() else None
