"""``python -m sarathi``: subcommands ``serve``, ``generate`` and ``info``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, NoReturn

from sarathi import __version__
from sarathi.config import DEMO_MODEL
from sarathi.entrypoints.cli_args import (
    MODEL_DEFAULT_FLAGS,
    add_engine_args,
    add_sampling_args,
    config_from_args,
    dashed,
    sampling_kwargs,
)
from sarathi.entrypoints.config_file import config_path, parse_with_config
from sarathi.sampling_params import StructuredOutputsParams

if TYPE_CHECKING:
    from sarathi.outputs import CompletionOutput


def interruptible() -> None:
    """Start-up is over: from here a Ctrl-C raises KeyboardInterrupt (``main`` answers 130),
    where ``python -m sarathi`` had it exit at once while the command started."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _generate(args: argparse.Namespace) -> int:
    from sarathi.entrypoints.llm import LLM
    from sarathi.sampling_params import SamplingParams

    config = config_from_args(args)
    if args.sp_logprobs is not None and not args.json:
        # The plain output is the text alone: the log-probabilities asked for would be
        # computed and never shown. Said before the model loads.
        raise ValueError("--logprobs is printed with --json only; add --json")
    if args.echo and args.json:
        # Each JSON line carries its prompt already; the flag would be taken and never read.
        raise ValueError(
            "--echo is for the plain output; with --json each line has its prompt under "
            '"prompt"; leave one of them out'
        )
    try:
        constraint = _constraint(args)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Checked before the model loads; rebuilt below with the model's defaults.
    params = SamplingParams(**sampling_kwargs(args), structured_outputs=constraint)
    prompts = list(args.prompt or [])
    if args.prompt_file:
        try:
            prompts += _read_prompt_file(args.prompt_file)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    elif not prompts:
        prompts = ["Hello, my name is"]
    llm = LLM.from_config(config)
    interruptible()
    # Flags left unset take the model's defaults (--generation-config), as LLM.generate does.
    model_defaults = llm.get_default_sampling_params()
    params = SamplingParams(
        **sampling_kwargs(args, {k: getattr(model_defaults, k) for k in MODEL_DEFAULT_FLAGS}),
        structured_outputs=constraint,
    )
    if llm.get_tokenizer() is None:
        print(
            "error: generate takes text prompts, which need a tokenizer; "
            "--skip-tokenizer-init is for token-id prompts (the server, or LLM.generate)",
            file=sys.stderr,
        )
        return 2
    if constraint is not None:
        try:
            llm.engine.structured.compile(constraint)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    # The model's max_new_tokens is a cap, as the server reads it: an output it bounds stops
    # at the end of the context instead.
    capped_by_model = args.sp_max_tokens is None and llm.engine.setup.max_new_tokens is not None
    refused: dict[int, str] = {}  # prompt index -> why it is not run
    if params.max_tokens is not None and not capped_by_model:
        # As the server answers: a completion that cannot fit is refused, not cut short;
        # the other prompts still run.
        context = llm.engine.max_seq_len
        asked = f"--max-tokens is {params.max_tokens}"
        if args.sp_max_tokens is None:
            asked = f"max_tokens is {params.max_tokens} (the default; --max-tokens sets it)"
        for i, prompt in enumerate(prompts):
            n = len(llm.get_tokenizer().encode(prompt))
            if n + params.max_tokens > context:
                refused[i] = (
                    f"the prompt {prompt[:40]!r} has {n} tokens and {asked}: "
                    f"{n + params.max_tokens} tokens, more than this "
                    f"model's context of {context}; lower --max-tokens or shorten the prompt"
                )
    run = [prompt for i, prompt in enumerate(prompts) if i not in refused]
    outputs = iter(llm.generate(run, params) if run else [])
    failed = False
    for i, prompt in enumerate(prompts):
        out = None if i in refused else next(outputs)
        error = refused[i] if out is None else out.error
        failed = failed or error is not None
        if args.json:
            choices = [] if out is None else out.outputs
            print(
                json.dumps(
                    {
                        "prompt": prompt,
                        "error": error,
                        "outputs": [_json_choice(c, params.logprobs is not None) for c in choices],
                    }
                )
            )
            continue
        if error is not None or out is None:
            print(f"error: {error}", file=sys.stderr)
            continue
        for c in out.outputs:
            print(f"{out.prompt}{c.text}" if args.echo else c.text)
            if len(prompts) > 1 or len(out.outputs) > 1:
                print("-" * 40)
    if not run:
        return 2  # nothing could run: a usage error, as a bad flag is
    return 1 if failed else 0


def _read_prompt_file(path: str) -> list[str]:
    """The prompts of --prompt-file, one per non-blank line ("-": standard input). Errors
    name the flag, and a file without prompts is one: it used to fall back to the example
    prompt without a word."""
    try:
        if path == "-":
            lines = sys.stdin.buffer.read().decode("utf-8").splitlines()
        else:
            with open(path, encoding="utf-8") as f:
                lines = [line.rstrip("\n") for line in f]
        prompts = [line.rstrip("\r") for line in lines if line.strip()]
    except OSError as e:
        raise OSError(f"--prompt-file {path!r}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"--prompt-file {path!r} is not UTF-8 text ({e.reason})") from e
    if not prompts:
        raise ValueError(f"--prompt-file {path!r} holds no prompts (one per non-blank line)")
    return prompts


def _json_choice(c: CompletionOutput, logprobs: bool) -> dict[str, Any]:
    """One output of ``--json``; with ``--logprobs``, each step's top tokens as
    ``{token id: log-probability}`` and their sum over the chosen tokens."""
    choice: dict[str, Any] = {
        "text": c.text,
        "token_ids": c.token_ids,
        "finish_reason": c.finish_reason,
    }
    if logprobs:
        choice["cumulative_logprob"] = c.cumulative_logprob
        choice["logprobs"] = [
            {str(t): lp.logprob for t, lp in step.items()} for step in c.logprobs or []
        ]
    return choice


def _constraint(args: argparse.Namespace) -> StructuredOutputsParams | None:
    """The --json-schema / --regex / --choice / --grammar constraint (at most one)."""
    given = {
        name: value
        for name, value in (
            ("json", args.json_schema),
            ("regex", args.regex),
            ("choice", args.choice),
            ("grammar", args.grammar),
        )
        if value is not None
    }
    if not given:
        return None
    if len(given) > 1:
        raise ValueError("give one of --json-schema, --regex, --choice and --grammar")
    ((name, value),) = given.items()
    path = None
    if name in ("json", "grammar") and os.path.isfile(value):
        path = value
        flag = "--json-schema" if name == "json" else "--grammar"
        # The file's problems name the flag and the file, as --prompt-file's do: for a binary
        # file Python's own "'utf-8' codec can't decode byte 0xff ..." names neither.
        try:
            with open(value, encoding="utf-8") as f:
                value = f.read()
        except OSError as e:
            raise OSError(f"{flag} {path!r}: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{flag} {path!r} is not UTF-8 text ({e.reason})") from None
    if name == "json":
        # Said now, naming the flag (a mistyped path, most often), not after the model has
        # loaded as "the JSON schema is not valid JSON".
        if os.path.isdir(value):
            raise ValueError(f"--json-schema {value!r} is a folder; give a JSON schema file")
        try:
            json.loads(value)
        except ValueError as e:
            if path is not None:
                raise ValueError(f"--json-schema {path!r} does not hold JSON ({e})") from None
            raise ValueError(
                f"--json-schema {value[:80]!r} is neither a file nor JSON ({e})"
            ) from None
    if name == "grammar" and path is None:
        # Every Lark or GBNF rule has a colon ("start: ...", "root ::= ..."); a value without
        # one is a mistyped path, said now rather than as a parse error after the model loads.
        if os.path.isdir(value):
            raise ValueError(f"--grammar {value!r} is a folder; give a grammar file")
        if ":" not in value:
            raise ValueError(f"--grammar {value!r} is neither a file nor a grammar (no rule)")
    if name == "choice":
        value = tuple(value)
    spec = StructuredOutputsParams(**{name: value})
    if name == "regex":
        from sarathi.structured_output.compiler import validated_grammar

        try:
            validated_grammar(spec)  # no vocabulary needed: said before the model loads
        except ValueError as e:
            raise ValueError(f"--regex {value!r}: {_one_line(str(e))}") from None
    return spec


def _one_line(message: str) -> str:
    """llguidance's regex errors span lines: its first line, a caret drawing under the
    pattern, an ``error: ...`` line that says what is wrong, and the grammar it built. A
    command's error is one line: the first and the ``error:`` line's reason."""
    first, *rest = message.splitlines() or [""]
    reasons = [line.strip().removeprefix("error:").strip() for line in rest]
    reasons = [r for line, r in zip(rest, reasons, strict=True) if line.strip() != r]
    return " ".join([first.strip(), *reasons[:1]])


def _serve(args: argparse.Namespace) -> int:
    from sarathi.entrypoints.openai_server.api_server import run_server

    if args.max_body_bytes_in_flight < args.max_request_bytes:
        # A body between the two would be refused with 503 and Retry-After for ever.
        raise ValueError(
            f"--max-body-bytes-in-flight ({args.max_body_bytes_in_flight}) is below "
            f"--max-request-bytes ({args.max_request_bytes}): a body between the two could "
            "never be taken"
        )
    keys = args.api_key or []
    if len(keys) > 1 and keys[-1] == DEMO_MODEL and args.model_tag is None:
        # --api-key takes every value after it: `serve --api-key KEY demo` made "demo" a
        # key that any client could send. A model folder there is refused as each key is
        # parsed (openai_server.args._key); "demo" only here, where the keys' count is known.
        raise ValueError(
            f"{DEMO_MODEL!r} after --api-key is read as a key (--api-key takes every value "
            "after it); put the model first (`serve demo --api-key KEY`) or give it with "
            "--model"
        )
    if not args.allowed_origins:
        # CORS is off without origins (vLLM's default is all of them): these would be taken
        # and never read.
        for flag, given in (
            ("--allowed-methods", args.allowed_methods != ["*"]),
            ("--allowed-headers", args.allowed_headers != ["*"]),
            ("--allow-credentials", args.allow_credentials),
        ):
            if given:
                raise ValueError(
                    f"{flag} is read only with --allowed-origins (without it, no CORS "
                    "headers are sent); add --allowed-origins '[\"https://app.example\"]' "
                    "(vLLM's default is '[\"*\"]') or leave it out"
                )
    if getattr(args, "skip_tokenizer_init", False):
        # No tokenizer, no chat: these would be taken and never read.
        for flag, given in (
            ("--chat-template", args.chat_template is not None),
            ("--tool-call-parser", args.tool_call_parser != "auto"),
        ):
            if given:
                raise ValueError(
                    f"{flag} is not read with --skip-tokenizer-init (token ids in and out, "
                    "no chat); leave one of them out"
                )
    return run_server(args)


def _info(args: argparse.Namespace) -> int:
    import torch

    import sarathi
    import vattention
    from sarathi.transformers_utils.demo import demo_model_built, demo_model_folder

    print(f"sarathi {sarathi.__version__}")
    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
    print(f"vattention backends: {', '.join(vattention.available_backends())}")
    # A Hugging Face folder like any other: `adaptivocab build --tokenizer` takes it.
    demo = demo_model_folder()
    print(f"demo model: {demo}{'' if demo_model_built(demo) else ' (built on first use)'}")
    return 0


class _Parser(argparse.ArgumentParser):
    """A usage error is one line: argparse's own printed the whole usage first, which for
    ``serve`` is ~60 lines of flags above the line that says what was wrong."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Each command's parser, so an unknown flag is reported by (and points to the help
        # of) the command it was given to, not the top-level parser.
        self.commands: dict[str, argparse.ArgumentParser] = {}

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> _Parser:
    # The console script's name when run as it, else the module form.
    script = os.path.basename(sys.argv[0]) == "sarathi"
    parser = _Parser(
        prog="sarathi" if script else "python -m sarathi",
        description=(
            "Sarathi: LLM serving with vAttention KV caching and AdaptiVocab vocabularies. "
            "With no --model, the embedded random-weight demo model is used."
        ),
    )
    parser.add_argument("--version", action="version", version=f"sarathi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="Run the OpenAI-compatible HTTP server.")
    serve.add_argument(
        "model_tag",
        nargs="?",
        metavar="MODEL",
        help="The model to serve, as vLLM takes it (the same as --model).",
    )
    _add_server_args(serve)
    add_engine_args(serve)
    _add_config_arg(serve)
    serve.set_defaults(func=_serve)
    parser.commands["serve"] = serve

    gen = sub.add_parser("generate", help="Generate completions for prompts and print them.")
    gen.add_argument("--prompt", action="append", help="Prompt text (repeatable).")
    gen.add_argument(
        "--prompt-file",
        help="File with one prompt per line (blank lines are skipped); - reads standard input.",
    )
    gen.add_argument(
        "--echo",
        action="store_true",
        help="Print the prompt before each output (plain output; --json lines carry it).",
    )
    gen.add_argument("--json", action="store_true", help="Print one JSON object per prompt.")
    constrain = gen.add_argument_group(
        "structured output options", "Constrain every output (docs/structured-outputs.md)."
    )
    constrain.add_argument(
        "--json-schema", metavar="SCHEMA", help="A JSON schema, or a file holding one."
    )
    constrain.add_argument("--regex", help="A regular expression the whole output matches.")
    constrain.add_argument(
        "--choice", action="append", help="One of the allowed outputs (repeatable)."
    )
    constrain.add_argument("--grammar", help="A Lark or GBNF grammar, or a file holding one.")
    add_engine_args(gen)
    add_sampling_args(gen)
    _add_config_arg(gen)
    gen.set_defaults(func=_generate)
    parser.commands["generate"] = gen

    info = sub.add_parser("info", help="Print versions and the available backends.")
    info.set_defaults(func=_info)
    parser.commands["info"] = info
    return parser


def _add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="A YAML file of this command's flags, as vLLM's --config: each key a flag's name "
        "(max-num-seqs or max_num_seqs), each value its value (true/false for a switch, a "
        "list for several values); flags on the command line win over the file's.",
    )


def _add_server_args(parser: argparse.ArgumentParser) -> None:
    from sarathi.entrypoints.openai_server.args import add_server_args

    add_server_args(parser)


def _parse(parser: _Parser, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The command line, over a command's --config file where it names one."""
    first = next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))
    command = parser.commands.get(argv[first]) if first < len(argv) else None
    path = config_path(argv[first + 1 :]) if command is not None else None
    if command is None or path is None:
        return parser.parse_known_args(argv)
    parser.parse_known_args(argv[:first])  # --help or --version before the command
    args, unknown = parse_with_config(command, argv[first + 1 :], path)
    args.command = argv[first]
    return args, unknown


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        # Building the parser imports the server's modules: a Ctrl-C then is an interrupted
        # start, as one during the command is.
        parser = build_parser()
        args, unknown = _parse(parser, dashed(sys.argv[1:] if argv is None else argv))
        if unknown:
            where = parser.commands.get(args.command or "", parser)
            where.error(f"unrecognized arguments: {' '.join(unknown)}")
        if args.command is None:
            parser.print_help()
            return 0
        return args.func(args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
