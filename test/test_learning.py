"""dmn_train and dmn_evaluate: learning, exact resumption, DDP, metrics on known cases."""

import csv
import json
import math
import os
from pathlib import Path
import random
import subprocess
import sys

from dmn_localization.core.checkpoint import load_checkpoint
from dmn_localization.data.dataset import generate, GenerationSpec
from dmn_localization.learning.evaluate_cli import main as evaluate_main
from dmn_localization.learning.evaluation import episode_metrics, summarize
from dmn_localization.learning.train_cli import main as train_main
import numpy as np
import pytest
import torch


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """Generate tiny rooms train and val sets (16x16 images)."""
    root = tmp_path_factory.mktemp('tiny')
    for split, envs, views in (('train', 8, 6), ('val', 4, 10)):
        generate(GenerationSpec('rooms', split, envs, views, 1, (16, 16), 4), root / split,
                 workers=1, progress=False)
    return root


def train_args(tiny, out, budget, extra=()):
    """Return dmn_train arguments for a small run on the tiny data."""
    return ['--model', 'dmn-pf', '--train', str(tiny / 'train'), '--val', str(tiny / 'val'),
            '--out', str(out), '--budget-samples', str(budget), '--batch-size', '8',
            '--lr', '3e-3', '--val-every-samples', '400', '--val-episodes', '40',
            '--patience', '100', '--seed', '5', '--quiet', *extra]


def read_log(path):
    """Return the rows of a run's log.csv."""
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_training_lowers_the_loss_and_writes_checkpoints(tiny, tmp_path):
    from dmn_localization.core.models import build_model
    from dmn_localization.data.dataset import Dataset
    from dmn_localization.data.episodes import EpisodeSampler
    from dmn_localization.learning.batches import to_tensors
    from dmn_localization.learning.episode_loss import validate

    out = tmp_path / 'run'
    # validated on its own training environments: a smoke test of fitting, not of transfer.
    # The latent vector regression: on these 8 rooms of 16x16 pixels the particle filter
    # models do not learn measurably in 300 steps (their validation loss moves by a few
    # percent either way, seed to seed), this one does (by about 20 %, seeds 1, 2 and 5)
    args = train_args(tiny, out, 2400, ['--model', 'vector-regression'])
    args[args.index('--val') + 1] = str(tiny / 'train')
    assert train_main(args) == 0
    rows = read_log(out / 'log.csv')
    assert len([r for r in rows if r['train_loss']]) == 6  # every 50 steps
    assert len([r for r in rows if r['val_loss']]) == 6
    assert (out / 'best.pt').exists() and (out / 'last.pt').exists()
    # the best checkpoint against the untrained model on 400 fixed training episodes
    trained = load_checkpoint(out / 'best.pt').model
    episodes = to_tensors(EpisodeSampler(Dataset(tiny / 'train'), 4, 1).sample(
        400, np.random.default_rng(0)), trained.config, 'cpu')
    torch.manual_seed(0)
    untrained = build_model(trained.config)

    def loss(model):
        return validate(model, episodes, episodes.select(slice(0, 20)), 32, 0)['val_loss']

    assert loss(trained) < 0.9 * loss(untrained), (loss(trained), loss(untrained))


def test_a_run_directory_in_use_is_refused_and_free_again_after(tiny, tmp_path, capsys):
    from dmn_localization.learning.run_control import run_lock, RunInUseError

    run = tmp_path / 'run'
    with run_lock(run):  # as another process training in it would hold it
        assert train_main(train_args(tiny, run, 16)) == 2
        assert 'being trained by another process' in capsys.readouterr().err
        with pytest.raises(RunInUseError, match=str(os.getpid())):
            with run_lock(run):
                pass
    assert not (run / 'last.pt').exists()  # nothing was written while refused
    assert train_main(train_args(tiny, run, 16)) == 0  # the lock went with its holder
    assert (run / 'last.pt').exists()


def assert_same_run(whole, parts, samples):
    """Assert that two runs ended at ``samples`` with equal weights and equal loss logs."""
    a = torch.load(whole / 'last.pt', weights_only=True)
    b = torch.load(parts / 'last.pt', weights_only=True)
    assert a['counters']['samples'] == b['counters']['samples'] == samples
    for key, tensor in a['model'].items():
        assert torch.equal(tensor, b['model'][key]), key
    losses_a = [r['train_loss'] for r in read_log(whole / 'log.csv') if r['train_loss']]
    losses_b = [r['train_loss'] for r in read_log(parts / 'log.csv') if r['train_loss']]
    assert losses_a == losses_b
    return b


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tiny, tmp_path):
    whole, parts = tmp_path / 'whole', tmp_path / 'parts'
    assert train_main(train_args(tiny, whole, 640)) == 0
    assert train_main(train_args(tiny, parts, 320)) == 0  # "interrupted" half way
    assert train_main(train_args(tiny, parts, 640)) == 0  # the same command resumes
    b = assert_same_run(whole, parts, 640)
    # the code and machine that trained it, once each however often it resumed
    from dmn_localization.learning.provenance import code_revision, machine

    assert b['code_revisions'] == [code_revision()]
    assert load_checkpoint(parts / 'best.pt').metadata['code_revisions'] == [code_revision()]
    assert b['machines'] == [machine()] == load_checkpoint(parts / 'best.pt').metadata[
        'machines']
    assert f'{os.cpu_count()} cores' in machine()


def test_a_signal_stops_training_at_its_step_and_the_run_resumes_exactly(tiny, tmp_path,
                                                                         monkeypatch, capsys):
    import signal

    from dmn_localization.learning import trainer

    whole, parts = tmp_path / 'whole', tmp_path / 'parts'
    assert train_main(train_args(tiny, whole, 640)) == 0

    def unhandled(signum, frame):  # reached only if training did not take the signal
        raise AssertionError('SIGTERM reached the handler outside training')

    outside = signal.signal(signal.SIGTERM, unhandled)
    forward, steps = trainer.EpisodeLoss.forward, []

    def forward_then_signal(self, *args):
        steps.append(1)
        if len(steps) == 13:  # inside step 13, far from a checkpoint (validation: step 50)
            signal.raise_signal(signal.SIGTERM)
        return forward(self, *args)

    try:
        monkeypatch.setattr(trainer.EpisodeLoss, 'forward', forward_then_signal)
        assert train_main(train_args(tiny, parts, 640)) == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is unhandled  # put back after training
    finally:
        signal.signal(signal.SIGTERM, outside)
    assert 'stopped by SIGTERM at 104 samples' in capsys.readouterr().err
    # saved at the step the signal came in (13 steps of 8), not at a checkpoint before
    state = torch.load(parts / 'last.pt', weights_only=True)
    assert state['counters']['samples'] == 104 and not (parts / 'best.pt').exists()
    monkeypatch.setattr(trainer.EpisodeLoss, 'forward', forward)
    assert train_main(train_args(tiny, parts, 640)) == 0  # the same command resumes
    assert_same_run(whole, parts, 640)


def test_code_revision_is_git_describe_and_a_run_lists_each_once(tmp_path):
    from dmn_localization.learning.provenance import add_revision, code_revision, UNRECORDED

    import shutil

    assert code_revision(tmp_path) == 'unknown'  # not a git tree
    # this package's revision is read once per process: the code it imported
    from dmn_localization.learning.provenance import _loaded_revision

    code_revision()
    hits = _loaded_revision.cache_info().hits
    assert code_revision() == code_revision() and _loaded_revision.cache_info().hits == hits + 2
    if shutil.which('git'):  # a tree whose code is one directory of several
        def git(*args):
            return subprocess.run(['git', '-C', str(tmp_path), '-c', 'user.name=t', '-c',
                                   'user.email=t@t', *args], capture_output=True, text=True,
                                  check=True).stdout.strip()

        code = tmp_path / 'pkg'
        code.mkdir()
        (code / 'mod.py').write_text('x = 1\n')
        (tmp_path / 'RESULTS.md').write_text('a\n')
        git('init', '-q')
        git('add', '.')
        git('commit', '-qm', 'one')
        head = git('rev-parse', '--short=12', 'HEAD')
        assert code_revision(code) == head
        (tmp_path / 'RESULTS.md').write_text('b\n')  # edited beside the code: still clean
        assert code_revision(code) == head
        (code / 'mod.py').write_text('x = 2\n')
        assert code_revision(code) == head + '-dirty'
        (code / 'mod.py').write_text('x = 1\n')
        (code / 'new.py').write_text('')  # a new file of the code counts too
        assert code_revision(code) == head + '-dirty'
    assert add_revision([], 'a1') == ['a1']
    assert add_revision(['a1'], 'a1') == ['a1']
    assert add_revision(['a1'], 'b2-dirty') == ['a1', 'b2-dirty']
    assert add_revision(None, 'a1') == [UNRECORDED, 'a1']


def test_bf16_training_resumes_exactly_and_differs_from_fp32_by_rounding(tiny, tmp_path):
    bf16 = ['--precision', 'bf16']
    whole, parts, fp32 = tmp_path / 'whole', tmp_path / 'parts', tmp_path / 'fp32'
    assert train_main(train_args(tiny, whole, 640, bf16)) == 0
    assert train_main(train_args(tiny, parts, 320, bf16)) == 0
    assert train_main(train_args(tiny, parts, 640, bf16)) == 0
    a = torch.load(whole / 'last.pt', weights_only=True)['model']
    b = torch.load(parts / 'last.pt', weights_only=True)['model']
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert all(tensor.dtype == torch.float32 for tensor in a.values())  # weights stay fp32
    assert train_main(train_args(tiny, fp32, 640)) == 0

    def losses(run):
        return np.array([float(r['train_loss']) for r in read_log(run / 'log.csv')
                         if r['train_loss']])

    assert not np.array_equal(losses(whole), losses(fp32))  # autocast did engage
    assert np.allclose(losses(whole), losses(fp32), rtol=0.1), (losses(whole), losses(fp32))
    assert load_checkpoint(whole / 'best.pt').metadata['precision'] == 'bf16'
    # a run keeps its precision: resuming it in float32 is refused
    assert train_main(train_args(tiny, parts, 960)) == 2


def test_memory_format_changes_only_rounding_and_a_run_keeps_its_own(tiny, tmp_path, capsys):
    contiguous = ['--memory-format', 'contiguous']
    whole, legacy, last = tmp_path / 'whole', tmp_path / 'legacy', tmp_path / 'last'
    assert train_main(train_args(tiny, whole, 640, contiguous)) == 0
    assert train_main(train_args(tiny, last, 640)) == 0  # the default: channels_last

    def weights(run):
        return torch.load(run / 'last.pt', weights_only=True)['model']

    conv = 'view_encoder.net.0.weight'
    assert weights(whole)[conv].is_contiguous()
    assert weights(last)[conv].is_contiguous(memory_format=torch.channels_last)
    assert not weights(last)[conv].is_contiguous()
    assert load_checkpoint(last / 'best.pt').metadata['memory_format'] == 'channels_last'
    a = [float(r['train_loss']) for r in read_log(whole / 'log.csv') if r['train_loss']]
    b = [float(r['train_loss']) for r in read_log(last / 'log.csv') if r['train_loss']]
    assert a != b and np.allclose(a, b, rtol=0.05), (a, b)  # rounding, then drift
    # one step from the same weights and batch: the same gradients up to rounding
    from dmn_localization.core.models import build_model, config_for
    from dmn_localization.data.dataset import Dataset
    from dmn_localization.data.episodes import EpisodeSampler
    from dmn_localization.learning.batches import to_tensors
    from dmn_localization.learning.episode_loss import EpisodeLoss

    batch = to_tensors(EpisodeSampler(Dataset(tiny / 'train'), 4, 1).sample(
        8, np.random.default_rng(0)), config_for('dmn-pf'), 'cpu')
    grads = []
    for layout in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(0)
        model = build_model(config_for('dmn-pf')).to(memory_format=layout)
        EpisodeLoss(model, 32, 0.25)(batch, torch.Generator().manual_seed(0)).backward()
        grads.append([p.grad for p in model.parameters()])
    assert all(torch.allclose(g, h, rtol=1e-4, atol=1e-6) for g, h in zip(*grads))
    # a run saved before the field existed trained contiguous: resumed with today's
    # default it keeps that layout, and ends as the uninterrupted contiguous run
    assert train_main(train_args(tiny, legacy, 320, contiguous)) == 0
    state = torch.load(legacy / 'last.pt', weights_only=True)
    del state['memory_format'], state['code_revisions']
    torch.save(state, legacy / 'last.pt')
    capsys.readouterr()
    assert train_main(train_args(tiny, legacy, 640)) == 0
    assert 'keeps the memory format it began with, contiguous' in capsys.readouterr().err
    assert all(torch.equal(t, weights(whole)[k]) for k, t in weights(legacy).items())
    assert json.loads((legacy / 'config.json').read_text())['memory_format'] == 'contiguous'
    from dmn_localization.learning.provenance import code_revision, UNRECORDED

    assert torch.load(legacy / 'last.pt', weights_only=True)['code_revisions'] == [
        UNRECORDED, code_revision()]
    with pytest.raises(SystemExit):
        train_main(train_args(tiny, tmp_path / 'bad', 16, ['--memory-format', 'x']))


def test_resume_drops_only_log_rows_past_the_checkpoint(tiny, tmp_path):
    out = tmp_path / 'run'
    assert train_main(train_args(tiny, out, 320)) == 0
    log_path = out / 'log.csv'
    before = log_path.read_bytes()
    written = log_path.stat().st_mtime_ns
    assert train_main(train_args(tiny, out, 320)) == 0  # finished: nothing to redo
    assert log_path.stat().st_mtime_ns == written  # not rewritten
    # a kill after a log row but before the next checkpoint leaves rows past it
    with open(log_path, 'a', newline='') as f:
        f.write('999,9999,1.0,0.5,,\n')
    assert train_main(train_args(tiny, out, 320)) == 0
    assert log_path.read_bytes() == before  # replaced whole, by a file beside it
    assert not [p for p in out.iterdir() if p.name.endswith('.tmp')]
    # killed before its first checkpoint: the run starts afresh, and so does its log
    fresh = tmp_path / 'fresh'
    fresh.mkdir()
    (fresh / 'log.csv').write_bytes(before)
    assert train_main(train_args(tiny, fresh, 320)) == 0
    samples = [int(r['samples']) for r in read_log(fresh / 'log.csv')]
    assert samples == sorted(set(samples))  # no row of the killed attempt is left
    assert [{k: v for k, v in r.items() if k != 'elapsed_s'} for r in read_log(log_path)] \
        == [{k: v for k, v in r.items() if k != 'elapsed_s'} for r in read_log(fresh / 'log.csv')]


def test_a_run_of_another_configuration_is_refused(tiny, tmp_path, capsys):
    out = tmp_path / 'run'
    assert train_main(train_args(tiny, out, 80)) == 0
    assert train_main(train_args(tiny, out, 160, ['--contexts', '3'])) == 2
    assert 'another configuration' in capsys.readouterr().err


def test_data_parallel_under_torchrun(tiny, tmp_path):
    out = tmp_path / 'ddp'
    env = dict(os.environ, MASTER_PORT=str(random.randint(20000, 40000)),
               OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
           '--master_addr', '127.0.0.1', '--master_port', env['MASTER_PORT'],
           '-m', 'dmn_localization.learning.train_cli',
           *train_args(tiny, out, 96)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(out / 'last.pt', weights_only=True)
    assert state['counters']['samples'] == 96 and state['counters']['step'] == 6
    assert len(state['numpy_rng']) == 2  # both processes' RNG states, for exact resumption


def test_metrics_on_hand_made_cases():
    truth = torch.tensor([[[0.1, 0.2, 0.3]], [[-0.5, 0.5, 1.0]]])
    exact = episode_metrics(truth.clone(), truth)
    assert exact['success'].all() and np.allclose(exact['sq_error'], 0.0)
    summary = summarize(exact['sq_error'], 'success')
    assert summary['success'] == 1.0 and summary['value'] == 1.0
    offset = truth + torch.tensor([0.3, 0.4, 2.0])  # 0.3^2 + 0.4^2 = 0.25; yaw is ignored
    shifted = episode_metrics(offset, truth)
    np.testing.assert_allclose(shifted['sq_error'], 0.25, rtol=1e-6)
    assert not shifted['success'].any()  # 0.25 >= 0.2
    near = episode_metrics(truth + torch.tensor([0.3, 0.3, 0.0]), truth)  # 0.18 < 0.2
    assert near['success'].all()
    mixed = summarize(np.array([0.0, 0.25, 0.1, 0.5]), 'mse')
    assert mixed['success'] == 0.5 and mixed['value'] == pytest.approx(0.2125)
    assert mixed['success_strict'] == 0.25  # x-y distance under 0.2: only the 0.0
    assert summarize(np.array([0.039, 0.041]), 'success')['success_strict'] == 0.5


def test_evaluate_cli_with_reference_methods(tiny, tmp_path, capsys):
    out = tmp_path / 'results.json'
    assert evaluate_main(['--data', str(tiny / 'val'), '--episodes', '20', '--protocols',
                          'one-step-global', '--out', str(out)]) == 0
    text = capsys.readouterr().out
    assert 'closest-context' in text and 'uninformed' in text

    results = json.loads(out.read_text())['results']['one-step-global']
    # closest context answers with a context pose: never worse than the uninformed centre
    assert results['closest-context']['mse'] <= results['uninformed']['mse']
    assert evaluate_main(['--data', str(tmp_path / 'nothing')]) == 2
    # the table as a section of a Markdown file, beside what is there
    md = tmp_path / 'RESULTS.md'
    md.write_text('# Results\n\n<!-- begin other -->\nkept\n<!-- end other -->\n')
    args = ['--data', str(tiny / 'val'), '--episodes', '20', '--protocols', 'one-step-global',
            'sequential-global', '--results', str(md), '--section', 'new-model']
    assert evaluate_main(args) == 0
    text = md.read_text()
    assert 'kept' in text and '<!-- begin new-model -->' in text
    assert f'Made by `dmn_evaluate {" ".join(args)}`' in text  # nothing to quote here
    success = results['closest-context']
    assert (f'| `closest-context` | {success["success"]:.1%} ± {success["success_stderr"]:.1%} '
            f'| {success["success_strict"]:.1%} |') in text
    assert '| model | one-step-global | one-step-global, strict | sequential-global |' in text
    with pytest.raises(SystemExit):
        evaluate_main(['--data', str(tiny / 'val'), '--results', str(md)])


def test_evaluate_cli_with_a_trained_checkpoint_and_plots(tiny, tmp_path, capsys):
    run = tmp_path / 'run'
    assert train_main(train_args(tiny, run, 400)) == 0
    plots = tmp_path / 'plots'
    assert evaluate_main(['--data', str(tiny / 'val'), '--checkpoint', str(run / 'best.pt'),
                          '--baselines', 'uninformed', '--episodes', '8', '--plots',
                          str(plots)]) == 0
    assert 'dmn-pf' in capsys.readouterr().out
    for name in ('belief-dmn-pf.png', 'success-vs-t.png', 'success-vs-k.png'):
        assert (plots / name).stat().st_size > 1000, name
    assert evaluate_main(['--data', str(tiny / 'val'), '--checkpoint',
                          str(Path(tmp_path / 'missing.pt'))]) == 2
    # two checkpoints of one model: both rows say which file they are, aligned
    other = tmp_path / 'other.pt'
    other.write_bytes((run / 'best.pt').read_bytes())
    assert evaluate_main(['--data', str(tiny / 'val'), '--checkpoint', str(run / 'best.pt'),
                          str(other), '--episodes', '4', '--protocols', 'one-step-global',
                          '--out', str(tmp_path / 'two.json')]) == 0
    rows = capsys.readouterr().out.splitlines()
    labelled = [row for row in rows if row.startswith((str(run / 'best.pt'), str(other)))]
    assert len(labelled) == 2 and len({row.index('%') for row in labelled}) == 1
    two = json.loads((tmp_path / 'two.json').read_text())['results']['one-step-global']
    assert {str(run / 'best.pt'), str(other)} <= set(two) and 'dmn-pf' not in two
    # a likelihood scale reaches the filter: other estimates, recorded in the JSON
    scaled = {}
    for scale in ('1', '4'):
        out = tmp_path / f'scale{scale}.json'
        assert evaluate_main(['--data', str(tiny / 'val'), '--checkpoint', str(run / 'best.pt'),
                              '--baselines', '--episodes', '8', '--protocols',
                              'sequential-global', '--likelihood-scale', scale, '--out',
                              str(out)]) == 0
        scaled[scale] = json.loads(out.read_text())
    assert scaled['4']['likelihood_scale'] == 4.0
    mse = {s: r['results']['sequential-global']['dmn-pf']['mse'] for s, r in scaled.items()}
    assert mse['1'] != mse['4']
    assert evaluate_main(['--data', str(tiny / 'val'), '--checkpoint', str(run / 'best.pt'),
                          '--likelihood-scale', '0']) == 2
    # so does the mode estimate (the same beliefs, another estimate of them)
    out = tmp_path / 'mode.json'
    assert evaluate_main(['--data', str(tiny / 'val'), '--checkpoint', str(run / 'best.pt'),
                          '--baselines', '--episodes', '8', '--protocols',
                          'sequential-global', '--mode-bandwidth', '0.3', '--out',
                          str(out)]) == 0
    mode = json.loads(out.read_text())
    assert mode['mode_bandwidth'] == 0.3 and scaled['1']['mode_bandwidth'] is None
    assert mode['results']['sequential-global']['dmn-pf']['mse'] != mse['1']
    assert evaluate_main(['--data', str(tiny / 'val'), '--checkpoint', str(run / 'best.pt'),
                          '--mode-bandwidth', '-1']) == 2


def test_a_second_signal_stops_at_once_unless_it_is_a_copy_of_the_first(monkeypatch):
    import signal

    from dmn_localization.learning import run_control

    now = [100.0]
    monkeypatch.setattr(run_control.time, 'monotonic', lambda: now[0])
    request = run_control.StopRequest()
    request(signal.SIGTERM, None)  # stop at the step
    now[0] += run_control.SAME_STOP_S / 2
    request(signal.SIGINT, None)  # the same stop, delivered twice: no exception
    assert request.signum == signal.SIGTERM
    now[0] += run_control.SAME_STOP_S
    with pytest.raises(KeyboardInterrupt):  # asked again: stop now
        request(signal.SIGTERM, None)


def test_the_contrastive_term_scores_the_true_pose_among_the_particles():
    from dmn_localization.core.models import build_model, config_for
    from dmn_localization.learning.batches import TensorEpisodes
    from dmn_localization.learning.episode_loss import EpisodeLoss

    torch.manual_seed(0)
    batch, steps = 3, 1
    episodes = TensorEpisodes(torch.randn(batch, 4, 3, 32, 32), torch.rand(batch, 4, 3) - 0.5,
                              torch.randn(batch, steps, 3, 32, 32),
                              torch.rand(batch, steps, 3) - 0.5, torch.zeros(batch, steps, 3),
                              torch.tensor([[-1.0, -1.0, 1.0, 1.0]] * batch))
    model = build_model(config_for('dmn-pf'))
    losses = {}
    for weight in (0.0, 1.0):
        module = EpisodeLoss(model, 16, uniform_share=0.25, nce_weight=weight)
        losses[weight] = module(episodes, torch.Generator().manual_seed(1))
    # the contrastive term is a cross-entropy over K + 1 = 17 candidates: about log(17)
    extra = (losses[1.0] - losses[0.0]).detach().item()
    assert 1.0 < extra < 6.0, extra
    losses[1.0].backward()
    assert all(p.grad is not None for p in model.head_mlp.parameters())
    regression = build_model(config_for('dmn-regression'))
    assert EpisodeLoss(regression, 16, nce_weight=1.0).nce_weight == 0.0


def test_model_options_are_typed_and_checked():
    from dmn_localization.learning.train_cli import parse_model_options

    assert parse_model_options('dmn-pf', ['match_score=false', 'head_hidden=96']) == {
        'match_score': False, 'head_hidden': 96}
    assert parse_model_options('dmn-pf', ['pose_match_grid=4,8']) == {
        'pose_match_grid': (4, 8)}
    for bad in (['match_score=maybe'], ['no_such_field=1'], ['name=x'], ['head_hidden'],
                ['pose_match_grid=4'], ['pose_match_grid=4,x']):
        with pytest.raises(ValueError, match='--model-option'):
            parse_model_options('dmn-pf', bad)


def test_init_from_takes_the_options_of_its_checkpoint(tmp_path):
    from dmn_localization.core.checkpoint import save_checkpoint
    from dmn_localization.core.models import build_model, config_for
    from dmn_localization.learning.train_cli import options_of_checkpoint

    path = tmp_path / 'old.pt'
    save_checkpoint(path, build_model(config_for('dmn-pf', match_score=False, head_hidden=96)),
                    [0.0, 0.0, 8.0, 8.0])
    assert options_of_checkpoint('dmn-pf', str(path)) == {'match_score': False,
                                                          'head_hidden': 96}
    # tuple options come along too, the image size (the data's) does not
    save_checkpoint(path, build_model(config_for('dmn-pf', pose_match_dim=8,
                                                 pose_match_grid=(4, 8), image_size=(16, 16))),
                    [0.0, 0.0, 8.0, 8.0])
    assert options_of_checkpoint('dmn-pf', str(path)) == {'pose_match_dim': 8,
                                                          'pose_match_grid': (4, 8)}
    with pytest.raises(ValueError, match='holds a dmn-pf model, not vector-pf'):
        options_of_checkpoint('vector-pf', str(path))
    with pytest.raises(ValueError, match='--init-from'):
        options_of_checkpoint('dmn-pf', str(tmp_path / 'missing.pt'))


def test_a_run_can_start_from_the_weights_of_a_checkpoint(tiny, tmp_path, capsys):
    first = tmp_path / 'first'
    assert train_main(train_args(tiny, first, 160)) == 0
    # with a zero learning rate, the continued run must end exactly at the weights it began from
    second = tmp_path / 'second'
    args = train_args(tiny, second, 80, ['--init-from', str(first / 'best.pt')])
    args[args.index('--lr') + 1] = '0'
    args[args.index('--seed') + 1] = '6'  # another seed: another random initialization
    assert train_main(args) == 0
    start = torch.load(first / 'best.pt', weights_only=True)
    end = torch.load(second / 'last.pt', weights_only=True)
    for key, tensor in start['state_dict'].items():
        assert torch.equal(tensor, end['model'][key]), key
    best = torch.load(second / 'best.pt', weights_only=True)['metadata']
    assert best['init_from'] == str(first / 'best.pt')
    assert best['init_samples'] == start['metadata']['samples'] > 0
    # a chain of runs adds up: the third run starts behind the samples of the first two
    chained = tmp_path / 'chained'
    assert train_main(train_args(tiny, chained, 40, ['--init-from', str(second / 'best.pt')])) == 0
    third = torch.load(chained / 'best.pt', weights_only=True)['metadata']
    assert third['init_samples'] == best['samples'] + best['init_samples']
    # another architecture is refused with a clear message
    other = train_args(tiny, tmp_path / 'third', 80, ['--init-from', str(first / 'best.pt'),
                                                      '--model-option', 'match_score=false'])
    assert train_main(other) == 2
    assert '--init-from' in capsys.readouterr().err


def test_weights_of_another_image_size_load_and_another_architecture_does_not(tmp_path):
    from dmn_localization.core.checkpoint import save_checkpoint
    from dmn_localization.core.models import build_model, config_for
    from dmn_localization.learning.trainer import _load_weights, TrainingError

    torch.manual_seed(0)
    coarse = build_model(config_for('dmn-pf', image_size=(32, 32)))
    path = tmp_path / 'coarse.pt'
    save_checkpoint(path, coarse, [0.0, 0.0, 8.0, 8.0])
    fine = build_model(config_for('dmn-pf', image_size=(64, 64)))
    _load_weights(fine, str(path))
    for key, tensor in coarse.state_dict().items():
        assert torch.equal(tensor, fine.state_dict()[key]), key
    features = fine.query_encoder(torch.zeros(1, 3, 64, 64))
    assert features.shape[-2:] == coarse.query_encoder(torch.zeros(1, 3, 32, 32)).shape[-2:]
    with pytest.raises(TrainingError, match='this run trains'):
        _load_weights(build_model(config_for('dmn-pf', head_hidden=96)), str(path))


def test_model_card_ships_a_corrected_count_of_the_samples_behind_a_run(tiny, tmp_path,
                                                                        monkeypatch):
    from dmn_localization.core.checkpoint import load_checkpoint
    from dmn_localization.learning import model_card

    first, second = tmp_path / 'first', tmp_path / 'second'
    assert train_main(train_args(tiny, first, 40)) == 0
    assert train_main(train_args(tiny, second, 40,
                                 ['--init-from', str(first / 'best.pt')])) == 0
    monkeypatch.setattr(model_card, 'MODELS_DIR', tmp_path)
    monkeypatch.setattr(model_card, 'regression_success', lambda target, domain: 0.5)
    card = model_card.write_card('tiny-pf', second / 'best.pt', tiny / 'val', 4,
                                 init_samples=1_000_000)
    shipped = load_checkpoint(tmp_path / 'tiny-pf.pt')
    original = load_checkpoint(second / 'best.pt')
    assert shipped.fingerprint == original.fingerprint
    assert shipped.metadata['init_samples'] == 1_000_000
    assert shipped.metadata['init_samples_recorded'] == original.metadata['init_samples']
    total = 1_000_000 + original.metadata['samples']
    assert f'Budget: {total:,} training samples seen' in card.read_text()
    from dmn_localization.learning.provenance import code_revision

    assert f'- Code: `{code_revision()}` (`git describe`' in card.read_text()
    with pytest.raises(ValueError, match='did not start from another checkpoint'):
        model_card.write_card('tiny-pf', first / 'best.pt', tiny / 'val', 4, init_samples=5)


def test_moving_the_world_changes_nothing_for_dmn_but_image_pf(tiny):
    from dmn_localization.bench.extent_shift import shift_errors
    from dmn_localization.core.models import build_model, config_for
    from dmn_localization.data.dataset import Dataset

    torch.manual_seed(0)
    dataset = Dataset(tiny / 'val')
    errors = {}
    for name in ('dmn-pf', 'image-pf'):
        model = build_model(config_for(name, image_size=(16, 16))).eval()
        errors[name] = shift_errors(model, name, dataset, episodes=6, shift=0.5)
    np.testing.assert_allclose(errors['dmn-pf']['moved'], errors['dmn-pf']['in place'],
                               atol=1e-4)
    assert not np.allclose(errors['image-pf']['moved'], errors['image-pf']['in place'],
                           atol=1e-4)


def test_frame_shift_moves_each_world_and_nothing_else(tiny):
    from dmn_localization.core.configs import InputConfig
    from dmn_localization.learning.batches import to_tensors, with_frame_change
    from dmn_localization.data.dataset import Dataset
    from dmn_localization.data.episodes import EpisodeSampler

    batch = EpisodeSampler(Dataset(tiny / 'val'), 4, 3).sample(
        20, np.random.default_rng(0))
    episodes = to_tensors(batch, InputConfig(image_size=(16, 16)), torch.device('cpu'))
    rng = np.random.default_rng(1)
    state = dict(rng.bit_generator.state)
    assert with_frame_change(episodes, 0.0, rng) is episodes
    assert rng.bit_generator.state == state  # no shift draws nothing
    moved = with_frame_change(episodes, 0.4, rng)
    offsets = moved.bounds[:, :2] - episodes.bounds[:, :2]
    assert float(offsets.abs().max()) <= 0.4 and float(offsets.std()) > 0.05
    torch.testing.assert_close(moved.bounds[:, 2:] - episodes.bounds[:, 2:], offsets)
    torch.testing.assert_close(moved.truth[..., :2] - episodes.truth[..., :2],
                               offsets[:, None].expand(-1, 3, -1))
    torch.testing.assert_close(moved.context_poses[..., :2] - episodes.context_poses[..., :2],
                               offsets[:, None].expand(-1, 4, -1))
    for field in ('motions', 'query_images', 'context_images'):
        assert torch.equal(getattr(moved, field), getattr(episodes, field)), field
    assert torch.equal(moved.truth[..., 2], episodes.truth[..., 2])
    assert moved.turn is None
    with pytest.raises(ValueError, match='frame shift'):
        with_frame_change(episodes, -0.1, rng)


def test_frame_turn_turns_each_world_about_its_centre_and_its_global_belief(tiny):
    from dmn_localization.core import geometry
    from dmn_localization.core.configs import InputConfig
    from dmn_localization.learning.batches import to_tensors, with_frame_change
    from dmn_localization.data.dataset import Dataset
    from dmn_localization.data.episodes import EpisodeSampler

    batch = EpisodeSampler(Dataset(tiny / 'val'), 4, 3).sample(
        20, np.random.default_rng(0))
    episodes = to_tensors(batch, InputConfig(image_size=(16, 16)), torch.device('cpu'))
    rng = np.random.default_rng(1)
    state = dict(rng.bit_generator.state)
    assert with_frame_change(episodes, 0.0, rng, 0.0) is episodes
    assert rng.bit_generator.state == state  # no turn draws nothing
    turned = with_frame_change(episodes, 0.3, rng, 90.0)
    assert turned.turn is not None and turned.turn.shape == (20,)
    assert float(turned.turn.abs().max()) <= math.pi / 2 and float(turned.turn.std()) > 0.3
    # the same world: every pose relative to every other is unchanged
    torch.testing.assert_close(geometry.egocentric(turned.truth, turned.context_poses),
                               geometry.egocentric(episodes.truth, episodes.context_poses),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(geometry.wrap_angle(turned.truth[..., 2] - episodes.truth[..., 2]),
                               turned.turn[:, None].expand(-1, 3), atol=1e-5, rtol=0)
    for field in ('motions', 'query_images', 'context_images'):
        assert torch.equal(getattr(turned, field), getattr(episodes, field)), field
    # the global belief is drawn over the turned extent: the same draws, turned
    belief = turned.global_belief().sample(500, torch.Generator().manual_seed(3))
    plain = turned.select(slice(0, 20))
    plain.turn = None
    unturned = plain.global_belief().sample(500, torch.Generator().manual_seed(3))
    center = (turned.bounds[:, :2] + turned.bounds[:, 2:]) / 2
    back = (belief.particles[..., :2] - center[:, None])
    cos, sin = torch.cos(-turned.turn)[:, None], torch.sin(-turned.turn)[:, None]
    back = torch.stack([cos * back[..., 0] - sin * back[..., 1],
                        sin * back[..., 0] + cos * back[..., 1]], -1) + center[:, None]
    torch.testing.assert_close(back, unturned.particles[..., :2], atol=1e-5, rtol=0)
    assert turned.select(slice(2, 5)).turn.shape == (3,)
    with pytest.raises(ValueError, match='frame shift and turn'):
        with_frame_change(episodes, 0.0, rng, -1.0)
    with pytest.raises(ValueError, match='at most 180'):
        with_frame_change(episodes, 0.0, rng, 181.0)


def test_turning_the_world_changes_nothing_for_dmn_but_image_pf(tiny, tmp_path):
    from dmn_localization.core.models import build_model, config_for
    from dmn_localization.data.dataset import Dataset
    from dmn_localization.learning.evaluation import fixed_episodes, PROTOCOLS, run_model
    from dmn_localization.learning.plots import plot_belief

    torch.manual_seed(0)
    dataset = Dataset(tiny / 'val')
    spec = PROTOCOLS['sequential-global']
    for name in ('dmn-pf', 'image-pf', 'closest-context'):
        model = None if name == 'closest-context' else build_model(
            config_for(name, image_size=(16, 16))).eval()
        config = model.config if model is not None else config_for('dmn-pf', image_size=(16, 16))
        plain = fixed_episodes(dataset, spec, 6, 0, config, torch.device('cpu'))
        turned = fixed_episodes(dataset, spec, 6, 0, config, torch.device('cpu'),
                                frame_shift=0.2, frame_turn=180.0)
        errors = [run_model(model, name, data, spec, torch.Generator().manual_seed(0))
                  for data in (plain, turned)]
        if name == 'image-pf':
            assert not np.allclose(errors[0], errors[1], atol=1e-4)
            # the belief plot of a turned world (over the box around the turned extent)
            path = plot_belief(model, turned, 0, tmp_path / 'belief.png', num_particles=64)
            assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
        else:
            np.testing.assert_allclose(errors[1], errors[0], atol=1e-4, err_msg=name)


def test_training_and_evaluation_with_a_frame_shift(tiny, tmp_path, capsys):

    out = tmp_path / 'run'
    assert train_main(train_args(tiny, out, 800, ['--frame-shift', '0.3'])) == 0
    assert json.loads((out / 'config.json').read_text())['frame_shift'] == 0.3
    rows = read_log(out / 'log.csv')
    plain = tmp_path / 'plain'
    assert train_main(train_args(tiny, plain, 800)) == 0
    # the moved worlds change what the model is trained and validated on
    assert [r['val_loss'] for r in rows] != [r['val_loss'] for r in read_log(plain / 'log.csv')]
    # the run resumes with its shift and refuses another one
    assert train_main(train_args(tiny, out, 1200, ['--frame-shift', '0.3'])) == 0
    assert train_main(train_args(tiny, out, 1600, ['--frame-shift', '0.1'])) != 0
    capsys.readouterr()
    results = {}
    for shift, turn in (('0', '0'), ('0.5', '0'), ('0.5', '180')):
        json_out = tmp_path / f'eval-{shift}-{turn}.json'
        assert evaluate_main(['--data', str(tiny / 'val'), '--checkpoint', str(out / 'best.pt'),
                              '--baselines', 'closest-context', 'uninformed',
                              '--episodes', '12', '--protocols', 'sequential-global',
                              '--frame-shift', shift, '--frame-turn', turn,
                              '--out', str(json_out)]) == 0
        results[shift, turn] = json.loads(json_out.read_text())
    assert results['0.5', '0']['frame_shift'] == 0.5
    assert results['0.5', '180']['frame_turn'] == 180
    assert 'worlds turned up to 180 degrees' in capsys.readouterr().out
    seq = {s: r['results']['sequential-global'] for s, r in results.items()}
    # the oracle and the egocentric DMN see neither the move nor the turn: the moved
    # bounds and the turned global belief are used
    for name in ('closest-context', 'dmn-pf'):
        for change in (('0.5', '0'), ('0.5', '180')):
            assert seq[change][name]['success'] == pytest.approx(seq['0', '0'][name]['success'])
    assert evaluate_main(['--data', str(tiny / 'val'), '--baselines', 'uninformed',
                          '--episodes', '2', '--frame-turn', '200']) == 2
    assert 'at most 180' in capsys.readouterr().err
    # training with turned worlds: recorded, part of the run's identity
    turned = tmp_path / 'turned'
    assert train_main(train_args(tiny, turned, 400, ['--frame-turn', '180'])) == 0
    assert json.loads((turned / 'config.json').read_text())['frame_turn'] == 180

    def first_val_loss(run):
        return next(float(r['val_loss']) for r in read_log(run / 'log.csv') if r['val_loss'])

    # the turned worlds change what the model is trained and validated on
    assert first_val_loss(turned) != pytest.approx(first_val_loss(plain), abs=1e-6)
    assert load_checkpoint(turned / 'best.pt').metadata['frame_turn'] == 180
    assert train_main(train_args(tiny, turned, 800, ['--frame-turn', '90'])) != 0
    capsys.readouterr()
    assert train_main(train_args(tiny, tmp_path / 'bad', 40, ['--frame-turn', '200'])) == 2
    assert 'frame turn in [0, 180] degrees' in capsys.readouterr().err
    assert not (tmp_path / 'bad' / 'config.json').exists()


def test_model_card_names_options_frame_shift_and_what_the_frame_must_be(
        tiny, tmp_path, monkeypatch):
    from dmn_localization.learning import model_card

    run = tmp_path / 'run'
    assert train_main(train_args(tiny, run, 40, [
        '--frame-shift', '0.3', '--frame-turn', '45', '--model-option', 'ego_value_dim=8',
        '--model-option', 'global_heading=true'])) == 0
    monkeypatch.setattr(model_card, 'MODELS_DIR', tmp_path)
    monkeypatch.setattr(model_card, 'regression_success', lambda target, domain: 0.5)
    text = model_card.write_card('tiny-heading', run / 'best.pt', tiny / 'val', 2).read_text()
    assert '- Model options: `ego_value_dim=8`, `global_heading=True`' in text
    assert '`dmn_train --frame-shift 0.3`' in text
    assert 'turned about their centre by up to 45 degrees (`dmn_train --frame-turn 45`)' in text
    assert "reads the particle's heading in the map frame" in text
    # measured in place and, beside it, with the frame change it was trained with
    assert ('On the test worlds moved by up to 0.3 and turned by up to 45 degrees, as in '
            'training') in text
    assert '--episodes 2 --frame-shift 0.3 --frame-turn 45`' in text
    saved = json.loads((tmp_path / 'tiny-heading.json').read_text())
    assert saved['test_moved']['frame_turn'] == 45
    assert set(saved['test_moved']['results']) == set(saved['test']['results'])
    assert text.count('| protocol | success |') == 2
    plain = tmp_path / 'plain'
    assert train_main(train_args(tiny, plain, 40)) == 0
    text = model_card.write_card('tiny-plain', plain / 'best.pt', tiny / 'val', 2).read_text()
    assert 'Model options' not in text and 'frame-' not in text and 'map frame' not in text
    assert 'test_moved' not in json.loads((tmp_path / 'tiny-plain.json').read_text())
    assert 'Training episodes' not in text and 'cosine' not in text
    # strict success beside the paper's reading, from the same evaluation
    results = json.loads((tmp_path / 'tiny-plain.json').read_text())['test']['results']
    one_step = results['one-step-global']['dmn-pf']
    assert (f'| one-step-global | {one_step["success"]:.1%} ± {one_step["success_stderr"]:.1%} '
            f'| {one_step["success_strict"]:.1%} | {one_step["mse"]:.4f} |') in text
    # the training for global localization says what it was
    trained = tmp_path / 'trained'
    assert train_main(train_args(tiny, trained, 40, [
        '--batch-size', '4', '--queries-per-map', '2', '--density-weight', '0.5',
        '--lr-schedule', 'cosine', '--select-by', 'global_success', '--nce-weight', '0.5',
        '--nce-near-share', '0.25'])) == 0
    text = model_card.write_card('tiny-trained', trained / 'best.pt', tiny / 'val', 2).read_text()
    assert ('- Training episodes: 2 episodes per encoded map; belief-density term of weight 0.5 '
            'beside the pose loss; contrastive term of weight 0.5 (the true pose scored '
            "against the belief's particles, 25% of them 0.15-0.6 normalized units from the "
            'truth); checkpoint chosen by one-step global success on validation.') in text
    assert 'learning rate 0.003 at its peak, lowered along a cosine over the budget' in text


def test_learning_rate_decays_on_plateau_and_resumes_exactly(tiny, tmp_path, capsys):
    decay = ['--lr-decay-factor', '0.5', '--lr-decay-patience', '0', '--val-every-samples',
             '160']
    whole, parts = tmp_path / 'whole', tmp_path / 'parts'
    assert train_main(train_args(tiny, whole, 960, decay)) == 0
    # the rate halves at every validation whose loss is not below the best before it
    losses = [float(r['val_loss']) for r in read_log(whole / 'log.csv') if r['val_loss']]
    assert len(losses) == 6
    drops = sum(loss >= min(losses[:i]) for i, loss in enumerate(losses) if i)
    assert drops >= 1, losses  # else this test shows nothing; pick another seed
    state = torch.load(whole / 'last.pt', weights_only=True)
    assert state['optimizer']['param_groups'][0]['lr'] == pytest.approx(3e-3 * 0.5 ** drops)
    assert 'learning rate now' in capsys.readouterr().out
    # the best checkpoint and its model card say the schedule
    from dmn_localization.learning.model_card import _rate_text

    meta = load_checkpoint(whole / 'best.pt').metadata
    assert meta['lr_decay_factor'] == 0.5 and meta['lr_now'] <= 3e-3
    assert 'multiplied by 0.5 after more than 0 validations' in _rate_text(meta)
    assert _rate_text({'lr': 3e-4}) == 'learning rate 0.0003'
    # interrupted between two validations (its budget's end validates, off the grid), the
    # schedule goes on as if it had not been
    assert train_main(train_args(tiny, parts, 400, decay)) == 0
    assert train_main(train_args(tiny, parts, 960, decay)) == 0
    resumed = torch.load(parts / 'last.pt', weights_only=True)
    assert resumed['lr_scheduler'] == state['lr_scheduler']
    for key, tensor in state['model'].items():
        assert torch.equal(tensor, resumed['model'][key]), key
    # the constant rate of the paper's protocol, and settings that make no sense
    assert train_main(train_args(tiny, tmp_path / 'constant', 80)) == 0
    constant = torch.load(tmp_path / 'constant' / 'last.pt', weights_only=True)
    assert constant['lr_scheduler'] is None
    assert constant['optimizer']['param_groups'][0]['lr'] == 3e-3
    for bad in (['--lr-decay-factor', '0'], ['--lr-decay-factor', '1.5'],
                ['--lr-decay-patience', '-1']):
        assert train_main(train_args(tiny, tmp_path / 'bad', 16, bad)) == 2
        assert 'learning-rate decay' in capsys.readouterr().err
    assert not (tmp_path / 'bad' / 'last.pt').exists()


def test_a_finishing_stage_goes_back_to_the_best_weights_at_a_lower_rate(tmp_path):
    from dmn_localization.core.checkpoint import save_checkpoint
    from dmn_localization.core.models import build_model, config_for
    from dmn_localization.learning.train_config import TrainConfig, TrainingError
    from dmn_localization.learning.trainer import _begin_finish, Counters

    torch.manual_seed(0)
    best = build_model(config_for('vector-regression'))
    save_checkpoint(tmp_path / 'best.pt', best, [0.0, 0.0, 4.0, 4.0], {'samples': 320})
    torch.manual_seed(1)
    model = build_model(config_for('vector-regression'))  # the weights at the budget's end
    assert not all(torch.equal(a, b) for a, b in zip(model.parameters(), best.parameters()))
    counters = Counters(samples=640, stopped_early=True, bad_validations=5)
    config = TrainConfig('vector-regression', '', '', str(tmp_path), lr=3e-4,
                         finish_samples=300, finish_lr_factor=0.5)
    optimizer = _begin_finish(model, tmp_path, config, counters, 1)
    for key, tensor in best.state_dict().items():
        assert torch.equal(model.state_dict()[key], tensor), key
    assert counters == Counters(samples=640, stopped_early=False, bad_validations=0,
                                stage=1, finish_start=640, finish_lr_factor=0.5)
    assert optimizer.param_groups[0]['lr'] == pytest.approx(1.5e-4)
    assert not optimizer.state  # a fresh Adam: no moments
    assert {id(p) for p in optimizer.param_groups[0]['params']} == {
        id(p) for p in model.parameters()}
    (tmp_path / 'best.pt').unlink()
    with pytest.raises(TrainingError, match='no best.pt'):
        _begin_finish(model, tmp_path, config, Counters(), 1)


def test_a_finishing_stage_follows_the_budget_and_resumes_exactly(tiny, tmp_path, capsys):
    finish = ['--finish-samples', '320', '--finish-lr-factor', '0.5']
    whole = tmp_path / 'whole'
    assert train_main(train_args(tiny, whole, 640, finish)) == 0
    state = torch.load(whole / 'last.pt', weights_only=True)
    counters = state['counters']
    assert (counters['samples'], counters['stage'], counters['finish_start']) == (960, 1, 640)
    assert state['optimizer']['param_groups'][0]['lr'] == pytest.approx(1.5e-3)
    out = capsys.readouterr().out
    assert 'learning rate now 0.0015' in out
    validated = [int(r['samples']) for r in read_log(whole / 'log.csv') if r['val_loss']]
    assert validated == [400, 640, 800, 960]  # the grid, and each stage's end
    meta = load_checkpoint(whole / 'best.pt').metadata
    assert (meta['finish_samples'], meta['finish_lr_factor']) == (320, 0.5)
    assert meta['stage'] == (1 if meta['samples'] > 640 else 0)
    from dmn_localization.learning.model_card import _rate_text

    assert _rate_text(meta).startswith('learning rate 0.003, then 320 samples from the best '
                                       'checkpoint at 0.5 of the rate, with a fresh Adam (this '
                                       'checkpoint is from ')
    # a run that spent its budget without one is given one: the same run
    parts = tmp_path / 'parts'
    assert train_main(train_args(tiny, parts, 640)) == 0
    assert torch.load(parts / 'last.pt', weights_only=True)['counters']['stage'] == 0
    assert train_main(train_args(tiny, parts, 640, ['--finish-samples', '160', *finish[2:]])) == 0
    assert train_main(train_args(tiny, parts, 640, finish)) == 0  # and it grows on resume
    resumed = assert_same_run(whole, parts, 960)['optimizer']
    assert resumed['param_groups'] == state['optimizer']['param_groups']
    for key, moments in state['optimizer']['state'].items():  # Adam's, from the stage's start
        for name, value in moments.items():
            assert torch.equal(torch.as_tensor(value),
                               torch.as_tensor(resumed['state'][key][name]))
    # once the stage has begun its rate is fixed
    assert train_main(train_args(tiny, parts, 640, ['--finish-samples', '480'])) == 2
    assert 'in its finishing stage at 0.5 of the rate, not 0.333' in capsys.readouterr().err
    # settings that make no sense are refused before the run is touched
    for bad, message in ((['--finish-samples', '-1'], 'samples >= 0'),
                         (['--finish-lr-factor', '0'], 'factor must be in'),
                         (finish + ['--lr-decay-factor', '0.5'], 'choose one')):
        assert train_main(train_args(tiny, tmp_path / 'bad', 16, bad)) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / 'bad' / 'last.pt').exists()


def test_attention_report_sees_saturated_and_aligned_attention(tiny, tmp_path, capsys):
    from dmn_localization.core.checkpoint import save_checkpoint
    from dmn_localization.core.models import build_model, config_for
    from dmn_localization.learning.attention_report import attention_stats, main as report_main
    from dmn_localization.learning.batches import TensorEpisodes

    gen = torch.Generator().manual_seed(7)
    poses = torch.rand(6, 4, 3, generator=gen) * 2 - 1
    episodes = TensorEpisodes(torch.randn(6, 4, 3, 32, 32, generator=gen), poses,
                              torch.randn(6, 1, 3, 32, 32, generator=gen), poses[:, :1],
                              torch.zeros(6, 1, 3), torch.tensor([[-1.0, -1.0, 1.0, 1.0]] * 6))
    torch.manual_seed(7)
    plain = attention_stats(build_model(config_for('dmn-pf')), episodes, 64)
    assert 0.15 < plain.aligned_weight < 0.35 and plain.particle_share > 0.5, plain
    # a prior far above the learned logits: all weight on the view facing the particle's way
    torch.manual_seed(7)
    prior = attention_stats(build_model(config_for('dmn-pf', attention_prior=50.0)), episodes,
                            64)
    assert prior.aligned_weight > 0.9 and prior.max_weight > 0.9, prior
    # features blown up a hundredfold (Mazes seed 1 of the table): the logits grow and
    # depend on the view only, so the attention no longer reads the particle's pose
    torch.manual_seed(7)
    model = build_model(config_for('dmn-pf'))
    with torch.no_grad():
        for encoder in (model.view_encoder, model.query_encoder):
            encoder.net[6].weight.mul_(100)
            encoder.net[6].bias.mul_(100)
    blown = attention_stats(model, episodes, 64)
    assert blown.view_rms > 50 * plain.view_rms
    assert blown.logit_variance > 100 * plain.logit_variance
    assert blown.particle_share < 0.5 < plain.particle_share, (blown, plain)
    # the command on a real dataset and checkpoint; any other model is refused
    torch.manual_seed(7)
    tiny_dmn = build_model(config_for('dmn-pf', image_size=(16, 16)))
    # a later stage of a chain: its own samples and those behind its starting weights
    save_checkpoint(tmp_path / 'dmn.pt', tiny_dmn, [4.0, 4.0],
                    {'samples': 300000, 'init_samples': 3900000})
    save_checkpoint(tmp_path / 'image.pt', build_model(config_for('image-pf')), [4.0, 4.0])
    assert report_main(['--data', str(tiny / 'val'), '--checkpoint', str(tmp_path / 'dmn.pt'),
                        '--episodes', '8', '--particles', '16']) == 0
    out = capsys.readouterr().out
    assert '(4.20M samples)' in out and 'particle share' in out
    assert report_main(['--data', str(tiny / 'val'), '--checkpoint',
                        str(tmp_path / 'image.pt')]) == 2
    assert 'per-view attention of DMN' in capsys.readouterr().err
