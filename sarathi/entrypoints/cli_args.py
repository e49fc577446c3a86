"""argparse flags generated from the config dataclasses (one definition per option)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any

from sarathi.config import SECTION_TYPES, VALUE_ALIASES, EngineConfig, field_type, parse_size
from sarathi.sampling_params import MODEL_DEFAULT_KEYS, SamplingParams

# Flags that, left unset, take the model's value (--generation-config), as
# LLM.get_default_sampling_params gives it: its sampling options, and its max_new_tokens as
# max_tokens.
MODEL_DEFAULT_FLAGS = (*MODEL_DEFAULT_KEYS, "max_tokens")

_SAMPLING_HELP = {
    "temperature": "Sampling temperature; 0 is greedy.",
    "top_p": "Nucleus sampling: keep the smallest set of tokens with this much probability.",
    "top_k": "Keep only the k most likely tokens, and any tied with the k-th (0 or -1: all).",
    "min_p": "Drop tokens less likely than min_p times the most likely one.",
    "presence_penalty": "Penalty for tokens already generated (OpenAI semantics).",
    "frequency_penalty": "Penalty proportional to how often a token was generated.",
    "repetition_penalty": "Divides positive logits of tokens seen in prompt or output (>1 "
    "discourages repeats).",
    "max_tokens": "Most tokens to generate.",
    "min_tokens": "Fewest tokens to generate before EOS or stop tokens may end the output.",
    "ignore_eos": "Keep generating after the end-of-sequence token.",
    "n": "Number of completions per prompt.",
    "logprobs": "Report the log-probabilities of this many most likely tokens per step, "
    "in --json's output (default: none reported).",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def dashed(argv: list[str]) -> list[str]:
    """vLLM's spelling rule for every flag: ``--foo_bar`` is ``--foo-bar`` (values, and
    everything after a bare ``--``, untouched), so vLLM command lines written with
    underscores run as they are."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + argv[i:]
        if arg.startswith("--"):
            flag, eq, value = arg.partition("=")
            arg = flag.replace("_", "-") + eq + value
        out.append(arg)
    return out


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """One flag per config field; ``--foo-bar`` and ``--foo_bar`` (and aliases) all work."""
    for section, typ in SECTION_TYPES.items():
        group = parser.add_argument_group(f"{section} options")
        for f in fields(typ):
            meta = f.metadata
            names = [_flag(f.name)]
            if "_" in f.name:
                names.append("--" + f.name)
            for alias in meta.get("aliases", ()):
                names += dict.fromkeys([_flag(alias), "--" + alias])
            names += list(meta.get("short", ()))
            default = f.default if f.default is not MISSING else None
            # An unset default is described by the help itself ("Default: 1024 on ..."); a
            # "(default: None)" after it would contradict it.
            help_text = meta["help"] if default is None else f"{meta['help']} (default: {default})"
            kind = field_type(f.type)[0]
            kwargs: dict[str, Any] = {
                "dest": f.name,
                "default": argparse.SUPPRESS,
                # The fields' help is prose; argparse reads "%" as a format directive.
                "help": help_text.replace("%", "%%"),
            }
            if kind is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif meta.get("kind") == "size":
                kwargs["type"] = _size
                kwargs["metavar"] = "BYTES"
            elif meta.get("kind") == "json":
                kwargs["type"] = str
                kwargs["metavar"] = "JSON"
            else:
                kwargs["type"] = kind
                if meta.get("choices") and f.name != "attention_backend":
                    kwargs["choices"] = meta["choices"]
                    if f.name in VALUE_ALIASES:
                        # Another name of a choice (--dtype half) is read as it: argparse
                        # converts a value before it checks the choices.
                        kwargs["type"] = _aliased(VALUE_ALIASES[f.name])
            group.add_argument(*names, **kwargs)


def _aliased(aliases: dict[str, str]) -> Callable[[str], str]:
    def value(text: str) -> str:
        return aliases.get(text, text)

    return value


def _size(value: str) -> int | None:
    try:
        return parse_size(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def add_sampling_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling options")
    for f in fields(SamplingParams):
        if f.name not in _SAMPLING_HELP:
            continue
        kind = field_type(f.type)[0]
        kwargs: dict[str, Any] = {
            "dest": f"sp_{f.name}",
            "default": f.default,
            "help": _SAMPLING_HELP[f.name]
            + ("" if f.default is None else f" (default: {f.default})"),
        }
        if f.name in MODEL_DEFAULT_FLAGS:
            # Unset: the model's default (--generation-config), as LLM.generate takes it.
            kwargs["default"] = None
            model_value = "max_new_tokens" if f.name == "max_tokens" else "default"
            kwargs["help"] = (
                f"{_SAMPLING_HELP[f.name]} Unset: the model's {model_value} "
                f"(--generation-config), else {f.default}."
            )
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            kwargs["metavar"] = f.name.upper()  # not the sp_ destination's name
        group.add_argument(_flag(f.name), **kwargs)
    group.add_argument(
        "--stop",
        action="append",
        dest="sp_stop",
        default=None,
        metavar="STOP",
        help="Stop string (repeatable); not included in the output.",
    )


def engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    names = {f.name for typ in SECTION_TYPES.values() for f in fields(typ)}
    return {k: v for k, v in vars(args).items() if k in names}


def sampling_kwargs(
    args: argparse.Namespace, defaults: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The sampling flags as SamplingParams keywords; a flag of MODEL_DEFAULT_FLAGS left
    unset takes its value from ``defaults`` (the model's), else SamplingParams' default."""
    given = {k[3:]: v for k, v in vars(args).items() if k.startswith("sp_")}
    for key in MODEL_DEFAULT_FLAGS:
        if given.get(key) is None:
            given.pop(key, None)
            if defaults and key in defaults:
                given[key] = defaults[key]
    return given


def config_from_args(args: argparse.Namespace) -> EngineConfig:
    kwargs = engine_kwargs(args)
    tag = getattr(args, "model_tag", None)
    if tag is not None:  # `serve MODEL`, as vLLM takes it
        if kwargs.get("model", tag) != tag:
            raise ValueError(f"two models given: {tag!r} and --model {kwargs['model']!r}")
        kwargs["model"] = tag
    return EngineConfig.from_kwargs(**kwargs)
