"""The table of several replays reads each replay's metrics and averages per label."""

import json

from dmn_localization.replay.summary import main, read_replay, summary_table
import pytest


def write_replay(directory, within, ate, false_confidence):
    directory.mkdir()
    (directory / 'metrics.json').write_text(json.dumps({
        'metrics': {'share_within_0_5_m': within, 'ate_rmse_m': ate},
        'status': {'false_confidence_share': false_confidence}}))
    return directory


def test_rows_and_means_per_label(tmp_path):
    dirs = [write_replay(tmp_path / 'shipped-1', 0.5, 1.0, 0.1),
            write_replay(tmp_path / 'shipped-2', 0.7, 0.5, 0.0),
            write_replay(tmp_path / 'fine-tuned-1', 0.9, 0.25, 0.0)]
    assert read_replay(dirs[0]) == {'within 0.5 m': 50.0, 'ATE': 1.0, 'false confidence': 10.0}
    lines = summary_table(dirs).splitlines()
    assert lines[2] == '| shipped-1 | 50.0 % | 1.00 m | 10.0 % |'
    assert lines[-2] == '| **shipped, mean of 2** | 60.0 % | 0.75 m | 5.0 % |'
    assert lines[-1] == '| **fine-tuned, mean of 1** | 90.0 % | 0.25 m | 0.0 % |'


def test_a_directory_without_metrics_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert 'no metrics.json' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([])
