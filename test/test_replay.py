"""dmn_evaluate_bag: metrics on known cases, TUM files evo reads, offline replay, errors."""

import json
import math

from dmn_localization.core.checkpoint import save_checkpoint
from dmn_localization.core.models import build_model, config_for
from dmn_localization.data.sim_bag import main as sim_bag_main
from dmn_localization.replay.cli import main as replay_main
from dmn_localization.replay.metrics import status_metrics, trajectory_metrics, write_tum
import numpy as np
import pytest
import torch

EXTENT = [0.0, 0.0, 10.0, 10.0]


def circle(n=50):
    """Return stamps and poses of a 1 m/s drive around a circle of radius 3 m."""
    t = np.linspace(0.0, 10.0, n)
    angle = t / 3.0
    poses = np.column_stack([5 + 3 * np.cos(angle), 5 + 3 * np.sin(angle), angle + math.pi / 2])
    return t, poses


def test_metrics_of_a_perfect_estimate():
    t, truth = circle()
    m = trajectory_metrics(t, truth, t, truth, EXTENT)
    assert m.ate_rmse_m == pytest.approx(0.0, abs=1e-9) and m.yaw_error_mean_deg < 1e-6
    assert m.time_to_converge_s == 0.0 and m.distance_to_converge_m == 0.0
    assert m.share_within_0_5_m == 1.0 and m.paper_success_final and m.paper_success_share == 1


def test_metrics_of_a_constant_offset_and_of_late_convergence():
    t, truth = circle()
    shifted = truth + np.array([0.3, 0.4, math.radians(10)])
    m = trajectory_metrics(t, shifted, t, truth, EXTENT)
    assert m.ate_rmse_m == pytest.approx(0.5, rel=1e-6)
    assert m.yaw_error_mean_deg == pytest.approx(10.0, rel=1e-6)
    assert m.share_within_1_m == 1.0 and m.final_error_m == pytest.approx(0.5)
    far = truth.copy()
    far[:20, 0] += 2.0  # wrong by 2 m for the first 20 frames, then exact
    late = trajectory_metrics(t, far, t, truth, EXTENT)
    assert late.time_to_converge_s == pytest.approx(t[20])
    assert late.distance_to_converge_m == pytest.approx(t[20] * 1.0, rel=0.02)  # 1 m/s
    assert late.share_within_0_5_m == pytest.approx(30 / 50)
    assert late.ate_rmse_after_convergence_m == pytest.approx(0.0, abs=1e-9)
    # converged for 3 s, then off by 2 m for the last 10 frames: still converged at t[20],
    # the excursion shows in the shares and the error after convergence
    drifting = far.copy()
    drifting[40:, 0] += 2.0
    once = trajectory_metrics(t, drifting, t, truth, EXTENT)
    assert once.time_to_converge_s == pytest.approx(t[20])
    assert once.share_within_0_5_m == pytest.approx(20 / 50)
    assert once.ate_rmse_after_convergence_m == pytest.approx(2.0 * math.sqrt(10 / 30))
    # within 0.5 m for less than the 2 s hold (one frame every 0.2 s): not converged
    flicker = truth + np.array([2.0, 0.0, 0.0])
    flicker[10:15, 0] -= 2.0
    assert trajectory_metrics(t, flicker, t, truth, EXTENT).time_to_converge_s is None
    # the paper's criterion: 2 m on a 10 m map is (2/5)^2 = 0.16 < 0.2: a success
    assert trajectory_metrics(t, truth + [2.0, 0.0, 0.0], t, truth, EXTENT).paper_success_final
    assert not trajectory_metrics(t, truth + [2.5, 0.0, 0.0], t, truth,
                                  EXTENT).paper_success_final


def test_convergence_waits_for_the_localizer_to_report_it():
    """A global belief whose mean happens to lie on the truth has not converged."""
    t, truth = circle()
    states = ['global'] * 25 + ['converged'] * 25
    m = trajectory_metrics(t, truth, t, truth, EXTENT, states=states)
    assert m.time_to_converge_s == pytest.approx(t[25])
    assert m.share_within_0_5_m == 1.0  # the shares still read the error alone
    never = trajectory_metrics(t, truth, t, truth, EXTENT, states=['global'] * 50)
    assert never.time_to_converge_s is None
    with pytest.raises(ValueError, match='49 states for 50 estimates'):
        trajectory_metrics(t, truth, t, truth, EXTENT, states=['global'] * 49)


def test_status_metrics_of_a_hand_made_kidnap():
    t, truth = circle()  # 50 frames, 0.2 s apart
    truth[25:, :2] += [3.0, 0.0]  # carried 3 m at t[25]
    estimate = truth.copy()
    estimate[25:35, :2] -= [3.0, 0.0]  # still where it was for 10 frames, then found again
    states = ['global'] * 5 + ['converged'] * 20 + ['converged'] * 4 + ['lost'] * 4 + [
        'global'] * 2 + ['converged'] * 15
    m = status_metrics(t, estimate, states, t, truth)
    assert m.kidnaps_s == [pytest.approx(t[25])]
    assert m.time_to_recover_s == [pytest.approx(t[35] - t[25])]
    assert m.wrong_frames == 10
    assert m.false_confidence_share == pytest.approx(4 / 50)  # 4 sure frames 3 m off
    assert m.false_confidence_at_kidnap_share == pytest.approx(4 / 50)  # all within 2 s
    stuck = truth.copy()
    stuck[25:45, :2] -= [3.0, 0.0]  # sure of the old place for 4 s: 2 s of it are noticing
    sure = status_metrics(t, stuck, ['global'] * 5 + ['converged'] * 45, t, truth)
    assert sure.false_confidence_share == pytest.approx(20 / 50)
    assert sure.false_confidence_at_kidnap_share == pytest.approx(10 / 50)
    assert m.wrong_flagged_share == pytest.approx(6 / 10)
    # of the 40 frames on the truth, the 5 global ones at the start are false alarms
    assert m.right_frames == 40
    assert m.false_alarm_share == pytest.approx(5 / 40)
    # never found again: no recovery time; no wrong frame: no flagged share
    lost = truth.copy()
    lost[25:, :2] -= [3.0, 0.0]
    assert status_metrics(t, lost, states, t, truth).time_to_recover_s == [None]
    calm = status_metrics(t, circle()[1], states, t, circle()[1])
    assert calm.kidnaps_s == [] and calm.wrong_flagged_share is None
    with pytest.raises(ValueError, match='states'):
        status_metrics(t, estimate, states[:-1], t, truth)


def test_tum_files_load_in_evo(tmp_path):
    from evo.tools import file_interface

    t, poses = circle()
    path = write_tum(tmp_path / 'truth.tum', t + 1.7e9, poses)
    trajectory = file_interface.read_tum_trajectory_file(str(path))
    np.testing.assert_allclose(trajectory.positions_xyz[:, :2], poses[:, :2], atol=1e-6)
    np.testing.assert_allclose(trajectory.timestamps, t + 1.7e9, atol=1e-6)
    yaw = np.array([math.atan2(2 * (q[0] * q[3]), 1 - 2 * q[3] ** 2)
                    for q in trajectory.orientations_quat_wxyz])
    np.testing.assert_allclose(np.remainder(yaw - poses[:, 2] + np.pi, 2 * np.pi) - np.pi, 0,
                               atol=1e-6)


@pytest.fixture(scope='module')
def bag_and_model(tmp_path_factory):
    """Write a 6 s Rooms bag and a random-weight DMN checkpoint."""
    root = tmp_path_factory.mktemp('replay')
    assert sim_bag_main(['--duration', '6', '--seed', '2', '--contexts', '4',
                         '--out', str(root / 'bag')]) == 0
    torch.manual_seed(0)
    save_checkpoint(root / 'dmn.pt', build_model(config_for('dmn-pf')), EXTENT)
    return root / 'bag', root / 'dmn.pt'


def test_offline_replay_writes_metrics_tum_and_plot_deterministically(bag_and_model, tmp_path):
    bag, model = bag_and_model
    runs = []
    for name in ('a', 'b'):
        out = tmp_path / name
        assert replay_main([str(bag), '--model', str(model), '--out', str(out), '--particles',
                            '256', '--seed', '3', '--quiet', '--snapshots', '0', '3']) == 0
        runs.append(out)
        for file in ('metrics.json', 'truth.tum', 'estimate.tum', 'replay.png'):
            assert (out / file).stat().st_size > 0, file
    a = (runs[0] / 'estimate.tum').read_text()
    assert a == (runs[1] / 'estimate.tum').read_text()  # deterministic for a seed
    assert len(a.splitlines()) == 30  # 6 s at 5 Hz
    metrics = json.loads((runs[0] / 'metrics.json').read_text())['metrics']
    assert metrics['frames'] == 30 and metrics['ate_rmse_m'] > 0
    status = json.loads((runs[0] / 'metrics.json').read_text())['status']
    assert status['frames'] == 30 and status['kidnaps_s'] == []
    # the node's likelihood_scale reaches the filter, and the run records it
    untempered = tmp_path / 'untempered'
    assert replay_main([str(bag), '--model', str(model), '--out', str(untempered),
                        '--particles', '256', '--seed', '3', '--quiet',
                        '--likelihood-scale', '1']) == 0
    assert (untempered / 'estimate.tum').read_text() != a
    assert '"likelihood_scale": 1.0' in (untempered / 'metrics.json').read_text()
    assert replay_main([str(bag), '--model', str(model), '--out', str(untempered), '--quiet',
                        '--likelihood-scale', '0']) == 2


def test_missing_topic_and_missing_bag_are_errors(bag_and_model, tmp_path, capsys):
    bag, model = bag_and_model
    assert replay_main([str(bag), '--model', str(model), '--image-topic', '/nothing',
                        '--out', str(tmp_path), '--quiet']) == 2
    assert 'no topic /nothing' in capsys.readouterr().err
    assert replay_main([str(tmp_path / 'nobag'), '--model', str(model), '--out',
                        str(tmp_path), '--quiet']) == 2
    assert 'no such bag' in capsys.readouterr().err


def read_tum(path):
    """Return stamps ``(N,)`` and x, y ``(N, 2)`` of a TUM trajectory file."""
    rows = np.loadtxt(path, ndmin=2)
    return rows[:, 0], rows[:, 1:3]


@pytest.mark.ros
def test_live_replay_to_the_node_agrees_with_offline_replay(bag_and_model, tmp_path,
                                                            start_process):
    bag, model = bag_and_model
    offline = tmp_path / 'offline'
    assert replay_main([str(bag), '--model', str(model), '--out', str(offline), '--particles',
                        '256', '--seed', '0', '--quiet']) == 0
    t_off, xy_off = read_tum(offline / 'estimate.tum')
    index = {round(t, 6): i for i, t in enumerate(t_off)}
    # Lockstep: the node answers each frame before the next is played, so a busy node drops
    # none. Camera frames still go best effort (sensor-data QoS) and DDS may lose one, which
    # changes the filter's random draws after it: a fresh node and replay are tried again
    # then (or when a pose differs), at most three times in all; a fault of the runtime
    # differs every time. Each frame waits up to 1 s for the odometry played just before it
    # (a loaded machine delivers it late), so it moves as it does offline.
    for attempt in range(3):
        live = tmp_path / f'live{attempt}'
        node = start_process('dmn_localization_node', '--ros-args', '-p',
                             f'model_path:={model}', '-p', 'num_particles:=256',
                             '-p', 'publish_pose_when:=always', '-p', 'odom_wait:=1.0')
        code = replay_main([str(bag), '--live', '--rate', '1.0', '--lockstep', '--out',
                            str(live), '--quiet'])
        assert code == 0, node.log()
        node.stop()
        t_live, xy_live = read_tum(live / 'estimate.tum')
        matched = [(index[round(t, 6)], i) for i, t in enumerate(t_live)
                   if round(t, 6) in index]
        assert len(matched) == len(t_live)  # every published pose is stamped with a frame
        # the same runtime, model, seed and particle count give the same estimates, as
        # long as no frame was lost before
        first_gap = next((k for k, (a, b) in enumerate(matched) if a != k), len(matched))
        diff = [np.hypot(*(xy_off[a] - xy_live[b])) for a, b in matched[:first_gap]]
        if first_gap == len(t_off) and max(diff) < 1e-3:
            break
    assert first_gap == len(t_off), (attempt, first_gap, len(t_off), node.log())
    assert max(diff) < 1e-3, (attempt, diff)
    report = json.loads((live / 'metrics.json').read_text())
    assert report['mode'] == 'live' and report['lockstep'] is True
    for file in ('metrics.json', 'truth.tum', 'estimate.tum', 'replay.png'):
        assert (live / file).stat().st_size > 0, file


@pytest.mark.ros
def test_live_replay_without_a_node_is_a_clear_error(bag_and_model, tmp_path, capsys,
                                                     ros_domain):
    bag, _ = bag_and_model
    assert replay_main([str(bag), '--live', '--node', '/nobody', '--connect-timeout', '1',
                        '--out', str(tmp_path), '--quiet']) == 2
    assert 'no service /nobody/build_map' in capsys.readouterr().err


def test_kidnap_benchmark_pools_runs_by_frames():
    from dmn_localization.bench.kidnap_bench import markdown, summarize

    def run(frames, false, wrong, flagged, recover, first, right=0, alarms=None):
        return {'status': {'frames': frames, 'false_confidence_share': false,
                           'wrong_frames': wrong, 'wrong_flagged_share': flagged,
                           'time_to_recover_s': recover, 'right_frames': right,
                           'false_alarm_share': alarms}, 'first_convergence_s': first,
                'within_0_5_m': 0.5 if first else 0.2}

    row = summarize([run(100, 0.1, 40, 0.5, [4.0], 10.0, 50, 0.2),
                     run(300, 0.0, 0, None, [None], None),
                     run(100, 0.0, 10, 1.0, [8.0], 20.0, 80, 0.0)])
    assert row['false_confidence_share'] == pytest.approx(10 / 500)
    assert row['wrong_flagged_share'] == pytest.approx((20 + 10) / 50)
    assert row['false_alarm_share'] == pytest.approx(10 / 130)
    assert (row['kidnaps'], row['recovered'], row['median_time_to_recover_s']) == (3, 2, 6.0)
    assert (row['first_converged'], row['median_first_convergence_s']) == (2, 15.0)
    text = markdown({'seeds': [0, 1, 2], 'duration_s': 60, 'kidnap_at_s': 30,
                     'machine': 'x', 'wall_time_s': 60, 'domains': {'rooms': {'off': row}}},
                    'cmd')
    assert '| rooms | off | 2/3 | 6.0 s | 2.0% (0.0%) | 60.0% | 7.7% | 2/3, 15.0 s | 40.0% |' \
        in text


def test_kidnap_benchmark_takes_other_settings_and_says_so():
    from dmn_localization.bench.kidnap_bench import markdown, setting_overrides

    from dmn_localization.bench.kidnap_bench import localizer_settings

    assert setting_overrides(['likelihood_scale=0.125', 'num_particles=512']) == {
        'likelihood_scale': 0.125, 'num_particles': 512}
    settings = localizer_settings(3, (0.01, 0.2), setting_overrides(
        ['converged_xy_std=0.25', 'motion_noise_xy=0.1']))
    assert (settings.seed, settings.recovery_alpha_slow, settings.recovery_alpha_fast,
            settings.motion_noise_xy, settings.status_thresholds.converged_xy_std,
            settings.status_thresholds.lost_xy_std) == (3, 0.01, 0.2, 0.1, 0.25, 1.0)
    for bad in ('likelihood_scale', 'no_such_field=1', 'recovery_alpha_fast=0.2'):
        with pytest.raises(ValueError, match='FIELD=VALUE'):
            setting_overrides([bad])
    text = markdown({'seeds': [0], 'duration_s': 60, 'kidnap_at_s': 30, 'machine': 'x',
                     'wall_time_s': 60, 'domains': {}, 'settings': {'likelihood_scale': 0.125}},
                    'cmd')
    assert 'but for the recovery rates and likelihood_scale 0.125;' in text


def test_kidnap_benchmark_runs_the_seeds_and_maps_it_is_given(tmp_path, monkeypatch):
    from dmn_localization.bench.kidnap_bench import main as kidnap_main, markdown
    from dmn_localization.data import sim_bag

    written, real = [], sim_bag.main
    monkeypatch.setattr(sim_bag, 'main', lambda argv: written.append(argv) or real(argv))
    out = tmp_path / 'kidnap.json'
    assert kidnap_main(['--seeds', '2', '--first-seed', '7', '--domains', 'rooms',
                        '--duration', '3', '--kidnap-at', '1.5', '--candidates', '0',
                        '--contexts', '12', '--out', str(out)]) == 0
    report = json.loads(out.read_text())
    assert report['seeds'] == [7, 8] and report['contexts'] == 12
    assert report['domains']['rooms']['off']['kidnaps'] == 2
    assert [argv[argv.index('--seed') + 1] for argv in written] == ['7', '8']
    assert all(argv[argv.index('--contexts') + 1] == '12' for argv in written)
    assert '--kidnap-at 1.5 --contexts 12`' in markdown(report, 'cmd')


def test_state_changes_from_diagnostics_reports():
    from dmn_localization.replay.live import state_changes
    from dmn_localization.replay.offline import state_at

    reports = [(3.0, 'converged'), (1.0, 'global'), (2.0, 'global'), (3.0, 'converged'),
               (float('nan'), 'initializing'), (5.0, 'lost'), (6.0, 'global')]
    changes = state_changes(reports)
    assert changes == [(1.0, 'global'), (3.0, 'converged'), (5.0, 'lost'), (6.0, 'global')]
    assert [state_at(changes, t) for t in (0.5, 1.0, 4.9, 5.0, 7.0)] == [
        None, 'global', 'converged', 'lost', 'global']


def test_the_kidnap_story_of_hand_made_state_changes():
    from dmn_localization.bench.kidnap_scan import tells_the_kidnap_story
    from dmn_localization.replay.live import state_changes

    changes = state_changes(list(zip([0, 1, 2, 3, 4, 5, 6, 7],
                                     ['global', 'converged', 'converged', 'lost', 'global',
                                      'global', 'lost', 'converged'])))
    assert changes == [(0, 'global'), (1, 'converged'), (3, 'lost'), (4, 'global'),
                       (6, 'lost'), (7, 'converged')]
    assert tells_the_kidnap_story(changes, 2.5)
    assert not tells_the_kidnap_story(changes, 0.5)  # not converged before the kidnap
    assert not tells_the_kidnap_story(changes[:4], 2.5)  # never converged again
    assert not tells_the_kidnap_story([(0, 'converged'), (3, 'global'), (4, 'lost'),
                                       (5, 'converged')], 2.5)  # global before lost


@pytest.mark.ros
def test_live_replay_to_a_namespaced_node_with_remapped_topics(bag_and_model, tmp_path,
                                                               start_process, capsys):
    """As a robot runs it: in a namespace, camera and odometry remapped to its own topics."""
    bag, model = bag_and_model
    node = start_process('dmn_localization_node', '--ros-args', '-r', '__ns:=/robot1',
                         '-r', 'image:=/front_cam/image', '-r', 'odom:=/wheel_odom',
                         '-p', f'model_path:={model}', '-p', 'num_particles:=256',
                         '-p', 'publish_pose_when:=always')
    out = tmp_path / 'live'
    code = replay_main([str(bag), '--live', '--node', '/robot1/dmn_localization', '--rate',
                        '1.0', '--lockstep', '--out', str(out), '--quiet'])
    assert code == 0, node.log()
    assert node.alive(), node.log()
    node.stop()
    stamps, _ = read_tum(out / 'estimate.tum')
    assert len(stamps) >= 25  # 30 frames; best-effort camera frames may lose a few
    # a topic given by hand that the node does not read: a clear error, not a hang
    node = start_process('dmn_localization_node', '--ros-args', '-r', '__ns:=/robot1',
                         '-p', f'model_path:={model}')
    code = replay_main([str(bag), '--live', '--node', '/robot1/dmn_localization',
                        '--node-image-topic', '/nowhere/image', '--connect-timeout', '5',
                        '--out', str(tmp_path / 'wrong'), '--quiet'])
    assert code == 2
    assert 'does not subscribe to /nowhere/image' in capsys.readouterr().err
    node.stop()


def test_a_wider_cameras_bag_is_cropped_offline_and_by_the_node_live(bag_and_model, tmp_path,
                                                                     start_process):
    """The bag's camera_info reaches the node before the map: its views are cropped too."""
    _, model = bag_and_model
    wide = tmp_path / 'wide'
    assert sim_bag_main(['--duration', '3', '--seed', '4', '--contexts', '4', '--camera-size',
                         '48', '64', '--camera-fov-y', '80', '--out', str(wide)]) == 0
    assert replay_main([str(wide), '--model', str(model), '--particles', '256', '--out',
                        str(tmp_path / 'offline'), '--quiet']) == 0
    said = json.loads((tmp_path / 'offline' / 'metrics.json').read_text())['camera']
    assert '64x48 camera of' in said and "(/camera/camera_info): cropped to the model's" in said
    node = start_process('dmn_localization_node', '--ros-args', '-p', f'model_path:={model}',
                         '-p', 'num_particles:=256', '-p', 'publish_pose_when:=always')
    assert replay_main([str(wide), '--live', '--lockstep', '--out', str(tmp_path / 'live'),
                        '--quiet']) == 0, node.log()
    said = json.loads((tmp_path / 'live' / 'metrics.json').read_text())['camera']
    assert '64x48 camera of' in said and "(camera_info), cropped to the model's view" in said
    node.stop()
