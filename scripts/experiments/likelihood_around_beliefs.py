"""
Score the estimates a localizer is sure of, right and wrong ones, at and around them.

    python scripts/experiments/likelihood_around_beliefs.py [--seeds 20] [--first-seed 0]
        [--model models/dmn-pf-rooms.pt] [--set FIELD=VALUE ...]

Replays the kidnap benchmark's runs (``dmn_sim_bag --domain rooms --seed S --duration 60
--kidnap-at 30``) offline with the node's defaults and, at every updated frame, scores
the frame with the model's own log-likelihood (unscaled) at the estimate, at the true
pose and on rings of poses 1 m and 1.5 m around the estimate (its heading, 16
directions). Prints, for the frames reported ``converged`` within 0.5 m of the truth and
for those more than 1 m off (outside the 2 s after the kidnap), the 10th, 50th and 90th
percentiles of: the truth's score minus the estimate's, and the estimate's score minus
the mean score on each ring (how peaked the likelihood is about the estimate).
"""

import argparse
import math
from pathlib import Path
import tempfile

from dmn_localization.bench.kidnap_bench import (localizer_settings, setting_overrides,
                                                 write_bag)
from dmn_localization.core import geometry
from dmn_localization.core.camera import crop_to_model
from dmn_localization.core.checkpoint import load_checkpoint
from dmn_localization.core.preprocessing import preprocess_images
from dmn_localization.replay.offline import BagTopics, replay
from dmn_localization.runtime.localizer import Localizer, LocalizerSettings
import numpy as np
import torch

RINGS = (1.0, 1.5)
DIRECTIONS = np.linspace(0.0, 2 * math.pi, 16, endpoint=False)


class RecordingLocalizer(Localizer):
    """The node's runtime, keeping each updated frame's query, estimate and state."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.frames = []

    def process_frame(self, stamp, image):
        """Process the frame as the node does; keep what the scoring needs."""
        result = super().process_frame(stamp, image)
        if result.updated:
            cropped = crop_to_model(image, self.camera, self.loaded.camera)
            query = self.model.prepare_query(
                preprocess_images(cropped[None], self.model.config, self.device))
            self.frames.append((stamp, query, result.pose.copy(), result.state))
        return result


def score_run(loaded, bag, seed, overrides):
    """Return ``(seconds from start, error m, state, truth - estimate, [estimate - ring])``."""
    defaults = LocalizerSettings()  # the node's recovery rates
    rates = (defaults.recovery_alpha_slow, defaults.recovery_alpha_fast)
    loc = RecordingLocalizer(loaded, 'cpu', localizer_settings(seed, rates, overrides))
    result = replay(bag, loc, BagTopics(), progress=False)
    truth_stamps, truth = np.array(result.truth_stamps), np.array(result.truth)
    rows = []
    with torch.no_grad():
        for stamp, query, pose, state in loc.frames:
            true_pose = truth[int(np.argmin(abs(truth_stamps - stamp)))]
            poses = [pose, true_pose] + [
                [pose[0] + r * math.cos(a), pose[1] + r * math.sin(a), pose[2]]
                for r in RINGS for a in DIRECTIONS]
            normalized = geometry.normalize_poses(
                torch.tensor(np.array(poses), dtype=torch.float32), loc.map.extent)
            scores = loaded.model.observe(loc.map_context, query, normalized[None])[0, :, 0]
            rings = scores[2:].reshape(len(RINGS), -1)
            ring_means = torch.logsumexp(rings, -1) - math.log(rings.shape[-1])
            rows.append((stamp - loc.frames[0][0], float(np.hypot(*(pose[:2] - true_pose[:2]))),
                         state, float(scores[1] - scores[0]),
                         (scores[0] - ring_means).tolist()))
    return rows


def main():
    """Replay the runs, score them, print the percentiles."""
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--seeds', type=int, default=20)
    p.add_argument('--first-seed', type=int, default=0)
    p.add_argument('--model', type=Path, default=Path('models/dmn-pf-rooms.pt'))
    p.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE')
    a = p.parse_args()
    torch.set_num_threads(1)
    loaded = load_checkpoint(a.model)
    overrides = setting_overrides(a.set)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(a.first_seed, a.first_seed + a.seeds):
            bag = Path(tmp) / f'rooms_{seed}'
            if not write_bag(bag, 'rooms', seed, 60.0, 30.0):
                raise SystemExit(2)
            rows += score_run(loaded, bag, seed, overrides)
    groups = {'converged, within 0.5 m': lambda r: r[1] < 0.5,
              'converged, over 1 m off': lambda r: r[1] > 1.0 and not 30.0 <= r[0] < 32.0}
    for name, keep in groups.items():
        chosen = [r for r in rows if r[2] == 'converged' and keep(r)]
        print(f'{name}: {len(chosen)} frames')
        columns = {'truth - estimate': [r[3] for r in chosen]}
        columns.update({f'estimate - {radius:g} m ring': [r[4][i] for r in chosen]
                        for i, radius in enumerate(RINGS)})
        for label, values in columns.items():
            low, mid, high = np.percentile(values, [10, 50, 90])
            print(f'  {label:22s} {low:6.2f} {mid:6.2f} {high:6.2f}')
        higher = np.mean([r[3] > 0 for r in chosen])
        print(f'  the truth scores higher than the estimate on {higher:.0%} of them')


if __name__ == '__main__':
    main()
