"""Bad settings: unknown keys warned with the nearest known one, bad values and config files
refused with the key or file and the fix, and the command line's ``--key value`` form."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, tiny_config
from recbole.config import Config as RecBoleConfig

from recbole_mm import config as config_module
from recbole_mm import hyper
from recbole_mm.config import Config, ConfigError, normalize_overrides, parse_overrides
from recbole_mm.hyper import check_space_keys, read_space

ROOT = Path(__file__).resolve().parents[1]


def _config(root, argv=(), files=None, **settings):
    return Config(
        model="BPR",
        dataset=TINY,
        config_file_list=files,
        config_dict=tiny_config(root, **settings),
        overrides=parse_overrides(argv),
    )


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(config_module, "_warned", set())


def test_unknown_key_warns_with_the_nearest_known_key(tiny_root, caplog, fresh_warnings):
    with caplog.at_level(logging.WARNING, logger="recbole_mm.config"):
        _config(tiny_root, ["--learning_rat=0.01"])
    assert (
        "Unknown setting 'learning_rat' (set on the command line): did you mean "
        "'learning_rate'?" in caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="recbole_mm.config"):
        _config(tiny_root, regularisation=0.1, embedding_size=8)
    assert "Unknown setting 'regularisation' (set in config_dict)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="recbole_mm.config"):
        # RecBole's and recbole_mm's own keys, of any model or dataset, are known.
        _config(tiny_root, reg_weight=0.1, modalities=None, n_heads=2, full_sort_batch_users=8)
    assert "Unknown setting" not in caplog.text


@pytest.mark.parametrize(
    "argv, message",
    [
        ("--epochs=abc", r"epochs='abc' \(on the command line\) must be a whole number"),
        ("--epochs=1.5", r"epochs=1\.5 \(on the command line\) must be a whole number"),
        ("--learning_rate=-1", r"learning_rate=-1 \(on the command line\) must be > 0"),
        ("--train_batch_size=0", r"train_batch_size=0 .* must be >= 1"),
        ("--topk=[10,0]", r"topk=\[10, 0\] .* whole number >= 1 or a list"),
    ],
)
def test_bad_values_name_the_key_and_an_example(tiny_root, argv, message):
    with pytest.raises(ConfigError, match=message):
        _config(tiny_root, [argv])


def test_bad_value_in_config_dict_names_its_source(tiny_root):
    with pytest.raises(ConfigError, match=r"learning_rate='fast' \(in config_dict\)"):
        _config(tiny_root, learning_rate="fast")


def test_config_files_missing_malformed_or_not_a_mapping(tiny_root, tmp_path):
    with pytest.raises(ConfigError, match=r"config_files: .*nowhere\.yaml does not exist"):
        _config(tiny_root, files=[str(tmp_path / "nowhere.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 2\nlearning_rate: [0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML at line 3"):
        _config(tiny_root, files=[str(bad)])
    listed = tmp_path / "list.yaml"
    listed.write_text("- epochs\n- 2\n")
    with pytest.raises(ConfigError, match=r"list\.yaml holds a list, not 'key: value' lines"):
        _config(tiny_root, files=[str(listed)])
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert _config(tiny_root, files=[str(empty)])["epochs"] == 1


def test_overrides_accept_the_space_form():
    assert normalize_overrides(["--epochs", "1", "--learning_rate", "-1", "--seed=3"]) == [
        "--epochs=1",
        "--learning_rate=-1",
        "--seed=3",
    ]
    assert parse_overrides(["--epochs", "2"]) == {"epochs": 2}
    with pytest.raises(ConfigError, match=r"'--epochs' has no value: write --epochs=VALUE"):
        normalize_overrides(["--epochs", "--seed=3"])
    with pytest.raises(ConfigError, match=r"'--epochs' has no value"):
        normalize_overrides(["--epochs"])
    with pytest.raises(ConfigError, match=r"'1' is not a setting"):
        normalize_overrides(["1"])


def test_parse_overrides_types_values_as_recbole_reads_its_command_line(monkeypatch):
    args = [
        "--epochs=3",
        "--learning_rate=1e-3",
        "--topk=[5,10]",
        "--use_gpu=FALSE",
        "--learner=adam",
        "--neg_sampling=None",
        "--dataset=none",
        "--hidden_size=2**3",
        "--eval_args={'mode': 'full'}",
    ]
    monkeypatch.setattr(sys, "argv", ["x", *args])
    # What RecBole's own Config takes from sys.argv, read by its own method.
    recbole = RecBoleConfig._load_cmd_line(RecBoleConfig.__new__(RecBoleConfig))
    parsed = parse_overrides(args)
    assert parsed == recbole
    assert {k: type(v) for k, v in parsed.items()} == {k: type(v) for k, v in recbole.items()}
    assert parsed["hidden_size"] == 8 and parsed["use_gpu"] is False
    assert parse_overrides(["--epochs", "3", "--learner", "adam"]) == {
        "epochs": 3,
        "learner": "adam",
    }
    assert parse_overrides(["--seed=3", "--seed", "3"]) == {"seed": 3}
    with pytest.raises(ConfigError, match=r"'--data_path=a=b' holds more than one '='"):
        parse_overrides(["--data_path=a=b"])
    with pytest.raises(ConfigError, match=r"--seed is given twice, as '3' and '4'"):
        parse_overrides(["--seed=3", "--seed=4"])


def test_hyper_parse_overrides_still_works_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match=r"use recbole_mm\.config\.parse_overrides"):
        assert hyper.parse_overrides(["--epochs", "2"]) == {"epochs": 2}


def test_search_space_keys_and_unclosed_lists(tmp_path):
    space = tmp_path / "typo.hyper"
    space.write_text("learning_rat choice [0.01,0.001]\n")
    with pytest.raises(
        ValueError,
        match=r"'learning_rat' is not a configuration key .* did you "
        r"mean 'learning_rate'\? Searching it would run identical trials",
    ):
        check_space_keys(read_space(space), space)
    check_space_keys({"learning_rate": ("choice", [0.1])}, space)
    space.write_text("learning_rate choice [0.01,0.001\n")
    with pytest.raises(
        ValueError,
        match=r"typo\.hyper:1: the values of learning_rate open a "
        r"list with '\[' that is not closed: .* Close it with '\]'",
    ):
        read_space(space)


def _run(*args, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / "run_recbole_mm.py"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def test_command_line_errors_are_one_message_and_the_space_form_trains(tiny_root, tmp_path):
    common = ["--model=BPR", f"--dataset={TINY}", f"--data_path={tiny_root}", "--use_gpu=False"]
    done = _run(*common, "--epochs=abc", cwd=tmp_path)
    assert done.returncode == 1
    assert "run_recbole_mm.py: error: epochs='abc' (on the command line)" in done.stderr
    assert "Traceback" not in done.stderr

    done = _run(*common, "--epochs", "1", "--learning_rat=0.5", "--state=INFO", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "did you mean 'learning_rate'?" in done.stderr
    assert "epoch 0 training" in done.stderr and "epoch 1 training" not in done.stderr
    assert "will not be used" not in done.stderr  # RecBole's warning for ignored arguments
