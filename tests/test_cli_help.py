"""``mtvif --help`` and every sub-command's ``--help`` render (argparse %-formats help strings)."""
import pytest

from mtvif_zoo.cli import build_parser, main

EXPECTED = {'bench', 'card', 'eval', 'export', 'fuse', 'info', 'list', 'profile', 'train'}


def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == 'command')
    return sorted(sub.choices)


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(['--help'])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert EXPECTED <= set(_commands())
    for cmd in _commands():
        assert f'    {cmd}' in out


@pytest.mark.parametrize('cmd', sorted(EXPECTED))
def test_subcommand_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, '--help'])
    assert e.value.code == 0
    assert f'usage: mtvif {cmd}' in capsys.readouterr().out
