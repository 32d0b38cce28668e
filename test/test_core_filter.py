"""The particle filter with an oracle observation model, soft resampling, statistics."""

import math

from dmn_localization.core import geometry as g, particle_filter as pf
from dmn_localization.core.inference import FilterSettings, maybe_resample
import torch

SQUARE = torch.tensor([[-1.0, -1.0, 1.0, 1.0]])


def oracle_log_likelihood(particles, truth, sigma=0.15, sigma_yaw=0.4):
    """Log-likelihood of a Gaussian around the true pose ``(B, 3)``: ``(B, K)``."""
    d = particles - truth[:, None]
    return -(d[..., 0] ** 2 + d[..., 1] ** 2) / (2 * sigma ** 2) - (
        g.wrap_angle(d[..., 2]) ** 2) / (2 * sigma_yaw ** 2)


def run_oracle_filter(truth_path, motions, belief, settings, gen):
    """Filter a path ``(B, T, 3)`` with the oracle; return the estimates ``(B, T, 3)``."""
    estimates = []
    for step in range(truth_path.shape[1]):
        belief = pf.transition(belief, motions[:, step], settings.transition_noise, gen)
        belief = pf.update(belief, oracle_log_likelihood(belief.particles, truth_path[:, step]))
        estimates.append(pf.estimate(belief))
        belief = maybe_resample(belief, settings, gen)
    return torch.stack(estimates, 1)


def random_walk(batch, steps, gen):
    """Return a path ``(B, T, 3)`` inside [-0.8, 0.8]^2 and its odometry ``(B, T, 3)``."""
    start = torch.rand(batch, 3, generator=gen) * torch.tensor([1.6, 1.6, 2 * math.pi]) - \
        torch.tensor([0.8, 0.8, math.pi])
    poses, motions = [start], [torch.zeros(batch, 3)]
    for _ in range(steps - 1):
        motion = torch.stack([torch.full((batch,), 0.05), torch.zeros(batch),
                              (torch.rand(batch, generator=gen) - 0.5) * 0.6], -1)
        nxt = g.compose(poses[-1], motion)
        nxt[:, :2] = nxt[:, :2].clamp(-0.9, 0.9)
        motions.append(g.relative(poses[-1], nxt))
        poses.append(nxt)
    return torch.stack(poses, 1), torch.stack(motions, 1)


def test_global_localization_converges_within_five_steps():
    gen = torch.Generator().manual_seed(1)
    batch = 16
    path, motions = random_walk(batch, 5, gen)
    belief = pf.uniform_belief(SQUARE.expand(batch, 4), 2048, gen)
    settings = FilterSettings(num_particles=2048, transition_noise=(0.01, 0.01, 0.02))
    est = run_oracle_filter(path, motions, belief, settings, gen)
    err = ((est[:, -1, :2] - path[:, -1, :2]) ** 2).sum(-1)
    assert torch.all(err < 0.01), err
    yaw_err = g.wrap_angle(est[:, -1, 2] - path[:, -1, 2]).abs()
    assert torch.all(yaw_err < 0.4), yaw_err  # oracle yaw sigma 0.4, 5 updates: ~0.18 std


def test_tracking_with_noisy_odometry():
    gen = torch.Generator().manual_seed(2)
    batch, steps = 8, 40
    path, motions = random_walk(batch, steps, gen)
    noisy = motions + torch.randn(motions.shape, generator=gen) * torch.tensor([0.01, 0.01, 0.03])
    belief = pf.gaussian_belief(path[:, 0], pf.TRACKING_STD, 256, gen)
    settings = FilterSettings(num_particles=256, transition_noise=(0.02, 0.02, 0.05))
    est = run_oracle_filter(path, noisy, belief, settings, gen)
    err = ((est[..., :2] - path[..., :2]) ** 2).sum(-1).sqrt()
    assert err[:, 5:].mean() < 0.08, err.mean(0)
    # dead reckoning with the same noisy odometry drifts away: the filter does better
    dead = [path[:, 0]]
    for step in range(1, steps):
        dead.append(g.compose(dead[-1], noisy[:, step]))
    dead_err = ((torch.stack(dead, 1)[..., :2] - path[..., :2]) ** 2).sum(-1).sqrt()
    assert err[:, -10:].mean() < dead_err[:, -10:].mean()


def test_soft_resampling_keeps_the_weighted_mean_unbiased():
    gen = torch.Generator().manual_seed(3)
    particles = torch.randn(1, 64, 3, generator=gen, dtype=torch.float64)
    particles[..., 2] = g.wrap_angle(particles[..., 2] * 0.3)
    log_w = pf.normalize_log_weights(torch.randn(1, 64, generator=gen, dtype=torch.float64) * 2)
    belief = pf.Belief(particles.expand(4000, -1, -1), log_w.expand(4000, -1))
    target = (belief.weights[0, :, None] * particles[0]).sum(0)
    for alpha in (0.5, 0.8):
        resampled = pf.soft_resample(belief, alpha, gen)
        means = (resampled.weights[..., None] * resampled.particles).sum(1)  # (4000, 3)
        stderr = means.std(0) / math.sqrt(means.shape[0])
        z = ((means.mean(0) - target) / stderr).abs()
        assert torch.all(z < 4.0), (alpha, z)
    # hard resampling, by contrast, gives equal weights: the estimate would come only from
    # the particle positions; soft resampling keeps importance weights different from 1/K
    soft = pf.soft_resample(belief, 0.5, gen)
    assert soft.weights.std() > 0


def test_resampling_only_when_sample_size_is_low():
    gen = torch.Generator().manual_seed(4)
    uniform = pf.uniform_belief(SQUARE.expand(2, 4), 100, gen)
    peaked_logw = torch.full((2, 100), -30.0)
    peaked_logw[:, 0] = 0.0
    peaked = pf.Belief(uniform.particles, pf.normalize_log_weights(peaked_logw))
    mixed = pf.Belief(uniform.particles,
                      torch.stack([uniform.log_weights[0], peaked.log_weights[1]]))
    settings = FilterSettings(num_particles=100, soft_resample_alpha=1.0)
    out = maybe_resample(mixed, settings, gen)
    assert torch.equal(out.particles[0], uniform.particles[0])  # ESS 100: untouched
    assert torch.allclose(out.particles[1], uniform.particles[1, :1].expand(100, 3))


def test_covariance_uses_circular_yaw():
    particles = torch.tensor([[[0.0, 0.0, math.pi - 0.05], [0.0, 0.0, -math.pi + 0.05]]])
    belief = pf.Belief(particles, pf.normalize_log_weights(torch.zeros(1, 2)))
    cov = pf.covariance(belief)
    assert cov.shape == (1, 3, 3)
    torch.testing.assert_close(cov[0, 2, 2], torch.tensor(0.05 ** 2))
    assert abs(abs(float(pf.estimate(belief)[0, 2])) - math.pi) < 1e-5
    xy = torch.tensor([[[1.0, 0.0, 0.0], [-1.0, 2.0, 0.0]]])
    cov_xy = pf.covariance(pf.Belief(xy, pf.normalize_log_weights(torch.zeros(1, 2))))
    torch.testing.assert_close(cov_xy[0, :2, :2], torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))


def test_effective_sample_size():
    assert math.isclose(float(pf.effective_sample_size(torch.full((1, 50), -math.log(50)))), 50,
                        rel_tol=1e-5)


def test_the_likelihood_scale_sharpens_the_update_like_a_lower_temperature():
    from dmn_localization.core.inference import filter_step

    class Oracle(torch.nn.Module):
        """An observation model that scores particles against a fixed true pose."""

        def observe(self, map_ctx, query_ctx, particles, fast=True):
            return oracle_log_likelihood(particles, map_ctx)[..., None]

    gen = torch.Generator().manual_seed(3)
    truth = torch.tensor([[0.2, -0.3, 0.5]])
    belief = pf.uniform_belief(SQUARE, 256, gen)
    still = torch.zeros(1, 3)
    posts = {}
    for scale in (1.0, 2.0):
        settings = FilterSettings(num_particles=256, transition_noise=(0.0, 0.0, 0.0),
                                  likelihood_scale=scale)
        posts[scale] = filter_step(Oracle(), truth, None, belief, still, settings, gen)
    assert torch.equal(posts[1.0].particles, posts[2.0].particles)
    expected = torch.log_softmax(
        belief.log_weights + 2.0 * oracle_log_likelihood(belief.particles, truth), -1)
    assert torch.allclose(posts[2.0].log_weights, expected, atol=1e-5)
    assert not torch.allclose(posts[1.0].log_weights, expected, atol=1e-3)
    ess = {s: float(pf.effective_sample_size(p.log_weights)) for s, p in posts.items()}
    assert ess[2.0] < ess[1.0]  # sharper: fewer particles carry the weight


def _two_clusters(heavy_share, gen, count=400):
    """Return a belief split over two places, (0.6, 0.2) with ``heavy_share`` of the weight."""
    near = torch.tensor([0.6, 0.2, 1.0]) + 0.03 * torch.randn(count, 3, generator=gen)
    far = torch.tensor([-0.5, -0.4, -2.0]) + 0.03 * torch.randn(count, 3, generator=gen)
    log_w = torch.cat([torch.full((count,), math.log(heavy_share)),
                       torch.full((count,), math.log(1 - heavy_share))])
    return pf.Belief(torch.cat([near, far])[None], pf.normalize_log_weights(log_w[None]))


def test_the_mode_estimate_picks_the_heavier_place_where_the_mean_falls_between():
    gen = torch.Generator().manual_seed(0)
    belief = _two_clusters(0.65, gen)
    mode = pf.mode_estimate(belief, 0.1)[0]
    near = belief.particles[0, :400]
    torch.testing.assert_close(mode[:2], near[:, :2].mean(0), atol=0.01, rtol=0)
    assert abs(float(mode[2]) - 1.0) < 0.02
    mean = pf.estimate(belief)[0]
    assert float(torch.dist(mean[:2], mode[:2])) > 0.3  # the mean lies between the places
    # the heavier place wins, whichever it is and whatever order the particles are in
    other = _two_clusters(0.35, gen)
    torch.testing.assert_close(pf.mode_estimate(other, 0.1)[0, :2],
                               other.particles[0, 400:, :2].mean(0), atol=0.01, rtol=0)
    flipped = pf.Belief(other.particles.flip(1), other.log_weights.flip(1))
    torch.testing.assert_close(pf.mode_estimate(flipped, 0.1), pf.mode_estimate(other, 0.1))


def test_the_mode_estimate_of_one_gaussian_place_is_its_mean():
    gen = torch.Generator().manual_seed(1)
    belief = pf.gaussian_belief(torch.tensor([[0.3, -0.2, 3.0], [-0.7, 0.1, -1.0]]),
                                (0.05, 0.05, 0.1), 2000, gen)
    torch.testing.assert_close(pf.mode_estimate(belief, 0.3), pf.estimate(belief),
                               atol=0.005, rtol=0)
