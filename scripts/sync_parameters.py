"""Rewrite config/dmn_localization.yaml and the README parameter table from the declarations."""

from pathlib import Path
import sys

from dmn_localization.ros.parameters import PARAMETERS, render_markdown_table, render_yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    """Write both files; print what changed."""
    yaml_path = ROOT / 'config' / 'dmn_localization.yaml'
    header = [line for line in yaml_path.read_text().splitlines(keepends=True)
              if line.startswith('#')][:3]
    yaml_path.write_text(''.join(header) + render_yaml())
    readme = ROOT / 'README.md'
    text = readme.read_text()
    start = text.index('| parameter | type | default | description |')
    end = text.index('\n\n', start)
    readme.write_text(text[:start] + render_markdown_table().rstrip('\n') + text[end:])
    print(f'{len(PARAMETERS)} parameters: {yaml_path.name} and README table rewritten')
    return 0


if __name__ == '__main__':
    sys.exit(main())
