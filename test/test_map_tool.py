"""dmn_map: build from a bag, merge, publish latched and save from the topic, refuse bad files."""

from dmn_localization.core.checkpoint import save_checkpoint
from dmn_localization.core.maps import ViewEmbeddingMap
from dmn_localization.core.models import build_model, config_for
from dmn_localization.data.sim_bag import main as sim_bag_main
from dmn_localization.tools.map_tool import main as map_main
import pytest
import torch


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """Build a map file from a short simulated bag with a random-weight model."""
    root = tmp_path_factory.mktemp('maptool')
    assert sim_bag_main(['--duration', '1', '--contexts', '4', '--out', str(root / 'bag')]) == 0
    torch.manual_seed(0)
    save_checkpoint(root / 'dmn.pt', build_model(config_for('dmn-pf')), [0, 0, 8, 8])
    assert map_main(['build', '--bag', str(root / 'bag'), '--model', str(root / 'dmn.pt'),
                     '--out', str(root / 'a.map')]) == 0
    return root


def test_build_and_merge(built):
    the_map = ViewEmbeddingMap.load(built / 'a.map')
    assert the_map.num_views == 4
    assert map_main(['merge', str(built / 'a.map'), str(built / 'a.map'), '--out',
                     str(built / 'b.map')]) == 0
    merged = ViewEmbeddingMap.load(built / 'b.map')
    assert merged.num_views == 8 and torch.equal(merged.embeddings[4:], the_map.embeddings)


def test_bad_files_are_refused(built, tmp_path, capsys):
    data = (built / 'a.map').read_bytes()
    (tmp_path / 'cut.map').write_bytes(data[:len(data) // 2])
    assert map_main(['merge', str(tmp_path / 'cut.map'), '--out', str(tmp_path / 'x')]) == 2
    assert 'not a readable map' in capsys.readouterr().err
    assert map_main(['publish', str(tmp_path / 'missing.map')]) == 2


@pytest.mark.ros
def test_publish_and_save_round_trip_exactly(built, start_process, tmp_path):
    server = start_process('dmn_map', 'publish', str(built / 'a.map'), '--topic',
                           '/shared/view_embedding_map')
    saver = start_process('dmn_map', 'save', '--topic', '/shared/view_embedding_map',
                          '--timeout', '60', '--out', str(tmp_path / 'saved.map'))
    assert saver.proc.wait(timeout=90) == 0, (saver.log(), server.log())
    original = ViewEmbeddingMap.load(built / 'a.map')
    saved = ViewEmbeddingMap.load(tmp_path / 'saved.map')
    assert torch.equal(saved.embeddings, original.embeddings)
    torch.testing.assert_close(saved.poses, original.poses, atol=1e-5, rtol=0)
    assert (saved.fingerprint, saved.frame_id) == (original.fingerprint, original.frame_id)
    assert server.alive()
