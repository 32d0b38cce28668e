"""
Procedural Rooms and Mazes worlds as plain data (no rendering, no ROS).

A :class:`World` is fully determined by its generator seed: the floor plan (axis-aligned
rectangles: rooms and the short connectors between maze cells), textures, objects and
the metric extent. :mod:`dmn_localization.data.render` turns it into a MiniWorld scene.

Coordinates are the ROS map frame (REP 103): x forward, y left, yaw counter-clockwise,
metres and radians. MiniWorld's ground plane is x-z with heading vector
``(cos dir, 0, -sin dir)``, so a ROS pose ``(x, y, yaw)`` is MiniWorld ``x = x``,
``z = -y``, ``dir = yaw``; the conversion lives in :func:`ros_to_miniworld` and
:func:`miniworld_to_ros` only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
import math
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

DOMAINS = ('rooms', 'mazes')

WALL_TEXTURES = ('brick_wall', 'cinder_blocks', 'concrete', 'drywall', 'marble', 'stucco',
                 'wood', 'wood_planks', 'metal_grill', 'rock', 'concrete_tiles',
                 'airduct_grate', 'picket_fence', 'slime', 'cardboard')
FLOOR_TEXTURES = ('asphalt', 'concrete_tiles', 'floor_tiles_bw', 'grass', 'wood_planks',
                  'marble', 'cardboard', 'concrete', 'rock', 'water', 'lava')
CEILING_TEXTURES = ('ceiling_tiles', 'ceiling_tile_noborder', 'concrete', 'white', 'wood',
                    'drywall')
OBJECT_KINDS = ('box', 'ball', 'key', 'duckie', 'cone', 'barrel', 'medkit')
COLORED_KINDS = ('box', 'ball', 'key')
OBJECT_COLORS = ('red', 'green', 'blue', 'purple', 'yellow', 'grey')
#: Colours of the wall panels of a room, one per wall, all different.
PANEL_COLORS = ('red', 'green', 'blue', 'purple', 'yellow')
#: A wall panel (a door, a cabinet) stands on the floor against a wall: height, depth in m.
PANEL_HEIGHT = 1.2
PANEL_DEPTH = 0.1

#: Margin kept between a camera and any wall, metres.
CAMERA_MARGIN = 0.3


@dataclass
class Rect:
    """Axis-aligned floor rectangle in the ROS frame, with its textures."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float
    wall_tex: str = 'brick_wall'
    floor_tex: str = 'asphalt'
    ceil_tex: str = 'ceiling_tiles'

    def contains(self, x: np.ndarray, y: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Return where points lie inside the rectangle shrunk by ``margin``."""
        return ((x >= self.x_min + margin) & (x <= self.x_max - margin)
                & (y >= self.y_min + margin) & (y <= self.y_max - margin))


@dataclass
class SceneObject:
    """
    An object: ``kind``, colour, position, yaw, size in metres.

    ``kind`` is one of :data:`OBJECT_KINDS`, or ``panel``: a flat box of width ``size``,
    :data:`PANEL_HEIGHT` high and :data:`PANEL_DEPTH` deep against a wall, its long side
    along ``yaw``.
    """

    kind: str
    color: str
    x: float
    y: float
    yaw: float
    size: float


@dataclass
class Connector:
    """
    The opening between two maze cells: the ``rect`` corridor and the cells it joins.

    Walls of the corridor run along ``axis`` (``x``: the corridor links cells side by
    side in x; ``y``: in y).
    """

    rect: Rect
    cells: Tuple[int, int]
    axis: str


@dataclass
class World:
    """One generated environment: floor plan, objects, extent and its generator seed."""

    domain: str
    seed: int
    rooms: List[Rect]
    connectors: List[Connector] = field(default_factory=list)
    objects: List[SceneObject] = field(default_factory=list)

    @property
    def extent(self) -> Tuple[float, float, float, float]:
        """Return ``[x_min, y_min, x_max, y_max]`` of the floor plan in metres."""
        return (min(r.x_min for r in self.rooms), min(r.y_min for r in self.rooms),
                max(r.x_max for r in self.rooms), max(r.y_max for r in self.rooms))

    def is_free(self, x: np.ndarray, y: np.ndarray, margin: float = CAMERA_MARGIN) -> np.ndarray:
        """Return where a camera may stand: inside a room or connector, ``margin`` from walls."""
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        free = np.zeros(np.broadcast(x, y).shape, dtype=bool)
        for room in self.rooms:
            free |= room.contains(x, y, margin)
        for con in self.connectors:
            r = con.rect
            # a connector is open at both ends, so the margin applies across it only
            if con.axis == 'x':
                free |= (x >= r.x_min) & (x <= r.x_max) & (y >= r.y_min + margin) & (
                    y <= r.y_max - margin)
            else:
                free |= (y >= r.y_min) & (y <= r.y_max) & (x >= r.x_min + margin) & (
                    x <= r.x_max - margin)
        for obj in self.objects:
            if obj.kind == 'panel':  # thinner than the wall margin: never in the way
                continue
            free &= np.hypot(x - obj.x, y - obj.y) > obj.size / 2 + margin
        return free

    def sample_free_poses(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``count`` camera poses ``(count, 3)`` uniformly over free space and yaw."""
        x_min, y_min, x_max, y_max = self.extent
        out = np.zeros((0, 3))
        while len(out) < count:
            n = max(16, 2 * (count - len(out)))
            cand = np.column_stack([rng.uniform(x_min, x_max, n), rng.uniform(y_min, y_max, n),
                                    rng.uniform(-math.pi, math.pi, n)])
            out = np.concatenate([out, cand[self.is_free(cand[:, 0], cand[:, 1])]])
        return out[:count]

    def to_dict(self) -> Dict[str, Any]:
        """Return a JSON-serializable description."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> 'World':
        """Inverse of :meth:`to_dict`."""
        return cls(data['domain'], int(data['seed']), [Rect(**r) for r in data['rooms']],
                   [Connector(Rect(**c['rect']), tuple(c['cells']), c['axis'])
                    for c in data['connectors']],
                   [SceneObject(**o) for o in data['objects']])


def ros_to_miniworld(x: float, y: float, yaw: float) -> Tuple[float, float, float]:
    """Return MiniWorld ``(x, z, dir)`` of a ROS pose."""
    return float(x), float(-y), float(yaw)


def miniworld_to_ros(x: float, z: float, direction: float) -> Tuple[float, float, float]:
    """Return the ROS pose ``(x, y, yaw)`` of a MiniWorld position and direction."""
    return float(x), float(-z), float(direction)


def _choice(rng: np.random.Generator, options: Sequence[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def generate_room(seed: int) -> World:
    """
    One square room, random textures, a coloured panel per wall, 1 to 3 random objects.

    The paper's "Rooms with object rotations". Side 5 to 8 m; objects keep 0.8 m from
    the walls and from each other. Each wall carries a panel (a door, a cabinet) of
    its own colour at a random place: without them a square room with one wall texture
    is four-fold symmetric, and at a robot's camera height most views show only wall,
    so most views could not be localized by any method.
    """
    rng = np.random.default_rng(seed)
    side = float(rng.uniform(5.0, 8.0))
    room = Rect(0.0, 0.0, side, side, _choice(rng, WALL_TEXTURES),
                _choice(rng, FLOOR_TEXTURES), _choice(rng, CEILING_TEXTURES))
    objects = _wall_panels(rng, side)
    for _ in range(int(rng.integers(1, 4))):
        kind = _choice(rng, OBJECT_KINDS)
        color = _choice(rng, OBJECT_COLORS) if kind in COLORED_KINDS else 'none'
        size = float(rng.uniform(0.5, 1.0))
        for _attempt in range(100):
            x, y = rng.uniform(0.8 + size / 2, side - 0.8 - size / 2, 2)
            if all(math.hypot(x - o.x, y - o.y) > (size + o.size) / 2 + 0.8 for o in objects):
                break
        objects.append(SceneObject(kind, color, float(x), float(y),
                                   float(rng.uniform(-math.pi, math.pi)), size))
    return World('rooms', seed, [room], [], objects)


def _wall_panels(rng: np.random.Generator, side: float) -> List[SceneObject]:
    """One panel per wall of a square room of ``side`` metres, in four different colours."""
    colors = rng.permutation(len(PANEL_COLORS))[:4]
    panels = []
    # walls: south (y = 0), east (x = side), north (y = side), west (x = 0)
    for wall, color in enumerate(colors):
        width = float(rng.uniform(1.0, 2.0))
        along = float(rng.uniform(0.3 + width / 2, side - 0.3 - width / 2))
        off = PANEL_DEPTH / 2
        x, y, yaw = [(along, off, 0.0), (side - off, along, math.pi / 2),
                     (along, side - off, 0.0), (off, along, math.pi / 2)][wall]
        panels.append(SceneObject('panel', PANEL_COLORS[int(color)], x, y, yaw, width))
    return panels


def generate_maze(seed: int, rows: int = 5, cols: int = 5, cell: float = 2.5,
                  gap: float = 0.25) -> World:
    """
    Generate a random maze of ``rows x cols`` cells, carved by a randomized depth-first search.

    Every cell is a room of ``cell`` metres; neighbouring cells that the maze connects
    are joined by an open side through a ``gap`` corridor. Floor and ceiling textures
    are random per maze, wall textures random per cell from a palette of three: large
    and ambiguous, like the paper's Mazes.
    """
    rng = np.random.default_rng(seed)
    palette = [_choice(rng, WALL_TEXTURES) for _ in range(3)]
    floor, ceiling = _choice(rng, FLOOR_TEXTURES), _choice(rng, CEILING_TEXTURES)
    pitch = cell + gap
    rooms = []
    for j in range(rows):
        for i in range(cols):
            rooms.append(Rect(i * pitch, j * pitch, i * pitch + cell, j * pitch + cell,
                              _choice(rng, palette), floor, ceiling))
    connectors: List[Connector] = []
    visited = {0}
    stack = [0]
    while stack:
        current = stack[-1]
        i, j = current % cols, current // cols
        neighbours = [(i + di, j + dj) for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1))
                      if 0 <= i + di < cols and 0 <= j + dj < rows
                      and (j + dj) * cols + (i + di) not in visited]
        if not neighbours:
            stack.pop()
            continue
        ni, nj = neighbours[int(rng.integers(len(neighbours)))]
        nxt = nj * cols + ni
        a, b = rooms[min(current, nxt)], rooms[max(current, nxt)]
        if ni != i:  # side by side in x: corridor between a.x_max and b.x_min
            rect, axis = Rect(a.x_max, a.y_min, b.x_min, a.y_max, a.wall_tex, floor, ceiling), 'x'
        else:
            rect, axis = Rect(a.x_min, a.y_max, a.x_max, b.y_min, a.wall_tex, floor, ceiling), 'y'
        connectors.append(Connector(rect, (min(current, nxt), max(current, nxt)), axis))
        visited.add(nxt)
        stack.append(nxt)
    return World('mazes', seed, rooms, connectors, [])


def generate_world(domain: str, seed: int) -> World:
    """Generate a world of ``domain`` (:data:`DOMAINS`) from ``seed``."""
    if domain == 'rooms':
        return generate_room(seed)
    if domain == 'mazes':
        return generate_maze(seed)
    raise ValueError(f'unknown domain {domain!r}; choose one of {", ".join(DOMAINS)}')


def bounding_world(domain: str, seed: int, poses: np.ndarray, pad: float = 0.05) -> World:
    """
    Describe recorded views with no known floor plan by the bounding box of their poses.

    The box ``(N, 3)`` poses span is enlarged by ``pad`` of its size on every side; it
    is the environment's extent (imported GQN data, views from a robot's bag).
    """
    low, high = poses[:, :2].min(0), poses[:, :2].max(0)
    margin = pad * np.maximum(high - low, 1e-3)
    return World(domain, int(seed), [Rect(float(low[0] - margin[0]), float(low[1] - margin[1]),
                                          float(high[0] + margin[0]),
                                          float(high[1] + margin[1]))])
