"""Kidnap recovery: the evidence averages, the share they give, the injected particles."""

import math

from dmn_localization.core import particle_filter as pf
from dmn_localization.runtime.recovery import RecoveryRates, RecoverySettingsError
import pytest
import torch


def test_the_share_grows_when_the_evidence_drops_and_is_zero_when_off():
    rates = RecoveryRates(alpha_slow=0.01, alpha_fast=0.5)
    shares = [rates.update(2.0) for _ in range(30)]
    assert max(shares) == pytest.approx(0.0, abs=1e-9)  # steady evidence: nothing
    kidnapped = [rates.update(2.0 - 5.0) for _ in range(3)]
    assert 0.4 < kidnapped[0] < kidnapped[-1] < 1.0
    # evidence back to its old level: the fast average catches up, the share falls again
    recovered = [rates.update(2.0) for _ in range(20)]
    assert recovered[-1] == pytest.approx(0.0, abs=1e-3)
    off = RecoveryRates()
    assert not off.enabled and off.update(-100.0) == 0.0 and off.update(100.0) == 0.0
    huge = RecoveryRates(0.1, 0.5)
    huge.update(900.0)
    assert math.isfinite(huge.update(850.0))  # log space: no overflow


def test_inconsistent_rates_are_refused_with_their_names():
    with pytest.raises(RecoverySettingsError, match='recovery_alpha_slow .* below'):
        RecoveryRates(alpha_slow=0.5, alpha_fast=0.1)
    with pytest.raises(RecoverySettingsError, match='recovery_alpha_fast must be in'):
        RecoveryRates(alpha_slow=0.1, alpha_fast=2.0)


def test_injected_particles_are_uniform_over_the_area_with_the_mean_weight():
    gen = torch.Generator().manual_seed(0)
    belief = pf.gaussian_belief(torch.zeros(2, 3), (0.01, 0.01, 0.01), 400, gen)
    area = torch.tensor([[0.5, 0.5, 1.0, 1.0]] * 2)
    out = pf.inject_uniform(belief, 100, area, gen)
    far = out.particles[..., 0] > 0.4
    assert far.sum(1).tolist() == [100, 100]
    inside = out.particles[far]
    assert bool(((inside[:, :2] >= 0.5) & (inside[:, :2] <= 1.0)).all())
    torch.testing.assert_close(out.weights.sum(1), torch.ones(2))
    assert pf.inject_uniform(belief, 0, area, gen) is belief
