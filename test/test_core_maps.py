"""View-embedding maps and checkpoints: build, extend, merge, serialize, refuse bad files."""

from dmn_localization.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dmn_localization.core.maps import (MapError, MapFileError, MapFingerprintError,
                                        ViewEmbeddingMap)
from dmn_localization.core.models import build_model, config_for, encoder_fingerprint
import numpy as np
import pytest
import torch

EXTENT = [0.0, 0.0, 8.0, 8.0]


def camera_images(count, seed, size=(48, 64)):
    """Return ``count`` random RGB uint8 camera images of another size than the model's."""
    return np.random.default_rng(seed).integers(0, 256, (count, *size, 3), dtype=np.uint8)


def poses(count, seed):
    """Return random poses ``(count, 3)`` in metres inside EXTENT."""
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(0, 8, count), rng.uniform(0, 8, count),
                            rng.uniform(-np.pi, np.pi, count)]).astype(np.float32)


@pytest.fixture
def model():
    """Return a DMN with fixed random weights."""
    torch.manual_seed(0)
    return build_model(config_for('dmn-pf')).eval()


def test_build_extend_and_merge(model):
    first = ViewEmbeddingMap.build(model, camera_images(4, 1), poses(4, 1), EXTENT)
    assert first.num_views == 4 and first.embeddings.shape == (4, 32, 8, 8)
    assert first.fingerprint == encoder_fingerprint(model) and first.model_name == 'dmn-pf'
    bigger = first.extend(model, camera_images(3, 2), poses(3, 2))
    assert bigger.num_views == 7
    torch.testing.assert_close(bigger.embeddings[:4], first.embeddings)
    alone = ViewEmbeddingMap.build(model, camera_images(3, 2), poses(3, 2), EXTENT)
    torch.testing.assert_close(bigger.embeddings[4:], alone.embeddings, atol=1e-6, rtol=0)
    torch.testing.assert_close(first.merge(alone).poses, bigger.poses)
    normalized = first.normalized_poses()
    assert torch.all(normalized[:, :2].abs() <= 1.0)


def test_bad_views_are_refused(model):
    with pytest.raises(MapError, match='need N images'):
        ViewEmbeddingMap.build(model, camera_images(3, 1), poses(2, 1), EXTENT)
    bad = poses(2, 1)
    bad[0, 0] = np.nan
    with pytest.raises(MapError, match='finite'):
        ViewEmbeddingMap.build(model, camera_images(2, 1), bad, EXTENT)


def test_another_encoder_cannot_read_or_merge(model):
    the_map = ViewEmbeddingMap.build(model, camera_images(2, 1), poses(2, 1), EXTENT)
    torch.manual_seed(1)
    other = build_model(config_for('dmn-pf'))
    with pytest.raises(MapFingerprintError, match=the_map.fingerprint):
        the_map.check_compatible(other)
    other_map = ViewEmbeddingMap.build(other, camera_images(2, 1), poses(2, 1), EXTENT)
    with pytest.raises(MapFingerprintError):
        the_map.merge(other_map)
    the_map.check_compatible(model)  # its own encoder may


def test_save_load_round_trip_is_exact(model, tmp_path):
    the_map = ViewEmbeddingMap.build(model, camera_images(5, 3), poses(5, 3), EXTENT, 'world')
    path = tmp_path / 'map.pt'
    the_map.save(path)
    loaded = ViewEmbeddingMap.load(path)
    assert torch.equal(loaded.embeddings, the_map.embeddings)
    assert torch.equal(loaded.poses, the_map.poses)
    assert (loaded.fingerprint, loaded.frame_id, loaded.model_name) == (
        the_map.fingerprint, 'world', 'dmn-pf')


def test_corrupted_truncated_and_foreign_map_files(model, tmp_path):
    the_map = ViewEmbeddingMap.build(model, camera_images(2, 3), poses(2, 3), EXTENT)
    data = the_map.to_dict()
    data['embeddings'] = data['embeddings'].clone()
    data['embeddings'][0, 0, 0, 0] += 1.0
    corrupted = tmp_path / 'corrupted.pt'
    torch.save(data, corrupted)
    with pytest.raises(MapFileError, match='checksum'):
        ViewEmbeddingMap.load(corrupted)
    good = tmp_path / 'good.pt'
    the_map.save(good)
    truncated = tmp_path / 'truncated.pt'
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(MapFileError, match='not a readable map'):
        ViewEmbeddingMap.load(truncated)
    foreign = tmp_path / 'foreign.pt'
    torch.save({'format': 'something else'}, foreign)
    with pytest.raises(MapFileError, match='not a dmn_localization'):
        ViewEmbeddingMap.load(foreign)


@pytest.mark.parametrize('name', ['dmn-pf', 'image-regression', 'vector-pf'])
def test_checkpoint_rebuilds_the_model(name, tmp_path):
    torch.manual_seed(4)
    model = build_model(config_for(name, image_size=(40, 40))).eval()
    path = tmp_path / 'model.pt'
    save_checkpoint(path, model, EXTENT, {'seed': 4})
    loaded = load_checkpoint(path)
    assert loaded.name == name and loaded.model.config == model.config
    assert list(loaded.extent) == EXTENT and loaded.metadata == {'seed': 4}
    assert loaded.fingerprint == encoder_fingerprint(model)
    the_map = ViewEmbeddingMap.build(model, camera_images(3, 5), poses(3, 5), EXTENT)
    the_map.check_compatible(loaded.model)
    for a, b in zip(model.state_dict().values(), loaded.model.state_dict().values()):
        assert torch.equal(a, b)


def test_bad_checkpoints_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match='no such checkpoint'):
        load_checkpoint(tmp_path / 'missing.pt')
    junk = tmp_path / 'junk.pt'
    junk.write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='not a readable checkpoint'):
        load_checkpoint(junk)
    torch.manual_seed(5)
    model = build_model(config_for('dmn-pf'))
    path = tmp_path / 'model.pt'
    save_checkpoint(path, model, EXTENT)
    data = torch.load(path, weights_only=True)
    data['state_dict']['view_encoder.net.0.weight'] += 0.5
    torch.save(data, path)
    with pytest.raises(CheckpointError, match='corrupted'):
        load_checkpoint(path)


def test_dmn_maps_of_different_extents_merge_over_the_union(model):
    a = ViewEmbeddingMap.build(model, camera_images(2, 1), poses(2, 1), [0.0, 0.0, 8.0, 8.0])
    b = ViewEmbeddingMap.build(model, camera_images(3, 2), poses(3, 2), [-2.0, 1.0, 6.0, 12.0])
    merged = a.merge(b)
    assert merged.num_views == 5
    assert merged.extent.tolist() == [-2.0, 0.0, 8.0, 12.0]
    torch.testing.assert_close(merged.embeddings[2:], b.embeddings)  # poses do not enter
    torch.manual_seed(0)
    latent = build_model(config_for('image-pf')).eval()
    c = ViewEmbeddingMap.build(latent, camera_images(2, 1), poses(2, 1), [0.0, 0.0, 8.0, 8.0])
    d = ViewEmbeddingMap.build(latent, camera_images(2, 2), poses(2, 2), [0.0, 0.0, 9.0, 9.0])
    with pytest.raises(MapError, match='different extents'):
        c.merge(d)
    assert c.merge(c).num_views == 4


def test_a_map_knows_its_own_views_again(model):
    the_map = ViewEmbeddingMap.build(model, camera_images(4, 1), poses(4, 1), EXTENT)
    again = ViewEmbeddingMap.build(model, camera_images(4, 1), poses(4, 1), EXTENT)
    assert the_map.same_map(again) and again.same_map(the_map)
    half = ViewEmbeddingMap(again.embeddings.half().float(), again.poses, again.extent,
                            again.model_name, again.fingerprint)  # as sent in float16
    assert the_map.same_map(half)
    shuffled = ViewEmbeddingMap(again.embeddings.flip(0), again.poses.flip(0), again.extent,
                                again.model_name, again.fingerprint)
    assert the_map.same_map(shuffled)  # the order of the views does not matter
    part = ViewEmbeddingMap.build(model, camera_images(4, 1)[:2], poses(4, 1)[:2], EXTENT)
    assert the_map.has_views_of(part) and not part.has_views_of(the_map)
    assert not the_map.same_map(part)
    images = camera_images(4, 1)
    images[3] = 255 - images[3]  # one view seen differently at the same pose
    assert not the_map.same_map(ViewEmbeddingMap.build(model, images, poses(4, 1), EXTENT))
    moved = poses(4, 1)
    moved[0, 0] += 0.01  # one view a centimetre away
    assert not the_map.same_map(ViewEmbeddingMap.build(model, camera_images(4, 1), moved,
                                                       EXTENT))
    at_pi, at_minus_pi = poses(4, 1), poses(4, 1)
    at_pi[0, 2], at_minus_pi[0, 2] = np.pi, -np.pi  # the same heading
    assert ViewEmbeddingMap.build(model, camera_images(4, 1), at_pi, EXTENT).same_map(
        ViewEmbeddingMap.build(model, camera_images(4, 1), at_minus_pi, EXTENT))
    wider = ViewEmbeddingMap.build(model, camera_images(4, 1), poses(4, 1), [0, 0, 9.0, 8.0])
    assert the_map.has_views_of(wider) and not the_map.same_map(wider)
    assert the_map.contains(part) and not the_map.contains(wider)  # merging would grow it
    assert wider.contains(the_map)
    other_frame = ViewEmbeddingMap.build(model, camera_images(4, 1), poses(4, 1), EXTENT,
                                         'world')
    assert not the_map.has_views_of(other_frame)
    torch.manual_seed(1)
    other = build_model(config_for('dmn-pf')).eval()
    assert not the_map.has_views_of(ViewEmbeddingMap.build(other, camera_images(4, 1),
                                                           poses(4, 1), EXTENT))
