"""
Every ROS parameter of ``dmn_localization_node``, declared in this one place.

The tuple :data:`PARAMETERS` is the single source of truth: the node declares exactly
these (with descriptions and ranges), ``config/dmn_localization.yaml`` documents their
defaults, and the README table lists them; tests check that the YAML, the launch file
and the README agree with this module. ``python -m dmn_localization.ros.parameters``
prints the YAML and the README table generated from it; ``python
scripts/sync_parameters.py`` rewrites both files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

from dmn_localization.runtime.localizer import LocalizerSettings
from dmn_localization.runtime.status import StatusSettings

Number = Union[int, float]

#: The runtime's defaults: filter parameters below take theirs from here.
_RUNTIME = LocalizerSettings()
_STATES = StatusSettings()

#: Name the node runs under; the YAML file nests its parameters under it.
NODE_NAME = 'dmn_localization'
#: The YAML key: the node name in any namespace (a bare name matches only ``/``).
YAML_KEY = f'/**/{NODE_NAME}'


@dataclass(frozen=True)
class ParameterSpec:
    """One declared parameter: name, default (which fixes the type), documentation."""

    name: str
    default: Any
    description: str
    choices: Tuple[str, ...] = ()
    value_range: Optional[Tuple[Number, Number]] = None

    @property
    def type_name(self) -> str:
        """ROS type name as written in docs: ``string``, ``int``, ``double``, ``bool``."""
        return {str: 'string', int: 'int', float: 'double', bool: 'bool'}[type(self.default)]

    def validate(self, value: Any) -> Optional[str]:
        """Return why ``value`` is not acceptable for this parameter, or None."""
        if self.choices and value not in self.choices:
            return f'{self.name} must be one of {", ".join(self.choices)}; got {value!r}'
        if self.value_range is not None and not (
                self.value_range[0] <= value <= self.value_range[1]):
            low, high = self.value_range
            return f'{self.name} must be in [{low}, {high}]; got {value!r}'
        return None


PARAMETERS: Tuple[ParameterSpec, ...] = (
    ParameterSpec(
        'autostart', True,
        'Configure and activate the lifecycle node at start. False: wait for a lifecycle '
        'manager (or ros2 lifecycle set) to drive ~/change_state.'),
    ParameterSpec(
        'model_path', '',
        'Model checkpoint to load. Empty: the default model shipped in '
        'share/dmn_localization/models.'),
    ParameterSpec(
        'device', 'auto',
        'Torch device for the model: auto takes CUDA when available, else the CPU.',
        choices=('auto', 'cpu', 'cuda')),
    ParameterSpec(
        'global_frame_id', 'map',
        'Map frame: frame of the published pose and particles, of the BuildMap poses and '
        'of initialpose (another frame is refused).'),
    ParameterSpec(
        'odom_frame_id', 'odom',
        'Odometry frame: child of the broadcast map -> odom transform; odometry in '
        'another frame is ignored with an error.'),
    ParameterSpec(
        'tf_broadcast', True,
        'Broadcast map -> odom on /tf (needs tf2_ros, which apt ROS has and PyPI lacks).'),
    ParameterSpec(
        'transform_tolerance', 1.0,
        'Seconds the map -> odom transform is future-dated, as AMCL does, so that it stays '
        'valid until the next frame (AMCL default).', value_range=(0.0, 10.0)),
    ParameterSpec(
        'map_source', 'service',
        'Where the map comes from: service (~/build_map) or topic (view_embedding_map, '
        'published by another robot).', choices=('service', 'topic')),
    ParameterSpec(
        'map_update', 'replace',
        'What a map from view_embedding_map does to a map the node already has: replace '
        'it (belief re-initialized globally) or merge with it (the union of the views, over '
        'the union of the extents; the belief is kept). A map already in use (replace) or '
        'already contained (merge) changes nothing.', choices=('replace', 'merge')),
    ParameterSpec(
        'publish_map', True,
        'Publish every new map built by ~/build_map on view_embedding_map (latched); a '
        'request for the map in use is not published again.'),
    ParameterSpec(
        'map_dtype', 'float32',
        'Precision of the published embeddings.', choices=('float32', 'float16')),
    ParameterSpec(
        'max_map_views', 256,
        'Most context views one BuildMap call may hold; larger requests are refused.',
        value_range=(1, 4096)),
    ParameterSpec(
        'num_particles', _RUNTIME.num_particles,
        'Particles of the filter (K).', value_range=(16, 65536)),
    ParameterSpec(
        'max_published_particles', 500,
        'Most particles published on particle_cloud (the heaviest ones).',
        value_range=(1, 65536)),
    ParameterSpec(
        'motion_noise_xy', _RUNTIME.motion_noise_xy,
        "Std of the noise added to each particle's motion per frame, metres.",
        value_range=(0.0, 5.0)),
    ParameterSpec(
        'motion_noise_yaw', _RUNTIME.motion_noise_yaw,
        "Std of the noise added to each particle's turn per frame, radians.",
        value_range=(0.0, 3.2)),
    ParameterSpec(
        'likelihood_scale', _RUNTIME.likelihood_scale,
        "Factor on the model's log-likelihoods in every update (1: as trained). Consecutive "
        'frames see nearly the same view, so their likelihoods are not independent '
        'evidence; below 1 tempers each update.', value_range=(0.01, 10.0)),
    ParameterSpec(
        'mode_bandwidth', _RUNTIME.mode_bandwidth,
        'The published pose: 0, the weighted mean of the particles; above 0, the densest '
        'place of the belief, its particles smoothed by a kernel of this many metres (a '
        'belief split over two places gives the heavier one, not a point between them).',
        value_range=(0.0, 100.0)),
    ParameterSpec(
        'camera_fov_x_deg', 0.0,
        "Horizontal field of view of the robot's camera, degrees, used while no camera_info "
        "arrives; images are cropped about their centre to the model's field of view. 0 "
        "(and camera_fov_y_deg 0): the images show the model's view as they are.",
        value_range=(0.0, 179.0)),
    ParameterSpec(
        'camera_fov_y_deg', 0.0,
        "Vertical field of view of the robot's camera, degrees (see camera_fov_x_deg).",
        value_range=(0.0, 179.0)),
    ParameterSpec(
        'max_odom_gap', _RUNTIME.max_odom_gap_s,
        'Seconds between a frame and the nearest odometry beyond which the frame gets '
        'no motion update (observation only, with a warning).', value_range=(0.0, 10.0)),
    ParameterSpec(
        'odom_wait', 0.05,
        'Longest wait of a frame for odometry stamped at or after it, seconds: odometry '
        'that arrives just after its frame is interpolated instead of held. Raise it when '
        'odometry lags the camera.', value_range=(0.0, 5.0)),
    ParameterSpec(
        'update_min_d', _RUNTIME.update_min_d,
        'Update gating: a frame updates the belief only when odometry says the robot moved '
        'this far since the last update, metres ...', value_range=(0.0, 10.0)),
    ParameterSpec(
        'update_min_a', _RUNTIME.update_min_a,
        '... or turned this much, radians (0 and 0: every frame updates).',
        value_range=(0.0, 3.2)),
    ParameterSpec(
        'recovery_alpha_slow', _RUNTIME.recovery_alpha_slow,
        'Kidnap recovery (augmented MCL): rate of the long-term average of the evidence; '
        'with recovery_alpha_fast 0 as well, recovery is off (AMCL default). Default chosen '
        'on 20 kidnapped Rooms runs (measurements in RESULTS.md).',
        value_range=(0.0, 1.0)),
    ParameterSpec(
        'recovery_alpha_fast', _RUNTIME.recovery_alpha_fast,
        'Rate of the short-term average (above recovery_alpha_slow); each resampling '
        'replaces max(0, 1 - fast / slow) of the particles with uniform ones.',
        value_range=(0.0, 1.0)),
    ParameterSpec(
        'recovery_margin', _RUNTIME.recovery_margin,
        'Recovery particles fall within the box of the context views plus this, metres.',
        value_range=(0.0, 100.0)),
    ParameterSpec(
        'set_initial_pose', False,
        'Start from a Gaussian around initial_pose.x/y/yaw (std 0.5 m, 0.5 m, 15 degrees, '
        "AMCL's initial covariance) when the first map comes, instead of uniformly."),
    ParameterSpec(
        'initial_pose.x', 0.0, 'Initial pose x in the map frame, metres.',
        value_range=(-1e6, 1e6)),
    ParameterSpec(
        'initial_pose.y', 0.0, 'Initial pose y in the map frame, metres.',
        value_range=(-1e6, 1e6)),
    ParameterSpec(
        'initial_pose.yaw', 0.0, 'Initial heading in the map frame, radians.',
        value_range=(-6.3, 6.3)),
    ParameterSpec(
        'save_pose_rate', 0.5,
        'While converged, write the pose, its covariance and the map identity to '
        "saved_pose_path this often, Hz (AMCL's default rate; 0: never).",
        value_range=(0.0, 100.0)),
    ParameterSpec(
        'saved_pose_path', '',
        'File of the saved pose. Empty: $ROS_HOME/dmn_localization/<node name>.pose.json '
        '(ROS_HOME defaults to ~/.ros).'),
    ParameterSpec(
        'initialize_at_saved_pose', False,
        'Start from the saved pose when the first map comes and it is the map the pose was '
        'saved in (before set_initial_pose); otherwise the reason is logged.'),
    ParameterSpec(
        'publish_pose_when', 'converged',
        'When pose is published: only while converged (searching or lost publishes no pose; '
        'particle_cloud always), or always.', choices=('converged', 'always')),
    ParameterSpec(
        'converged_xy_std', _STATES.converged_xy_std,
        'Converged: the larger weighted std of x and y under this, metres ...',
        value_range=(0.01, 10.0)),
    ParameterSpec(
        'converged_yaw_std', _STATES.converged_yaw_std,
        '... and the weighted std of yaw under this, radians ...', value_range=(0.01, 3.2)),
    ParameterSpec(
        'converged_frames', _STATES.converged_frames,
        '... for this many consecutive frames.', value_range=(1, 1000)),
    ParameterSpec(
        'lost_xy_std', _STATES.lost_xy_std,
        'Lost: after convergence the x-y std grows past this, metres (must exceed '
        'converged_xy_std) ...', value_range=(0.02, 100.0)),
    ParameterSpec(
        'lost_evidence_drop', _STATES.lost_evidence_drop,
        '... or the evidence of a frame (log mean likelihood under the belief) falls this '
        'far below its running level, nats ...', value_range=(0.1, 100.0)),
    ParameterSpec(
        'lost_evidence_frames', _STATES.lost_evidence_frames,
        '... for this many consecutive frames.', value_range=(1, 1000)),
    ParameterSpec(
        'reference_poses', _RUNTIME.reference_poses,
        'Poses spread over the map at which every frame is also scored; the evidence under '
        'the belief minus the mean over these is the relative evidence (0: not computed, '
        'min_relative_evidence unused).', value_range=(0, 65536)),
    ParameterSpec(
        'min_relative_evidence', _STATES.min_relative_evidence,
        'A belief explaining the frame less than this much better than the reference poses '
        'do is not converged (converged: lost); nats of the log-likelihoods times '
        'likelihood_scale.', value_range=(-100.0, 100.0)),
)

BY_NAME: Dict[str, ParameterSpec] = {spec.name: spec for spec in PARAMETERS}


def localizer_settings(values: Dict[str, Any]) -> LocalizerSettings:
    """
    Return the runtime settings of parameter ``values``, checked.

    Raises ``ValueError`` naming the parameter when one is out of its range or two do not
    fit together (e.g. ``lost_xy_std`` not above ``converged_xy_std``).
    """
    from dmn_localization.runtime.recovery import RecoveryRates, RecoverySettingsError
    from dmn_localization.runtime.status import StatusSettingsError

    for spec in PARAMETERS:
        problem = spec.validate(values[spec.name])
        if problem is not None:
            raise ValueError(f'parameter {problem}')
    thresholds = StatusSettings(
        values['converged_xy_std'], values['converged_yaw_std'], values['converged_frames'],
        values['lost_xy_std'], values['lost_evidence_drop'],
        lost_evidence_frames=values['lost_evidence_frames'],
        min_relative_evidence=values['min_relative_evidence'])
    try:
        thresholds.check()
        RecoveryRates(values['recovery_alpha_slow'], values['recovery_alpha_fast'])
    except (StatusSettingsError, RecoverySettingsError) as exc:
        raise ValueError(f'parameter {exc}') from exc
    return LocalizerSettings(
        num_particles=values['num_particles'], motion_noise_xy=values['motion_noise_xy'],
        motion_noise_yaw=values['motion_noise_yaw'], max_odom_gap_s=values['max_odom_gap'],
        status_thresholds=thresholds, update_min_d=values['update_min_d'],
        update_min_a=values['update_min_a'],
        recovery_alpha_slow=values['recovery_alpha_slow'],
        recovery_alpha_fast=values['recovery_alpha_fast'],
        recovery_margin=values['recovery_margin'],
        likelihood_scale=values['likelihood_scale'],
        reference_poses=values['reference_poses'], mode_bandwidth=values['mode_bandwidth'])


def declare_parameters(node: Any) -> None:
    """
    Declare :data:`PARAMETERS` on ``node`` with their descriptions and ranges.

    rclpy itself refuses an override outside a declared numeric range, naming it;
    :func:`read_parameters` checks the rest when the node is configured.
    """
    from rcl_interfaces.msg import (FloatingPointRange, IntegerRange,
                                    ParameterDescriptor)

    for spec in PARAMETERS:
        descriptor = ParameterDescriptor(description=spec.description)
        if spec.choices:
            descriptor.additional_constraints = 'one of: ' + ', '.join(spec.choices)
        if spec.value_range is not None:
            low, high = spec.value_range
            if isinstance(spec.default, int):
                descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=0)]
            else:
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
        node.declare_parameter(spec.name, spec.default, descriptor)


def read_parameters(node: Any) -> Dict[str, Any]:
    """Return the node's values of :data:`PARAMETERS`; ValueError names a bad one."""
    values = {spec.name: node.get_parameter(spec.name).value for spec in PARAMETERS}
    localizer_settings(values)  # checks every value and every pair that must fit
    return values


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def render_yaml() -> str:
    """
    Return the parameter YAML (under :data:`YAML_KEY`) with every default.

    Dotted names (``initial_pose.x``) are nested, as ROS 2 parameter files write them.
    """
    lines = [f'{YAML_KEY}:', '  ros__parameters:']
    group = ''
    for spec in PARAMETERS:
        prefix, _, leaf = spec.name.rpartition('.')
        if prefix and prefix != group:
            lines.append(f'    {prefix}:')
        group = prefix
        indent = '      ' if prefix else '    '
        lines.append(f'{indent}# {spec.description}')
        lines.append(f'{indent}{leaf}: {_yaml_value(spec.default)}')
    return '\n'.join(lines) + '\n'


def render_markdown_table() -> str:
    """Return the README's parameter table."""
    rows = ['| parameter | type | default | description |', '| --- | --- | --- | --- |']
    for spec in PARAMETERS:
        extra = ''
        if spec.choices:
            extra = f' One of `{"`, `".join(spec.choices)}`.'
        elif spec.value_range is not None:
            extra = f' Range [{spec.value_range[0]}, {spec.value_range[1]}].'
        rows.append(f'| `{spec.name}` | {spec.type_name} | `{_yaml_value(spec.default)}` | '
                    f'{spec.description}{extra} |')
    return '\n'.join(rows) + '\n'


if __name__ == '__main__':
    print(render_yaml())
    print(render_markdown_table())
