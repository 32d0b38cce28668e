"""
Datasets of posed views: a directory of shards, written reproducibly and read lazily.

Layout of a dataset directory::

    manifest.json                  generator version, parameters, counts, image size,
                                   shard list with SHA-256 of every file
    shard_00000.images.npy         (E, V, H, W, 3) uint8 RGB
    shard_00000.poses.npy          (E, V, 3) float32 x, y, yaw (metres, radians, ROS map frame)
    shard_00000.worlds.json        E world descriptions (floor plan, objects, extent)

The same arguments give byte-identical files: every environment's world and views
come from its own seed (derived from the dataset seed, domain, split and index),
nothing records time, and ``.npy`` files carry no timestamps. Train, validation and
test environments are disjoint by construction: the split is part of every
environment's seed. Generation uses all cores (one renderer per worker process) and
resumes after an interruption: finished shards are recorded in ``progress.json`` and
kept.
"""

from __future__ import annotations

from dataclasses import dataclass
import hashlib
import json
import multiprocessing
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from dmn_localization.core.atomic_write import write_atomic, write_text_atomic
from dmn_localization.core.camera import SIM_CAMERA
from dmn_localization.data.worlds import DOMAINS, generate_world, World
import numpy as np

GENERATOR_VERSION = 2
SPLITS = ('train', 'val', 'test')
#: (domain, split) -> (environments, views per environment); see docs/training.md.
DEFAULT_SIZES: Dict[Tuple[str, str], Tuple[int, int]] = {
    ('rooms', 'train'): (20000, 10), ('rooms', 'val'): (500, 10),
    ('rooms', 'test'): (1000, 10),
    ('mazes', 'train'): (400, 300), ('mazes', 'val'): (20, 300),
    ('mazes', 'test'): (40, 300),
}
DEFAULT_IMAGE_SIZE = (32, 32)


class DatasetError(RuntimeError):
    """A dataset directory that is missing, incomplete, corrupted or of other parameters."""


def environment_seed(domain: str, split: str, seed: int, index: int) -> int:
    """Return the seed of environment ``index``: distinct per domain, split and dataset seed."""
    key = [int(seed), DOMAINS.index(domain), SPLITS.index(split), int(index)]
    return int(np.random.SeedSequence(key).generate_state(2, np.uint64)[0] >> np.uint64(1))


def views_of(world: World, count: int) -> np.ndarray:
    """Draw the ``count`` view poses ``(count, 3)`` of a world (from its own seed)."""
    rng = np.random.default_rng(np.random.SeedSequence([world.seed, 1]))
    return world.sample_free_poses(count, rng).astype(np.float32)


def file_sha256(path: Path) -> str:
    """Return the SHA-256 of a file's bytes (hex), read in blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, 'wb') as f:
            np.save(f, array, allow_pickle=False)
    write_atomic(path, write)


def save_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a file beside it, then a rename)."""
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True) + '\n')


@dataclass(frozen=True)
class GenerationSpec:
    """Everything that determines a dataset's content."""

    domain: str
    split: str
    envs: int
    views_per_env: int
    seed: int
    image_size: Tuple[int, int] = DEFAULT_IMAGE_SIZE
    shard_size: int = 100

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.domain not in DOMAINS:
            raise ValueError(f'domain must be one of {", ".join(DOMAINS)}, got {self.domain!r}')
        if self.split not in SPLITS:
            raise ValueError(f'split must be one of {", ".join(SPLITS)}, got {self.split!r}')
        for name in ('envs', 'views_per_env', 'shard_size'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be at least 1, got {getattr(self, name)}')
        if min(self.image_size) < 8:
            raise ValueError(f'image_size must be at least 8x8, got {self.image_size}')

    def parameters(self) -> Dict[str, Any]:
        """Return the parameters as recorded in the manifest."""
        return {'domain': self.domain, 'split': self.split, 'envs': self.envs,
                'views_per_env': self.views_per_env, 'seed': self.seed,
                'image_size': list(self.image_size), 'shard_size': self.shard_size,
                'generator_version': GENERATOR_VERSION}

    def shards(self) -> List[Tuple[int, int, int]]:
        """Return ``(shard index, first env, end env)`` of every shard."""
        return [(i, start, min(start + self.shard_size, self.envs))
                for i, start in enumerate(range(0, self.envs, self.shard_size))]


# -- worker processes: one renderer each ----------------------------------------------------
_RENDERER: Any = None


def _render_shard(job: Tuple[GenerationSpec, str, int, int, int]) -> Tuple[int, Dict[str, str]]:
    global _RENDERER
    spec, root, index, start, end = job
    from dmn_localization.data.render import WorldRenderer

    if _RENDERER is None or _RENDERER.image_size != tuple(spec.image_size):
        _RENDERER = WorldRenderer(spec.image_size)
    count = end - start
    images = np.empty((count, spec.views_per_env, *spec.image_size, 3), dtype=np.uint8)
    poses = np.empty((count, spec.views_per_env, 3), dtype=np.float32)
    worlds = []
    for k in range(count):
        env_seed = environment_seed(spec.domain, spec.split, spec.seed, start + k)
        world = generate_world(spec.domain, env_seed)
        _RENDERER.load(world)
        poses[k] = views_of(world, spec.views_per_env)
        images[k] = _RENDERER.render(poses[k])
        worlds.append(world.to_dict())
    return index, write_shard(Path(root), index, images, poses, worlds)


def shard_files(root: Path, index: int) -> Dict[str, Path]:
    """Return the paths of the files of shard ``index``."""
    base = Path(root) / f'shard_{index:05d}'
    return {'images': base.with_suffix('.images.npy'), 'poses': base.with_suffix('.poses.npy'),
            'worlds': base.with_suffix('.worlds.json')}


def write_shard(root: Path, index: int, images: np.ndarray, poses: np.ndarray,
                worlds: List[Dict[str, Any]]) -> Dict[str, str]:
    """Write one shard: images ``(E, V, H, W, 3)``, poses ``(E, V, 3)``, E worlds; checksums."""
    files = shard_files(root, index)
    _save_npy(files['images'], np.ascontiguousarray(images, dtype=np.uint8))
    _save_npy(files['poses'], np.ascontiguousarray(poses, dtype=np.float32))
    save_json(files['worlds'], worlds)
    return {key: file_sha256(path) for key, path in files.items()}


def write_manifest(root: Path, parameters: Dict[str, Any], shards: List[Dict[str, Any]],
                   image_size: Sequence[int], views_per_env: int,
                   camera: Optional[Dict[str, Any]] = None) -> Path:
    """
    Write ``manifest.json``; ``shards`` holds index, first_env, envs and sha256 each.

    ``camera``: the images' camera (``CameraSpec.to_dict()``), when known.
    """
    envs = sum(s['envs'] for s in shards)
    manifest = {
        'parameters': parameters,
        'counts': {'envs': envs, 'views': envs * views_per_env, 'shards': len(shards)},
        'image_size': list(image_size),
        'format': {'images': '(E, V, H, W, 3) uint8 RGB',
                   'poses': '(E, V, 3) float32 x, y, yaw in metres and radians, ROS map frame'},
        'shards': shards,
        **({'camera': camera} if camera else {}),
    }
    path = Path(root) / 'manifest.json'
    save_json(path, manifest)
    return path


def generate(spec: GenerationSpec, out: Path, workers: Optional[int] = None,
             progress: bool = True) -> Path:
    """
    Write (or finish writing) the dataset ``spec`` into ``out``; return the manifest path.

    Raises :class:`DatasetError` when ``out`` holds a dataset of other parameters.
    """
    spec.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    progress_path = out / 'progress.json'
    state = {'parameters': spec.parameters(), 'done': {}}
    for existing in (out / 'manifest.json', progress_path):
        if existing.exists():
            recorded = json.loads(existing.read_text())
            if recorded['parameters'] != spec.parameters():
                raise DatasetError(
                    f'{out} holds a dataset with other parameters ({recorded["parameters"]}); '
                    'choose another directory or remove it')
            if existing == progress_path:
                state['done'] = recorded['done']
    shards = spec.shards()
    todo = []
    for index, start, end in shards:
        sums = state['done'].get(str(index))
        if sums and all(path.exists() and file_sha256(path) == sums[key]
                        for key, path in shard_files(out, index).items()):
            continue
        todo.append((spec, str(out), index, start, end))
    workers = workers or os.cpu_count() or 1
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=spec.envs, initial=spec.envs - sum(j[4] - j[3] for j in todo),
                   unit='env', desc=f'{spec.domain}/{spec.split}')
    if todo:
        context = multiprocessing.get_context('spawn')
        with context.Pool(min(workers, len(todo))) as pool:
            for index, sums in pool.imap_unordered(_render_shard, todo):
                state['done'][str(index)] = sums
                save_json(progress_path, state)
                if bar is not None:
                    shard = shards[index]
                    bar.update(shard[2] - shard[1])
    if bar is not None:
        bar.close()
    manifest_path = write_manifest(
        out, spec.parameters(), [{'index': i, 'first_env': s, 'envs': e - s,
                                  'sha256': state['done'][str(i)]} for i, s, e in shards],
        spec.image_size, spec.views_per_env)
    progress_path.unlink(missing_ok=True)
    return manifest_path


@dataclass
class EnvironmentViews:
    """The posed views of one environment."""

    images: np.ndarray  # (V, H, W, 3) uint8
    poses: np.ndarray  # (V, 3) float32
    world: World

    @property
    def extent(self) -> np.ndarray:
        """Return the metric extent ``(4,)`` of the environment."""
        return np.asarray(self.world.extent, dtype=np.float32)


class Dataset:
    """Read a dataset directory lazily (memory-mapped shards)."""

    def __init__(self, root: Path, verify: bool = False) -> None:
        self.root = Path(root)
        manifest_path = self.root / 'manifest.json'
        if not manifest_path.exists():
            hint = ' (generation unfinished: run it again to resume)' if (
                self.root / 'progress.json').exists() else ''
            raise DatasetError(f'{self.root}: no manifest.json, not a finished dataset{hint}')
        self.manifest = json.loads(manifest_path.read_text())
        self.parameters = self.manifest['parameters']
        self.shards = self.manifest['shards']
        self._starts = np.array([s['first_env'] for s in self.shards])
        self._cache: Dict[int, Tuple[np.ndarray, np.ndarray, List[Dict[str, Any]]]] = {}
        self._extents: Dict[int, np.ndarray] = {}
        if verify:
            self.verify()

    @property
    def domain(self) -> str:
        """Return the domain, ``rooms`` or ``mazes``."""
        return self.parameters['domain']

    @property
    def image_size(self) -> Tuple[int, int]:
        """Return ``(height, width)`` of the images."""
        return tuple(self.manifest['image_size'])

    @property
    def camera(self) -> Optional[Dict[str, Any]]:
        """
        Return the camera of the images (:class:`~dmn_localization.core.camera.CameraSpec`).

        The manifest's ``camera`` when it has one; the simulator's camera for the rendered
        domains; None when unknown (a robot's bag read without one).
        """
        if self.manifest.get('camera'):
            return dict(self.manifest['camera'])
        return SIM_CAMERA.to_dict() if self.domain in DOMAINS else None

    @property
    def views_per_env(self) -> int:
        """Return the number of views of every environment."""
        return int(self.parameters['views_per_env'])

    def __len__(self) -> int:
        """Return the number of environments."""
        return int(self.manifest['counts']['envs'])

    def _files(self, index: int) -> Dict[str, Path]:
        return shard_files(self.root, index)

    def verify(self) -> None:
        """Check every file against its recorded SHA-256; raise DatasetError on mismatch."""
        for shard in self.shards:
            for key, path in self._files(shard['index']).items():
                if not path.exists() or file_sha256(path) != shard['sha256'][key]:
                    raise DatasetError(f'{path}: missing or corrupted')

    def _shard(self, index: int) -> Tuple[np.ndarray, np.ndarray, List[Dict[str, Any]]]:
        if index not in self._cache:
            files = self._files(index)
            try:
                self._cache[index] = (np.load(files['images'], mmap_mode='r'),
                                      np.load(files['poses'], mmap_mode='r'),
                                      json.loads(files['worlds'].read_text()))
            except (OSError, ValueError) as exc:
                raise DatasetError(f'{files["images"].parent}: shard {index} unreadable: '
                                   f'{exc}') from exc
        return self._cache[index]

    def environment(self, env: int) -> EnvironmentViews:
        """Return the views of environment ``env``."""
        shard, k = self._locate(env)
        images, poses, worlds = self._shard(shard)
        return EnvironmentViews(np.asarray(images[k]), np.asarray(poses[k]),
                                World.from_dict(worlds[k]))

    def views(self, env: int, indices: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
        """
        Return images ``(n, H, W, 3)`` and poses ``(n, 3)`` of some views of ``env``.

        Reads only those views from the memory-mapped shard (the episode sampler's path;
        :meth:`environment` copies all of an environment's views).
        """
        shard, k = self._locate(env)
        images, poses, _ = self._shard(shard)
        rows = np.asarray(indices, dtype=np.int64)
        return np.asarray(images[k][rows]), np.asarray(poses[k][rows])

    def extent(self, env: int) -> np.ndarray:
        """Return the metric extent ``(4,)`` float32 of ``env`` (computed once, read-only)."""
        if env not in self._extents:
            shard, k = self._locate(env)
            extent = np.asarray(World.from_dict(self._shard(shard)[2][k]).extent, np.float32)
            extent.flags.writeable = False
            self._extents[env] = extent
        return self._extents[env]

    def _locate(self, env: int) -> Tuple[int, int]:
        """Return the shard of ``env`` and its row in that shard."""
        if not 0 <= env < len(self):
            raise IndexError(f'environment {env} out of range [0, {len(self)})')
        shard = int(np.searchsorted(self._starts, env, side='right') - 1)
        return shard, env - self.shards[shard]['first_env']

    def __iter__(self) -> Iterator[EnvironmentViews]:
        """Iterate over the environments in order."""
        return (self.environment(i) for i in range(len(self)))

    def world_seeds(self) -> Sequence[int]:
        """Return the generator seed of every environment (for split disjointness)."""
        return [w['seed'] for s in self.shards for w in self._shard(s['index'])[2]]
