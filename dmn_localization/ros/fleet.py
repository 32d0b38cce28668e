"""
The multi-robot set-up as plain data: which robot maps, which receive, what is remapped.

``launch/multi_robot.launch.py`` turns a :func:`fleet_plan` into one node per robot;
keeping the plan here (no ``launch`` import) lets it be tested where ``launch`` is not
installable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import re
from typing import Dict, List, Tuple

_NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')


class FleetError(ValueError):
    """A list of namespaces or a mapper that cannot make a fleet."""


@dataclass
class RobotSpec:
    """One robot's node: namespace, parameter overrides and remappings."""

    namespace: str
    parameters: Dict[str, str] = field(default_factory=dict)
    remappings: List[Tuple[str, str]] = field(default_factory=list)


def parse_namespaces(text: str) -> List[str]:
    """Split ``'robot1,robot2'`` (commas or spaces, leading ``/`` allowed) into names."""
    names = [n.strip().lstrip('/') for n in re.split(r'[,\s]+', text) if n.strip()]
    if not names:
        raise FleetError('namespaces is empty: give e.g. robot1,robot2')
    for name in names:
        if not _NAME.match(name):
            raise FleetError(f'namespace {name!r} is not a valid ROS name')
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise FleetError(f'namespaces repeat: {", ".join(duplicates)}')
    return names


def fleet_plan(namespaces: str, mapper: str = '',
               map_topic: str = '/shared/view_embedding_map',
               map_update: str = 'replace') -> List[RobotSpec]:
    """
    Return the nodes of a fleet sharing one map topic.

    The ``mapper`` (default: the first namespace) builds maps from its ``~/build_map``
    service and publishes them on ``map_topic``; every other robot takes its map from
    that topic (``map_source: topic``) and replaces or merges (``map_update``).
    """
    names = parse_namespaces(namespaces)
    mapper = mapper.strip().lstrip('/') or names[0]
    if mapper not in names:
        raise FleetError(f'mapper {mapper!r} is not one of the namespaces {names}')
    if map_update not in ('replace', 'merge'):
        raise FleetError(f'map_update must be replace or merge, got {map_update!r}')
    if not map_topic.startswith('/'):
        raise FleetError(f'map_topic {map_topic!r} must be absolute to be shared')
    return [RobotSpec(name, {'map_source': 'service' if name == mapper else 'topic',
                             'map_update': map_update},
                      [('view_embedding_map', map_topic)]) for name in names]
