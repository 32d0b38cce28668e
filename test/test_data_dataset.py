"""Datasets: reproducible bytes, disjoint splits, resume, episodes, preview, GQN import."""

import filecmp
import json

import cv2
from dmn_localization.data.cli import main as dataset_main
from dmn_localization.data.dataset import (Dataset, DatasetError, environment_seed, generate,
                                           GenerationSpec, shard_files)
from dmn_localization.data.episodes import EpisodeSampler
from dmn_localization.data.gqn import import_gqn
import numpy as np
import pytest

SPEC = GenerationSpec('rooms', 'train', envs=5, views_per_env=6, seed=3, image_size=(16, 16),
                      shard_size=2)


def all_files_equal(a, b):
    """Return whether two directories hold the same files with the same bytes."""
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()):
        return False
    return all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """Generate SPEC once for the module."""
    out = tmp_path_factory.mktemp('reference')
    generate(SPEC, out, workers=2, progress=False)
    return out


def test_same_arguments_give_identical_bytes(reference, tmp_path):
    generate(SPEC, tmp_path, workers=1, progress=False)
    assert all_files_equal(reference, tmp_path)
    manifest = json.loads((tmp_path / 'manifest.json').read_text())
    assert manifest['counts'] == {'envs': 5, 'views': 30, 'shards': 3}
    assert manifest['parameters']['generator_version'] >= 1


def test_another_seed_gives_other_data(reference, tmp_path):
    other = GenerationSpec(**{**SPEC.__dict__, 'seed': 4})
    generate(other, tmp_path, workers=2, progress=False)
    a, b = Dataset(reference), Dataset(tmp_path)
    assert not np.array_equal(a.environment(0).images, b.environment(0).images)
    assert set(a.world_seeds()).isdisjoint(b.world_seeds())


def test_splits_are_disjoint():
    seeds = {split: {environment_seed('mazes', split, 0, i) for i in range(2000)}
             for split in ('train', 'val', 'test')}
    assert all(len(s) == 2000 for s in seeds.values())
    assert seeds['train'].isdisjoint(seeds['val'])
    assert seeds['train'].isdisjoint(seeds['test'])
    assert seeds['val'].isdisjoint(seeds['test'])


def test_reading_back(reference):
    data = Dataset(reference, verify=True)
    assert len(data) == 5 and data.image_size == (16, 16) and data.views_per_env == 6
    env = data.environment(4)
    assert env.images.shape == (6, 16, 16, 3) and env.images.dtype == np.uint8
    assert env.poses.shape == (6, 3)
    assert env.world.is_free(env.poses[:, 0], env.poses[:, 1]).all()
    assert env.images.std() > 5  # real renders, not blank frames
    with pytest.raises(IndexError):
        data.environment(5)


def test_resume_after_interruption(reference, tmp_path):
    generate(SPEC, tmp_path, workers=2, progress=False)
    manifest = json.loads((tmp_path / 'manifest.json').read_text())
    # as if stopped after shard 0: its files and the progress record exist, nothing else
    (tmp_path / 'manifest.json').unlink()
    for index in (1, 2):
        for path in shard_files(tmp_path, index).values():
            path.unlink()
    progress = {'parameters': manifest['parameters'],
                'done': {'0': manifest['shards'][0]['sha256']}}
    (tmp_path / 'progress.json').write_text(json.dumps(progress))
    kept = shard_files(tmp_path, 0)['images'].stat().st_mtime_ns
    with pytest.raises(DatasetError, match='not a finished dataset.*resume'):
        Dataset(tmp_path)
    generate(SPEC, tmp_path, workers=2, progress=False)
    assert shard_files(tmp_path, 0)['images'].stat().st_mtime_ns == kept  # not redone
    assert all_files_equal(reference, tmp_path)


def test_other_parameters_in_the_same_directory_are_refused(reference):
    with pytest.raises(DatasetError, match='other parameters'):
        generate(GenerationSpec(**{**SPEC.__dict__, 'envs': 6}), reference, progress=False)


def test_corruption_is_detected(reference, tmp_path):
    for path in reference.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    target = shard_files(tmp_path, 1)['poses']
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match='corrupted'):
        Dataset(tmp_path, verify=True)


def test_episodes(reference):
    sampler = EpisodeSampler(Dataset(reference), num_contexts=3, steps=2)
    batch = sampler.sample(4, np.random.default_rng(0))
    assert batch.context_images.shape == (4, 3, 16, 16, 3)
    assert batch.query_poses.shape == (4, 2, 3) and batch.motions.shape == (4, 2, 3)
    np.testing.assert_array_equal(batch.motions[:, 0], 0.0)
    for b in range(4):  # contexts and queries are distinct views
        views = np.concatenate([batch.context_poses[b], batch.query_poses[b]])
        assert len(np.unique(views, axis=0)) == 5
    again = sampler.sample(4, np.random.default_rng(0))
    np.testing.assert_array_equal(again.query_images, batch.query_images)
    with pytest.raises(ValueError, match='views per environment'):
        EpisodeSampler(Dataset(reference), num_contexts=5, steps=2)


def test_episodes_read_only_the_drawn_views(reference):
    # The sampler reads the drawn views from the shard (Dataset.views) and the cached
    # extent; the episode must be the one cut from the whole environment, draw for draw.
    dataset = Dataset(reference)
    batch = EpisodeSampler(dataset, num_contexts=3, steps=2).sample(
        6, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    envs = rng.choice(np.arange(len(dataset)), size=6, replace=True)
    np.testing.assert_array_equal(batch.env_indices, envs)
    for b, env in enumerate(envs):
        views = dataset.environment(int(env))
        pick = rng.permutation(len(views.poses))[:5]
        np.testing.assert_array_equal(batch.context_images[b], views.images[pick[:3]])
        np.testing.assert_array_equal(batch.query_images[b], views.images[pick[3:]])
        np.testing.assert_array_equal(batch.context_poses[b], views.poses[pick[:3]])
        np.testing.assert_array_equal(batch.query_poses[b], views.poses[pick[3:]])
        np.testing.assert_array_equal(batch.extents[b], views.extent)
    extent = dataset.extent(1)
    assert extent.dtype == np.float32 and dataset.extent(1) is extent
    with pytest.raises(ValueError):  # the cached extent cannot be changed by a caller
        extent[0] = 0.0
    with pytest.raises(IndexError, match='out of range'):
        dataset.views(len(dataset), [0])


def test_cli_generate_and_preview(tmp_path):
    out = tmp_path / 'mazes'
    rc = dataset_main(['generate', '--domain', 'mazes', '--split', 'val', '--envs', '2',
                       '--views-per-env', '12', '--image-size', '24', '24', '--quiet',
                       '--workers', '1', '--out', str(out)])
    assert rc == 0 and len(Dataset(out)) == 2
    png = tmp_path / 'preview.png'
    assert dataset_main(['preview', str(out), '--out', str(png), '--environments', '2']) == 0
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 600
    assert dataset_main(['preview', str(tmp_path / 'nothing'), '--out', str(png)]) == 2


def write_gqn_tfrecord(path, envs, views, rng):
    """Write a tiny GQN-style TFRecord; return the images and cameras it holds."""
    from tfrecord.writer import TFRecordWriter

    writer = TFRecordWriter(str(path))
    truth = []
    for _ in range(envs):
        images = rng.integers(0, 256, (views, 16, 16, 3), dtype=np.uint8)
        images[:, :8] //= 4  # some structure, so JPEG keeps it well
        cameras = rng.uniform(-1, 1, (views, 5)).astype(np.float32)
        cameras[:, 3] *= 3.0
        frames = [cv2.imencode('.jpg', img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])[1]
                  .tobytes() for img in images]
        writer.write({'frames': (frames, 'byte'), 'cameras': (cameras.reshape(-1), 'float')})
        truth.append((frames, cameras))
    writer.close()
    return truth


def test_gqn_import_reproduces_images_and_poses(tmp_path):
    rng = np.random.default_rng(5)
    record = tmp_path / 'rooms-0.tfrecord'
    truth = write_gqn_tfrecord(record, envs=3, views=4, rng=rng)
    import_gqn([record], tmp_path / 'out', 'rooms', 'test', image_size=(16, 16), scale=2.0)
    data = Dataset(tmp_path / 'out', verify=True)
    assert len(data) == 3 and data.views_per_env == 4
    for e, (frames, cameras) in enumerate(truth):
        env = data.environment(e)
        decoded = np.stack([cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
                            for f in frames])
        np.testing.assert_array_equal(env.images, decoded)
        np.testing.assert_allclose(env.poses[:, :2], cameras[:, :2] * 2.0, rtol=1e-6)
        yaw = np.remainder(cameras[:, 3] + np.pi, 2 * np.pi) - np.pi
        np.testing.assert_allclose(env.poses[:, 2], yaw, atol=1e-6)
        x_min, y_min, x_max, y_max = env.extent
        assert np.all(env.poses[:, 0] > x_min) and np.all(env.poses[:, 1] < y_max)


def test_gqn_import_refuses_other_files(tmp_path):
    from tfrecord.writer import TFRecordWriter

    bad = tmp_path / 'bad.tfrecord'
    writer = TFRecordWriter(str(bad))
    writer.write({'image': (b'x', 'byte')})
    writer.close()
    with pytest.raises(DatasetError, match='not a GQN file'):
        import_gqn([bad], tmp_path / 'out', 'rooms', 'test')
    with pytest.raises(FileNotFoundError):
        import_gqn([tmp_path / 'missing.tfrecord'], tmp_path / 'out', 'rooms', 'test')
