"""The weights shipped in models/ load as the node loads them and keep their measured level."""

import json
from pathlib import Path

from dmn_localization.core.checkpoint import load_checkpoint
from dmn_localization.learning.model_card import regression_success
import pytest

MODELS = Path(__file__).resolve().parents[1] / 'models'
CARDS = sorted(MODELS.glob('*.json'))
#: Allowed drop below the success measured when the model was shipped (60 episodes:
#: about 6 points of standard error; the check itself is deterministic on one machine).
MARGIN = 0.10


@pytest.mark.parametrize('card', CARDS, ids=[c.stem for c in CARDS])
def test_shipped_model_keeps_its_regression_level(card, tmp_path):
    data = json.loads(card.read_text())
    weights = MODELS / f'{data["name"]}.pt'
    loaded = load_checkpoint(weights)
    assert loaded.fingerprint == data['fingerprint'] and loaded.name == data['model']
    check = data['regression_check']
    success = regression_success(weights, check['domain'], tmp_path)
    assert success >= check['success'] - MARGIN, (success, check['success'])


def test_every_shipped_weight_file_has_a_model_card():
    for weights in MODELS.glob('*.pt'):
        assert (weights.with_suffix('.json')).exists() and weights.with_suffix('.md').exists()
