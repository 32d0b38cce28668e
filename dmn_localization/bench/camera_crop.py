"""
How close a wider camera's cropped images come to the training camera's.

    python -m dmn_localization.bench.camera_crop [--seed 201] [--views 50]

Renders the same poses of a Rooms world with the simulator's camera (128x128, 70 x 70
degrees) and with a wider one (128x160, 80 degrees vertical, as ``dmn_sim_bag
--camera-size 128 160 --camera-fov-y 80``), crops the wider images to the model's view
by their intrinsics (``core/camera.py``), resizes both to the model's 32x32 and prints
the mean absolute pixel difference, beside the difference without the crop and between
two different poses of the training camera.
"""

from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Optional

from dmn_localization.core.camera import CameraSpec, crop_to_model, Intrinsics, SIM_CAMERA
import numpy as np


def pixel_differences(seed: int = 201, views: int = 50) -> Dict[str, float]:
    """Return the mean absolute 32x32 pixel differences (0-255) of the three comparisons."""
    import cv2

    from dmn_localization.data.render import WorldRenderer
    from dmn_localization.data.worlds import generate_world

    world = generate_world('rooms', seed)
    poses = world.sample_free_poses(views, np.random.default_rng(seed))
    camera = CameraSpec.of_image(160, 128, 80.0, SIM_CAMERA.height_m, SIM_CAMERA.pitch_deg)
    train = WorldRenderer((128, 128), world).render(poses)
    wide = WorldRenderer((128, 160), world, camera).render(poses)
    intrinsics = Intrinsics.from_fov(160, 128, camera.fov_x_deg, camera.fov_y_deg)

    def small(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA).astype(float)

    def mean(pairs: List) -> float:
        return float(np.mean([np.abs(small(a) - small(b)).mean() for a, b in pairs]))

    return {'cropped': mean([(crop_to_model(w, intrinsics, SIM_CAMERA), t)
                             for w, t in zip(wide, train)]),
            'uncropped': mean(list(zip(wide, train))),
            'other_pose': mean([(train[i], train[(i + 1) % views]) for i in range(views)])}


def main(argv: Optional[List[str]] = None) -> int:
    """Print the differences."""
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--seed', type=int, default=201)
    p.add_argument('--views', type=int, default=50)
    a = p.parse_args(argv)
    d = pixel_differences(a.seed, a.views)
    print(f'mean absolute pixel difference at 32x32 (0-255), {a.views} views of Rooms seed '
          f'{a.seed}: cropped {d["cropped"]:.2f}, uncropped {d["uncropped"]:.2f}, two '
          f'different poses {d["other_pose"]:.2f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
