"""``--config FILE``: a command's flags from a YAML file, as vLLM's ``--config``.

Each key is a flag's name (``max-num-seqs`` or ``max_num_seqs``) and its value the flag's: a
switch takes true or false, a flag of several values a list, a JSON-valued flag (such as
``allowed-origins``) a list or mapping. Flags on the command line win over the file's.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import yaml

FLAG = "--config"


def config_path(argv: list[str]) -> str | None:
    """The ``--config`` file named in ``argv`` (its last one), before anything is parsed."""
    path = None
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == FLAG and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith(FLAG + "="):
            path = arg[len(FLAG) + 1 :]
    return path


def config_tokens(path: str, parser: argparse.ArgumentParser) -> list[str]:
    """The file's flags as command-line tokens of ``parser``; ValueError naming the file for
    one it cannot read or a key that is not one of ``parser``'s flags."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ValueError(f"cannot read --config {path}: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise ValueError(f"--config {path} is not valid YAML: {e}") from e
    if data is None:
        return []
    if not isinstance(data, dict):
        raise ValueError(
            f"--config {path} must be a mapping of flag names to values, not a "
            f"{type(data).__name__}"
        )
    actions = {s: a for a in parser._actions for s in a.option_strings}
    tokens: list[str] = []
    for key, value in data.items():
        flag = "--" + str(key).replace("_", "-")
        action = actions.get(flag)
        if action is None or flag in (FLAG, "--help", "--version"):
            raise ValueError(f"--config {path}: {key!r} is not a flag of this command")
        try:
            tokens += _tokens(flag, action, value)
        except ValueError as e:
            raise ValueError(f"--config {path}: {key}: {e}") from None
    return tokens


def _tokens(flag: str, action: argparse.Action, value: Any) -> list[str]:
    if value is None:  # YAML's empty value: the flag left unset
        return []
    if isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise ValueError("takes true or false")
        return [flag if value else "--no-" + flag[2:]]
    if action.nargs == 0:  # a switch: on, or left off
        if not isinstance(value, bool):
            raise ValueError("takes true or false")
        return [flag] if value else []
    if isinstance(value, list) and action.nargs in ("+", "*"):
        return [flag, *map(_text, value)] if value else []
    if isinstance(value, list) and isinstance(action, argparse._AppendAction):
        return [f"{flag}={_text(v)}" for v in value]
    if isinstance(value, list | dict):
        return [f"{flag}={json.dumps(value)}"]  # a JSON-valued flag (--allowed-origins)
    return [f"{flag}={_text(value)}"]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        # Only switches take true or false; a text flag's "yes" would become "true".
        raise ValueError(
            f"got the boolean {str(value).lower()}: YAML reads unquoted yes, no, on, off, "
            "true and false as booleans; quote the value ('yes') to pass it as text"
        )
    if isinstance(value, list | dict):
        raise ValueError("takes plain values, not nested lists or mappings")
    return str(value)


def parse_with_config(
    command: argparse.ArgumentParser, argv: list[str], path: str
) -> tuple[argparse.Namespace, list[str]]:
    """Parse ``argv`` (the command's arguments, its name left out) over the values of the
    ``--config`` file at ``path``: argparse fills only what the namespace lacks, so flags
    given on the command line replace the file's and the defaults come last."""
    tokens = config_tokens(path, command)
    # A bad value in the file is reported as from the file.
    prog = command.prog
    command.prog = f"{prog} (in --config {path})"
    try:
        base, unknown = command.parse_known_args(tokens)
    finally:
        command.prog = prog
    assert not unknown, unknown  # every token was made from one of the command's flags
    # A flag on the command line replaces the file's, whichever of its names it took.
    given = {a.dest for a in command._actions if any(_named(s, argv) for s in a.option_strings)}
    for dest in given & set(vars(base)):
        delattr(base, dest)
    args, unknown = command.parse_known_args(argv, namespace=base)
    # `serve MODEL` names the model on the command line too: it replaces the file's.
    tag = vars(args).get("model_tag")
    if tag is not None and "model" not in given:
        args.model = tag
    return args, unknown


def _named(flag: str, argv: list[str]) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)
