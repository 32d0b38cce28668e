"""DMN and every baseline: fast == direct, egocentric invariance, gradients, learning."""

import subprocess
import sys

from dmn_localization.core import geometry as g, particle_filter as pf
from dmn_localization.core.inference import (FilterSettings, InitialBelief, localize,
                                             regression_step)
from dmn_localization.core.losses import pose_loss
from dmn_localization.core.models import (build_model, config_for, count_parameters,
                                          LEARNED_MODELS, UnknownModelError)
import pytest
import torch

PF_MODELS = [n for n in LEARNED_MODELS if n.endswith('-pf')]
#: every learned model, and DMN with its egocentric value branch ("+ego"), and that with
#: the particle's global pose ("+global") or heading ("+heading"), and DMN with per-position
#: attention ("+pos"), and DMN whose attention starts with the heading prior ("+prior"),
#: and DMN with the pose-conditioned match branch ("+match"), finer Fourier features ("+fine")
VARIANTS = list(LEARNED_MODELS) + ['dmn-pf+ego', 'dmn-regression+ego', 'dmn-pf+ego+global',
                                   'dmn-pf+pos', 'dmn-regression+pos', 'dmn-pf+pos+score',
                                   'dmn-pf+ego+heading', 'dmn-pf+prior', 'dmn-pf+match+prior',
                                   'dmn-regression+match', 'dmn-pf+match+fine']
OPTIONS = {'ego': {'ego_value_dim': 8}, 'global': {'global_pose': True},
           'heading': {'global_heading': True},
           'pos': {'position_attention': True, 'match_score': False},
           'score': {'match_score': True}, 'prior': {'attention_prior': 2.0},
           'match': {'pose_match_dim': 16, 'pose_match_grid': (2, 2)},
           'fine': {'pose_match_min_wavelength': 0.125}}


def make(name):
    """Build model ``name`` of :data:`VARIANTS` at its default config."""
    base, *options = name.split('+')
    return build_model(config_for(base, **{k: v for o in options for k, v in OPTIONS[o].items()}))


def episode(batch=3, views=4, particles=24, seed=0, size=(32, 32)):
    """Return random context images/poses, query images and particles."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, views, 3, *size, generator=gen)
    poses = torch.rand(batch, views, 3, generator=gen) * 2 - 1
    poses[..., 2] *= torch.pi
    query = torch.randn(batch, 3, *size, generator=gen)
    parts = torch.rand(batch, particles, 3, generator=gen) * 2 - 1
    parts[..., 2] *= torch.pi
    return images, poses, query, parts


def outputs(model, images, poses, query, parts, fast):
    """Run the observation model once."""
    map_ctx = model.prepare_map(model.embed_views(images, poses), poses)
    return model.observe(map_ctx, model.prepare_query(query), parts, fast=fast)


@pytest.mark.parametrize('name', VARIANTS)
def test_fast_path_equals_direct_path_with_gradients(name):
    torch.manual_seed(0)
    model = make(name)
    data = episode()
    grads = {}
    results = {}
    for fast in (True, False):
        model.zero_grad()
        out = outputs(model, *data, fast=fast)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results[fast] = out.detach()
        grads[fast] = {k: p.grad.clone() for k, p in model.named_parameters()}
    assert results[True].shape == (3, 24, model.config.out_dim)
    torch.testing.assert_close(results[True], results[False], atol=1e-4, rtol=0)
    for key, grad in grads[True].items():
        torch.testing.assert_close(grad, grads[False][key], atol=1e-4, rtol=1e-3,
                                   msg=lambda m: f'{key}: {m}')


@pytest.mark.parametrize('name', [v for v in VARIANTS
                                  if v.startswith('dmn-') and 'global' not in v
                                  and 'heading' not in v])
@pytest.mark.parametrize('fast', [True, False])
def test_dmn_is_invariant_to_moving_the_whole_world(name, fast):
    torch.manual_seed(1)
    model = make(name).double()
    images, poses, query, parts = (x.double() for x in episode(seed=1))
    moved = torch.tensor([0.7, -0.4, 2.5], dtype=torch.float64)
    out = outputs(model, images, poses, query, parts, fast)
    out_moved = outputs(model, images, g.compose(moved, poses), query,
                        g.compose(moved, parts), fast)
    # log-likelihoods, and a regression's offset in the particle's own frame
    torch.testing.assert_close(out_moved, out, atol=1e-9, rtol=0)
    # while the latent image map and DMN with global_pose, which see global poses, are not
    for other in (build_model(config_for('image-pf')).double(), make('dmn-pf+ego+global')):
        other = other.double()
        base = outputs(other, images, poses, query, parts, fast)
        assert not torch.allclose(base, outputs(other, images, g.compose(moved, poses),
                                                query, g.compose(moved, parts), fast))


@pytest.mark.parametrize('relative', [True, False])
def test_dmn_regression_estimate_moves_with_the_world_when_its_offset_is_relative(relative):
    # DMN sees the map only from the belief's own frame, so its offset must be read in that
    # frame: then moving the world moves the estimate with it; added in the map frame
    # (checkpoints before relative_offset), the x-y part cannot follow a turn
    torch.manual_seed(3)
    model = build_model(config_for('dmn-regression', relative_offset=relative)).double()
    images, poses, query, parts = (x.double() for x in episode(seed=3))
    start, motion = parts[:, 0], torch.tensor([[0.1, 0.05, 0.3]], dtype=torch.float64)
    moved = torch.tensor([0.7, -0.4, 2.5], dtype=torch.float64)

    def estimate(view_poses, pose):
        map_ctx = model.prepare_map(model.embed_views(images, view_poses), view_poses)
        return regression_step(model, map_ctx, model.prepare_query(query), pose,
                               motion.expand_as(pose))

    expected, got = g.compose(moved, estimate(poses, start)), estimate(
        g.compose(moved, poses), g.compose(moved, start))
    assert model.observe(model.prepare_map(model.embed_views(images, poses), poses),
                         model.prepare_query(query), start[:, None])[..., :2].abs().min() > 0
    same = (torch.allclose(got[:, :2], expected[:, :2], atol=1e-9)
            and torch.allclose(torch.cos(got[:, 2] - expected[:, 2]),
                               torch.ones(len(got), dtype=torch.float64)))
    assert same is relative


@pytest.mark.parametrize('name', VARIANTS)
def test_gradients_reach_every_parameter_through_soft_resampling(name):
    torch.manual_seed(2)
    model = make(name)
    images, poses, _, _ = episode(batch=2, seed=2)
    gen = torch.Generator().manual_seed(2)
    queries = torch.randn(2, 3, 3, 32, 32, generator=gen)
    truth = torch.rand(2, 3, 3, generator=gen) * 2 - 1
    motions = torch.cat([torch.zeros(2, 1, 3), g.relative(truth[:, :-1], truth[:, 1:])], 1)
    initial = InitialBelief('gaussian', mean=truth[:, 0])
    # threshold above K: every step resamples, so gradients must flow through it
    settings = FilterSettings(num_particles=16, resample_threshold=2.0)
    map_ctx = model.prepare_map(model.embed_views(images, poses), poses)
    result = localize(model, map_ctx, queries, motions, initial, settings, gen,
                      keep_beliefs=True)
    pose_loss(result.estimates[:, -1], truth[:, -1]).backward()
    missing = [k for k, p in model.named_parameters()
               if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f'no gradient reaches {missing}'
    if name.endswith('-pf'):
        weights = result.beliefs[-1].weights
        assert not torch.allclose(weights, torch.full_like(weights, 1 / 16))


@pytest.mark.parametrize('name', VARIANTS)
def test_learning_drives_the_loss_down_on_a_fixed_batch(name):
    torch.manual_seed(3)
    model = make(name)
    gen = torch.Generator().manual_seed(3)
    batch = 8
    images = torch.randn(batch, 4, 3, 32, 32, generator=gen)
    poses = torch.rand(batch, 4, 3, generator=gen) * 2 - 1
    query = torch.randn(batch, 1, 3, 32, 32, generator=gen)
    truth = torch.rand(batch, 3, generator=gen) * 2 - 1
    start = truth + torch.randn(batch, 3, generator=gen) * torch.tensor(pf.TRACKING_STD)
    initial = InitialBelief('gaussian', mean=start)
    settings = FilterSettings(num_particles=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        particles_seed = torch.Generator().manual_seed(0)  # the same particles every step
        map_ctx = model.prepare_map(model.embed_views(images, poses), poses)
        est = localize(model, map_ctx, query, torch.zeros(batch, 1, 3), initial, settings,
                       particles_seed).estimates[:, 0]
        loss = pose_loss(est, truth)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    first, last = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    print(f'{name}: loss {first:.4f} -> {last:.4f}')
    assert last < 0.5 * first, f'{name}: loss {first:.4f} -> {last:.4f}'


def test_parameter_counts_of_baselines_are_within_25_percent_of_dmn():
    reference = count_parameters(build_model(config_for('dmn-pf')))
    for name in LEARNED_MODELS:
        count = count_parameters(build_model(config_for(name)))
        assert abs(count / reference - 1) <= 0.25, (name, count, reference)


@pytest.mark.parametrize('name', ['dmn-pf', 'image-pf', 'vector-regression'])
def test_models_run_on_panoramas(name):
    model = build_model(config_for(name, image_size=(104, 208)))
    out = outputs(model, *episode(batch=1, views=3, particles=5, size=(104, 208)), fast=True)
    assert out.shape == (1, 5, model.config.out_dim) and torch.all(torch.isfinite(out))


def test_unknown_model_name():
    with pytest.raises(UnknownModelError, match='dmn-pf'):
        config_for('dmn-transformer')


@pytest.mark.parametrize('package', ['data', 'messages'])
def test_data_and_message_conversions_import_no_ros_layer(package):
    # data/ writes and reads bags with the conversions of messages/, never the node's layer
    code = (f'import sys, pkgutil, importlib, dmn_localization.{package} as p\n'
            'for m in pkgutil.iter_modules(p.__path__):\n'
            f'    importlib.import_module("dmn_localization.{package}." + m.name)\n'
            'bad = [m for m in sys.modules if m.startswith("dmn_localization.ros")\n'
            '       or m.split(".")[0] == "rclpy"]\n'
            'assert not bad, bad\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_core_imports_no_ros():
    code = ('import sys, pkgutil, importlib, dmn_localization.core as c\n'
            'for m in pkgutil.iter_modules(c.__path__):\n'
            '    importlib.import_module("dmn_localization.core." + m.name)\n'
            'bad = [m for m in sys.modules if m.split(".")[0] in ("rclpy", "sensor_msgs", '
            '"geometry_msgs", "nav_msgs", "std_msgs", "dmn_localization_interfaces")]\n'
            'assert not bad, bad\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_tracking_belief_with_uniform_share_spreads_that_share():
    gen = torch.Generator().manual_seed(0)
    mean = torch.zeros(2, 3)
    bounds = torch.tensor([[-1.0, -1.0, 1.0, 1.0], [-0.5, -1.0, 0.5, 1.0]])
    belief = InitialBelief('gaussian', bounds=bounds, mean=mean,
                           uniform_share=0.25).sample(64, gen)
    assert belief.particles.shape == (2, 64, 3)
    near, far = belief.particles[:, :48], belief.particles[:, 48:]
    # the Gaussian part keeps the tracking spread, the uniform part fills the box and yaw
    assert float(near[..., :2].std()) < 0.45
    assert float(far[0, :, 2].abs().max()) > 2.0
    assert bool((far[1, :, 0].abs() <= 0.5).all())
    assert torch.allclose(belief.weights.sum(-1), torch.ones(2))
    with pytest.raises(ValueError, match='bounds'):
        InitialBelief('gaussian', mean=mean, uniform_share=0.5).sample(8, gen)


def test_dmn_configs_saved_before_match_score_load_without_it():
    from dmn_localization.core.configs import DMNConfig

    legacy = DMNConfig(match_score=False).to_dict()
    assert 'match_score' not in legacy  # the form those checkpoints have on disk
    assert DMNConfig.from_dict(legacy).match_score is False
    assert DMNConfig.from_dict(DMNConfig().to_dict()).match_score is True
    with_score = build_model(config_for('dmn-pf'))
    without = build_model(DMNConfig.from_dict(legacy))
    assert count_parameters(with_score) == count_parameters(without) + 64


def test_dmn_configs_saved_before_the_value_branch_load_without_it():
    from dmn_localization.core.configs import DMNConfig

    saved = DMNConfig().to_dict()
    assert 'ego_value_dim' not in saved and 'ego_value_grid' not in saved  # fingerprints kept
    assert DMNConfig.from_dict(saved).ego_value_dim == 0
    assert 'global_pose' not in saved and DMNConfig.from_dict(saved).global_pose is False
    config = DMNConfig(ego_value_dim=16, ego_value_grid=(1, 4), global_pose=True)
    assert DMNConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match='global_pose and global_heading need the value'):
        build_model(config_for('dmn-pf', global_pose=True))
    grown = count_parameters(build_model(config_for('dmn-pf', ego_value_dim=16)))
    # V (32 * 8 -> 16 + bias), Q (no bias), E (4 -> 16 -> 16), and 16 more head inputs x 64
    assert grown - count_parameters(build_model(config_for('dmn-pf'))) == (
        2 * 256 * 16 + 16 + 4 * 16 + 16 + 16 * 16 + 16 * 64)


def test_regression_checkpoints_saved_before_relative_offset_keep_the_map_frame():
    from dmn_localization.core.configs import DMNConfig

    new = DMNConfig(name='dmn-regression')
    assert new.relative_offset and new.to_dict()['relative_offset'] is True
    assert DMNConfig.from_dict(new.to_dict()) == new
    legacy = DMNConfig(name='dmn-regression', relative_offset=False).to_dict()
    assert 'relative_offset' not in legacy  # the form those checkpoints have on disk
    assert DMNConfig.from_dict(legacy).relative_offset is False
    # a particle filter's dict, and so its fingerprint, is as before the option
    assert 'relative_offset' not in DMNConfig().to_dict()
    assert DMNConfig.from_dict(DMNConfig().to_dict()) == DMNConfig()


def test_position_attention_is_saved_only_when_on_and_refuses_the_value_branch():
    from dmn_localization.core.configs import DMNConfig

    assert 'position_attention' not in DMNConfig().to_dict()  # old fingerprints kept
    config = DMNConfig(position_attention=True, match_score=False)
    assert DMNConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match='value branch'):
        build_model(config_for('dmn-pf', position_attention=True, ego_value_dim=8))
    # the attention's 1x1 key layers and the ego matrix replace the per-view key layers
    model = make('dmn-pf+pos')
    assert model.attention.view_partials(torch.zeros(1, 2, 32, 8, 8)).shape == (1, 2, 32, 8, 8)


def test_attention_prior_starts_on_the_views_facing_the_particles_way():
    from dmn_localization.core.configs import DMNConfig

    assert 'attention_prior' not in DMNConfig().to_dict()  # old fingerprints kept
    config = DMNConfig(attention_prior=1.5)
    assert DMNConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match='position_attention'):
        build_model(config_for('dmn-pf', position_attention=True, attention_prior=2.0))

    def weight_on_aligned_views(model):
        images, poses, query, parts = episode(batch=8, views=4, particles=64, seed=5)
        map_ctx = model.prepare_map(model.embed_views(images, poses), poses)
        ego = g.egocentric(parts, poses)  # (B, K, N, 4): the view's heading is cos, sin
        with torch.no_grad():
            logits = model.attention.logits_fast(map_ctx.key_partials, ego,
                                                 model.prepare_query(query).key)
        weights = torch.softmax(logits, dim=2)
        aligned = torch.nn.functional.one_hot(ego[..., 2].argmax(dim=2), 4)
        return float((weights * aligned).sum(dim=2).mean())

    plain, prior = [], []
    for seed in range(3):  # the same random weights but for the prior's own vector
        torch.manual_seed(seed)
        plain.append(weight_on_aligned_views(make('dmn-pf')))
        torch.manual_seed(seed)
        model = make('dmn-pf+prior')
        prior.append(weight_on_aligned_views(model))
        assert torch.equal(model.attention.ego_bias, torch.tensor([0.0, 0.0, 2.0, 0.0]))
    assert max(plain) < 0.35 < 0.5 < min(prior), (plain, prior)  # chance: 0.25


def test_dmn_with_global_heading_is_invariant_to_shifting_the_world_not_to_turning_it():
    torch.manual_seed(4)
    model = make('dmn-pf+ego+heading').double()
    images, poses, query, parts = (x.double() for x in episode(seed=4))
    out = outputs(model, images, poses, query, parts, True)
    for move, invariant in (([0.7, -0.4, 0.0], True), ([0.7, -0.4, 2.5], False)):
        move = torch.tensor(move, dtype=torch.float64)
        moved = outputs(model, images, g.compose(move, poses), query, g.compose(move, parts),
                        True)
        assert torch.allclose(moved, out, atol=1e-9) is invariant, move
    with pytest.raises(ValueError, match='choose one'):
        make('dmn-pf+ego+heading+global')
    with pytest.raises(ValueError, match='need the value branch'):
        build_model(config_for('dmn-pf', global_heading=True))
