"""
The ROS-free localization runtime that the node and the bag tools share.

A :class:`Localizer` holds a model, a view-embedding map and the belief. It takes
odometry (planar poses of the robot in its odometry frame, with stamps) and camera
frames; for each frame it moves the particles by the odometry between the previous and
the current frame (interpolated at the frame stamps), weighs them with the learned
observation model, resamples when the effective sample size is low, and returns the
pose estimate, its covariance and the particles in metres in the map frame.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
import math
from typing import Deque, List, Optional, Sequence, Tuple

from dmn_localization.core import geometry, particle_filter as pf
from dmn_localization.core.camera import crop_box, crop_to_model, Intrinsics
from dmn_localization.core.checkpoint import LoadedModel
from dmn_localization.core.inference import (filter_step_with_evidence, FilterSettings,
                                             maybe_resample, pose_estimate)
from dmn_localization.core.maps import ViewEmbeddingMap
from dmn_localization.core.preprocessing import preprocess_images
from dmn_localization.runtime import status
from dmn_localization.runtime.recovery import RecoveryRates
import numpy as np
import torch


def map_to_odom(map_pose: Sequence[float], odom_pose: Sequence[float]) -> np.ndarray:
    """
    Return the map -> odom transform ``(x, y, yaw)`` that makes the TF tree agree.

    ``map_pose`` is the robot (base) in the map frame, ``odom_pose`` the same robot at
    the same time in the odometry frame: ``map_T_odom = map_T_base * inverse(odom_T_base)``.
    """
    return geometry.compose_poses(np.asarray(map_pose, dtype=float),
                                  geometry.invert_poses(np.asarray(odom_pose, dtype=float)))


class LocalizerError(RuntimeError):
    """A request the localizer cannot serve (no map yet, bad pose or covariance)."""


@dataclass
class LocalizerSettings:
    """Deployment settings of the filter (the node's parameters fill these)."""

    num_particles: int = 2048
    resample_threshold: float = 0.5
    soft_resample_alpha: float = 0.5
    #: std of the noise added to each particle's motion per frame: metres, radians
    motion_noise_xy: float = 0.05
    motion_noise_yaw: float = 0.05
    #: seconds of odometry kept for interpolation
    odom_buffer_s: float = 10.0
    #: a frame whose stamp is further than this from any odometry gets no motion update
    max_odom_gap_s: float = 0.5
    #: margin around the context views of the default map extent, metres
    map_margin: float = 0.5
    seed: int = 0
    #: update gating: frames update the belief only after odometry says the robot moved
    #: this far (metres) or turned this much (radians) since the last update; 0, 0: never
    #: gate. Any positive value keeps a standing robot's particles from collapsing on one
    #: repeated image; these are small so that a moving robot updates on almost every frame.
    update_min_d: float = 0.05
    update_min_a: float = 0.05
    #: kidnap recovery (augmented MCL, :mod:`dmn_localization.runtime.recovery`); 0, 0: off.
    #: Chosen with ``python -m dmn_localization.bench.kidnap_bench --seeds 20 --domains
    #: rooms``; its measurements are in RESULTS.md and docs/benchmarks.md
    recovery_alpha_slow: float = 0.005
    recovery_alpha_fast: float = 0.3
    #: random particles of the recovery fall within the context views' box plus this, metres
    recovery_margin: float = 0.5
    #: factor on the model's log-likelihoods in every update (1: as trained). A robot's
    #: consecutive frames see nearly the same view, so their likelihoods are not the
    #: independent evidence the model was trained on; below 1 tempers each update.
    #: Chosen on five simulated Rooms drives of their own (docs/findings.md, "On a
    #: driving robot"), not on the drives the results are reported on
    likelihood_scale: float = 0.25
    #: poses spread uniformly over the map at which every frame is also scored; the
    #: frame's evidence under the belief minus its mean over these is the relative
    #: evidence the status reads (``min_relative_evidence``); 0: not computed
    reference_poses: int = 512
    #: the published pose: 0, the weighted mean of the particles; above 0, the belief's
    #: densest place, its particles smoothed by a kernel of this many metres
    #: (``particle_filter.mode_estimate``)
    mode_bandwidth: float = 0.0
    #: thresholds of initializing / global / converged / lost
    status_thresholds: status.StatusSettings = field(default_factory=status.StatusSettings)


def default_extent(poses: np.ndarray, margin: float) -> List[float]:
    """Return the map extent of context poses ``(N, 3)``: their bounding box plus ``margin``."""
    poses_arr = np.asarray(poses, dtype=float).reshape(-1, 3)
    low = poses_arr[:, :2].min(0) - margin
    high = poses_arr[:, :2].max(0) + margin
    return [float(low[0]), float(low[1]), float(high[0]), float(high[1])]


@dataclass
class FrameResult:
    """What one processed frame gives: all in metres and radians in the map frame."""

    pose: np.ndarray  # (3,)
    covariance: np.ndarray  # (3, 3) x, y, yaw
    particles: np.ndarray  # (K, 3)
    weights: np.ndarray  # (K,)
    effective_sample_size: float
    moved_by_odometry: bool
    odom_pose: Optional[np.ndarray] = None  # (3,) the robot in the odometry frame, if known
    #: log of the frame's likelihood averaged over the belief (see ``filter_step_with_evidence``)
    evidence: float = 0.0
    #: the localizer's state after this frame (:mod:`dmn_localization.runtime.status`)
    state: str = status.INITIALIZING
    #: False when update gating skipped the frame (the belief is as it was)
    updated: bool = True
    #: share of the particles kidnap recovery replaces at this frame's resampling
    recovery_share: float = 0.0
    #: ``evidence`` minus the frame's log mean likelihood over the map's reference poses:
    #: how much better the belief explains the image than the map at large (None: off)
    relative_evidence: Optional[float] = None

    @property
    def spread(self) -> Tuple[float, float]:
        """Return the belief's spread: the larger x/y std in metres, the yaw std in radians."""
        cov = self.covariance
        return float(np.sqrt(max(cov[0, 0], cov[1, 1]))), float(np.sqrt(cov[2, 2]))


class OdometryBuffer:
    """Recent odometry poses ``(x, y, yaw)`` by stamp (seconds), for interpolation."""

    def __init__(self, horizon_s: float) -> None:
        self.horizon_s = horizon_s
        self.stamps: Deque[float] = deque()
        self.poses: Deque[Tuple[float, float, float]] = deque()

    def add(self, stamp: float, pose: Sequence[float]) -> bool:
        """Add a pose; a stamp older than the newest one resets the buffer. Return False then."""
        if self.stamps and stamp < self.stamps[-1]:
            self.reset()
            self.stamps.append(stamp)
            self.poses.append(tuple(pose))
            return False
        self.stamps.append(stamp)
        self.poses.append(tuple(pose))
        while self.stamps and self.stamps[0] < stamp - self.horizon_s:
            self.stamps.popleft()
            self.poses.popleft()
        return True

    def reset(self) -> None:
        """Forget everything (e.g. when time jumps backwards at a bag loop)."""
        self.stamps.clear()
        self.poses.clear()

    def pose_at(self, stamp: float, max_gap: float) -> Optional[np.ndarray]:
        """Interpolate the pose at ``stamp``; None outside the buffer by more than max_gap."""
        if not self.stamps:
            return None
        stamps = list(self.stamps)
        i = bisect_left(stamps, stamp)
        if i == 0:
            return np.array(self.poses[0]) if stamps[0] - stamp <= max_gap else None
        if i == len(stamps):
            return np.array(self.poses[-1]) if stamp - stamps[-1] <= max_gap else None
        t0, t1 = stamps[i - 1], stamps[i]
        if t1 - t0 > 2 * max_gap:
            return None
        a, b = np.array(self.poses[i - 1]), np.array(self.poses[i])
        s = (stamp - t0) / (t1 - t0) if t1 > t0 else 0.0
        yaw = a[2] + s * math.remainder(b[2] - a[2], 2 * math.pi)
        return np.array([a[0] + s * (b[0] - a[0]), a[1] + s * (b[1] - a[1]),
                         math.remainder(yaw, 2 * math.pi)])


class Localizer:
    """A learned particle filter over one view-embedding map."""

    def __init__(self, loaded: LoadedModel, device: str = 'cpu',
                 settings: Optional[LocalizerSettings] = None) -> None:
        if loaded.model.config.kind != 'pf':
            raise LocalizerError(f'{loaded.name} is not a particle filter model')
        self.loaded = loaded
        self.model = loaded.model.to(device).eval()
        self.device = torch.device(device)
        self.settings = settings or LocalizerSettings()
        self.generator = torch.Generator(device=self.device).manual_seed(self.settings.seed)
        self.map: Optional[ViewEmbeddingMap] = None
        self.map_context = None
        #: ``(1, P, 3)`` normalized poses spread over the map (``reference_poses``)
        self.reference_poses: Optional[torch.Tensor] = None
        self.belief: Optional[pf.Belief] = None
        self.odometry = OdometryBuffer(self.settings.odom_buffer_s)
        self.last_frame_stamp: Optional[float] = None
        self._odom_at_update: Optional[np.ndarray] = None
        self._last_result: Optional[FrameResult] = None
        self.updates_skipped = 0
        self.status = status.StatusTracker(self.settings.status_thresholds)
        self.recovery = RecoveryRates(self.settings.recovery_alpha_slow,
                                      self.settings.recovery_alpha_fast)
        #: recovery injects particles only once the belief has converged (then kidnaps
        #: can happen); cleared by every re-initialization
        self._converged_once = False
        #: the robot's camera (None: its images are the model's view already) and what of
        #: the model's view it cannot show (:func:`~dmn_localization.core.camera.crop_box`)
        self.camera: Optional[Intrinsics] = None
        self.camera_problems: List[str] = []

    def set_camera(self, intrinsics: Optional[Intrinsics]) -> List[str]:
        """
        Crop every image (frames and map views) to the model's camera from now on.

        Returns what cannot be matched (empty when the crop shows the model's view);
        raises :class:`~dmn_localization.core.camera.CameraError` for unusable intrinsics.
        """
        self.camera_problems = [] if intrinsics is None else crop_box(
            intrinsics, self.loaded.camera)[1]
        self.camera = intrinsics
        return self.camera_problems

    @property
    def state(self) -> str:
        """Return the current localization state, one of :data:`.status.STATES`."""
        return self.status.state

    @property
    def fingerprint(self) -> str:
        """Return the fingerprint of the model's encoder."""
        return self.loaded.fingerprint

    # -- map ------------------------------------------------------------------------------
    def build_map(self, images: Sequence[np.ndarray], poses: np.ndarray,
                  extent: Optional[Sequence[float]] = None,
                  frame_id: str = 'map') -> ViewEmbeddingMap:
        """Embed posed context images (:meth:`embed_map`) and make them the map (global start)."""
        the_map = self.embed_map(images, poses, extent, frame_id)
        self.set_map(the_map)
        return the_map

    def embed_map(self, images: Sequence[np.ndarray], poses: np.ndarray,
                  extent: Optional[Sequence[float]] = None,
                  frame_id: str = 'map') -> ViewEmbeddingMap:
        """
        Embed posed context images ``(H_i, W_i, 3)`` into a map; the current map stays.

        Without ``extent`` the map covers the bounding box of the context positions with
        ``map_margin`` metres around it (the model normalizes poses over the extent).
        """
        size = tuple(self.model.config.image_size)
        import cv2

        cropped = [crop_to_model(img, self.camera, self.loaded.camera) for img in images]
        resized = np.stack([img if img.shape[:2] == size else cv2.resize(
            img, (size[1], size[0]), interpolation=cv2.INTER_AREA) for img in cropped])
        if extent is None:
            extent = default_extent(poses, self.settings.map_margin)
        return ViewEmbeddingMap.build(self.model, resized, poses, extent, frame_id)

    def set_map(self, the_map: ViewEmbeddingMap, keep_belief: bool = False) -> None:
        """
        Use ``the_map`` (checked against the model's encoder) and restart globally.

        With ``keep_belief`` (and a belief to keep) the particles stay where they are in
        metres, re-expressed in the new map's extent: a map that grew by merging does
        not make a localized robot start over.
        """
        the_map.check_compatible(self.model)
        old_map, old_belief = self.map, self.belief
        self.map = the_map.to(self.device)
        poses = self.map.normalized_poses()[None]
        with torch.no_grad():
            self.map_context = self.model.prepare_map(self.map.embeddings[None], poses)
        self.reference_poses = None
        if self.settings.reference_poses > 0:
            # drawn from their own generator: the same poses for the same map and seed
            bounds = geometry.normalized_bounds(self.map.extent, self.map.extent)[None]
            draw = torch.Generator(device=self.device).manual_seed(self.settings.seed)
            self.reference_poses = pf.uniform_belief(bounds, self.settings.reference_poses,
                                                     draw).particles
        if keep_belief and old_map is not None and old_belief is not None:
            metric = geometry.denormalize_poses(old_belief.particles, old_map.extent.to(
                self.device))
            self.belief = pf.Belief(geometry.normalize_poses(metric, self.map.extent),
                                    old_belief.log_weights)
        else:
            self.initialize_global()

    def _recovery_area(self) -> torch.Tensor:
        """Return the normalized box ``(1, 4)`` of the context views plus the recovery margin."""
        the_map = self._require_map()
        x0, y0, x1, y1 = default_extent(the_map.poses.cpu().numpy(),
                                        self.settings.recovery_margin)
        corners = torch.tensor([[x0, y0, 0.0], [x1, y1, 0.0]], device=self.device)
        low, high = geometry.normalize_poses(corners, the_map.extent)[:, :2]
        return torch.cat([low, high])[None]

    def _require_map(self) -> ViewEmbeddingMap:
        if self.map is None:
            raise LocalizerError('no map: build one first')
        return self.map

    # -- belief ---------------------------------------------------------------------------
    def _restart_tracking(self) -> None:
        """Start the state, update gating and recovery over for a new belief."""
        self.status.reset(has_map=True)
        self._last_result = None
        self.recovery.reset()
        self._converged_once = False

    def initialize_global(self) -> None:
        """Spread the particles uniformly over the map extent and all headings."""
        the_map = self._require_map()
        bounds = geometry.normalized_bounds(the_map.extent, the_map.extent)[None]
        self.belief = pf.uniform_belief(bounds, self.settings.num_particles, self.generator)
        self._restart_tracking()

    def initialize_gaussian(self, pose: Sequence[float], covariance: np.ndarray) -> None:
        """Draw the particles from a Gaussian: ``pose`` (metres) and 3x3 x, y, yaw covariance."""
        the_map = self._require_map()
        pose = np.asarray(pose, dtype=float)
        cov = np.asarray(covariance, dtype=float)
        if pose.shape != (3,) or not np.all(np.isfinite(pose)):
            raise LocalizerError(f'initial pose must be 3 finite numbers, got {pose}')
        if cov.shape != (3, 3) or not np.all(np.isfinite(cov)) or np.any(np.diag(cov) < 0):
            raise LocalizerError('initial covariance must be a finite 3x3 matrix with a '
                                 'non-negative diagonal')
        std = np.sqrt(np.maximum(np.diag(cov), 1e-8))
        mean = torch.as_tensor(pose, dtype=torch.float32, device=self.device)
        normalized = geometry.normalize_poses(mean[None], the_map.extent)
        _, half = geometry.extent_center_scale(the_map.extent, mean)
        scale = torch.tensor([1.0 / float(half), 1.0 / float(half), 1.0], device=self.device)
        std_n = torch.as_tensor(std, dtype=torch.float32, device=self.device) * scale
        self.belief = pf.gaussian_belief(normalized, std_n, self.settings.num_particles,
                                         self.generator)
        self._restart_tracking()

    # -- odometry and frames --------------------------------------------------------------
    def add_odometry(self, stamp: float, pose: Sequence[float]) -> bool:
        """Record the robot's odometry pose at ``stamp`` seconds; False when time jumped back."""
        ok = self.odometry.add(stamp, pose)
        if not ok:
            self.last_frame_stamp = None
            self._odom_at_update = None
        return ok

    def _motion(self, stamp: float) -> Optional[np.ndarray]:
        """Odometry motion from the last belief update to ``stamp``, if odometry knows it."""
        if self.last_frame_stamp is None:
            return None
        gap = self.settings.max_odom_gap_s
        # looked up again now: odometry stamped at the last update may have arrived after
        # its frame was processed; the pose kept then serves once the buffer has let go
        a = self.odometry.pose_at(self.last_frame_stamp, gap)
        a = a if a is not None else self._odom_at_update
        b = self.odometry.pose_at(stamp, gap)
        if a is None or b is None:
            return None
        return geometry.relative_motions(np.stack([a, b]))[1]

    def _gated(self, motion_m: Optional[np.ndarray]) -> bool:
        """Return True when odometry says the robot barely moved since the last update."""
        s = self.settings
        if motion_m is None or self._last_result is None:
            return False
        return bool(math.hypot(motion_m[0], motion_m[1]) < s.update_min_d
                    and abs(motion_m[2]) < s.update_min_a)

    @torch.no_grad()
    def process_frame(self, stamp: float, image: np.ndarray) -> FrameResult:
        """Run one filter step for the camera image ``(H, W, 3)`` uint8 taken at ``stamp``."""
        the_map = self._require_map()
        if self.last_frame_stamp is not None and stamp < self.last_frame_stamp:
            self.last_frame_stamp = None  # time went backwards: no motion across the jump
        motion_m = self._motion(stamp)
        if self._gated(motion_m):
            # standing still: no update, no resampling; the pose of the current belief
            self.updates_skipped += 1
            last = self._last_result
            return FrameResult(last.pose, last.covariance, last.particles, last.weights,
                               last.effective_sample_size, False,
                               self.odometry.pose_at(stamp, self.settings.max_odom_gap_s),
                               last.evidence, last.state, updated=False,
                               relative_evidence=last.relative_evidence)
        moved = motion_m is not None
        motion = torch.zeros(1, 3, device=self.device)
        noise = None
        _, half = geometry.extent_center_scale(the_map.extent, motion)
        if moved:
            motion = geometry.normalize_motion(torch.as_tensor(
                motion_m, dtype=torch.float32, device=self.device)[None], the_map.extent)
            xy = self.settings.motion_noise_xy / float(half)
            noise = (xy, xy, self.settings.motion_noise_yaw)
        bandwidth = self.settings.mode_bandwidth / float(half)
        settings = FilterSettings(self.settings.num_particles, self.settings.resample_threshold,
                                  self.settings.soft_resample_alpha, noise,
                                  likelihood_scale=self.settings.likelihood_scale,
                                  mode_bandwidth=bandwidth if bandwidth > 0 else None)
        image = crop_to_model(image, self.camera, self.loaded.camera)
        query = self.model.prepare_query(preprocess_images(image[None], self.model.config,
                                                           self.device))
        self.belief, evidence = filter_step_with_evidence(
            self.model, self.map_context, query, self.belief, motion, settings, self.generator)
        relative = None
        if self.reference_poses is not None:
            scores = self.model.observe(self.map_context, query, self.reference_poses,
                                        settings.fast)[0, :, 0] * settings.likelihood_scale
            map_evidence = torch.logsumexp(scores, 0) - math.log(scores.shape[0])
            relative = float(evidence[0] - map_evidence)
        pose = pose_estimate(self.belief, settings)
        cov = pf.covariance(self.belief, pose)[0]
        ess = float(pf.effective_sample_size(self.belief.log_weights)[0])
        scale = torch.diag(torch.tensor([float(half), float(half), 1.0], device=self.device))
        result = FrameResult(
            geometry.denormalize_poses(pose, the_map.extent)[0].cpu().numpy(),
            (scale @ cov @ scale).cpu().numpy(),
            geometry.denormalize_poses(self.belief.particles[0], the_map.extent).cpu().numpy(),
            self.belief.weights[0].cpu().numpy(), ess, moved,
            self.odometry.pose_at(stamp, self.settings.max_odom_gap_s), float(evidence[0]),
            relative_evidence=relative)
        result.state = self.status.update(*result.spread, result.evidence, relative)
        self._converged_once |= result.state == status.CONVERGED
        share = self.recovery.update(result.evidence)
        # a global search is uniform already: injecting then only scatters the particles
        # that are finding the robot (measured: fewer first convergences, kidnap_bench)
        result.recovery_share = share if self._converged_once else 0.0
        before = self.belief
        self.belief = maybe_resample(self.belief, settings, self.generator)
        if self.belief is not before and result.recovery_share > 0:
            count = round(result.recovery_share * self.settings.num_particles)
            self.belief = pf.inject_uniform(self.belief, count, self._recovery_area(),
                                            self.generator)
        self.last_frame_stamp = stamp
        self._odom_at_update = result.odom_pose
        self._last_result = result
        return result
