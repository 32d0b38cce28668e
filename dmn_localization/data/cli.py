"""
``dmn_dataset``: generate, inspect and import datasets of posed views.

    dmn_dataset generate --domain rooms --split train [--envs N] [--views-per-env V]
                         [--seed S] [--image-size H W] [--workers W] --out DIR
    dmn_dataset preview DIR --out PNG
    dmn_dataset import-gqn FILES... --domain rooms --split test --out DIR
    dmn_dataset from-bag BAG [BAG ...] --image-topic T --pose-topic T [--every-metres D] --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
import time
from typing import List, Optional

from dmn_localization.data.dataset import (DatasetError, DEFAULT_IMAGE_SIZE, DEFAULT_SIZES,
                                           generate, GenerationSpec, SPLITS)
from dmn_localization.data.from_bag import add_posed_view_arguments
from dmn_localization.data.worlds import DOMAINS


def _generate(args: argparse.Namespace) -> int:
    envs, views = DEFAULT_SIZES[(args.domain, args.split)]
    spec = GenerationSpec(args.domain, args.split, args.envs or envs,
                          args.views_per_env or views, args.seed, tuple(args.image_size),
                          args.shard_size)
    start = time.monotonic()
    manifest = generate(spec, args.out, workers=args.workers, progress=not args.quiet)
    print(f'{manifest} ({spec.envs} environments x {spec.views_per_env} views, '
          f'{spec.image_size[0]}x{spec.image_size[1]}) in {time.monotonic() - start:.0f} s')
    return 0


def _preview(args: argparse.Namespace) -> int:
    from dmn_localization.data.preview import write_preview

    out = write_preview(args.dataset, args.out, args.environments, args.views, args.seed)
    print(out)
    return 0


def _import_gqn(args: argparse.Namespace) -> int:
    from dmn_localization.data.gqn import import_gqn

    manifest = import_gqn(args.files, args.out, args.domain, args.split,
                          tuple(args.image_size), args.scale, args.max_envs)
    print(manifest)
    return 0


def _from_bag(args: argparse.Namespace) -> int:
    from dmn_localization.data.from_bag import dataset_from_bag

    manifest = dataset_from_bag(args.bag, args.out, args.image_topic, args.pose_topic,
                                args.every_metres, args.every_degrees,
                                tuple(args.image_size), args.views_per_env,
                                args.max_pose_gap, args.map_frame, args.base_frame,
                                args.camera_info_topic or None)
    print(manifest)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``dmn_dataset``."""
    parser = argparse.ArgumentParser(prog='dmn_dataset', description=__doc__.split('\n')[1])
    sub = parser.add_subparsers(dest='command', required=True)

    gen = sub.add_parser('generate', help='render a simulated dataset (reproducible, resumable)')
    gen.add_argument('--domain', choices=DOMAINS, required=True)
    gen.add_argument('--split', choices=SPLITS, required=True)
    gen.add_argument('--envs', type=int, default=None,
                     help='environments (default: ' + ', '.join(
                         f'{d}/{s} {n}' for (d, s), (n, _) in DEFAULT_SIZES.items()) + ')')
    gen.add_argument('--views-per-env', type=int, default=None,
                     help='views per environment (default: rooms 10, mazes 300)')
    gen.add_argument('--seed', type=int, default=0)
    gen.add_argument('--image-size', type=int, nargs=2, default=DEFAULT_IMAGE_SIZE,
                     metavar=('HEIGHT', 'WIDTH'))
    gen.add_argument('--shard-size', type=int, default=100, help='environments per shard')
    gen.add_argument('--workers', type=int, default=None, help='processes (default: all cores)')
    gen.add_argument('--quiet', action='store_true', help='no progress bar')
    gen.add_argument('--out', type=Path, required=True)
    gen.set_defaults(run=_generate)

    pre = sub.add_parser('preview', help='PNG of sample views beside a top-down plot of poses')
    pre.add_argument('dataset', type=Path)
    pre.add_argument('--out', type=Path, required=True)
    pre.add_argument('--environments', type=int, default=3)
    pre.add_argument('--views', type=int, default=8)
    pre.add_argument('--seed', type=int, default=0)
    pre.set_defaults(run=_preview)

    gqn = sub.add_parser('import-gqn', help='import DeepMind GQN TFRecord files')
    gqn.add_argument('files', type=Path, nargs='+')
    gqn.add_argument('--domain', choices=DOMAINS, required=True)
    gqn.add_argument('--split', choices=SPLITS, required=True)
    gqn.add_argument('--image-size', type=int, nargs=2, default=DEFAULT_IMAGE_SIZE,
                     metavar=('HEIGHT', 'WIDTH'))
    gqn.add_argument('--scale', type=float, default=1.0,
                     help='metres per GQN unit (GQN poses are unitless)')
    gqn.add_argument('--max-envs', type=int, default=None)
    gqn.add_argument('--out', type=Path, required=True)
    gqn.set_defaults(run=_import_gqn)

    bag = sub.add_parser('from-bag', help='posed camera images of a recorded ROS 2 bag')
    bag.add_argument('bag', type=Path, nargs='+',
                     help='one or more bags of the same camera; no environment spans two')
    add_posed_view_arguments(bag)
    bag.add_argument('--camera-info-topic', default='/camera/camera_info',
                     help="the camera's CameraInfo: the dataset records its field of view "
                     '(empty: none)')
    bag.add_argument('--views-per-env', type=int, default=None,
                     help='split the run into environments of this many views')
    bag.add_argument('--image-size', type=int, nargs=2, default=DEFAULT_IMAGE_SIZE,
                     metavar=('HEIGHT', 'WIDTH'))
    bag.add_argument('--out', type=Path, required=True)
    bag.set_defaults(run=_from_bag)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point of ``dmn_dataset``."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (DatasetError, ValueError, FileNotFoundError, KeyError) as exc:
        print(f'dmn_dataset {args.command}: error: {exc}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
