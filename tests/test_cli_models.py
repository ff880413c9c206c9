from click.testing import CliRunner

from indexer.cli import main
from retrieval import list_models


def test_models_command_lists_registered_configs():
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    listed = result.output.split()
    assert {"viclip-B-16", "viclip-L-14", "viclip-tiny-test"} <= set(listed)
    assert listed == list_models()


def test_unknown_command_is_a_usage_error():
    assert CliRunner().invoke(main, ["no-such-command"]).exit_code == 2
