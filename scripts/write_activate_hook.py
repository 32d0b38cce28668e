"""
Write the ROS environment into a venv's ``bin/activate`` (called by scripts/setup.sh).

Usage: ``python write_activate_hook.py VENV/bin/activate NAME=VALUE ...``

The block goes between markers and is replaced on every run, so running it again
changes nothing. ``LD_LIBRARY_PATH`` keeps what the shell had after the venv's entries;
every other variable is set as given. ``deactivate`` restores the previous values.
"""

import re
import sys

BEGIN = '# >>> dmn_localization ROS environment (written by scripts/setup.sh) >>>'
END = '# <<< dmn_localization ROS environment <<<'
APPEND_OLD = {'LD_LIBRARY_PATH'}


def hook(assignments: list) -> str:
    """Return the activate block that exports ``assignments`` (``NAME=VALUE``)."""
    names = [a.split('=', 1)[0] for a in assignments]
    lines = [BEGIN, f'_DMN_VARS="{" ".join(names)}"']
    lines += [
        'for _dmn_v in $_DMN_VARS; do',
        '  if eval "[ -n \\"\\${$_dmn_v+x}\\" ]"; then',
        '    eval "_DMN_OLD_$_dmn_v=\\"\\$$_dmn_v\\""',
        '  else',
        '    unset "_DMN_OLD_$_dmn_v"',
        '  fi',
        'done',
    ]
    for assignment in assignments:
        name, value = assignment.split('=', 1)
        if name in APPEND_OLD:
            lines.append(f'export {name}="{value}${{_DMN_OLD_{name}:+:$_DMN_OLD_{name}}}"')
        else:
            lines.append(f'export {name}="{value}"')
    lines += [
        '_dmn_restore_env() {',
        '  for _dmn_v in $_DMN_VARS; do',
        '    if eval "[ -n \\"\\${_DMN_OLD_$_dmn_v+x}\\" ]"; then',
        '      eval "export $_dmn_v=\\"\\$_DMN_OLD_$_dmn_v\\""',
        '      unset "_DMN_OLD_$_dmn_v"',
        '    else',
        '      unset "$_dmn_v"',
        '    fi',
        '  done',
        '}',
        '# bash and zsh: make deactivate restore the variables set above.',
        'if [ -n "${BASH_VERSION:-}${ZSH_VERSION:-}" ]; then',
        '  eval "_dmn_venv_deactivate() $(declare -f deactivate | tail -n +2)"',
        '  deactivate() {',
        '    _dmn_restore_env',
        '    _dmn_venv_deactivate "$@"',
        '    if [ "${1:-}" != "nondestructive" ]; then',
        '      unset -f _dmn_venv_deactivate _dmn_restore_env',
        '    fi',
        '  }',
        'fi',
        END,
    ]
    return '\n'.join(lines) + '\n'


def main() -> None:
    """Replace the block in the activate script named on the command line."""
    path, assignments = sys.argv[1], sys.argv[2:]
    with open(path) as f:
        original = f.read()
    text = re.sub(re.escape(BEGIN) + r'.*?' + re.escape(END) + r'\n?', '', original, flags=re.S)
    new = text.rstrip('\n') + '\n\n' + hook(assignments)
    if new != original:
        with open(path, 'w') as f:
            f.write(new)


if __name__ == '__main__':
    main()
