"""
Off-screen rendering of :class:`~dmn_localization.data.worlds.World` with MiniWorld.

Rendering is headless through EGL (Mesa) by default, so it needs no screen and no
Xvfb; set ``DMN_RENDER_BACKEND=x11`` to render through an X display instead. Images
are RGB uint8 ``(H, W, 3)`` from the camera of a small robot,
:data:`~dmn_localization.core.camera.SIM_CAMERA`: 0.8 m above the floor, tilted 10
degrees down, 70 degree vertical field of view (MiniWorld's default camera, 1.5 m high
and level, sees only wall in much of a 5 m room). Another camera (height, pitch,
vertical field of view; the horizontal one follows from the image's aspect) renders
the bags of other robots (``dmn_sim_bag --camera-...``).
"""

from __future__ import annotations

import math
import os
from typing import Any, Optional, Tuple

from dmn_localization.core.camera import CameraSpec, SIM_CAMERA
from dmn_localization.data.worlds import PANEL_DEPTH, PANEL_HEIGHT, ros_to_miniworld, World
import numpy as np

_ENV_CLASS: Any = None


class RenderError(RuntimeError):
    """MiniWorld could not be set up for rendering (no EGL and no display, say)."""


def _scene_env_class() -> Any:
    """Import MiniWorld lazily (it opens a GL context) and define the scene class."""
    global _ENV_CLASS
    if _ENV_CLASS is not None:
        return _ENV_CLASS
    import pyglet

    if os.environ.get('DMN_RENDER_BACKEND', 'egl') != 'x11':
        pyglet.options['headless'] = True
    try:
        from miniworld import entity
        from miniworld.miniworld import MiniWorldEnv
    except Exception as exc:  # noqa: B902 - GL/EGL set-up errors come in many types
        raise RenderError(f'MiniWorld cannot render here: {exc}') from exc

    def make_entity(obj: Any) -> Any:
        if obj.kind == 'panel':
            return entity.Box(color=obj.color, size=[obj.size, PANEL_HEIGHT, PANEL_DEPTH])
        if obj.kind == 'box':
            return entity.Box(color=obj.color, size=obj.size)
        if obj.kind == 'ball':
            return entity.Ball(color=obj.color, size=obj.size)
        if obj.kind == 'key':
            return entity.Key(color=obj.color)
        return entity.MeshEnt(mesh_name=obj.kind, height=obj.size)

    class SceneEnv(MiniWorldEnv):
        """A MiniWorld environment whose world comes from a :class:`World`."""

        def __init__(self, world: World, width: int, height: int,
                     camera: CameraSpec = SIM_CAMERA) -> None:
            self.world = world
            self.camera = camera
            super().__init__(obs_width=width, obs_height=height, window_width=64,
                             window_height=64, max_episode_steps=1)
            self.set_camera()

        def set_camera(self) -> None:
            """Give the agent the robot camera (reset() restores MiniWorld's defaults)."""
            self.agent.cam_height = self.camera.height_m
            self.agent.cam_pitch = self.camera.pitch_deg
            self.agent.cam_fov_y = self.camera.fov_y_deg
            self.agent.cam_fwd_disp = 0.0

        def _gen_world(self) -> None:
            cells = []
            for r in self.world.rooms:
                cells.append(self.add_rect_room(
                    min_x=r.x_min, max_x=r.x_max, min_z=-r.y_max, max_z=-r.y_min,
                    wall_tex=r.wall_tex, floor_tex=r.floor_tex, ceil_tex=r.ceil_tex))
            for con in self.world.connectors:
                a, b = (cells[i] for i in con.cells)
                if con.axis == 'x':
                    self.connect_rooms(a, b, min_z=a.min_z, max_z=a.max_z)
                else:
                    self.connect_rooms(a, b, min_x=a.min_x, max_x=a.max_x)
            for obj in self.world.objects:
                x, z, direction = ros_to_miniworld(obj.x, obj.y, obj.yaw)
                self.place_entity(make_entity(obj), pos=np.array([x, 0.0, z]), dir=direction)
            first = self.world.rooms[0]
            x, z, _ = ros_to_miniworld((first.x_min + first.x_max) / 2,
                                       (first.y_min + first.y_max) / 2, 0.0)
            self.place_agent(pos=np.array([x, 0.0, z]), dir=0.0)

    _ENV_CLASS = SceneEnv
    return SceneEnv


class WorldRenderer:
    """Render camera images of worlds: ``load(world)``, then ``render(poses)``."""

    def __init__(self, image_size: Tuple[int, int] = (32, 32),
                 world: Optional[World] = None, camera: CameraSpec = SIM_CAMERA) -> None:
        from dmn_localization.data.worlds import generate_room

        self.image_size = (int(image_size[0]), int(image_size[1]))
        cls = _scene_env_class()
        try:
            self.env = cls(world or generate_room(0), self.image_size[1], self.image_size[0],
                           camera)
        except Exception as exc:  # noqa: B902
            raise RenderError(f'MiniWorld cannot render here: {exc}') from exc
        self.world = self.env.world

    def load(self, world: World) -> None:
        """Build the scene of ``world`` (replacing the current one)."""
        self.env.world = world
        self.env.reset(seed=0)
        self.env.set_camera()
        self.world = world

    def render(self, poses: np.ndarray) -> np.ndarray:
        """Render RGB images ``(N, H, W, 3)`` uint8 at ROS camera poses ``(N, 3)``."""
        poses = np.asarray(poses, dtype=float).reshape(-1, 3)
        out = np.empty((len(poses), *self.image_size, 3), dtype=np.uint8)
        for i, (x, y, yaw) in enumerate(poses):
            mx, mz, direction = ros_to_miniworld(x, y, yaw)
            self.env.agent.pos = np.array([mx, 0.0, mz])
            self.env.agent.dir = float(math.remainder(direction, 2 * math.pi))
            out[i] = self.env.render_obs()
        return out

    def close(self) -> None:
        """Release the GL resources."""
        self.env.close()
