"""
The report of ``make results``: the RESULTS.md section with the tables, and the plots.

The paper's Table 1 layout with the paper's number beside ours (at the stated and the
stricter reading of success), the protocol and budget, why ours differ, the
learning-rate search, the runs and their learning curves.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from dmn_localization.core.models import NON_LEARNED_MODELS
from dmn_localization.data.dataset import Dataset
from dmn_localization.learning.provenance import machine
from dmn_localization.learning.results_md import write_section
from dmn_localization.learning.results_plan import (DOMAINS, finished, LABELS,
                                                    learning_curve, PAPER_TABLE1,
                                                    PLATEAU_GAIN, PLATEAU_WINDOW,
                                                    recent_gain, ResultsPlan, run_dir,
                                                    run_state, STRICT, VARIANTS)
from dmn_localization.learning.run_record import at_rest
from dmn_localization.learning.train_config import finish_text, MEMORY_FORMATS, schedule_text
import numpy as np
import torch


def _curves_title(plan: ResultsPlan, domain: str) -> str:
    """Return the title of a domain's learning curves: what the dotted and dashed lines are."""
    notes = []
    if any(plan.searched(model, domain) for model in plan.models):
        notes.append('dotted: rates the search did not choose, or all rates while it runs')
    if plan.finish_samples:
        notes.append(f'dashed: the finishing stage begins, rate x{plan.finish_lr_factor:.3g}')
    return f'{domain}: learning curves' + (f" ({'; '.join(notes)})" if notes else '')


def plot_learning_curves(plan: ResultsPlan, domain: str, path: Path) -> Path:
    """
    Plot the validation loss and success against samples of every run of ``domain``.

    The loss (tracking, on 1000 fixed episodes) shows the plateau; the one-step global
    success (200 episodes, K=1024) is what the table measures, but noisy. A model's seeds
    share its colour and one entry of the legend, which sits below both panels (with
    three seeds of two models a legend inside a panel would hide its curves).
    """
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (loss_ax, success_ax) = plt.subplots(1, 2, figsize=(9.0, 3.6))
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    entries = []  # (line, label): one per model with a curve at its chosen rate
    for index, model in enumerate(plan.models):
        color = colors[index % len(colors)]
        chosen = plan.lr_of(model, domain)
        runs = [(rate, 0, ':') for rate in plan.search_rates(model, domain)
                if rate != chosen]  # the search's other rates, dotted, not in the legend
        if chosen is not None:
            runs += [(chosen, seed, '-') for seed in plan.seeds_of(model, domain)]
        shown = []  # (seed, loss line) of the chosen rate's runs with a curve
        for rate, seed, style in runs:
            curve = learning_curve(run_dir(plan, model, domain, seed, rate), plan.records)
            if curve:
                xs, losses, successes = zip(*curve)
                for ax, ys in ((loss_ax, losses), (success_ax, successes)):
                    line, = ax.plot(xs, ys, style, color=color, alpha=0.8,
                                    linewidth=1.5 if style == '-' else 1.0)
                if style == '-':
                    shown.append((seed, line))
        if shown:
            seeds = ', '.join(str(seed) for seed, _ in shown)
            entries.append((shown[0][1], f'{model}, lr {chosen:g}, '
                            f"seed{'s' if len(shown) > 1 else ''} {seeds}"))
    loss_ax.set_ylabel('validation loss (tracking)')
    success_ax.set_ylabel('validation one-step global success')
    for ax in (loss_ax, success_ax):
        ax.set_xlabel('training samples')
        ax.grid(alpha=0.3)
        if plan.finish_samples:  # the rate drops here: a fall after it is the stage's
            ax.axvline(plan.budget_samples, color='grey', linestyle='--', linewidth=0.8)
    fig.suptitle(_curves_title(plan, domain), fontsize=9)
    bottom = 0.0
    if entries:
        columns = min(3, len(entries))
        rows = -(-len(entries) // columns)
        fig.set_figheight(3.6 + 0.2 * rows)
        bottom = (0.2 * rows + 0.02) / (3.6 + 0.2 * rows)  # inches of legend, as a fraction
        fig.legend(*zip(*entries), loc='lower center', ncol=columns, fontsize=7,
                   frameon=False)
    fig.tight_layout(rect=(0.0, bottom, 1.0, 1.0))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _cell(values: Sequence[float], paper: Optional[float], planned: int = 1) -> str:
    """
    Return a table cell: the mean over ``values`` (one per finished seed), the paper's.

    With fewer finished seeds than the ``planned`` ones the cell says so (``1 of 3
    seeds``): a single seed's number is not the spread-bearing mean the plan asks for.
    """
    theirs = f'({paper:.1%})' if paper is not None else '(–)'
    if not values:
        return f'– {theirs}'
    mean = float(np.mean(values))
    spread = f' ± {np.std(values):.1%}' if len(values) > 1 else ''
    if len(values) < planned:
        seeds = f', {len(values)} of {planned} seeds'
    else:
        seeds = f', {len(values)} seeds' if len(values) > 1 else ''
    return f'{mean:.1%}{spread}{seeds} {theirs}'


def _floors(results: Dict, suffix: str, paper: bool) -> str:
    """Return the non-learned baselines' sequential success of both domains, as text."""
    parts = []
    for column, domain in enumerate(DOMAINS):
        got = results.get(domain, {}).get('sequential-global' + suffix, {})
        if 'uninformed' in got and 'closest-context' in got:
            said = [f'{label} {got[model][0]:.1%}' + (
                f' (paper {PAPER_TABLE1[model][column]:.1%})' if paper else '')
                for model, label in (('uninformed', 'uninformed'),
                                     ('closest-context', 'closest context'))]
            parts.append(f'{domain.capitalize()}: ' + ', '.join(said))
    return '; '.join(parts) or 'not evaluated yet'


def _differences(plan: ResultsPlan, results: Dict) -> List[str]:
    """Return the paragraphs that say why our numbers differ from the paper's."""
    return [
        '- The non-learned baselines score higher here than in the paper under the same '
        f'stated criterion ({_floors(results, "", True)}): in our worlds the success '
        'radius (squared x-y error 0.2, about 0.45 of the normalized half-width) covers '
        "more of the space the poses are drawn from than in the paper's data. At the "
        'stricter reading (x-y distance below 0.2, the second table) they score '
        f'{_floors(results, STRICT, False)}. On our data (the numbers above) the Rooms '
        "floors at the stricter reading are close to the paper's Rooms floors, while on "
        "Mazes the paper's closest context is close to ours at the stated reading and its "
        "uninformed estimate lies between our two readings: the paper's Rooms poses "
        'probably spread about 2.2 (the square root of 5) times wider relative to the '
        'threshold than ours, e.g. coordinates not scaled to -1..1 as its text says; its '
        'text does not settle it. '
        'Rows compare with each other on one footing; a cell compares with the paper only '
        'loosely.',
        '- Training: one budget of samples for every model, on CPU cores here, far below '
        "the paper's (it stopped after 100k iterations without a better validation error); "
        'a learning-rate search over a short horizon (below); our datasets are smaller '
        '(above; the paper: 100k Rooms and 960 Mazes environments). The runs table says '
        'which runs had reached a plateau (its last column), the learning curves show it.',
        _frame_cues(plan),
    ]


def _frame_cues(plan: ResultsPlan) -> str:
    """Say which cues of the frame the latent map baselines can read in this plan."""
    text = ('- The latent map baselines read global coordinates, and in `dmn_dataset` '
            "worlds in place the walls run along the frame's axes and the normalized extent "
            'is the outer wall: cues the egocentric PF-DMN cannot use (docs/findings.md: '
            '"The baselines read the frame\'s axes").')
    if plan.frame_shift or plan.frame_turn:
        how = ' and '.join(verb for verb, changed in (('moved', plan.frame_shift),
                                                      ('turned', plan.frame_turn)) if changed)
        text += (f' Here the worlds are {how} (above): the walls '
                 f"{'no longer' if plan.frame_turn else 'still'} run along the frame's axes "
                 f"and the outer wall is {'no longer' if plan.frame_shift else 'still'} at "
                 'the normalized extent.')
    if 'dmn-pf-heading' in plan.models:
        text += ' The heading row is DMN given the axes only.'
    return text


def _table_rows(plan: ResultsPlan, results: Dict, suffix: str) -> List[str]:
    """Return the rows of the Table 1 layout for the protocols with ``suffix``."""
    rows = []
    for model in list(plan.models) + list(NON_LEARNED_MODELS):
        paper = PAPER_TABLE1.get(model, (None,) * 4)
        cells = []
        for (domain, protocol), p in zip(
                [('rooms', 'sequential-global'), ('mazes', 'sequential-global'),
                 ('rooms', 'one-step-global'), ('mazes', 'one-step-global')], paper):
            values = results.get(domain, {}).get(protocol + suffix, {}).get(model, [])
            planned = len(plan.seeds_of(model, domain)) if model in plan.models else 1
            cells.append(_cell(values, p, planned))
        map_name, _, algorithm = LABELS[model].partition(', ')
        rows.append(f'| {map_name} | {algorithm or "–"} | ' + ' | '.join(cells) + ' |')
    return rows


def _rate(rate: Optional[float]) -> str:
    return 'searching' if rate is None else f'{rate:g}'


def _schedule(plan: ResultsPlan) -> str:
    """Say how the learning rate of every run changes while it trains."""
    text = schedule_text(plan.lr_decay_factor, plan.lr_decay_patience)
    if plan.finish_samples:
        return (f'{text}; {finish_text(plan.finish_samples, plan.finish_lr_factor)}, the same '
                'for every model (`--finish-samples`, `--finish-lr-factor`; the search compares '
                'rates before it).')
    if plan.lr_decay_factor == 1.0:
        return text + '.'
    return text + ', the same for every model (`--lr-decay-factor`, `--lr-decay-patience`).'


def _frame_change(plan: ResultsPlan) -> str:
    """Say how the worlds sit in their normalized frame (moved, turned, or in place)."""
    changes = []
    if plan.frame_shift:
        changes.append(f'moved by a random offset up to {plan.frame_shift:g} in x and y '
                       '(`--frame-shift`: the extent does not say where the walls are)')
    if plan.frame_turn:
        changes.append(f'turned about their centre by up to {plan.frame_turn:g} degrees '
                       "(`--frame-turn`: the frame's axes do not say which way the walls run)")
    if not changes:
        return ('in place: the extent is the outer wall and the walls run along the axes, '
                'which models reading global coordinates can learn (see docs/findings.md).')
    return ' and '.join(changes) + ', in training and test.'


def _options(plan: ResultsPlan, model: str) -> Dict[str, Any]:
    """Return the config fields of entry ``model`` other than their defaults."""
    return {**VARIANTS.get(model, (model, {}))[1], **plan.model_options.get(model, {})}


def _seeds(plan: ResultsPlan, model: str) -> str:
    """Return ``model [0, 1, 2]``, or its seeds per domain where the domains differ."""
    per_domain = {domain: list(plan.seeds_of(model, domain)) for domain in plan.domains}
    if len({tuple(seeds) for seeds in per_domain.values()}) == 1:
        return f'{model} {per_domain[plan.domains[0]]}'
    return f'{model} ' + ' '.join(f'{seeds} ({domain})' for domain, seeds in per_domain.items())


def _strongest(plan: ResultsPlan, results: Dict) -> str:
    """
    Say which learned baseline of each domain is the table's strongest.

    And whether it is the one with several seeds (the paper's practice: PF-DMN and that
    baseline). Strongest: the highest sequential global success, the mean over the seeds
    measured. A domain waits while one of its baselines has no result yet.
    """
    baselines = [m for m in plan.models if m != 'dmn-pf' and m not in VARIANTS]
    if not (baselines and plan.domains):
        return ''
    parts = []
    for domain in plan.domains:
        got = results.get(domain, {}).get('sequential-global', {})
        seeded = [m for m in baselines if len(plan.seeds_of(m, domain)) > 1]
        several = ', '.join(seeded) or 'none'
        waiting = [m for m in baselines if not got.get(m)]
        if waiting:
            parts.append(f'{domain}: not known yet, waiting for test results from '
                         f'{len(waiting)} of its {len(baselines)} baselines (several seeds: '
                         f'{several})')
            continue
        best = max(baselines, key=lambda m: float(np.mean(got[m])))
        said = f'{domain}: {best} ({float(np.mean(got[best])):.1%})'
        planned = len(plan.seeds_of(best, domain))
        if best in seeded and len(got[best]) < planned:  # its other seeds still to come
            said += f', which has {planned} seeds planned, {len(got[best])} of them finished'
        elif best in seeded:
            said += ', which has several seeds'
        else:
            said += (f', which has one seed; several go to {several} (choose them with '
                     '`dmn_results --seeds`)')
        parts.append(said)
    return '- Strongest learned baseline by sequential global success: ' + '; '.join(parts) + '.'


def _lead(scores: Dict[float, Optional[float]], chosen: Optional[float]) -> str:
    """Return how much lower the chosen rate's score is than the next best (relative)."""
    others = [score for rate, score in scores.items() if rate != chosen]
    if chosen is None or not others or None in others:
        return '–'
    best = scores[chosen]
    return f'{100 * (min(others) - best) / best:.1f} %'


def _searched(plan: ResultsPlan) -> List[bool]:
    """Return, for every model and domain of the plan, whether its rate is searched."""
    return [plan.searched(m, d) for d in plan.domains for m in plan.models]


def _rate_source(plan: ResultsPlan) -> str:
    """Say where the plan's learning rates come from: the search, the plan, or both."""
    searched = _searched(plan)
    if all(searched):
        return 'chosen per model and domain by the search below'
    if not any(searched):
        return 'fixed by the plan (`dmn_results --lr`, or `--lr-grid` with one rate)'
    return ('chosen per model and domain by the search below, or fixed by the plan where '
            'it says so')


def _search_section(plan: ResultsPlan) -> List[str]:
    """Return the learning-rate search's table: every rate's score, the choice in bold."""
    if not any(_searched(plan)):
        return ['## Learning-rate search', '',
                'None: the plan fixes every rate (under "Protocol and budget").']
    grid = list(plan.lr_grid)
    lines = ['## Learning-rate search', '',
             f'Seed 0 of every model and domain trained at each rate for '
             f'{plan.search_samples:,} samples; the score is the lowest validation loss '
             '(tracking, the training objective) up to then, and the lowest score is '
             'chosen (bold) for every seed and the full budget. A horizon this short '
             'favours rates that learn fast early; it is the search this machine affords. '
             f'Rates within {100 * plan.tie_margin:g} % of the lowest score are a tie (a '
             "run's validation loss moves by more than that from one validation to the "
             f'next): they train another {plan.search_samples:,} samples and are compared '
             'again, up to the budget; such a score is given with the samples it is at. '
             "Lead: how much lower the chosen rate's score is than the next best where "
             'the search ended. A dash: not trained that far yet.', '',
             '| model | domain | ' + ' | '.join(f'lr {r:g}' for r in grid)
             + ' | chosen | lead |',
             '| --- | --- | ' + ' | '.join('---' for _ in grid) + ' | --- | --- |']
    for domain in plan.domains:
        for model in plan.models:
            search = plan.search(model, domain)
            chosen = search.chosen if plan.searched(model, domain) \
                else plan.lr_of(model, domain)
            cells = []
            for rate in grid:
                horizon = search.reached.get(rate, plan.search_samples)
                score = plan.search_scores(model, domain, horizon).get(rate)
                cell = '–' if score is None else f'{score:.4f}'
                if horizon > plan.search_samples:
                    cell += f' ({horizon // 1000}k)'
                cells.append(f'**{cell}**' if rate == chosen and score is not None else cell)
            fixed = '' if plan.searched(model, domain) else ' (fixed by the plan)'
            lines.append(f'| {model} | {domain} | ' + ' | '.join(cells)
                         + f' | {_rate(chosen)}{fixed} | {_lead(search.scores, chosen)} |')
    return lines


def _run_row(plan: ResultsPlan, model: str, domain: str, seed: int, rate: Optional[float],
             chosen: Optional[float]) -> str:
    """Return one row of the runs table (``rate`` None: a seed waiting for the search)."""
    head = f'| {model} {domain} s{seed} | {_rate(rate)} |'
    if rate is None:
        return head + ' 0 | – | – | waits for the search | – |'
    run = run_dir(plan, model, domain, seed, rate)
    state = run_state(run, plan.records)
    if state is None:
        return head + ' 0 | – | – | ' + ('no checkpoint yet' if run.exists() else
                                         'not begun') + ' | – |'
    full = rate == chosen or not plan.searched(model, domain)
    if full:
        over = at_rest(state, plan.budget_samples, plan.finish_samples)
    else:
        over = at_rest(state, plan.search(model, domain).reached.get(rate, plan.search_samples))
    if not over:
        how = 'in progress' if full or chosen is None else 'in progress (search)'
        if state.get('stage'):
            how += ' (finishing stage)'
    elif state['stopped_early']:
        how = 'stopped early'
    else:
        how = 'finished' if full else 'search done'
    if not (run / 'last.pt').exists():
        how += ' (record)'  # its directory is gone: read from plan.records
    best = state['best_val_loss']  # math.inf until the run's first validation
    best_cell = f'{best:.4f}' if math.isfinite(best) else '–'
    plateau = _plateau(plan, run, state, over)[1]
    return (head + f' {state["samples"]:,} | {best_cell} | '
            f'{state["elapsed_s"] / 3600:.2f} h | {how} | {plateau} |')


def _plateau(plan: ResultsPlan, run: Path, state: Dict[str, Any],
             over: bool = True) -> Tuple[Optional[bool], str]:
    """
    Return whether a run is at a plateau (:data:`PLATEAU_GAIN`), and the runs table's cell.

    At a plateau: stopped early, or, in a plan with a finishing stage, its main stage
    ended by patience before the budget (the finishing stage's fall at the lower rate
    does not count against it), or the best validation loss fell by less than
    :data:`PLATEAU_GAIN` over the last :data:`PLATEAU_WINDOW` samples. None (cell ``–``)
    while the run is too short to say, or still in progress (``over`` False: the cell
    gives the fall so far, not a verdict).
    """
    if state['stopped_early']:
        return True, 'yes (stopped early)'
    main_end = state.get('finish_start')
    if (plan.finish_samples and state.get('stage', 0) == 1 and main_end is not None
            and main_end < plan.budget_samples):
        return True, f'yes (patience at {main_end / 1e6:g}M)'
    gain = recent_gain(learning_curve(run, plan.records))
    if gain is None:
        return None, '–'
    if not over:
        return None, f'– ({100 * gain:.1f} % so far)'
    flat = gain < PLATEAU_GAIN
    return flat, f'{"yes" if flat else "no"} ({100 * gain:.1f} %)'


def _plateau_summary(plan: ResultsPlan) -> str:
    """Return a sentence: how many runs at their chosen rate are at a plateau, and which not."""
    done, rising = 0, []
    for model, domain, seed in plan.schedule():
        if finished(plan, model, domain, seed):
            done += 1
            run = run_dir(plan, model, domain, seed)
            if not _plateau(plan, run, run_state(run, plan.records))[0]:
                rising.append(f'{model} {domain} s{seed}')
    if not done:
        return 'No run has finished at its chosen rate yet.'
    return (f'At a plateau: {done - len(rising)} of the {done} runs finished at their '
            'chosen rate (plateau: stopped early'
            + (', or patience ended the main stage before the budget'
               if plan.finish_samples else '')
            + ', or the best validation loss fell by less '
            f'than {100 * PLATEAU_GAIN:g} % over the last {PLATEAU_WINDOW:,} samples; the '
            'last column gives that fall)'
            + ('' if not rising else '; still learning: '
               + ('all of them' if len(rising) == done else ', '.join(rising))) + '.')


def _counts(plan: ResultsPlan) -> Tuple[str, str]:
    """
    Return how many of the plan's runs trained in each memory layout and on each machine.

    A run that resumed on several machines counts for each.
    """
    layouts: Dict[str, int] = {}
    machines: Dict[str, int] = {}
    for model, domain, seed, rate in plan.runs_with_rates():
        state = None if rate is None else run_state(run_dir(plan, model, domain, seed, rate),
                                                    plan.records)
        if state is not None:
            layout = state['memory_format'] or MEMORY_FORMATS[0]
            layouts[layout] = layouts.get(layout, 0) + 1
            for name in state['machines'] or ['not recorded']:
                machines[name] = machines.get(name, 0) + 1

    def said(counts: Dict[str, int]) -> str:
        return ', '.join(f'{key} ({n} runs)' for key, n in sorted(counts.items())) or \
            'no run yet'
    return said(layouts), said(machines)


def progress_lines(plan: ResultsPlan) -> List[str]:
    """
    Return the learning-rate search's table and the runs table (Markdown).

    Read from the runs' logs and saved states alone: what ``dmn_results --status``
    prints, and the part of RESULTS.md that says how far the plan has got.
    """
    how = ('Seed 0 of every model and domain is trained at every rate of the search; the '
           'chosen one continues to the full budget. ' if any(_searched(plan))
           else 'Every run trains at the rate the plan fixes. ')
    lines = [*_search_section(plan), '', '## Training runs', '',
             how + _plateau_summary(plan), '',
             '| run | learning rate | samples | best validation loss | wall time | state | '
             'plateau |', '| --- | --- | --- | --- | --- | --- | --- |']
    for model, domain, seed, rate in plan.runs_with_rates():
        lines.append(_run_row(plan, model, domain, seed, rate, plan.lr_of(model, domain)))
    return lines


def write_results(plan: ResultsPlan, results: Dict, out: Path, command: str,
                  wall_time_s: Optional[float]) -> Path:
    """
    Write RESULTS.md: the table, budgets, seeds, data sizes and learning curves.

    ``wall_time_s`` is the command's time in training and evaluation; None when it
    trained nothing (``--no-train``), so that a report rewritten from the records does
    not claim a wall time of zero.
    """
    figures = out.parent / 'docs'
    figures.mkdir(parents=True, exist_ok=True)
    lines = ['## Global localization success (paper Table 1 layout)', '',
             f'Made by `{command}` (the code at this commit).', '',
             "Ours, with the paper's number in parentheses. Mean ± standard deviation over "
             'training seeds where there are several; "1 of 3 seeds": the mean of the '
             'seeds finished so far, the others have not finished. A dash: the run has not '
             'finished (see the runs below).', '',
             '| map | algorithm | Rooms sequential | Mazes sequential | Rooms one-step | '
             'Mazes one-step |', '| --- | --- | --- | --- | --- | --- |']
    lines += _table_rows(plan, results, '')
    lines += ['', '### The same runs at a stricter reading: x-y distance below 0.2', '',
              'Success when the squared x-y error is below 0.04 instead of 0.2, with the '
              "paper's numbers again beside ours: under this reading our Rooms floors "
              "(uninformed, closest context) are near the paper's (see below), so it may be "
              "the closer comparison for the paper's Rooms column.", '',
              '| map | algorithm | Rooms sequential | Mazes sequential | Rooms one-step | '
              'Mazes one-step |', '| --- | --- | --- | --- | --- | --- |']
    lines += _table_rows(plan, results, STRICT)
    layouts, machines = _counts(plan)
    lines += ['', '## Protocol and budget', '',
              f'- Training budget: {plan.budget_samples:,} samples for every learned model '
              + (f'and a finishing stage of {plan.finish_samples:,} (below) '
                 if plan.finish_samples else '')
              + '(single-step tracking episodes, Nc=4, K=32, Adam, batch 16), validation every '
              f'{plan.val_every_samples:,} samples, early stop after {plan.patience} '
              'validations without a lower loss, best checkpoint evaluated.',
              f'- Learning rates: {_rate_source(plan)}; '
              + ', '.join(f'{m} {_rate(plan.lr_of(m, d))} ({d})'
                          for d in plan.domains for m in plan.models)
              + '; ' + _schedule(plan),
              '- Model options: ' + (', '.join(
                  f'{m} {o}' for m in plan.models for o in [_options(plan, m)] if o)
                  or 'none (every model at its default config)'),
              '- Seeds: ' + ', '.join(_seeds(plan, m) for m in plan.models),
              *[line for line in [_strongest(plan, results)] if line],
              f'- Evaluation: {plan.episodes} episodes per cell on held-out test environments, '
              'K=2048, t=5 (sequential) and t=1 (one-step); success = squared x-y error '
              'below 0.2 in normalized units.',
              '- Worlds in their normalized frame: ' + _frame_change(plan),
              '- Memory layout of the weights in training (`dmn_results --memory-format`; '
              'the same arithmetic up to rounding: it changes the speed, and like a seed '
              'the path a run takes): ' + layouts,
              '- Machines the runs trained on (each training process; CPUs that round differently '
              'take a run down another path, and wall times depend on them): ' + machines,
              f'- This command: {machine()}, torch {torch.__version__}; '
              + (f'its wall time: {wall_time_s / 3600:.1f} h (each run in the runs table).'
                 if wall_time_s is not None else
                 'it trained nothing (`--no-train`) and read the runs and their records: '
                 "each run's wall time is in the runs table, its machines above.")]
    for domain in plan.domains:
        for split in ('train', 'val', 'test'):
            d = Dataset(plan.data / f'{domain}-{split}')
            lines.append(f'- {domain} {split}: {len(d)} environments x {d.views_per_env} views')
    lines += ['', "## Why ours differ from the paper's", '', *_differences(plan, results),
              '', *progress_lines(plan), '', '## Learning curves', '']
    # RESULTS.md's figures keep their names; those of another report carry its name
    prefix = '' if out.stem == 'RESULTS' else f'{out.stem.lower()}-'
    for domain in plan.domains:
        path = plot_learning_curves(plan, domain,
                                    figures / f'{prefix}learning-curves-{domain}.png')
        lines.append(f'![{domain}](docs/{path.name})')
    write_section(out, 'learning', '\n'.join(lines))
    (out.with_suffix('.json')).write_text(json.dumps(results, indent=1) + '\n')
    return out
