"""dmn_results: the tables' runs, training them side by side, the records, the report."""

from dataclasses import replace
import json
import os
from pathlib import Path
import re
import shlex
import signal
import subprocess
import sys
import time

from dmn_localization.data.dataset import generate, GenerationSpec
from dmn_localization.learning import results
from dmn_localization.learning.results_md import write_section
from dmn_localization.learning.results_table import ResultsTable, TABLES
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """Write a ``--data`` directory of tiny Rooms sets (16x16 images; val is the test set)."""
    root = tmp_path_factory.mktemp('data')
    for split, envs, views in (('train', 8, 6), ('val', 4, 10)):
        generate(GenerationSpec('rooms', split, envs, views, 1, (16, 16), 4),
                 root / f'rooms-{split}', workers=1, progress=False)
    (root / 'rooms-test').symlink_to(root / 'rooms-val')
    return root


def tiny_table(tmp_path, budget=32, **fields):
    return ResultsTable('tiny', tmp_path / 'runs', tmp_path / 'records', budget,
                        models=('dmn-pf', 'vector-regression'), domains=('rooms',),
                        lr={'vector-regression': 1e-3}, val_every_samples=16,
                        val_episodes=8, episodes=4, **fields)


def learned_rows(text):
    """Return the rows of learned models of a Table 1 section."""
    return [line for line in text.splitlines()
            if line.startswith(('| View-embedding |', '| Latent '))]


def test_every_run_of_every_table_is_recorded_and_the_records_give_results_md():
    for table in TABLES.values():
        for run in table.schedule():
            record = results.read_record(table, table.run_name(*run))
            assert record is not None and results.at_rest(table, record['counters']), run
    table = TABLES['4m']
    measured = {}
    for entry, domain, seed in table.schedule():
        kept = results.read_record(table, table.run_name(entry, domain, seed))['test_eval']
        assert kept['key']['episodes'] == 1000 and kept['key']['frame_turn'] == 180.0
        for protocol, summary in kept['results'].items():
            for suffix, key in (('', 'success'), (results.STRICT, 'success_strict')):
                measured.setdefault(domain, {}).setdefault(protocol + suffix, {}).setdefault(
                    entry, []).append(summary[key])
    section = (ROOT / 'RESULTS.md').read_text().split('<!-- begin learning -->')[1]
    assert learned_rows('\n'.join(results.table_rows(table, measured))
                        + '\n'.join(results.table_rows(table, measured, results.STRICT))) \
        == learned_rows(section)
    assert len(learned_rows(section)) == 12


def test_make_results_writes_the_table_results_md_says_it_was_made_by():
    makefile = (ROOT / 'Makefile').read_text().replace('\\\n', ' ')
    recipe = re.search(r'^results: .*\n\t\$\(RUN\) dmn_results (.*)$', makefile, re.M)
    made = re.search(r'^Made by `dmn_results (.*?)` \(table', (ROOT / 'RESULTS.md').read_text(),
                     re.M)
    options = [shlex.split(m.group(1).replace('$(RESULTS_JOBS)', '2')) for m in (recipe, made)]
    assert [o for o in options[0] if o not in ('--jobs', '2')] == \
        [o for o in options[1] if o not in ('--jobs', '2', '--no-train')]


def test_a_table_trains_runs_side_by_side_records_and_reports_them(data, tmp_path, capsys):
    table = tiny_table(tmp_path)
    assert results.train_all(table, data, jobs=2, progress=False, poll_s=0.2) == 0
    names = [table.run_name(*run) for run in table.schedule()]
    assert names == ['dmn-pf-rooms-lr0.0003-s0', 'vector-regression-rooms-lr0.001-s0']
    for name in names:  # dmn_train's run, with the table's settings
        config = json.loads((table.runs / name / 'config.json').read_text())
        assert config['budget_samples'] == 32 and config['val_every_samples'] == 16
        record = results.read_record(table, name)
        assert record['counters']['samples'] == 32 and record['test_eval']['results']
    assert 'sequential-global' in capsys.readouterr().out  # each run's test results said
    out = tmp_path / 'RESULTS.md'
    write_section(out, 'kidnap', 'another section')
    results.write_results(table, data, results.evaluate_all(table, data), out, 'dmn_results x')
    text = out.read_text()
    assert 'another section' in text and (tmp_path / 'docs/learning-curves-rooms.png').exists()
    rows = learned_rows(text)
    assert len(rows) == 4 and all(row.split('|')[3].strip()[0].isdigit() for row in rows[::3])
    assert '| dmn-pf rooms s0 | 0.0003 | 32 |' in text and 'finished |' in text
    # a second call trains nothing; without the run directories the records give it all
    logs = {p: p.read_bytes() for p in table.runs.glob('*/log.csv')}
    assert results.train_all(table, data, jobs=2, progress=False, poll_s=0.2) == 0
    assert {p: p.read_bytes() for p in table.runs.glob('*/log.csv')} == logs
    for name in names:
        (table.runs / name / 'last.pt').rename(tmp_path / f'{name}.pt')
        (table.runs / name / 'best.pt').unlink()
    again = tmp_path / 'again.md'
    results.write_results(table, data, results.evaluate_all(table, data), again, 'x')
    assert learned_rows(again.read_text()) == rows
    assert '| dmn-pf rooms s0 | 0.0003 | 32 |' in again.read_text() and '(record)' in \
        again.read_text()
    # a larger budget trains the runs on from where they are
    (tmp_path / f'{names[0]}.pt').rename(table.runs / names[0] / 'last.pt')
    longer = replace(table, budget_samples=48, models=('dmn-pf',))
    assert results.train_all(longer, data, progress=False, poll_s=0.2) == 0
    assert results.read_record(longer, names[0])['counters']['samples'] == 48


def test_at_rest_and_the_plateau_cell():
    plain = ResultsTable('t', Path('r'), Path('c'), 1000)
    staged = replace(plain, finish_samples=300)

    def counters(samples, stopped=False, stage=0, finish_start=0):
        return {'samples': samples, 'stopped_early': stopped, 'stage': stage,
                'finish_start': finish_start}

    assert results.at_rest(plain, counters(1000)) and results.at_rest(plain, counters(5, True))
    assert not results.at_rest(plain, counters(999))
    assert not results.at_rest(staged, counters(1000))  # the finishing stage is to come
    assert not results.at_rest(staged, counters(600, True))  # patience: the stage follows
    assert results.at_rest(staged, counters(900, stage=1, finish_start=600))
    assert results.at_rest(staged, counters(700, True, stage=1, finish_start=600))

    def cell(table, points, **c):
        return results.plateau(table, {'counters': counters(**c), 'curve': [
            [s, loss, 0.1] for s, loss in points]})

    assert cell(plain, [(100_000, 1.0), (400_000, 0.9)], samples=400_000) == 'no (10.0 %)'
    assert cell(plain, [(100_000, 1.0), (200_000, 0.9), (500_000, 0.895)],
                samples=500_000) == 'yes (0.6 %)'  # the best fell < 1 % over the last 300k
    assert cell(plain, [(100_000, 1.0)], samples=100_000) == '–'  # too short to say
    assert cell(plain, [], samples=5, stopped=True) == 'yes (stopped early)'
    assert cell(staged, [], samples=900, stage=1, finish_start=600) == \
        'yes (patience at 0.0006M)'


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='PR_SET_PDEATHSIG')
@pytest.mark.parametrize('how', ['SIGTERM', 'SIGKILL'])
def test_a_stopped_or_killed_dmn_results_leaves_every_run_saved(data, tmp_path, how):
    """SIGTERM: forwarded, one stop a run; SIGKILL: the kernel tells the runs."""
    code = ('import sys; from pathlib import Path; from dmn_localization.learning import '
            'results; from dmn_localization.learning.results_table import ResultsTable; '
            f"t = ResultsTable('long', Path({str(tmp_path / 'runs')!r}), Path("
            f"{str(tmp_path / 'records')!r}), 4000000, models=('dmn-pf', 'vector-regression',"
            " 'image-regression'), domains=('rooms',), val_every_samples=1000000, "
            f'val_episodes=8); sys.exit(results.train_all(t, Path({str(data)!r}), jobs=2, '
            'progress=False, poll_s=0.2))')
    process = subprocess.Popen([sys.executable, '-c', code], text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    runs = tmp_path / 'runs'
    deadline = time.monotonic() + 300
    try:
        while len([p for p in runs.glob('*/log.csv') if len(p.read_text().splitlines()) > 2]) < 2:
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.5)
        process.send_signal(getattr(signal, how))
        process.communicate(timeout=300)
        if how == 'SIGTERM':
            assert process.returncode == 128 + signal.SIGTERM
        started = sorted(run for run in runs.iterdir() if run.is_dir())
        assert len(started) == 2  # the third run never began
        while not all((run / 'last.pt').exists() for run in started):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        import fcntl

        for run in started:  # no process trains in it any more
            while True:
                with open(run / '.lock', 'a+') as f:
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        assert time.monotonic() < deadline
                time.sleep(0.5)
    finally:
        if process.poll() is None:
            process.kill()
        os.system(f'pkill -f {tmp_path / "runs"} || true')
