"""
The camera a model expects, and how a robot's camera image is cropped to it.

A model learns from the images of one camera: its field of view, height and pitch
(``dmn_dataset`` worlds: 0.8 m above the floor, 10 degrees down, 70 degrees vertical
and horizontal field of view, square images). A checkpoint records that camera
(:class:`CameraSpec`, metadata ``camera``); checkpoints without the record were all
trained on :data:`SIM_CAMERA`.

Another camera's image is cropped about its principal point to the model's field of
view and aspect before it is resized to the model's input (:func:`crop_box`,
:func:`crop_to_model`). A camera whose view is narrower than the model's cannot be
cropped to it: the crop keeps the whole image along that axis and the problem is
reported, so the node can say it (the model then sees a magnified view).

A pinhole camera of ``width`` x ``height`` pixels with focal lengths ``fx``, ``fy`` and
principal point ``cx``, ``cy`` (``sensor_msgs/CameraInfo``'s ``K``) sees
``2 atan(width / (2 fx))`` horizontally when the principal point is centred.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class CameraSpec:
    """A camera by its fields of view (degrees), height (m) and pitch (degrees, down < 0)."""

    fov_x_deg: float
    fov_y_deg: float
    height_m: Optional[float] = None
    pitch_deg: Optional[float] = None

    @property
    def aspect(self) -> float:
        """Return the image's width over its height for square pixels."""
        return math.tan(math.radians(self.fov_x_deg) / 2) / math.tan(
            math.radians(self.fov_y_deg) / 2)

    @classmethod
    def of_image(cls, width: int, height: int, fov_y_deg: float,
                 height_m: Optional[float] = None,
                 pitch_deg: Optional[float] = None) -> 'CameraSpec':
        """Return the camera of a ``width`` x ``height`` image, square pixels, ``fov_y_deg``."""
        fov_x = math.degrees(2 * math.atan(math.tan(math.radians(fov_y_deg) / 2) * width / height))
        return cls(fov_x, fov_y_deg, height_m, pitch_deg)

    def to_dict(self) -> Dict[str, Any]:
        """Return the spec as a JSON-serializable dict (checkpoint metadata, cards)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> 'CameraSpec':
        """Return the spec a dict of :meth:`to_dict` holds."""
        return cls(float(data['fov_x_deg']), float(data['fov_y_deg']),
                   None if data.get('height_m') is None else float(data['height_m']),
                   None if data.get('pitch_deg') is None else float(data['pitch_deg']))

    def describe(self) -> str:
        """Say the camera in words, e.g. for a model card or a log line."""
        text = f'{self.fov_x_deg:g} x {self.fov_y_deg:g} degree field of view'
        if self.height_m is not None:
            text += f', {self.height_m:g} m high'
        if self.pitch_deg is not None:
            text += f', pitched {self.pitch_deg:+g} degrees'
        return text


#: The camera of the simulated Rooms and Mazes (data/render.py) and of every shipped model.
SIM_CAMERA = CameraSpec(fov_x_deg=70.0, fov_y_deg=70.0, height_m=0.8, pitch_deg=-10.0)


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera's image size and intrinsics (pixels), as ``CameraInfo`` gives them."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_fov(cls, width: int, height: int, fov_x_deg: float,
                 fov_y_deg: float) -> 'Intrinsics':
        """Return the intrinsics of a centred camera with the given fields of view."""
        return cls(width, height, width / (2 * math.tan(math.radians(fov_x_deg) / 2)),
                   height / (2 * math.tan(math.radians(fov_y_deg) / 2)),
                   width / 2.0, height / 2.0)

    @classmethod
    def from_camera_info(cls, msg: Any) -> 'Intrinsics':
        """Return the intrinsics of a ``sensor_msgs/CameraInfo`` (its size and ``K``)."""
        k = msg.k
        return cls(int(msg.width), int(msg.height), float(k[0]), float(k[4]), float(k[2]),
                   float(k[5]))

    @classmethod
    def of_fov(cls, fov_x_deg: float, fov_y_deg: float, width: int = 1000) -> 'Intrinsics':
        """Return a centred camera of these fields of view, square pixels, ``width`` wide."""
        aspect = CameraSpec(fov_x_deg, fov_y_deg).aspect
        return cls.from_fov(width, max(1, round(width / aspect)), fov_x_deg, fov_y_deg)

    @property
    def fov_x_deg(self) -> float:
        """Return the horizontal field of view of a centred principal point, degrees."""
        return math.degrees(2 * math.atan(self.width / (2 * self.fx)))

    @property
    def fov_y_deg(self) -> float:
        """Return the vertical field of view of a centred principal point, degrees."""
        return math.degrees(2 * math.atan(self.height / (2 * self.fy)))

    def describe(self) -> str:
        """Return e.g. ``'160x128 camera of 93.0 x 80.0 degrees'``."""
        return (f'{self.width}x{self.height} camera of {self.fov_x_deg:.1f} x '
                f'{self.fov_y_deg:.1f} degrees')


class CameraError(ValueError):
    """Intrinsics that describe no usable camera (a focal length or a size not positive)."""


def check_intrinsics(intrinsics: Intrinsics) -> None:
    """Raise :class:`CameraError` unless the intrinsics describe a usable camera."""
    values = (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy)
    if intrinsics.width < 1 or intrinsics.height < 1:
        raise CameraError(f'camera image of {intrinsics.width}x{intrinsics.height} pixels')
    if not all(math.isfinite(v) for v in values) or intrinsics.fx <= 0 or intrinsics.fy <= 0:
        raise CameraError(f'focal lengths fx={intrinsics.fx:g}, fy={intrinsics.fy:g} are not '
                          'positive and finite (an uncalibrated camera_info has K all zero)')


def crop_box(intrinsics: Intrinsics, model: CameraSpec) -> Tuple[Tuple[int, int, int, int],
                                                                 List[str]]:
    """
    Return the pixel box ``(x0, y0, x1, y1)`` that shows the model's field of view.

    The box is centred on the principal point and spans ``fx tan(fov_x / 2)`` to each
    side (likewise vertically), clipped to the image. The returned list says what could
    not be matched: a camera narrower than the model along an axis (the box then takes
    the whole image along it, and its aspect differs from the model's).
    """
    check_intrinsics(intrinsics)
    problems = []
    half_w = intrinsics.fx * math.tan(math.radians(model.fov_x_deg) / 2)
    half_h = intrinsics.fy * math.tan(math.radians(model.fov_y_deg) / 2)
    x0, x1 = intrinsics.cx - half_w, intrinsics.cx + half_w
    y0, y1 = intrinsics.cy - half_h, intrinsics.cy + half_h
    slack = 1.0  # a pixel of rounding is no narrower view
    if x0 < -slack or x1 > intrinsics.width + slack:
        problems.append(f'the camera sees {intrinsics.fov_x_deg:.1f} degrees horizontally, '
                        f'the model {model.fov_x_deg:g}: the image cannot be cropped to it')
    if y0 < -slack or y1 > intrinsics.height + slack:
        problems.append(f'the camera sees {intrinsics.fov_y_deg:.1f} degrees vertically, '
                        f'the model {model.fov_y_deg:g}: the image cannot be cropped to it')
    box = (max(0, int(round(x0))), max(0, int(round(y0))),
           min(intrinsics.width, int(round(x1))), min(intrinsics.height, int(round(y1))))
    return box, problems


def crop_to_model(image: np.ndarray, intrinsics: Optional[Intrinsics],
                  model: CameraSpec) -> np.ndarray:
    """
    Return ``image`` ``(H, W, C)`` cropped to the model's field of view (a view, no copy).

    ``intrinsics`` None: the image is taken to be the model's view already. Intrinsics of
    another image size (a camera_info for a different resolution) are scaled to this
    image's size.
    """
    if intrinsics is None:
        return image
    height, width = image.shape[:2]
    if (width, height) != (intrinsics.width, intrinsics.height):
        sx, sy = width / intrinsics.width, height / intrinsics.height
        intrinsics = Intrinsics(width, height, intrinsics.fx * sx, intrinsics.fy * sy,
                                intrinsics.cx * sx, intrinsics.cy * sy)
    (x0, y0, x1, y1), _ = crop_box(intrinsics, model)
    return image[y0:y1, x0:x1]
