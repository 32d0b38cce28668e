"""Training options beyond the paper's protocol: queries per map, belief density, schedules."""

import dataclasses
import math

from dmn_localization.core import geometry
from dmn_localization.core.losses import belief_nll, DENSITY_STD
from dmn_localization.core.models import build_model, config_for
from dmn_localization.core.pose_match import pose_features
from dmn_localization.data.dataset import generate, GenerationSpec
from dmn_localization.learning.batches import repeat_context, TensorEpisodes
from dmn_localization.learning.episode_loss import EpisodeLoss, near_poses, NEAR_RADIUS
from dmn_localization.learning.train_cli import main as train_main
from dmn_localization.learning.train_config import scheduled_lr, TrainConfig
from dmn_localization.learning.trainer import Counters, improved
import pytest
import torch


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """Tiny rooms train and val sets (16x16 images, 6 and 10 views per room)."""
    root = tmp_path_factory.mktemp('tiny-options')
    for split, envs, views in (('train', 8, 6), ('val', 4, 10)):
        generate(GenerationSpec('rooms', split, envs, views, 1, (16, 16), 4), root / split,
                 workers=1, progress=False)
    return root


def episodes(batch=2, steps=3, seed=0):
    """Random episodes of ``steps`` queries of one map each."""
    gen = torch.Generator().manual_seed(seed)
    return TensorEpisodes(torch.randn(batch, 4, 3, 16, 16, generator=gen),
                          torch.rand(batch, 4, 3, generator=gen) - 0.5,
                          torch.randn(batch, steps, 3, 16, 16, generator=gen),
                          torch.rand(batch, steps, 3, generator=gen) - 0.5,
                          torch.rand(batch, steps, 3, generator=gen),
                          torch.tensor([[-1.0, -1.0, 1.0, 1.0]] * batch),
                          turn=torch.tensor([0.3, -1.2])[:batch])


def test_each_query_becomes_a_one_step_episode_of_the_same_map():
    model = build_model(config_for('dmn-pf', image_size=(16, 16), pose_match_dim=8)).eval()
    eps = episodes()
    flat = eps.split_queries()
    assert flat.truth.shape == (6, 1, 3) and flat.query_images.shape == (6, 1, 3, 16, 16)
    assert torch.equal(flat.motions, torch.zeros(6, 1, 3))  # a one-step episode
    particles = torch.rand(6, 5, 3) - 0.5
    shared = repeat_context(model.prepare_map(model.embed_views(
        eps.context_images, eps.context_poses), eps.context_poses), 3)
    for b in range(2):
        for t in range(3):
            i = b * 3 + t
            assert torch.equal(flat.truth[i, 0], eps.truth[b, t])
            assert torch.equal(flat.context_poses[i], eps.context_poses[b])
            assert flat.turn[i] == eps.turn[b]
            # the map encoded once and repeated reads as the map of that episode alone
            own = model.prepare_map(model.embed_views(eps.context_images[b:b + 1],
                                                      eps.context_poses[b:b + 1]),
                                    eps.context_poses[b:b + 1])
            query = model.prepare_query(flat.query_images[i:i + 1, 0])
            one = model.observe(own, query, particles[i:i + 1])
            from_shared = model.observe(dataclasses.replace(shared, **{
                k: None if v is None else v[i:i + 1] for k, v in vars(shared).items()}),
                query, particles[i:i + 1])
            torch.testing.assert_close(from_shared, one)
    with pytest.raises(TypeError):
        repeat_context([1, 2], 2)


def test_queries_split_into_sequences_keep_their_odometry():
    eps = episodes(steps=4)
    pairs = eps.split_queries(2)
    assert pairs.truth.shape == (4, 2, 3) and len(pairs) == 4
    for b in range(2):
        for j in range(2):
            i = b * 2 + j
            assert torch.equal(pairs.truth[i], eps.truth[b, 2 * j:2 * j + 2])
            assert torch.equal(pairs.query_images[i], eps.query_images[b, 2 * j:2 * j + 2])
            assert torch.equal(pairs.motions[i, 0], torch.zeros(3))  # a new start
            assert torch.equal(pairs.motions[i, 1], eps.motions[b, 2 * j + 1])
            assert torch.equal(pairs.context_images[i], eps.context_images[b])
    with pytest.raises(ValueError, match='do not split'):
        eps.split_queries(3)


def test_the_loss_of_sequences_of_each_map():
    model = build_model(config_for('dmn-pf', image_size=(16, 16), pose_match_dim=8))
    loss = EpisodeLoss(model, 16, uniform_share=1.0, density_weight=0.5, queries_per_map=2,
                       sequence_steps=2)(episodes(steps=4), torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.pose_match.parameters())


def test_the_loss_with_queries_per_map_trains_every_query():
    model = build_model(config_for('dmn-pf', image_size=(16, 16)))
    eps = episodes()
    loss = EpisodeLoss(model, 16, uniform_share=0.5, density_weight=0.5, queries_per_map=3)(
        eps, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.query_encoder.parameters())
    # regression models have no belief: the density term is off for them
    regression = build_model(config_for('dmn-regression', image_size=(16, 16)))
    assert EpisodeLoss(regression, 1, density_weight=1.0).density_weight == 0.0


def test_near_poses_ring_the_truth_and_feed_the_contrastive_term(monkeypatch):
    truth = torch.tensor([[0.2, -0.1, 3.1], [1.0, 2.0, -1.0]])
    poses = near_poses(truth, 500, torch.Generator().manual_seed(0))
    assert poses.shape == (2, 500, 3)
    distance = (poses[..., :2] - truth[:, None, :2]).norm(dim=-1)
    assert NEAR_RADIUS[0] <= distance.min() and distance.max() <= NEAR_RADIUS[1]
    assert distance.max() - distance.min() > 0.9 * (NEAR_RADIUS[1] - NEAR_RADIUS[0])
    turn = torch.remainder(poses[..., 2] - truth[:, None, 2] + math.pi, 2 * math.pi) - math.pi
    assert poses[..., 2].abs().max() <= math.pi and turn.std() < math.radians(40)
    # the contrastive term scores the truth against that share of near poses
    model = build_model(config_for('dmn-pf', image_size=(16, 16)))
    seen = []
    observe = model.observe
    monkeypatch.setattr(model, 'observe',
                        lambda m, q, p, *rest: seen.append(p) or observe(m, q, p, *rest))
    eps = episodes()
    for share in (0.0, 0.5):
        seen.clear()
        loss = EpisodeLoss(model, 16, uniform_share=0.5, nce_weight=1.0, nce_near_share=share)
        assert torch.isfinite(loss(eps, torch.Generator().manual_seed(0)))
        scored = seen[-1]  # (B, 1 + 16, 3): the truth, then the others
        assert torch.equal(scored[:, 0], eps.truth[:, 0])
        off = (scored[:, 1:, :2] - eps.truth[:, :1, :2]).norm(dim=-1)
        ring = (off >= NEAR_RADIUS[0]) & (off <= NEAR_RADIUS[1])
        assert ring[:, 8:].all() if share else not ring[:, 8:].all()


def test_belief_density_rewards_weight_near_the_truth():
    truth = torch.tensor([[0.2, -0.1, 1.0]])
    particles = torch.tensor([[[0.2, -0.1, 1.0], [0.9, 0.9, -2.0]]])
    near = torch.log(torch.tensor([[0.9, 0.1]]))
    far = torch.log(torch.tensor([[0.1, 0.9]]))
    assert belief_nll(particles, near, truth) < belief_nll(particles, far, truth)
    # all weight on the truth: minus the log of the kernel's peak density
    peak = -sum(math.log(s) for s in DENSITY_STD) - 1.5 * math.log(2 * math.pi)
    certain = torch.log(torch.tensor([[1.0, 0.0]]))
    assert belief_nll(particles, certain, truth).item() == pytest.approx(-peak, rel=1e-5)
    # yaw differences wrap: a particle at yaw pi - 0.01 is near a truth at -pi + 0.01
    wrap = belief_nll(torch.tensor([[[0.0, 0.0, math.pi - 0.01]]]), torch.zeros(1, 1),
                      torch.tensor([[0.0, 0.0, -math.pi + 0.01]]))
    assert wrap.item() == pytest.approx(-peak + 0.5 * (0.02 / DENSITY_STD[2]) ** 2, rel=1e-4)
    logits = torch.zeros(1, 2, requires_grad=True)
    belief_nll(particles, torch.log_softmax(logits, -1), truth).backward()
    assert logits.grad[0, 0] < 0 < logits.grad[0, 1]  # descent raises the near particle


def test_cosine_schedule_and_selection_by_global_success():
    config = TrainConfig('dmn-pf', '', '', '', budget_samples=1000, lr=1e-3,
                         lr_schedule='cosine', lr_min_factor=0.1)
    assert scheduled_lr(config, 0) == pytest.approx(1e-3)
    assert scheduled_lr(config, 500) == pytest.approx(1e-3 * (0.1 + 0.9 / 2))
    assert scheduled_lr(config, 1000) == pytest.approx(1e-4)
    assert scheduled_lr(config, 5000) == pytest.approx(1e-4)  # past the budget: the floor
    assert scheduled_lr(TrainConfig('dmn-pf', '', '', '', lr=2e-4), 700) == 2e-4
    best = Counters(best_val_loss=0.20, best_global_success=0.40)
    worse_loss_more_success = {'val_loss': 0.25, 'val_global_success': 0.45}
    assert improved(worse_loss_more_success, best, 'global_success')
    assert not improved(worse_loss_more_success, best, 'val_loss')
    tie = {'val_loss': 0.19, 'val_global_success': 0.40}
    assert improved(tie, best, 'global_success')  # the same success at a lower loss
    assert not improved({'val_loss': 0.10, 'val_global_success': 0.35}, best,
                        'global_success')


def test_pose_features_hold_the_particle_in_the_views_frame():
    gen = torch.Generator().manual_seed(3)
    particles = torch.rand(2, 5, 3, generator=gen) * 2 - 1
    views = torch.rand(2, 4, 3, generator=gen) * 2 - 1
    features = pose_features(geometry.egocentric(particles, views))
    # entries 9 and 10: the particle's position in each view's frame
    inverse = geometry.relative(views[:, None, :, :], particles[:, :, None, :])
    torch.testing.assert_close(features[..., 9], inverse[..., 0])
    torch.testing.assert_close(features[..., 10], inverse[..., 1])


def train_args(tiny, out, budget, extra=()):
    """Return the arguments of a small run with every option of this file on the tiny data."""
    return ['--model', 'dmn-pf', '--train', str(tiny / 'train'), '--val', str(tiny / 'val'),
            '--out', str(out), '--budget-samples', str(budget), '--batch-size', '4',
            '--lr', '3e-3', '--val-every-samples', '96', '--val-episodes', '20',
            '--val-global-episodes', '20', '--patience', '100', '--seed', '2', '--quiet',
            '--queries-per-map', '2', '--particles', '24', '--uniform-share', '0.5',
            '--density-weight', '0.5', '--lr-schedule', 'cosine', '--select-by',
            'global_success', '--model-option', 'pose_match_dim=8', *extra]


def test_a_run_with_the_options_resumes_exactly_and_records_them(tiny, tmp_path,
                                                                 monkeypatch):
    import signal

    from dmn_localization.core.checkpoint import load_checkpoint
    from dmn_localization.learning import trainer

    whole, parts = tmp_path / 'whole', tmp_path / 'parts'
    assert train_main(train_args(tiny, whole, 192)) == 0
    # the cosine schedule is a function of the budget: stop the second run inside step 7
    # (a signal, as Ctrl-C would) and resume it with the same command
    forward, steps = trainer.EpisodeLoss.forward, []

    def forward_then_signal(self, *args):
        steps.append(1)
        if len(steps) == 7:
            signal.raise_signal(signal.SIGTERM)
        return forward(self, *args)

    monkeypatch.setattr(trainer.EpisodeLoss, 'forward', forward_then_signal)
    assert train_main(train_args(tiny, parts, 192)) == 128 + signal.SIGTERM
    assert torch.load(parts / 'last.pt', weights_only=True)['counters']['samples'] == 56
    monkeypatch.setattr(trainer.EpisodeLoss, 'forward', forward)
    assert train_main(train_args(tiny, parts, 192)) == 0
    a = torch.load(whole / 'last.pt', weights_only=True)
    b = torch.load(parts / 'last.pt', weights_only=True)
    # 192 queries: 24 steps of 4 maps with 2 queries each
    assert a['counters']['samples'] == b['counters']['samples'] == 192
    assert a['counters']['step'] == 24
    for key, tensor in a['model'].items():
        assert torch.equal(tensor, b['model'][key]), key
    assert a['optimizer']['param_groups'][0]['lr'] == pytest.approx(
        scheduled_lr(TrainConfig('dmn-pf', '', '', '', budget_samples=192, lr=3e-3,
                                 lr_schedule='cosine'), 184))
    meta = load_checkpoint(whole / 'best.pt').metadata
    assert meta['queries_per_map'] == 2 and meta['select_by'] == 'global_success'
    assert meta['lr_schedule'] == 'cosine' and meta['density_weight'] == 0.5
    assert meta['val_global_success'] == a['counters']['best_global_success']


def test_a_run_of_sequences_counts_every_query_view(tiny, tmp_path):
    out = tmp_path / 'run'
    args = train_args(tiny, out, 96, ['--queries-per-map', '1', '--sequence-steps', '2'])
    assert train_main(args) == 0
    state = torch.load(out / 'last.pt', weights_only=True)
    # 4 maps a step, one episode of 2 query views each: 8 samples a step
    assert (state['counters']['samples'], state['counters']['step']) == (96, 12)


@pytest.mark.parametrize('extra, message', [
    (['--queries-per-map', '0'], 'queries per map'),
    (['--sequence-steps', '0'], 'sequence steps'),
    (['--finish-samples', '100'], 'cosine schedule'),
    (['--density-weight', '-1'], 'density weight'),
    (['--nce-weight', '-0.5'], 'contrastive weight'),
    (['--nce-near-share', '1.5'], 'near share'),
    (['--lr-min-factor', '2'], 'final learning-rate factor'),
])
def test_options_that_cannot_run_are_refused(tiny, tmp_path, capsys, extra, message):
    assert train_main(train_args(tiny, tmp_path / 'run', 96, extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / 'run' / 'last.pt').exists()


def test_final_weights_are_exported_as_a_checkpoint_beside_best(tiny, tmp_path, capsys):
    from dmn_localization.core.checkpoint import load_checkpoint
    from dmn_localization.learning.final_weights import main as final_main
    from dmn_localization.learning.trainer import load_state

    run = tmp_path / 'run'
    assert train_main(train_args(tiny, run, 192)) == 0
    assert final_main([str(run)]) == 0
    final = load_checkpoint(run / 'final.pt')
    state = load_state(run)
    for key, tensor in state['model'].items():
        assert torch.equal(final.model.state_dict()[key], tensor), key
    assert final.metadata['samples'] == state['counters']['samples'] == 192
    assert final.metadata['final_weights'] is True
    assert final.metadata['val_loss'] > 0  # the validation at the run's end
    assert final_main([str(tmp_path / 'nothing')]) == 2
    assert 'no last.pt' in capsys.readouterr().err
