"""dmn_train and dmn_evaluate: learning, exact resumption, DDP, metrics on known cases."""

import contextlib
import csv
import dataclasses
import json
import math
import os
from pathlib import Path
import random
import subprocess
import sys
import time

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


def results_data(tiny, tmp_path):
    """Return a ``dmn_results --data`` directory of the tiny Rooms sets (val as test)."""
    data = tmp_path / 'data'
    data.mkdir()
    for split, source in (('train', 'train'), ('val', 'val'), ('test', 'val')):
        (data / f'rooms-{split}').symlink_to(tiny / source)
    return data


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
    import pickle  # as dmn_results gets it from a worker process

    sent = trainer.TrainingInterrupted('SIGTERM', 104, parts)
    got = pickle.loads(pickle.dumps(sent))
    assert (str(got), got.signal_name, got.samples, got.out) == (str(sent), 'SIGTERM', 104,
                                                                 parts)
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


def test_results_pipeline_writes_the_table(tiny, tmp_path, capsys):
    from dmn_localization.learning.results import main as results_main

    data = results_data(tiny, tmp_path)
    out = tmp_path / 'RESULTS.md'
    runs = tmp_path / 'runs'
    args = ['--data', str(data), '--runs', str(runs), '--budget-samples', '32',
            '--episodes', '4', '--models', 'dmn-pf', 'vector-regression', '--domains', 'rooms',
            '--one-seed', '--val-every-samples', '16', '--val-episodes', '8', '--out', str(out),
            '--lr-grid', '3e-3', '1e-4', '--search-samples', '16', '--tie-margin', '0',
            '--records', str(tmp_path / 'records')]
    assert results_main(args + ['--jobs', '2']) == 0  # two runs side by side
    text = out.read_text()
    assert '| View-embedding | PF-DMN (ours) |' in text and '(95.6%)' in text  # paper beside
    assert 'Closest context' in text and '32 samples for every learned model' in text
    assert 'Worlds in their normalized frame: in place' in text
    assert 'the path a run takes): contiguous (4 runs)' in text  # the plan's default
    from dmn_localization.learning.provenance import machine

    assert f'depend on them): {machine()} (4 runs)' in text
    why = text[text.index("## Why ours differ from the paper's"):]
    assert 'Rooms: uninformed ' in why and '(paper 1.7%)' in why  # measured beside paper
    assert "in place the walls run along the frame's axes" in why
    assert 'Here the worlds' not in why and 'heading row' not in why  # no such row here
    assert (tmp_path / 'docs' / 'learning-curves-rooms.png').exists()
    # the stricter reading (x-y distance under 0.2): a second table, never above the first
    closest = [float(line.split('|')[3].split('%')[0]) for line in text.splitlines()
               if line.startswith('| Closest context |')]
    assert len(closest) == 2 and closest[1] <= closest[0]
    saved = json.loads((tmp_path / 'RESULTS.json').read_text())['rooms']
    assert set(saved) == {'sequential-global', 'one-step-global', 'sequential-global/strict',
                          'one-step-global/strict'}
    assert 'At the stricter reading (x-y distance below 0.2, the second table)' in why
    # the search: seed 0 at both rates for 16 samples; the lower validation loss goes on
    for model in ('dmn-pf', 'vector-regression'):
        score = {}
        for rate in ('0.003', '0.0001'):
            rows = read_log(runs / f'{model}-rooms-lr{rate}-s0' / 'log.csv')
            score[rate] = float(next(r['val_loss'] for r in rows if r['val_loss']))
        chosen = min(score, key=score.get)
        other = next(rate for rate in score if rate != chosen)
        row = next(line for line in text.splitlines() if line.startswith(f'| {model} | rooms'))
        assert f'**{score[chosen]:.4f}**' in row and f'| {float(chosen):g} | ' in row
        assert f'| {model} rooms s0 | {float(chosen):g} | 32 |' in text  # the full budget
        assert f'| {model} rooms s0 | {float(other):g} | 16 |' in text and 'search done' in text
    # the chosen run went on as if it had been one run: the same log as an uninterrupted one
    from dmn_localization.learning.results_plan import ResultsPlan
    from dmn_localization.learning.trainer import train

    plan = ResultsPlan(data, runs, 32, val_every_samples=16, val_episodes=8,
                       lr_grid=(3e-3, 1e-4), search_samples=16, tie_margin=0.0)
    searched = plan.train_config('dmn-pf', 'rooms', 0)
    train(dataclasses.replace(searched, out=str(tmp_path / 'straight')), progress=False)

    def values(path):
        return [{k: v for k, v in r.items() if k != 'elapsed_s'} for r in read_log(path)]

    assert values(tmp_path / 'straight' / 'log.csv') == values(Path(searched.out) / 'log.csv')
    # a second call adopts the finished runs: nothing is trained again
    logs = {p: p.read_bytes() for p in runs.glob('*/log.csv')}
    assert results_main(args) == 0
    assert {p: p.read_bytes() for p in runs.glob('*/log.csv')} == logs and len(logs) == 4
    assert '; its wall time: ' in out.read_text()
    # --status prints how far the plan is and writes nothing
    capsys.readouterr()
    written = out.stat().st_mtime_ns
    assert results_main(args + ['--status']) == 0
    said = capsys.readouterr().out
    assert 'Trained 96 of 96 planned samples (100%); nothing left to train' in said
    assert out.stat().st_mtime_ns == written
    # test results are kept beside their runs and read back while their key holds
    assert len(list(runs.glob('*/test-eval.json'))) == 2  # the two chosen runs
    kept = runs / 'closest-context-rooms-test-eval.json'
    stored = json.loads(kept.read_text())
    measured = stored['results']['sequential-global']['success']

    def closest_cell():
        row = next(line for line in out.read_text().splitlines()
                   if line.startswith('| Closest context |'))
        return row.split('|')[3].strip().split(' ')[0]

    assert closest_cell() == f'{measured:.1%}'
    stored['results']['sequential-global']['success'] = 0.123
    kept.write_text(json.dumps(stored))
    assert results_main(args + ['--no-train']) == 0
    assert closest_cell() == '12.3%'  # read, not measured
    # a report rewritten from the records claims no wall time of its own
    said = out.read_text()
    assert 'it trained nothing (`--no-train`)' in said and 'its wall time' not in said
    stored['key']['eval_version'] = -1  # as if the evaluation had changed since
    kept.write_text(json.dumps(stored))
    assert results_main(args + ['--no-train']) == 0
    assert closest_cell() == f'{measured:.1%}'  # measured again
    stored = json.loads(kept.read_text())
    stored['results']['sequential-global']['success'] = 0.123
    kept.write_text(json.dumps(stored))
    assert results_main(args + ['--no-train', '--fresh-eval']) == 0
    assert closest_cell() == f'{measured:.1%}'
    # --no-train: a table of the finished runs; a variant not begun gets dashes
    more = args[:args.index('--models')] + ['--models', 'dmn-pf', 'vector-regression',
                                            'dmn-pf-heading'] + args[args.index('--domains'):]
    assert results_main(more + ['--no-train']) == 0
    text = out.read_text()
    assert not list(runs.glob('dmn-pf-heading-*'))
    heading_row = next(line for line in text.splitlines() if 'map heading' in line)
    assert heading_row.count('– (–)') == 4  # not begun, and not in the paper
    assert '| dmn-pf-heading rooms s0 | 0.003 | 0 | – | – | not begun |' in text
    assert '| dmn-pf-heading | rooms | – | – | searching |' in text
    ours = next(line for line in text.splitlines() if 'PF-DMN (ours)' in line)
    assert ours.split('|')[3].strip()[0].isdigit()  # Rooms sequential: a number
    for bad in (['--search-samples', '24'], ['--lr-grid', '1e-3', '1e-3']):
        with pytest.raises(SystemExit) as exit_:  # off the validation interval; twice a rate
            results_main(args + bad)
        assert exit_.value.code == 2


def test_results_rates_fixed_by_hand_and_a_report_of_its_own(tiny, tmp_path, capsys):
    from dmn_localization.learning.results import main as results_main

    args = ['--data', str(results_data(tiny, tmp_path)), '--runs', str(tmp_path / 'runs'),
            '--budget-samples', '32', '--episodes', '4', '--models', 'dmn-pf',
            'vector-regression', '--domains', 'rooms', '--one-seed', '--val-every-samples',
            '16', '--val-episodes', '8', '--lr-grid', '3e-3', '1e-4', '--search-samples',
            '16', '--records', str(tmp_path / 'records'), '--lr', 'dmn-pf/rooms=5e-4']
    assert results_main(args + ['--status']) == 0
    said = capsys.readouterr().out
    # --lr fixes one pair's rate (no search for it); the other pair still searches
    assert '| dmn-pf | rooms | – | – | 0.0005 (fixed by the plan) |' in said
    assert '| dmn-pf rooms s0 | 0.0005 | 0 |' in said
    assert '| vector-regression rooms s0 | 0.003 | 0 |' in said
    assert '| vector-regression rooms s0 | 0.0001 | 0 |' in said
    assert 'is trained at every rate of the search' in said
    # a grid of one rate: no search at all
    assert results_main([a for a in args if a != '1e-4'] + ['--status']) == 0
    said = capsys.readouterr().out
    assert 'Every run trains at the rate the plan fixes.' in said
    assert 'None: the plan fixes every rate' in said and '| lr 0.003 |' not in said
    # a report of another name names its figures for itself, not over RESULTS.md's
    out = tmp_path / 'RESULTS-moved.md'
    assert results_main(args + ['--no-train', '--out', str(out)]) == 0
    assert ('Learning rates: chosen per model and domain by the search below, or fixed by '
            'the plan where it says so; dmn-pf 0.0005 (rooms)') in out.read_text()
    assert (tmp_path / 'docs' / 'results-moved-learning-curves-rooms.png').exists()
    assert not (tmp_path / 'docs' / 'learning-curves-rooms.png').exists()
    for bad in ('dmn-pf/rooms=0', 'dmn-pf/rooms=fast', 'dmn-pf=1e-4', 'dmn-pf/hall=1e-4',
                'dmn-pf/rooms=1e-3'):  # the last: the pair given twice
        with pytest.raises(SystemExit) as exit_:
            results_main(args + ['--lr', bad])
        assert exit_.value.code == 2
    # --seeds: the training seeds of one entry, on one domain here
    several = [a for a in args if a != '--one-seed']
    assert results_main(several + ['--seeds', 'dmn-pf/rooms=0,2', '--status']) == 0
    said = capsys.readouterr().out
    assert '| dmn-pf rooms s2 |' in said and '| dmn-pf rooms s1 |' not in said
    assert '| vector-regression rooms s0 |' in said and 'vector-regression rooms s1' not in said
    for bad in (['--seeds', 'dmn-pf=1,2'], ['--seeds', 'dmn-pf=0,0'], ['--seeds', 'dmn-pf=x'],
                ['--seeds', 'dmn-pf/hall=0'], ['--seeds', 'dmn-pf=0', '--seeds', 'dmn-pf=0,1'],
                ['--seeds', 'dmn-pf=0', '--one-seed']):
        with pytest.raises(SystemExit) as exit_:
            results_main(several + bad)
        assert exit_.value.code == 2
    assert not list((tmp_path / 'runs').glob('*-s0'))  # nothing trained


def _makefile_variables(root):
    """
    Return the Makefile's variables (``NAME := value``), continued lines joined.

    References to the variables before them (``$(NAME)``) are expanded, as make does.
    """
    import re

    makefile = (root / 'Makefile').read_text().replace('\\\n', ' ')
    variables = {}
    for name, value in re.findall(r'^([A-Z_0-9]+) :?= (.*)$', makefile, re.M):
        variables[name] = re.sub(r'\$\((\w+)\)', lambda m: variables.get(m.group(1), ''),
                                 value)
    return variables


@pytest.mark.parametrize('variable', ['MOVED_PROTOCOL', 'MOVED_4M_PROTOCOL'])
def test_the_makefiles_moved_protocol_plans_what_the_readme_says(variable, tmp_path, capsys):
    import re
    import shlex

    from dmn_localization.learning.results import main as results_main

    root = Path(__file__).resolve().parents[1]
    variables = _makefile_variables(root)
    assert variable in variables, f'{variable} not found in the Makefile'
    protocol = shlex.split(variables[variable])
    elsewhere = ['--data', str(tmp_path / 'data'), '--runs', str(tmp_path / 'runs'),
                 '--records', str(tmp_path / 'records')]  # nothing trained or recorded
    assert results_main(protocol + elsewhere + ['--status']) == 0
    said = capsys.readouterr().out
    runs = re.findall(r'^\| (\S+ \S+ s\d) \|', said, re.M)
    planned = re.search(r'of ([\d,]+) planned samples', said)
    assert planned, said
    samples = int(planned.group(1).replace(',', ''))
    # the training guide's tables section states the plan's size and the seeds'
    # exceptions, which the plan follows
    readme = ' '.join((root / 'docs' / 'training.md').read_text().split())
    assert f'{len(runs)} runs, {samples / 1e6:.1f} million samples planned' in readme
    given = [protocol[i + 1] for i, arg in enumerate(protocol) if arg == '--seeds']
    assert given
    for seeds in given:
        assert f'--seeds {seeds}' in readme
        pair, numbers = seeds.split('=')
        entry, domain = pair.split('/')
        assert [run for run in runs if run.startswith(f'{entry} {domain} ')] == [
            f'{entry} {domain} s{n}' for n in numbers.split(',')]


def _options(tokens):
    """Group a command's tokens as sorted (option, values) pairs, whatever their order."""
    groups = []
    for token in tokens:
        if token.startswith('--'):
            groups.append([token])
        elif groups:
            groups[-1].append(token)
    return sorted(tuple(g) for g in groups if g[0] not in ('--jobs', '--no-train', '--status'))


@pytest.mark.parametrize('target, out', [('results', 'RESULTS.md'),
                                         ('results-3m', 'RESULTS-3m.md'),
                                         ('results-in-place', 'RESULTS-in-place.md')])
def test_the_committed_tables_are_what_their_make_targets_write(target, out):
    import re
    import shlex

    root = Path(__file__).resolve().parents[1]
    variables = _makefile_variables(root)
    makefile = (root / 'Makefile').read_text().replace('\\\n', ' ')
    recipe = re.search(rf'^{re.escape(target)}: .*\n\t(.*)$', makefile, re.M)
    assert recipe, f'no make target {target}'
    command = re.sub(r'\$\((\w+)\)', lambda m: variables.get(m.group(1), ''), recipe.group(1))
    command = command.split('dmn_results', 1)[1]
    made = re.search(r'^Made by `dmn_results (.*?)` \(the code at this commit\)\.$',
                     (root / out).read_text(), re.M)
    assert made, f'{out} has no "Made by" line of dmn_results'
    assert _options(shlex.split(made.group(1))) == _options(shlex.split(command))


def test_learning_curves_say_what_their_dotted_and_dashed_lines_are(tmp_path):
    from dmn_localization.learning.results_plan import ResultsPlan
    from dmn_localization.learning.results_report import _curves_title

    searched = ResultsPlan(data=tmp_path, runs=tmp_path, models=('dmn-pf',))
    assert 'dotted: rates the search did not choose' in _curves_title(searched, 'rooms')
    assert 'dashed' not in _curves_title(searched, 'rooms')
    fixed = ResultsPlan(data=tmp_path, runs=tmp_path, models=('dmn-pf',), lr_grid=(3e-4,),
                        finish_samples=300_000, finish_lr_factor=1 / 3)
    title = _curves_title(fixed, 'mazes')
    assert title == ('mazes: learning curves (dashed: the finishing stage begins, '
                     'rate x0.333)')


def test_results_say_which_frame_cues_the_worlds_leave_the_baselines():
    from types import SimpleNamespace

    from dmn_localization.learning.results_report import _frame_cues

    def cues(shift, turn, models=('dmn-pf',)):  # the plan fields the paragraph reads
        return _frame_cues(SimpleNamespace(frame_shift=shift, frame_turn=turn,
                                           models=models))

    assert 'Here' not in cues(0, 0) and 'heading row' in cues(0, 0, ('dmn-pf-heading',))
    both = cues(0.5, 180)
    assert 'Here the worlds are moved and turned' in both
    assert "walls no longer run along the frame's axes" in both
    assert 'outer wall is no longer at the normalized extent' in both
    moved = cues(0.5, 0)
    assert 'are moved (above)' in moved and "walls still run along the frame's axes" in moved
    turned = cues(0, 90)
    assert 'are turned (above)' in turned and 'outer wall is still at' in turned
    assert "walls no longer run along the frame's axes" in turned


def test_results_name_the_strongest_baseline_and_whether_it_has_the_seeds(tmp_path):
    from dmn_localization.learning.results_plan import ResultsPlan
    from dmn_localization.learning.results_report import _strongest

    plan = ResultsPlan(Path('data'), tmp_path, 1_000_000,
                       models=('dmn-pf', 'dmn-regression', 'image-pf', 'dmn-pf-heading'),
                       seeds={'dmn-pf': (0, 1, 2), 'image-pf': (0, 1, 2)}, lr_grid=(3e-4,))
    seq = {'dmn-pf': [0.8], 'dmn-pf-heading': [0.9], 'closest-context': [0.5],
           'dmn-regression': [0.25]}  # PF-DMN, a variant and an oracle are no baselines
    said = _strongest(plan, {'rooms': {'sequential-global': seq}})
    assert 'rooms: not known yet, waiting for test results from 1 of its 2 baselines' in said
    assert 'from 2 of its 2 baselines (several seeds: image-pf)' in said
    seq['image-pf'] = [0.15, 0.2, 0.4]  # its mean (25 %) counts, not its best seed
    seq['dmn-regression'] = [0.26]
    said = _strongest(plan, {'rooms': {'sequential-global': seq},
                             'mazes': {'sequential-global': {'dmn-regression': [0.1],
                                                             'image-pf': [0.2]}}})
    assert 'rooms: dmn-regression (26.0%), which has one seed; several go to image-pf' in said
    assert 'mazes: image-pf (20.0%), which has 3 seeds planned, 1 of them finished.' in said
    seq['dmn-regression'] = [0.2]
    said = _strongest(plan, {'rooms': {'sequential-global': seq}})
    assert 'rooms: image-pf (25.0%), which has several seeds;' in said
    assert _strongest(ResultsPlan(Path('data'), tmp_path, 1, models=('dmn-pf',)), {}) == ''


def test_learning_curves_give_each_model_one_legend_entry(tmp_path, monkeypatch):
    import matplotlib.figure

    from dmn_localization.learning.results_plan import ResultsPlan, run_dir
    from dmn_localization.learning.results_report import plot_learning_curves

    plan = ResultsPlan(Path('data'), tmp_path / 'runs', 1000,
                       models=('dmn-pf', 'dmn-regression', 'image-pf'),
                       seeds={'dmn-pf': (0, 1, 2), 'image-pf': (0, 1, 2)}, lr_grid=(3e-4,),
                       records=tmp_path / 'records')
    for model, seeds in (('dmn-pf', (0, 1, 2)), ('dmn-regression', (0,)),
                         ('image-pf', (0, 2))):  # image-pf's seed 1 has not validated yet
        for seed in seeds:
            run = run_dir(plan, model, 'rooms', seed, 3e-4)
            run.mkdir(parents=True)
            (run / 'log.csv').write_text(
                'step,samples,elapsed_s,train_loss,val_loss,val_global_success\n'
                f'10,500,1.0,0.3,{0.28 - seed / 100},0.1\n10,1000,2.0,0.2,0.25,0.2\n')
    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, 'savefig',
                        lambda fig, path, **kw: saved.append(fig))
    plot_learning_curves(plan, 'rooms', tmp_path / 'curves.png')
    (legend,) = saved[0].legends  # one, below both panels
    assert [t.get_text() for t in legend.get_texts()] == [
        'dmn-pf, lr 0.0003, seeds 0, 1, 2', 'dmn-regression, lr 0.0003, seed 0',
        'image-pf, lr 0.0003, seeds 0, 2']
    assert not saved[0].axes[0].get_legend()
    assert len(saved[0].axes[0].lines) == 6  # every run with a curve is drawn


READS_PROC = pytest.mark.skipif(not Path('/proc/self/stat').exists(),
                                reason="finds a process's workers in /proc (Linux)")


def process_stat(pid):
    """Return ``(state, parent)`` of process ``pid`` from /proc, None once it is gone."""
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return None
    state, parent = stat[stat.rindex(')') + 2:].split()[:2]
    return state, int(parent)


def alive(pid):
    """Return whether process ``pid`` still runs (a zombie has ended)."""
    stat = process_stat(pid)
    return stat is not None and stat[0] != 'Z'


def children(pid):
    """Return the processes whose parent is ``pid``."""
    return [int(entry.name) for entry in Path('/proc').iterdir() if entry.name.isdigit()
            and (process_stat(entry.name) or ('', 0))[1] == pid]


@contextlib.contextmanager
def long_results(tiny, tmp_path):
    """
    Run ``dmn_results --jobs 2`` on three long runs; yield once two are training.

    Yields ``(process, runs, workers)``: the third run waits for a worker. Whatever is
    still running at the end (the process, its workers) is killed.
    """
    runs = tmp_path / 'runs'
    # no validation within the test (the first is at 1M samples): a run that stopped
    # early (patience) would hand its worker the third run
    args = ['--data', str(results_data(tiny, tmp_path)), '--runs', str(runs),
            '--budget-samples', '4000000', '--episodes', '4', '--models', 'dmn-pf',
            'vector-regression', 'image-regression', '--domains', 'rooms', '--one-seed',
            '--val-every-samples', '1000000', '--search-samples', '1000000',
            '--val-episodes', '8', '--lr-grid', '1e-3',
            '--jobs', '2', '--records', str(tmp_path / 'records'),
            '--out', str(tmp_path / 'RESULTS.md')]
    code = 'import sys; from dmn_localization.learning.results import main; sys.exit(main())'
    process = subprocess.Popen([sys.executable, '-c', code, *args], text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    workers = []
    try:
        deadline = time.monotonic() + 300
        # training: each run's first rows are logged (its loss every 50 steps)
        while len([log for log in runs.glob('*/log.csv') if len(read_log(log)) >= 2]) < 2:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f'two runs did not start:\n{process.communicate()[1]}')
            time.sleep(0.5)
        workers = children(process.pid)
        yield process, runs, workers
    finally:
        for pid in [process.pid, *workers]:
            if alive(pid):
                os.kill(pid, 9)
        process.communicate()


def assert_saved_and_released(runs):
    """Assert that two runs saved their state and no process trains in them."""
    import fcntl

    started = sorted(run.name for run in runs.iterdir() if run.is_dir())
    assert len(started) == 2, started  # the third run never began
    for name in started:
        assert (runs / name / 'last.pt').exists(), name
        with open(runs / name / '.lock', 'a+') as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while a worker holds it


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


@READS_PROC
@pytest.mark.parametrize('copies', [1, 2])
def test_a_signal_to_dmn_results_stops_every_run_at_its_step(tiny, tmp_path, copies):
    import signal

    with long_results(tiny, tmp_path) as (process, runs, _):
        for _ in range(copies):  # 2: the group's signal and make's forwarding, one stop
            process.send_signal(signal.SIGTERM)  # to the parent: it forwards one to each
            time.sleep(0.05)
        out, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert err.count('stopped by SIGTERM at') == 2 and 'the same command goes on' in err
    assert_saved_and_released(runs)
    for run in runs.iterdir():  # saved where it had got, past its last validation
        logged = int(read_log(run / 'log.csv')[-1]['samples'])
        assert torch.load(run / 'last.pt', weights_only=True)['counters']['samples'] >= logged


@READS_PROC
def test_runs_of_a_killed_dmn_results_save_their_state_and_exit(tiny, tmp_path):
    with long_results(tiny, tmp_path) as (process, runs, workers):
        assert len(workers) >= 2, workers  # the two workers (and multiprocessing's tracker)
        process.kill()  # no forwarding: the kernel tells the workers their parent died
        deadline = time.monotonic() + 300
        while True:
            try:
                assert_saved_and_released(runs)
                break
            except (AssertionError, BlockingIOError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        # and none is left waiting for calls that will never come
        while any(alive(pid) for pid in workers):
            assert time.monotonic() < deadline, [pid for pid in workers if alive(pid)]
            time.sleep(0.5)


DYING_PARENT = """
import os, signal, sys, threading, time
from pathlib import Path

from dmn_localization.learning.run_pool import RunPool


def busy(path):
    Path(path).write_text(str(os.getpid()))
    time.sleep(120)


if __name__ == '__main__':
    out = Path(sys.argv[1])
    pool = RunPool(2)

    def submit():  # the workers' parent thread: the kernel signals them when it ends
        for name in ('a', 'b'):
            pool.submit(busy, str(out / name))
        pool.submit(os.mkdir, str(out / 'third'))  # queued for the first free worker
        while not all((out / name).exists() for name in ('a', 'b')):
            time.sleep(0.05)

    thread = threading.Thread(target=submit)
    thread.start()
    thread.join()
    time.sleep(0.5)  # the parent lives on a little, as its threads end one by one
    os.kill(os.getpid(), signal.SIGKILL)
"""


@READS_PROC
def test_a_worker_signalled_by_its_dying_parent_takes_no_further_call(tmp_path):
    # the kernel's parent-death signal comes as the thread that started a worker ends,
    # while the parent's other threads still run: the worker must not take the queued
    # call in that moment
    script = tmp_path / 'dying_parent.py'
    script.write_text(DYING_PARENT)
    process = subprocess.run([sys.executable, str(script), str(tmp_path)], timeout=120)
    assert process.returncode == -9
    workers = [int((tmp_path / name).read_text()) for name in ('a', 'b')]
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, [pid for pid in workers if alive(pid)]
        time.sleep(0.2)
    assert not (tmp_path / 'third').exists()


SIGNAL_BURST = """
import os, signal, sys, time
from pathlib import Path

from dmn_localization.learning.run_pool import RunPool


if __name__ == '__main__':
    out = Path(sys.argv[1])
    pool = RunPool(1)
    pool.submit(os.getpid)
    worker = next(pid for _ in range(600) for pid in pool.ended(0.1))
    (out / 'worker').write_text(str(worker))
    end = time.monotonic() + 1.0
    while time.monotonic() < end:  # signals faster than its handler returns
        os.kill(worker, signal.SIGTERM)
    pool.submit(os.getpid)  # it still takes calls
    (out / 'again').write_text(str(next(pid for _ in range(300) for pid in pool.ended(0.1))))
    os.kill(os.getpid(), signal.SIGKILL)
"""


@READS_PROC
def test_an_idle_worker_outlives_a_burst_of_signals_and_still_exits_with_its_parent(
        tmp_path):
    # the kernel signals a worker once for each thread of its parent that ends: a
    # signal that comes while the handler of the one before runs must neither wait on a
    # lock that handler holds nor nest without end
    script = tmp_path / 'signal_burst.py'
    script.write_text(SIGNAL_BURST)
    worker = tmp_path / 'worker'
    try:
        process = subprocess.run([sys.executable, str(script), str(tmp_path)],
                                 timeout=120, capture_output=True, text=True)
        assert process.returncode == -9, process.stderr[-2000:]
        assert (tmp_path / 'again').read_text() == worker.read_text()
        deadline = time.monotonic() + 30
        while alive(int(worker.read_text())):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        if worker.exists() and alive(int(worker.read_text())):
            os.kill(int(worker.read_text()), 9)


def test_results_plan_runs_are_the_runs_dmn_train_makes(tmp_path):
    from dmn_localization.learning.results_plan import ResultsPlan
    from dmn_localization.learning.train_cli import build_parser, config_from_args

    plan = ResultsPlan(Path('data'), tmp_path, 4_200_000, lr={'dmn-pf/rooms': 3e-4},
                       model_options={'dmn-pf': {'ego_value_dim': 32}}, frame_shift=0.5,
                       frame_turn=180.0, lr_decay_factor=0.3)
    # the runs of a plan whose worlds move or whose rate decays are named for it, and
    # for the options it gives an entry, so they (and their records) are never taken
    # for the table's runs in place
    tag = '-shift0.5-turn180-decay0.3p2'
    by_hand = config_from_args(build_parser().parse_args([
        '--model', 'dmn-pf', '--train', 'data/rooms-train', '--val', 'data/rooms-val',
        '--out', str(tmp_path / f'dmn-pf-rooms-lr0.0003-ego_value_dim32{tag}-s1'),
        '--budget-samples',
        '4200000', '--lr', '3e-4', '--val-every-samples', '100000', '--patience', '8',
        '--seed', '1', '--model-option', 'ego_value_dim=32', '--frame-shift', '0.5',
        '--frame-turn', '180', '--lr-decay-factor', '0.3', '--memory-format', 'contiguous']))
    assert plan.train_config('dmn-pf', 'rooms', 1) == by_hand
    # no search for a rate the plan fixes; the others wait for theirs
    assert plan.search_rates('dmn-pf', 'rooms') == (3e-4,)
    assert plan.lr_of('image-pf', 'rooms') is None
    with pytest.raises(ValueError, match='search of image-pf on rooms is unfinished'):
        plan.train_config('image-pf', 'rooms', 1)
    search = plan.train_config('image-pf', 'rooms', 0, 1e-3, 200_000)
    assert search.model_options == {} and search.lr == 1e-3
    assert search.out == str(tmp_path / f'image-pf-rooms-lr0.001{tag}-s0')
    variant = plan.train_config('dmn-pf-heading', 'mazes', 2, 1e-4)
    assert variant.model == 'dmn-pf'
    assert variant.out == str(tmp_path / f'dmn-pf-heading-mazes-lr0.0001{tag}-s2')
    in_place = ResultsPlan(Path('data'), tmp_path, lr={'dmn-pf/rooms': 3e-4})
    assert in_place.train_config('dmn-pf', 'rooms', 2).out == str(
        tmp_path / 'dmn-pf-rooms-lr0.0003-s2')  # the names of the records in results/
    assert in_place.train_config('dmn-pf', 'rooms', 2).lr_decay_factor == 1.0
    assert variant.model_options == {'match_score': False, 'ego_value_dim': 32,
                                     'global_heading': True}


def test_results_search_chooses_the_lowest_loss_once_every_rate_got_there(tmp_path):
    from dmn_localization.learning.results import plan_samples, status
    from dmn_localization.learning.results_plan import ResultsPlan, run_dir

    plan = ResultsPlan(Path('data'), tmp_path, 1_000_000, models=('dmn-pf',),
                       seeds={'dmn-pf': (0, 1)}, domains=('rooms',),
                       lr_grid=(1e-3, 3e-4, 1e-4), search_samples=200_000, tie_margin=0.0)

    def fake_run(rate, losses, samples):
        run = run_dir(plan, 'dmn-pf', 'rooms', 0, rate)
        run.mkdir(parents=True, exist_ok=True)
        with open(run / 'log.csv', 'w') as f:
            f.write('step,samples,elapsed_s,train_loss,val_loss,val_global_success\n')
            for i, loss in enumerate(losses, 1):
                f.write(f'{i},{i * 100_000},1.0,,{loss},0.5\n')
        torch.save({'counters': {'samples': samples, 'stopped_early': False,
                                 'elapsed_s': samples / 100, 'best_val_loss': min(losses)}},
                   run / 'last.pt')  # 100 samples/s

    fake_run(1e-3, [0.30, 0.25], 200_000)
    fake_run(3e-4, [0.28, 0.24, 0.10], 300_000)  # past the horizon: 0.10 does not count
    fake_run(1e-4, [0.29], 100_000)
    assert plan.search_scores('dmn-pf', 'rooms') == {1e-3: 0.25, 3e-4: 0.24, 1e-4: None}
    assert plan.lr_of('dmn-pf', 'rooms') is None  # 1e-4 has not got to 200k
    # planned: 3 rates x 200k, the chosen rate's other 800k, and seed 1's 1M
    assert plan_samples(plan) == (200_000 + 200_000 + 100_000, 2_400_000)
    fake_run(1e-4, [0.29, 0.23], 200_000)
    assert plan.lr_of('dmn-pf', 'rooms') == 1e-4
    assert plan_samples(plan)[0] == 600_000
    fake_run(1e-4, [0.29, 0.24], 200_000)
    assert plan.lr_of('dmn-pf', 'rooms') == 3e-4  # a tie: the first of the grid
    assert plan_samples(plan)[0] == 700_000  # its 300k: 100k past the search
    # --status: the runs as they stand, and the time left at the runs' own rate
    said = status(plan)
    assert '| dmn-pf rooms s0 | 0.0003 | 300,000 | 0.1000 | 0.83 h | in progress |' in said
    assert '| dmn-pf rooms s0 | 0.001 | 200,000 | 0.2500 | 0.56 h | search done |' in said
    assert '| dmn-pf rooms s1 | 0.0003 | 0 | – | – | not begun |' in said
    # the search's table: the choice and its lead over the next best (a tie: 0 %)
    assert '| dmn-pf | rooms | 0.2500 | **0.2400** | 0.2400 | 0.0003 | 0.0 % |' in said
    from dmn_localization.learning.results_report import _lead
    assert _lead({1e-3: 0.25, 3e-4: 0.24, 1e-4: 0.30}, 3e-4) == '4.2 %'
    assert _lead({1e-3: 0.25, 3e-4: None}, None) == '–'
    assert 'Trained 700,000 of 2,400,000 planned samples (29%); about 4.7 hours' in said
    assert run_dir(plan, 'dmn-pf', 'rooms', 2) == tmp_path / 'dmn-pf-rooms-lr0.0003-s2'


def test_results_say_which_runs_reached_a_plateau(tmp_path):
    from dmn_localization.learning.results import status
    from dmn_localization.learning.results_plan import (learning_curve, recent_gain,
                                                        ResultsPlan, run_dir)

    plan = ResultsPlan(Path('data'), tmp_path, 600_000, models=('dmn-pf', 'vector-pf',
                                                                'image-pf'),
                       seeds={'dmn-pf': (0, 1, 2), 'vector-pf': (0,), 'image-pf': (0,)},
                       domains=('rooms',), lr_grid=(3e-4,))

    def fake_run(model, seed, losses, stopped_early=False):
        run = run_dir(plan, model, 'rooms', seed)
        run.mkdir(parents=True)
        with open(run / 'log.csv', 'w') as f:
            f.write('step,samples,elapsed_s,train_loss,val_loss,val_global_success\n')
            for i, loss in enumerate(losses, 1):
                f.write(f'{i},{i * 100_000},1.0,,{loss},0.5\n')
        torch.save({'counters': {'samples': 100_000 * len(losses), 'elapsed_s': 3600.0,
                                 'stopped_early': stopped_early,
                                 'best_val_loss': min(losses, default=math.inf)}},
                   run / 'last.pt')
        return run

    # flat: the best fell from 0.200 (at 300k) to 0.199 over the last 300k: 0.5 %
    flat = fake_run('dmn-pf', 0, [0.30, 0.25, 0.200, 0.201, 0.199, 0.2005])
    assert recent_gain(learning_curve(flat)) == pytest.approx(0.005)
    # still falling: 0.24 -> 0.18 over the last 300k, 25 %
    fake_run('vector-pf', 0, [0.30, 0.27, 0.24, 0.22, 0.20, 0.18])
    fake_run('image-pf', 0, [0.30, 0.20, 0.21], stopped_early=True)  # patience ran out
    fake_run('dmn-pf', 1, [0.30, 0.29])  # in progress: too short to say
    assert recent_gain(learning_curve(run_dir(plan, 'dmn-pf', 'rooms', 1))) is None
    fake_run('dmn-pf', 2, [])  # not yet validated: its best loss is still math.inf
    said = status(plan)
    assert '| dmn-pf rooms s2 | 0.0003 | 0 | – | 1.00 h | in progress | – |' in said
    assert '| dmn-pf rooms s0 | 0.0003 | 600,000 | 0.1990 | 1.00 h | finished | yes (0.5 %) |' \
        in said
    assert '| finished | no (25.0 %) |' in said
    assert '| stopped early | yes (stopped early) |' in said
    assert '| dmn-pf rooms s1 | 0.0003 | 200,000 | 0.2900 | 1.00 h | in progress | – |' in said
    assert 'At a plateau: 2 of the 3 runs finished' in said
    assert 'still learning: vector-pf rooms s0.' in said


def test_plateau_counts_patience_before_a_finishing_stage_and_not_runs_in_progress(tmp_path):
    from dmn_localization.learning.results import status
    from dmn_localization.learning.results_plan import ResultsPlan, run_dir

    plan = ResultsPlan(Path('data'), tmp_path, 600_000, models=('dmn-pf', 'vector-pf'),
                       seeds={'dmn-pf': (0, 1), 'vector-pf': (0,)}, domains=('rooms',),
                       lr_grid=(3e-4,), finish_samples=200_000)

    def fake_run(model, seed, losses, **counters):
        run = run_dir(plan, model, 'rooms', seed)
        run.mkdir(parents=True)
        with open(run / 'log.csv', 'w') as f:
            f.write('step,samples,elapsed_s,train_loss,val_loss,val_global_success\n')
            for i, loss in enumerate(losses, 1):
                f.write(f'{i},{i * 100_000},1.0,,{loss},0.5\n')
        torch.save({'counters': {'samples': 100_000 * len(losses), 'elapsed_s': 3600.0,
                                 'stopped_early': False, 'best_val_loss': min(losses),
                                 **counters}}, run / 'last.pt')

    # patience ended the main stage at 400k; the finishing stage then fell 10 %: a plateau
    # at the main rate all the same
    fake_run('dmn-pf', 0, [0.30, 0.25, 0.25, 0.25, 0.23, 0.225], stage=1,
             finish_start=400_000)
    # the main stage spent the budget; the last 300k (the finishing stage's) fell 10 %
    fake_run('vector-pf', 0, [0.30, 0.27, 0.24, 0.22, 0.20, 0.19, 0.18, 0.18], stage=1,
             finish_start=600_000)
    # in progress (main stage, 500k of 600k): the fall so far, no verdict
    fake_run('dmn-pf', 1, [0.30, 0.2, 0.2, 0.199, 0.1984], stage=0, finish_start=0)
    said = status(plan)
    assert '| finished | yes (patience at 0.4M) |' in said
    assert '| finished | no (10.0 %) |' in said
    assert '| dmn-pf rooms s1 | 0.0003 | 500,000 | 0.1984 | 1.00 h | in progress | ' \
        '– (0.8 % so far) |' in said
    assert 'At a plateau: 1 of the 2 runs finished' in said
    assert 'or patience ended the main stage before the budget' in said
    assert 'still learning: vector-pf rooms s0.' in said


def test_table_cell_says_how_many_of_the_planned_seeds_it_holds():
    from dmn_localization.learning.results_report import _cell

    assert _cell([0.442], 0.404, planned=3) == '44.2%, 1 of 3 seeds (40.4%)'
    assert _cell([0.40, 0.44], 0.404, planned=3) == '42.0% ± 2.0%, 2 of 3 seeds (40.4%)'
    assert _cell([0.40, 0.44, 0.42], 0.404, planned=3) == '42.0% ± 1.6%, 3 seeds (40.4%)'
    assert _cell([0.442], None) == '44.2% (–)'
    assert _cell([], 0.404, planned=3) == '– (40.4%)'


def test_results_search_goes_on_for_rates_within_the_tie_margin(tmp_path):
    from dmn_localization.learning.results import plan_samples, status
    from dmn_localization.learning.results_plan import ResultsPlan, run_dir

    plan = ResultsPlan(Path('data'), tmp_path, 1_000_000, models=('dmn-pf',),
                       seeds={'dmn-pf': (0, 1)}, domains=('rooms',),
                       lr_grid=(1e-3, 3e-4, 1e-4), search_samples=200_000)  # margin 1 %

    def fake_run(rate, losses):
        run = run_dir(plan, 'dmn-pf', 'rooms', 0, rate)
        run.mkdir(parents=True, exist_ok=True)
        with open(run / 'log.csv', 'w') as f:
            f.write('step,samples,elapsed_s,train_loss,val_loss,val_global_success\n')
            for i, loss in enumerate(losses, 1):
                f.write(f'{i},{i * 100_000},1.0,,{loss},0.5\n')
        torch.save({'counters': {'samples': 100_000 * len(losses), 'stopped_early': False,
                                 'elapsed_s': 1000.0, 'best_val_loss': min(losses)}},
                   run / 'last.pt')

    fake_run(1e-3, [0.30, 0.25])
    fake_run(3e-4, [0.28, 0.241])
    fake_run(1e-4, [0.29, 0.240])
    # 1e-4 leads 3e-4 by 0.4 %: a tie, both go on to 400k; 1e-3 (4 % behind) is out
    search = plan.search('dmn-pf', 'rooms')
    assert search.chosen is None and search.horizon == 400_000
    assert search.scores == {3e-4: None, 1e-4: None}
    assert search.reached == {1e-3: 200_000, 3e-4: 400_000, 1e-4: 400_000}
    # planned: 200k + 2 x 400k, the winner's other 600k, and seed 1's 1M
    assert plan_samples(plan) == (600_000, 2_600_000)
    fake_run(3e-4, [0.28, 0.241, 0.20, 0.19])
    fake_run(1e-4, [0.29, 0.240, 0.23, 0.22])
    assert plan.lr_of('dmn-pf', 'rooms') == 3e-4  # 15.8 % ahead at 400k
    said = status(plan)
    assert '| dmn-pf | rooms | 0.2500 | **0.1900 (400k)** | 0.2200 (400k) | 0.0003 | 15.8 % |' \
        in said
    assert '| dmn-pf rooms s0 | 0.0001 | 400,000 | 0.2200 | 0.28 h | search done |' in said
    assert '| dmn-pf rooms s0 | 0.0003 | 400,000 | 0.1900 | 0.28 h | in progress |' in said
    assert plan_samples(plan)[0] == 1_000_000
    # margin 0 is the first horizon's lowest score; at the budget the lowest wins
    assert dataclasses.replace(plan, tie_margin=0.0).lr_of('dmn-pf', 'rooms') == 1e-4
    fake_run(1e-4, [0.29, 0.240, 0.23, 0.1905])
    assert plan.search('dmn-pf', 'rooms').horizon == 600_000  # still a tie at 400k
    assert dataclasses.replace(plan, budget_samples=400_000).lr_of('dmn-pf', 'rooms') == 3e-4


def test_results_train_a_tied_search_on_and_continue_the_winner(tiny, tmp_path, capsys):
    from dmn_localization.learning.results import train_all
    from dmn_localization.learning.results_plan import learning_curve, ResultsPlan, run_dir

    data = tmp_path / 'data'
    data.mkdir()
    for split in ('train', 'val'):
        (data / f'rooms-{split}').symlink_to(tiny / split)
    # a margin no rate escapes: the search goes on to the budget, then the lowest wins
    plan = ResultsPlan(data, tmp_path / 'runs', 48, models=('vector-regression',),
                       seeds={'vector-regression': (0,)}, domains=('rooms',),
                       val_every_samples=16, val_episodes=8, lr_grid=(3e-3, 1e-4),
                       search_samples=16, tie_margin=10.0)
    train_all(plan, progress=False)
    # the plan's data has no test set: the finished run is left to be tested with the table
    said = capsys.readouterr().out
    assert 'vector-regression rooms s0: not tested yet' in said and 'rooms-test' in said
    losses = {}
    for rate in plan.lr_grid:
        curve = learning_curve(run_dir(plan, 'vector-regression', 'rooms', 0, rate))
        assert [samples for samples, _, _ in curve] == [16, 32, 48]
        losses[rate] = min(loss for _, loss, _ in curve)
    assert plan.lr_of('vector-regression', 'rooms') == min(losses, key=losses.get)


def test_results_skip_a_run_another_process_trains(tmp_path, capsys):
    from contextlib import ExitStack

    from dmn_localization.learning.results import train_all
    from dmn_localization.learning.results_plan import ResultsPlan, run_dir
    from dmn_localization.learning.run_control import run_lock

    plan = ResultsPlan(Path('no-data'), tmp_path, models=('vector-pf',), domains=('rooms',),
                       seeds={'vector-pf': (0, 1)})
    with ExitStack() as stack:
        for rate in plan.lr_grid:
            stack.enter_context(run_lock(run_dir(plan, 'vector-pf', 'rooms', 0, rate)))
        train_all(plan)  # would fail on the missing data if it did not skip
    said = capsys.readouterr().out
    assert said.count('skipped') == 2 * len(plan.lr_grid)
    assert 'vector-pf rooms s1: waits for its learning-rate search' in said
    assert not list(tmp_path.glob('*/config.json'))


def test_results_plan_trains_seed_0_of_everything_first(tmp_path):
    from dmn_localization.learning.results_plan import ResultsPlan

    plan = ResultsPlan(Path('data'), tmp_path, models=('dmn-pf', 'vector-pf'))
    assert plan.schedule() == [
        ('dmn-pf', 'rooms', 0), ('vector-pf', 'rooms', 0), ('dmn-pf', 'mazes', 0),
        ('vector-pf', 'mazes', 0), ('dmn-pf', 'rooms', 1), ('dmn-pf', 'mazes', 1),
        ('dmn-pf', 'rooms', 2), ('dmn-pf', 'mazes', 2)]
    # the paper's models' further seeds before those of the rows it does not have
    plan = ResultsPlan(Path('data'), tmp_path, models=('dmn-pf', 'dmn-pf-heading'),
                       domains=('mazes',))
    assert plan.schedule() == [
        ('dmn-pf', 'mazes', 0), ('dmn-pf-heading', 'mazes', 0), ('dmn-pf', 'mazes', 1),
        ('dmn-pf', 'mazes', 2), ('dmn-pf-heading', 'mazes', 1),
        ('dmn-pf-heading', 'mazes', 2)]
    # the strongest baseline of one domain trains 3 seeds there only
    plan = ResultsPlan(Path('data'), tmp_path, models=('dmn-pf', 'vector-regression'))
    assert plan.schedule() == [
        ('dmn-pf', 'rooms', 0), ('vector-regression', 'rooms', 0), ('dmn-pf', 'mazes', 0),
        ('vector-regression', 'mazes', 0), ('dmn-pf', 'rooms', 1), ('dmn-pf', 'mazes', 1),
        ('vector-regression', 'mazes', 1), ('dmn-pf', 'rooms', 2), ('dmn-pf', 'mazes', 2),
        ('vector-regression', 'mazes', 2)]
    from dmn_localization.learning.results_report import _seeds

    assert _seeds(plan, 'dmn-pf') == 'dmn-pf [0, 1, 2]'  # RESULTS.md's seeds line
    assert _seeds(plan, 'vector-regression') == 'vector-regression [0] (rooms) [0, 1, 2] (mazes)'
    # given seeds: 'entry/domain' before 'entry' before the default
    plan = ResultsPlan(Path('data'), tmp_path, models=('vector-regression',),
                       seeds={'vector-regression': (0, 1), 'vector-regression/mazes': (0,)})
    assert plan.schedule() == [('vector-regression', 'rooms', 0),
                               ('vector-regression', 'mazes', 0),
                               ('vector-regression', 'rooms', 1)]


def test_results_sections_replace_only_themselves(tmp_path):
    from dmn_localization.learning.results_md import write_section

    path = tmp_path / 'RESULTS.md'
    write_section(path, 'learning', 'table one')
    write_section(path, 'kidnap', 'kidnap table')
    write_section(path, 'learning', 'table two\nwith two lines')
    text = path.read_text()
    assert text.startswith('# Results\n')
    assert 'table one' not in text and 'table two\nwith two lines' in text
    assert text.index('table two') < text.index('kidnap table')  # kept its place
    assert text.count('<!-- begin learning -->') == 1
    with pytest.raises(ValueError):
        write_section(path, 'no spaces please', 'x')


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


def test_results_plan_with_a_finishing_stage_and_model_options(tiny, tmp_path, capsys):
    from dmn_localization.learning.results import entry_options, plan_samples, train_all
    from dmn_localization.learning.results_plan import finished, ResultsPlan, run_dir
    from dmn_localization.learning.results_report import _schedule, progress_lines
    from dmn_localization.learning.run_record import read_record

    data = tmp_path / 'data'
    data.mkdir()
    for split in ('train', 'val'):
        (data / f'rooms-{split}').symlink_to(tiny / split)
    options = entry_options(['dmn-pf:attention_prior=2'])
    assert options == {'dmn-pf': {'attention_prior': 2.0}}
    plan = ResultsPlan(data, tmp_path / 'runs', 32, models=('dmn-pf',),
                       seeds={'dmn-pf': (0,)}, domains=('rooms',), val_every_samples=16,
                       val_episodes=8, lr_grid=(3e-3, 1e-4), search_samples=16,
                       tie_margin=0.0, finish_samples=16, finish_lr_factor=0.5,
                       model_options=options, records=tmp_path / 'records')
    train_all(plan, progress=False)
    chosen = plan.lr_of('dmn-pf', 'rooms')
    other = next(rate for rate in plan.lr_grid if rate != chosen)
    run, search_run = (run_dir(plan, 'dmn-pf', 'rooms', 0, rate) for rate in (chosen, other))
    # named for the options and the stage: never taken for the table's runs
    assert run.name == f'dmn-pf-rooms-lr{chosen:g}-attention_prior2-finish16x0.5-s0'
    state = torch.load(run / 'last.pt', weights_only=True)
    assert state['config']['model_options'] == {'attention_prior': 2.0}
    counters = state['counters']
    assert (counters['samples'], counters['stage'], counters['finish_start']) == (48, 1, 32)
    assert state['optimizer']['param_groups'][0]['lr'] == pytest.approx(chosen * 0.5)
    # the search compared the rates before any finishing stage
    searched = torch.load(search_run / 'last.pt', weights_only=True)['counters']
    assert (searched['samples'], searched['stage']) == (16, 0)
    assert finished(plan, 'dmn-pf', 'rooms', 0)
    assert plan_samples(plan) == (64, 64)  # 16 + 16 searched, 16 + 16 to the budget
    record = read_record(plan.records, run)
    assert record['finish_samples'] == 16 and record['counters']['stage'] == 1
    rows = '\n'.join(progress_lines(plan))
    assert f'| dmn-pf rooms s0 | {chosen:g} | 48 |' in rows and '| finished |' in rows
    assert f'| dmn-pf rooms s0 | {other:g} | 16 |' in rows and '| search done |' in rows
    assert 'then 16 samples from the best checkpoint at 0.5 of the rate' in _schedule(plan)
    # a plan without the stage has not finished the run before it
    assert not finished(ResultsPlan(data, tmp_path / 'runs', 48, lr={'dmn-pf/rooms': chosen},
                                    model_options=options, finish_samples=32,
                                    finish_lr_factor=0.5), 'dmn-pf', 'rooms', 0)
    from dmn_localization.learning.results import main as results_main

    for bad, message in ((['--finish-samples', '-1'], 'samples >= 0'),
                         (['--finish-samples', '16', '--lr-decay-factor', '0.5'], 'choose one'),
                         (['--model-option', 'dmn-pf:no_such_field=1'], 'config field'),
                         (['--model-option', 'attention_prior=2'], 'ENTRY:FIELD=VALUE')):
        with pytest.raises(SystemExit) as exit_:
            results_main(['--runs', str(tmp_path / 'bad'), *bad])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / 'bad').exists()


def test_a_run_is_at_rest_after_its_budget_and_its_finishing_stage():
    from dmn_localization.learning.run_record import at_rest

    def counters(samples, stage=0, finish_start=0, stopped_early=False):
        return {'samples': samples, 'stage': stage, 'finish_start': finish_start,
                'stopped_early': stopped_early}

    assert at_rest(counters(100), 100) and not at_rest(counters(99), 100)
    assert at_rest(counters(50, stopped_early=True), 100)
    assert at_rest({'samples': 100, 'stopped_early': False}, 100)  # a run saved before stages
    assert not at_rest(counters(100), 100, 30)  # its stage not begun
    assert not at_rest(counters(50, stopped_early=True), 100, 30)
    assert not at_rest(counters(120, 1, 100), 100, 30)
    assert at_rest(counters(130, 1, 100), 100, 30)
    assert at_rest(counters(80, 1, 50, stopped_early=True), 100, 30)  # stopped early twice


def test_results_say_how_the_worlds_sit_and_how_the_rate_changes(tmp_path, capsys):
    from dmn_localization.learning.results_plan import ResultsPlan
    from dmn_localization.learning.results_report import _frame_change

    assert _frame_change(ResultsPlan(Path('data'), tmp_path)).startswith('in place')
    both = _frame_change(ResultsPlan(Path('data'), tmp_path, frame_shift=0.5, frame_turn=180))
    assert 'moved by a random offset up to 0.5' in both and 'up to 180 degrees' in both
    turned = _frame_change(ResultsPlan(Path('data'), tmp_path, frame_turn=30))
    assert 'turned about their centre by up to 30 degrees' in turned and 'moved' not in turned
    from dmn_localization.learning.results_report import _schedule

    assert 'constant' in _schedule(ResultsPlan(Path('data'), tmp_path))
    decaying = _schedule(ResultsPlan(Path('data'), tmp_path, lr_decay_factor=0.3,
                                     lr_decay_patience=1))
    assert 'multiplied by 0.3' in decaying and 'more than 1 validations' in decaying
    from dmn_localization.learning.results import main as results_main

    with pytest.raises(SystemExit) as exit_:
        results_main(['--runs', str(tmp_path / 'runs'), '--lr-decay-factor', '0'])
    assert exit_.value.code == 2 and 'decay factor' in capsys.readouterr().err
    assert not (tmp_path / 'runs').exists()


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
        '--lr-schedule', 'cosine', '--select-by', 'global_success'])) == 0
    text = model_card.write_card('tiny-trained', trained / 'best.pt', tiny / 'val', 2).read_text()
    assert ('- Training episodes: 2 episodes per encoded map; belief-density term of weight 0.5 '
            'beside the pose loss; checkpoint chosen by one-step global success on '
            'validation.') in text
    assert 'learning rate 0.003 at its peak, lowered along a cosine over the budget' in text


def test_results_table_survives_the_loss_of_its_run_directories(tiny, tmp_path):
    """A new machine has the committed records, not runs/: nothing is trained again."""
    import shutil

    from dmn_localization.learning.results import main as results_main
    from dmn_localization.learning.run_record import read_record, RecordError

    data = results_data(tiny, tmp_path)
    out, runs, records = tmp_path / 'RESULTS.md', tmp_path / 'runs', tmp_path / 'records'
    args = ['--data', str(data), '--runs', str(runs), '--budget-samples', '32',
            '--episodes', '4', '--models', 'vector-regression', '--domains', 'rooms',
            '--one-seed', '--val-every-samples', '16', '--val-episodes', '8', '--out', str(out),
            '--lr-grid', '3e-3', '1e-4', '--search-samples', '16', '--tie-margin', '0',
            '--records', str(records), '--memory-format', 'channels_last']
    assert results_main(args) == 0
    names = sorted(p.name for p in runs.iterdir() if p.is_dir())
    assert sorted(p.stem for p in records.glob('*.json')) == names and len(names) == 2
    chosen = next(runs / n for n in names if (runs / n / 'test-eval.json').exists())
    record = read_record(records, chosen)
    assert record['counters']['samples'] == 32 and record['budget_samples'] == 32
    assert record['memory_format'] == 'channels_last'  # the plan's option reached the run
    assert record['test_eval'] == json.loads((chosen / 'test-eval.json').read_text())
    assert [row[0] for row in record['curve']] == [16, 32]

    def table(text):
        # the learned model's rows, runs table and search table; not the command line
        return [line for line in text.splitlines() if line.startswith('| ')
                and ('regression' in line or 'vector' in line)]

    before = table(out.read_text())
    shutil.rmtree(runs)
    assert results_main(args) == 0  # reads the records: trains nothing, measures baselines
    assert not [p for p in runs.iterdir() if p.is_dir()]
    after = table(out.read_text())
    assert [r.replace(' (record)', '') for r in after] == before
    assert sum(' (record)' in r for r in after) == 2
    # a record measured on other test episodes cannot stand for the gone checkpoint
    assert results_main(args[:args.index('--episodes')] + ['--episodes', '6']
                        + args[args.index('--episodes') + 2:] + ['--no-train']) == 0
    latent = next(r for r in out.read_text().splitlines()
                  if r.startswith('| Latent vector | regression |'))
    assert latent.split('|')[3].strip().startswith('–')
    (records / f'{chosen.name}.json').write_text('{"version": 0}')
    with pytest.raises(RecordError):
        read_record(records, chosen)


def test_a_run_is_tested_and_recorded_as_it_ends(tiny, tmp_path, capsys):
    """The worker that finishes a run measures its test set: the record is complete then."""
    from dmn_localization.learning.results import train_all
    from dmn_localization.learning.results_plan import ResultsPlan, run_dir
    from dmn_localization.learning.run_record import read_record

    data, records = results_data(tiny, tmp_path), tmp_path / 'records'
    plan = ResultsPlan(data, tmp_path / 'runs', 32, models=['vector-regression'],
                       seeds={'vector-regression': (0,)}, lr={'vector-regression/rooms': 3e-3},
                       episodes=4, domains=['rooms'], val_every_samples=16, val_episodes=8,
                       records=records)
    train_all(plan, progress=False)  # trains only: no table, no evaluate_all
    run = run_dir(plan, 'vector-regression', 'rooms', 0)
    kept = json.loads((run / 'test-eval.json').read_text())
    assert read_record(records, run)['test_eval'] == kept
    assert kept['key']['episodes'] == 4
    assert set(kept['results']) == {'sequential-global', 'one-step-global'}
    seq, one = (kept['results'][p]['success'] for p in ('sequential-global', 'one-step-global'))
    assert (f'vector-regression rooms s0: test set: sequential-global {seq:.1%}, '
            f'one-step-global {one:.1%}') in capsys.readouterr().out
    # a call that finds the run finished measures nothing again: the cache is kept as is
    before = (run / 'test-eval.json').stat().st_mtime_ns
    train_all(plan, progress=False)
    assert (run / 'test-eval.json').stat().st_mtime_ns == before


def test_only_a_run_at_rest_is_recorded(tiny, tmp_path):
    from dmn_localization.learning.run_record import read_record, write_record

    run, records = tmp_path / 'run', tmp_path / 'records'
    assert write_record(run, records) is None  # not begun
    assert train_main(train_args(tiny, run, 80)) == 0
    config = json.loads((run / 'config.json').read_text())
    (run / 'config.json').write_text(json.dumps({**config, 'budget_samples': 160}))
    assert write_record(run, records) is None  # short of its budget: still training
    (run / 'config.json').write_text(json.dumps(config))
    assert write_record(run, records) == records / 'run.json'
    record = read_record(records, run)
    assert record['counters']['samples'] == 80 and record['test_eval'] is None
    assert record['config'] == torch.load(run / 'last.pt', weights_only=True)['config']


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


def test_decay_replay_drops_the_rate_where_the_trainer_would(tmp_path, capsys):
    from dmn_localization.learning.decay_replay import main as replay_main, plateau_drops

    losses = [0.30, 0.28, 0.29, 0.29, 0.27, 0.28, 0.28, 0.28, 0.28, 0.26]
    curve = [(100_000 * (i + 1), loss, 0.1) for i, loss in enumerate(losses)]
    # patience 2: the third validation in a row without a lower loss drops the rate,
    # and the count starts afresh after a drop
    assert plateau_drops(curve, 2, 1_000_000, 100_000) == [800_000]
    assert plateau_drops(curve, 1, 1_000_000, 100_000) == [400_000, 700_000, 900_000]
    assert plateau_drops(curve, 0, 1_000_000, 100_000) == [
        300_000, 400_000, 600_000, 700_000, 800_000, 900_000]
    assert plateau_drops(curve, 1, 800_000, 100_000) == [400_000, 700_000]  # the budget
    # a validation off the grid (a budget's end) does not count, as in the trainer
    assert plateau_drops(curve[:3] + [(350_000, 0.5, 0.1)] + curve[3:], 1, 1_000_000,
                         100_000) == [400_000, 700_000, 900_000]
    records = tmp_path / 'records'
    records.mkdir()
    from dmn_localization.learning.run_record import RECORD_VERSION

    (records / 'run-a.json').write_text(json.dumps({
        'version': RECORD_VERSION, 'run': 'run-a', 'config': {'val_every_samples': 100_000},
        'curve': [list(row) for row in curve]}))
    (records / 'closest-context-rooms-test-eval.json').write_text('{"results": {}}')
    assert replay_main(['--records', str(records), '--lr-decay-patience', '1']) == 0
    out = capsys.readouterr().out
    assert '| run-a | 400,000, 700,000, 900,000 |' in out
    assert 'would drop in 1 of 1 runs' in out


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
