"""The camera contract: crops to the model's field of view, refusals, the localizer's use."""

import math

from dmn_localization.core.camera import (CameraError, CameraSpec, crop_box, crop_to_model,
                                          Intrinsics, SIM_CAMERA)
import numpy as np
import pytest


def test_a_wider_camera_is_cropped_to_the_models_view():
    # 640x480, 100 x 80 degrees: the model's 70 degrees span tan(35)/tan(50) of the width
    wide = Intrinsics.from_fov(640, 480, 100.0, 80.0)
    (x0, y0, x1, y1), problems = crop_box(wide, SIM_CAMERA)
    assert problems == []
    width = 640 * math.tan(math.radians(35)) / math.tan(math.radians(50))
    height = 480 * math.tan(math.radians(35)) / math.tan(math.radians(40))
    assert x1 - x0 == pytest.approx(width, abs=1.5)
    assert y1 - y0 == pytest.approx(height, abs=1.5)
    assert (x0 + x1) / 2 == pytest.approx(320, abs=1)
    assert (y0 + y1) / 2 == pytest.approx(240, abs=1)
    # the crop has the model's field of view: square for the square sim camera
    cropped = Intrinsics(x1 - x0, y1 - y0, wide.fx, wide.fy, wide.cx - x0, wide.cy - y0)
    assert cropped.fov_x_deg == pytest.approx(70.0, abs=0.3)
    assert cropped.fov_y_deg == pytest.approx(70.0, abs=0.3)


def test_an_off_centre_principal_point_moves_the_crop():
    camera = Intrinsics(640, 480, 200.0, 200.0, 300.0, 250.0)
    (x0, y0, x1, y1), problems = crop_box(camera, SIM_CAMERA)
    assert problems == []
    assert (x0 + x1) / 2 == pytest.approx(300, abs=1)
    assert (y0 + y1) / 2 == pytest.approx(250, abs=1)


def test_a_narrower_camera_is_reported_and_keeps_its_whole_image():
    narrow = Intrinsics.from_fov(640, 480, 60.0, 45.0)
    box, problems = crop_box(narrow, SIM_CAMERA)
    assert box == (0, 0, 640, 480)
    assert len(problems) == 2
    assert 'sees 60.0 degrees horizontally, the model 70' in problems[0]
    assert 'sees 45.0 degrees vertically' in problems[1]


def test_the_sim_camera_needs_no_crop_and_unusable_intrinsics_are_refused():
    same = Intrinsics.from_fov(128, 128, 70.0, 70.0)
    assert crop_box(same, SIM_CAMERA) == ((0, 0, 128, 128), [])
    with pytest.raises(CameraError, match='K all zero'):
        crop_box(Intrinsics(640, 480, 0.0, 0.0, 0.0, 0.0), SIM_CAMERA)
    with pytest.raises(CameraError, match='0x480'):
        crop_box(Intrinsics(0, 480, 100.0, 100.0, 0.0, 240.0), SIM_CAMERA)


def test_crop_scales_intrinsics_to_the_image_and_none_keeps_the_image():
    image = np.arange(480 * 640 * 3, dtype=np.uint32).reshape(480, 640, 3)
    wide = Intrinsics.from_fov(1280, 960, 100.0, 80.0)  # calibrated at twice the size
    cropped = crop_to_model(image, wide, SIM_CAMERA)
    (x0, y0, x1, y1), _ = crop_box(Intrinsics.from_fov(640, 480, 100.0, 80.0), SIM_CAMERA)
    np.testing.assert_array_equal(cropped, image[y0:y1, x0:x1])
    assert crop_to_model(image, None, SIM_CAMERA) is image


def test_camera_spec_round_trips_and_says_itself():
    spec = CameraSpec(90.0, 60.0, 1.5, 0.0)
    assert CameraSpec.from_dict(spec.to_dict()) == spec
    assert spec.describe() == '90 x 60 degree field of view, 1.5 m high, pitched +0 degrees'
    assert SIM_CAMERA.aspect == pytest.approx(1.0)


def test_the_localizer_crops_frames_and_map_views_to_the_models_camera():
    """A wide camera's image, cropped by the localizer, localizes as its crop does."""
    import torch

    from dmn_localization.core.checkpoint import LoadedModel
    from dmn_localization.core.models import build_model, config_for, encoder_fingerprint
    from dmn_localization.runtime.localizer import Localizer, LocalizerSettings

    torch.manual_seed(0)
    model = build_model(config_for('dmn-pf'))
    loaded = LoadedModel(model, [0, 0, 6, 6], encoder_fingerprint(model))
    assert loaded.camera == SIM_CAMERA  # no record: the sim camera
    rng = np.random.default_rng(0)
    wide = Intrinsics.from_fov(160, 120, 100.0, 80.0)
    (x0, y0, x1, y1), _ = crop_box(wide, SIM_CAMERA)
    views = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(4)]
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    poses = np.array([[1.0, 1.0, 0.0], [5.0, 1.0, 1.5], [5.0, 5.0, 3.0], [1.0, 5.0, -1.5]])
    results = []
    for camera in (wide, None):
        localizer = Localizer(loaded, 'cpu', LocalizerSettings(num_particles=64, seed=3))
        assert localizer.set_camera(camera) == []
        crop = (lambda img: img) if camera else (lambda img: img[y0:y1, x0:x1])
        localizer.build_map([crop(v) for v in views], poses)
        results.append(localizer.process_frame(1.0, crop(frame)))
    np.testing.assert_allclose(results[0].pose, results[1].pose, atol=1e-6)
    narrow = Localizer(loaded, 'cpu', LocalizerSettings(num_particles=64))
    assert len(narrow.set_camera(Intrinsics.from_fov(160, 120, 60.0, 45.0))) == 2


def test_a_sim_bag_of_a_wider_camera_carries_its_camera_info_and_replays_cropped(tmp_path):
    """dmn_sim_bag renders another camera; offline replay crops its images by camera_info."""
    import json

    import torch

    from dmn_localization.core.checkpoint import save_checkpoint
    from dmn_localization.core.models import build_model, config_for
    from dmn_localization.data.sim_bag import main as sim_bag_main
    from dmn_localization.replay.cli import main as replay_main
    from dmn_localization.replay.offline import bag_camera

    bag = tmp_path / 'wide'
    assert sim_bag_main(['--duration', '1', '--contexts', '4', '--camera-size', '48', '64',
                         '--camera-fov-y', '90', '--camera-height', '1.2', '--out',
                         str(bag)]) == 0
    camera = bag_camera(bag, '/camera/camera_info')
    assert (camera.width, camera.height) == (64, 48)
    assert camera.fov_y_deg == pytest.approx(90.0, abs=1e-6)
    assert camera.fov_x_deg == pytest.approx(
        math.degrees(2 * math.atan(math.tan(math.radians(45)) * 64 / 48)), abs=1e-6)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / 'dmn.pt', build_model(config_for('dmn-pf')), [0, 0, 8, 8])
    runs = {}
    for name, topic in (('cropped', '/camera/camera_info'), ('as-is', '/none')):
        assert replay_main([str(bag), '--model', str(tmp_path / 'dmn.pt'), '--quiet',
                            '--camera-info-topic', topic, '--out', str(tmp_path / name)]) == 0
        runs[name] = (tmp_path / name / 'estimate.tum').read_text()
    assert runs['cropped'] != runs['as-is']  # the model saw other pixels
    assert json.loads((tmp_path / 'cropped' / 'metrics.json').read_text())['metrics'][
        'frames'] == 5


def test_adapt_to_a_robot_bag_to_dataset_to_fine_tuned_model_to_replay(tmp_path):
    """The path a robot's bags take to a model of its camera, on tiny data."""
    import json

    from dmn_localization.core.checkpoint import load_checkpoint
    from dmn_localization.data.cli import main as dataset_main
    from dmn_localization.data.sim_bag import main as sim_bag_main
    from dmn_localization.learning.train_cli import main as train_main
    from dmn_localization.replay.cli import main as replay_main
    from dmn_localization.runtime.default_model import default_model

    wide = ['--camera-size', '48', '64', '--camera-fov-y', '90', '--contexts', '4']
    for name, seed in (('robot-a', '11'), ('robot-b', '12')):
        assert sim_bag_main(['--duration', '4', '--seed', seed, '--out', str(tmp_path / name)]
                            + wide) == 0
    data = tmp_path / 'robot-data'
    assert dataset_main(['from-bag', str(tmp_path / 'robot-a'), '--image-topic',
                         '/camera/image_raw', '--pose-topic', '/ground_truth/pose',
                         '--views-per-env', '10', '--out', str(data)]) == 0
    manifest = json.loads((data / 'manifest.json').read_text())
    assert manifest['camera']['fov_y_deg'] == pytest.approx(90.0, abs=1e-6)
    shipped = default_model()
    assert shipped is not None
    run = tmp_path / 'adapted'
    assert train_main(['--model', 'dmn-pf', '--train', str(data), '--val', str(data),
                       '--out', str(run), '--init-from', str(shipped), '--budget-samples', '32',
                       '--batch-size', '8', '--val-every-samples', '32', '--val-episodes', '4',
                       '--val-global-episodes', '4', '--particles', '32', '--quiet']) == 0
    adapted = load_checkpoint(run / 'best.pt')
    assert adapted.camera.fov_y_deg == pytest.approx(90.0, abs=1e-6)  # the robot's camera
    assert load_checkpoint(shipped).camera == SIM_CAMERA
    for model, out in ((shipped, 'shipped'), (run / 'best.pt', 'adapted')):
        assert replay_main([str(tmp_path / 'robot-b'), '--model', str(model), '--quiet',
                            '--out', str(tmp_path / out)]) == 0
        metrics = json.loads((tmp_path / out / 'metrics.json').read_text())['metrics']
        assert metrics['frames'] == 20


def test_a_wider_cameras_cropped_images_are_the_training_cameras():
    from dmn_localization.bench.camera_crop import pixel_differences

    d = pixel_differences(seed=5, views=6)
    assert d['cropped'] < 3.0 < 8.0 < d['uncropped'] < d['other_pose']
