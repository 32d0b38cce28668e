"""
Kidnap recovery as in augmented MCL (Thrun et al., AMCL's ``recovery_alpha_slow/fast``).

A short- and a long-term average of the per-frame evidence (the likelihood of the
image averaged over the belief) are kept; when the short-term one falls below the
long-term one, the belief no longer explains the images, and each resampling replaces
a share ``max(0, 1 - w_fast / w_slow)`` of the particles with particles drawn uniformly
over the map. Averages are kept in log space (learned log-likelihoods can be large).
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Optional


class RecoverySettingsError(ValueError):
    """Inconsistent recovery rates; the message names them."""


@dataclass
class RecoveryRates:
    """The two averages of the evidence; ``alpha_slow = alpha_fast = 0`` turns recovery off."""

    alpha_slow: float = 0.0
    alpha_fast: float = 0.0
    log_slow: Optional[float] = None
    log_fast: Optional[float] = None

    def __post_init__(self) -> None:
        for name in ('alpha_slow', 'alpha_fast'):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise RecoverySettingsError(f'recovery_{name} must be in [0, 1], got '
                                            f'{getattr(self, name)}')
        if self.enabled and not self.alpha_slow < self.alpha_fast:
            raise RecoverySettingsError(
                f'recovery_alpha_slow ({self.alpha_slow}) must be below recovery_alpha_fast '
                f'({self.alpha_fast}); set both to 0 to turn recovery off')

    @property
    def enabled(self) -> bool:
        """Return True unless both rates are 0."""
        return self.alpha_slow > 0.0 or self.alpha_fast > 0.0

    def reset(self) -> None:
        """Forget the averages (a new map or a re-initialized belief)."""
        self.log_slow = self.log_fast = None

    def update(self, evidence: float) -> float:
        """Add a frame's evidence (log mean likelihood); return the share to replace."""
        if not self.enabled:
            return 0.0
        if self.log_slow is None or self.log_fast is None:
            self.log_slow = self.log_fast = evidence
            return 0.0
        self.log_slow = _log_mix(self.log_slow, evidence, self.alpha_slow)
        self.log_fast = _log_mix(self.log_fast, evidence, self.alpha_fast)
        return self.share

    @property
    def share(self) -> float:
        """Return ``max(0, 1 - w_fast / w_slow)`` (0 before the first frame)."""
        if self.log_slow is None or self.log_fast is None:
            return 0.0
        return max(0.0, 1.0 - math.exp(min(0.0, self.log_fast - self.log_slow)))


def _log_mix(log_average: float, log_value: float, alpha: float) -> float:
    """``log((1 - alpha) exp(a) + alpha exp(v))``, stable for large values."""
    if alpha <= 0.0:
        return log_average
    if alpha >= 1.0:
        return log_value
    a, b = math.log1p(-alpha) + log_average, math.log(alpha) + log_value
    high = max(a, b)
    return high + math.log(math.exp(a - high) + math.exp(b - high))
