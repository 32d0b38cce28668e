"""
Ship a trained checkpoint: copy it into ``models/``, measure it, write its model card.

    python -m dmn_localization.learning.model_card runs/dmn-pf-rooms-s0/best.pt \
        --name dmn-pf-rooms --test-data data/rooms-test --episodes 1000

The card (``models/NAME.md``, data in ``models/NAME.json``) records the training data
and budget, the test metrics, the input specification and the intended use, and the
success rate of a small regression check that the test suite repeats on the shipped
weights (:func:`regression_success`). A model trained on worlds moved or turned
(``dmn_train --frame-shift/--frame-turn``) is measured twice: on the test worlds in place
and with the frame change of its training (``make results`` trains so).
"""

from __future__ import annotations

import argparse
from dataclasses import fields
import json
from pathlib import Path
import shutil
import sys
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from dmn_localization.core.checkpoint import load_checkpoint, samples_behind, save_checkpoint
from dmn_localization.core.configs import InputConfig
from dmn_localization.core.models import count_parameters
from dmn_localization.data.dataset import Dataset, generate, GenerationSpec
from dmn_localization.learning.episode_loss import NEAR_RADIUS
from dmn_localization.learning.evaluation import evaluate, fixed_episodes, PROTOCOLS, run_model
from dmn_localization.learning.train_config import finish_text, schedule_text
import torch

MODELS_DIR = Path(__file__).resolve().parents[2] / 'models'
#: The regression check: environments the check renders itself (test split, seed 7).
REGRESSION_SPEC = {'split': 'test', 'envs': 30, 'views_per_env': 10, 'seed': 7}
REGRESSION_EPISODES = 60


def regression_success(checkpoint: Path, domain: str, workdir: Optional[Path] = None) -> float:
    """Return sequential global localization success on the fixed regression episodes."""
    loaded = load_checkpoint(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(workdir or tmp) / f'regression-{domain}'
        spec = GenerationSpec(domain, image_size=tuple(loaded.model.config.image_size),
                              **REGRESSION_SPEC)
        generate(spec, root, workers=1, progress=False)
        protocol = PROTOCOLS['sequential-global']
        data = fixed_episodes(Dataset(root), protocol, REGRESSION_EPISODES, 0,
                              loaded.model.config, torch.device('cpu'))
        errors = run_model(loaded.model, loaded.name, data, protocol,
                           torch.Generator().manual_seed(0))
    return float((errors < 0.2).mean())


def _training_options(options: Dict[str, Any], frame_shift: float,
                      precision: str = 'fp32', frame_turn: float = 0.0) -> str:
    """Card lines for model options other than the defaults, a frame change, a precision."""
    lines = ''
    if options:
        lines += '- Model options: ' + ', '.join(
            f'`{k}={v}`' for k, v in options.items()) + '\n'
    if frame_shift:
        lines += (f'- Worlds moved in their normalized frame by up to {frame_shift:g} in x '
                  f'and y (`dmn_train --frame-shift {frame_shift:g}`).\n')
    if frame_turn:
        lines += (f'- Worlds turned about their centre by up to {frame_turn:g} degrees '
                  f'(`dmn_train --frame-turn {frame_turn:g}`).\n')
    if precision != 'fp32':
        lines += (f'- Trained with the forward pass under {precision} autocast (`dmn_train '
                  f'--precision {precision}`); the weights are float32.\n')
    return lines


def _episodes_text(meta: Dict[str, Any]) -> str:
    """Card line for the training episodes and loss when they are not the paper's, or ''."""
    parts = []
    if meta.get('queries_per_map', 1) > 1:
        parts.append(f'{meta["queries_per_map"]} episodes per encoded map')
    if meta.get('sequence_steps', 1) > 1:
        parts.append(f'episodes of {meta["sequence_steps"]} views with the odometry between '
                     'them')
    if meta.get('density_weight'):
        parts.append(f'belief-density term of weight {meta["density_weight"]:g} beside the '
                     'pose loss')
    if meta.get('nce_weight'):
        text = (f'contrastive term of weight {meta["nce_weight"]:g} (the true pose scored '
                "against the belief's particles")
        if meta.get('nce_near_share'):
            text += (f', {meta["nce_near_share"]:.0%} of them '
                     f'{NEAR_RADIUS[0]:g}-{NEAR_RADIUS[1]:g} normalized units from the truth')
        parts.append(text + ')')
    if meta.get('final_weights'):
        parts.append("the run's final weights (`python -m "
                     'dmn_localization.learning.final_weights`), not its best.pt')
    elif meta.get('select_by', 'val_loss') != 'val_loss':
        parts.append('checkpoint chosen by one-step global success on validation')
    return ('- Training episodes: ' + '; '.join(parts) + '.\n') if parts else ''


def _rate_text(meta: Dict[str, Any]) -> str:
    """Say the run's learning rate, and its schedule when it decayed or had a finishing stage."""
    text = f'learning rate {meta.get("lr")}'
    if meta.get('lr_schedule', 'constant') == 'cosine':
        return f'{text} at its peak, lowered along a cosine over the budget'
    if meta.get('finish_samples'):
        stage = ('from that stage' if meta.get('stage') else
                 'from before it: the stage found no lower validation loss')
        text = (f'{text}, {finish_text(meta["finish_samples"], meta["finish_lr_factor"])} '
                f'(this checkpoint is {stage})')
    factor = meta.get('lr_decay_factor', 1.0)
    if factor == 1.0:
        return text
    return (f'{text}, {schedule_text(factor, meta.get("lr_decay_patience"))} '
            f'({meta.get("lr_now"):.3g} at this checkpoint)')


def _frame_requirement(options: Dict[str, Any]) -> str:
    """Return what a model reading global coordinates expects of the map frame, or ''."""
    if options.get('global_pose'):
        return ("\nThis model reads the particle's global pose in the map frame: it expects "
                "the frame's axes along the walls and the extent at the outer walls, as in "
                '`dmn_dataset` worlds; it is not invariant to moving or turning the frame.')
    if options.get('global_heading'):
        return ("\nThis model reads the particle's heading in the map frame: it expects the "
                "frame's axes along the walls, as in `dmn_dataset` worlds (invariant to "
                'moving the frame, not to turning it).')
    return ''


def _metrics_table(results: Dict[str, Dict[str, Dict[str, float]]], model: str) -> str:
    """Return the Markdown rows of a card's test table: success, strict success, MSE."""
    return '\n'.join(
        f'| {p} | {r[model]["success"]:.1%} ± {r[model]["success_stderr"]:.1%} | '
        f'{r[model]["success_strict"]:.1%} | {r[model]["mse"]:.4f} |'
        for p, r in results.items())


def _frame_change(shift: float, turn: float) -> Tuple[str, str]:
    """Return the words and the ``dmn_evaluate`` flags of a frame change."""
    words = ' and '.join(w for w, v in ((f'moved by up to {shift:g}', shift),
                                        (f'turned by up to {turn:g} degrees', turn)) if v)
    flags = ''.join(f' --frame-{k} {v:g}' for k, v in (('shift', shift), ('turn', turn)) if v)
    return words, flags


def write_card(name: str, checkpoint: Path, test_data: Path, episodes: int,
               status: str = '', train_command: str = '',
               init_samples: Optional[int] = None) -> Path:
    """
    Copy ``checkpoint`` to ``models/NAME.pt`` and write its card; return the card path.

    ``init_samples`` replaces the checkpoint's count of the samples behind its starting
    weights in the shipped copy and the card (runs before the fix counted only the last
    run of a chain); None keeps it.
    """
    loaded = load_checkpoint(checkpoint)
    meta = dict(loaded.metadata)
    if init_samples is not None and not meta.get('init_from'):
        raise ValueError(f'{checkpoint} did not start from another checkpoint')
    dataset = Dataset(test_data)
    results = evaluate({loaded.name: loaded.model}, dataset, episodes, seed=0)
    shift, turn = meta.get('frame_shift', 0.0), meta.get('frame_turn', 0.0)
    moved = (evaluate({loaded.name: loaded.model}, dataset, episodes, seed=0,
                      frame_shift=shift, frame_turn=turn) if shift or turn else None)
    target = MODELS_DIR / f'{name}.pt'
    if init_samples is None:
        shutil.copyfile(checkpoint, target)
    else:
        meta['init_samples_recorded'] = meta.get('init_samples', 0)
        meta['init_samples'] = init_samples
        save_checkpoint(target, loaded.model, loaded.extent, meta)
    regression = regression_success(target, dataset.domain)
    config = loaded.model.config
    defaults = type(config)(name=config.name)
    inputs = {f.name for f in fields(InputConfig)}  # the card's Input section has those
    options = {f.name: getattr(config, f.name) for f in fields(config)
               if f.name not in inputs and getattr(config, f.name) != getattr(defaults, f.name)}
    data: Dict[str, Any] = {
        'name': name, 'model': loaded.name, 'fingerprint': loaded.fingerprint,
        'parameters': count_parameters(loaded.model),
        'training': {**meta, 'command': train_command},
        'input': {'image_size': list(config.image_size), 'pixel_mean': config.pixel_mean,
                  'pixel_std': config.pixel_std, 'training_extent_m': list(loaded.extent),
                  'camera': loaded.camera.to_dict()},
        'test': {'data': str(test_data), 'episodes': episodes, 'results': results},
        **({'test_moved': {'frame_shift': shift, 'frame_turn': turn, 'results': moved}}
           if moved else {}),
        'regression_check': {'success': regression, 'episodes': REGRESSION_EPISODES,
                             **REGRESSION_SPEC, 'domain': dataset.domain},
    }
    (MODELS_DIR / f'{name}.json').write_text(json.dumps(data, indent=1) + '\n')
    header = ('| protocol | success | strict success | mean squared x-y error (normalized) |\n'
              '| --- | --- | --- | --- |\n')
    change, flags = _frame_change(shift, turn)
    moved_text = (f"""
On the test worlds {change}, as in training:

`dmn_evaluate --data {test_data} --checkpoint models/{name}.pt --episodes {episodes}{flags}`

{header}{_metrics_table(moved, loaded.name)}
""" if moved else '')
    init_text = (f' ({meta["init_samples"]:,} of them in the run whose checkpoint '
                 f'`{meta["init_from"]}` this run started from)' if meta.get('init_from')
                 else '')
    from dmn_localization.runtime.default_model import DEFAULT_MODEL

    role = (', the default model of `dmn_localization_node`'
            if f'{name}.pt' == DEFAULT_MODEL else
            f', for `dmn_localization_node` with `model_path:=.../models/{name}.pt`')
    command_line = f'- Command: `{train_command}`\n' if train_command else ''
    if meta.get('code_revisions'):
        command_line += ('- Code: ' + ', '.join(f'`{r}`' for r in meta['code_revisions'])
                         + ' (`git describe` of each training process of the run up to this '
                         'checkpoint)\n')
    if meta.get('machines'):
        command_line += ('- Trained on: ' + '; '.join(f'`{m}`' for m in meta['machines'])
                         + ' (each training process)\n')
    options_text = _training_options(options, meta.get('frame_shift', 0.0),
                                     meta.get('precision', 'fp32'), meta.get('frame_turn', 0.0))
    options_text += _episodes_text(meta)
    card = f"""# {name}

`{loaded.name}` ({data["parameters"]:,} parameters, encoder fingerprint
`{loaded.fingerprint}`){role}.
{chr(10) + "**Status:** " + status + chr(10) if status else ""}
## Training

- Data: `{meta.get("train_data")}` (`dmn_dataset generate --domain {dataset.domain} --split
  train`, default size, seed 0), validation on the val split.
- Budget: {samples_behind(meta) or 0:,} training samples seen
  {"at the end of the run" if meta.get("final_weights") else
     "when this checkpoint was the best on validation"}{init_text}; batch
  {meta.get("batch_size")}, Adam, {_rate_text(meta)},
  Nc={meta.get("num_contexts")}, K={meta.get("num_particles")}, seed {meta.get("seed")}.
- Validation at that point: loss {meta.get("val_loss", float("nan")):.4f}, one-step global
  success {meta.get("val_global_success", float("nan")):.1%}.
{options_text}{command_line}
## Test metrics

`dmn_evaluate --data {test_data} --checkpoint models/{name}.pt --episodes {episodes}`

{header}{_metrics_table(results, loaded.name)}

Success: squared x-y error of the final estimate below 0.2 in normalized units (the
paper's reading); strict: x-y distance below 0.2.
{moved_text}
Regression check repeated by the test suite (`test/test_shipped_models.py`): sequential
global localization on {REGRESSION_EPISODES} episodes of {REGRESSION_SPEC["envs"]} test-split
environments it renders (seed {REGRESSION_SPEC["seed"]}): {regression:.1%}.

## Input

The view of a camera with {loaded.camera.describe()}: the node crops
a wider camera's images to it (`camera_info`, or the parameters `camera_fov_x_deg` and
`camera_fov_y_deg`) and says so when a camera is narrower. RGB images resized to
{config.image_size[0]}x{config.image_size[1]}, pixels scaled to
`(value / 255 - {config.pixel_mean}) / {config.pixel_std}`; poses normalized over the map
extent (training environments: {dataset.domain}, median extent
{[round(v, 2) for v in loaded.extent]} m).{_frame_requirement(options)}

## Intended use

Sparse visual localization in simulated {dataset.domain} like those of `dmn_dataset`,
from a few posed context views. Not trained on real images: fine-tune on a robot's own
data (`dmn_dataset from-bag`) before relying on it elsewhere.
"""
    path = MODELS_DIR / f'{name}.md'
    path.write_text(card)
    return path


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('checkpoint', type=Path)
    p.add_argument('--name', required=True, help='e.g. dmn-pf-rooms')
    p.add_argument('--test-data', type=Path, required=True)
    p.add_argument('--episodes', type=int, default=1000)
    p.add_argument('--status', default='', help='a sentence on the state of this model')
    p.add_argument('--train-command', default='', help='the dmn_train command of the run')
    p.add_argument('--init-samples', type=int, default=None,
                   help='the samples behind the weights the run started from, when its '
                   'metadata counts only the last run of a chain (runs started before the '
                   'trainer added them up)')
    a = p.parse_args(argv)
    try:
        print(write_card(a.name, a.checkpoint, a.test_data, a.episodes, a.status,
                         a.train_command, a.init_samples))
    except ValueError as exc:
        print(f'model_card: error: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
