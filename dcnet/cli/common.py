"""What every ``elbctl`` command shares: loading the model, target flags, errors, exits.

Exit codes: 0 success, 1 invalid model / refused / failed, 2 usage, 3 target
unavailable (``plan --detailed-exitcode``: 2 means "changes").
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from dcnet.model import Model, ModelError, load_model
from dcnet.target import registry
from dcnet.target.base import Option, Target, TargetError

EXIT_INVALID, EXIT_USAGE, EXIT_UNAVAILABLE = 1, 2, 3

model_option = click.option("-f", "--file", "model_path", required=True,
                            type=click.Path(dir_okay=False),
                            help="The service model (YAML).")
output_option = click.option("-o", "--output", type=click.Choice(["text", "json"]),
                             default="text", show_default=True, help="Output format.")


def load_model_or_exit(model_path: str) -> Model:
    """The model at ``model_path``, or every problem printed (file:line: field) and exit 1."""
    try:
        return load_model(model_path)
    except ModelError as exc:
        exit_invalid_model(model_path, exc)


def exit_invalid_model(model_path: str, exc: ModelError) -> NoReturn:
    """Print every problem of an invalid model (file, line, field) and exit 1."""
    count = len(exc.problems)
    click.echo(f"{model_path}: {count} error{'s' if count != 1 else ''}", err=True)
    for problem in exc.problems:
        click.echo(f"  {problem}", err=True)
    sys.exit(EXIT_INVALID)


def fail(text: str, code: int = EXIT_INVALID) -> NoReturn:
    click.echo(f"elbctl: {text}", err=True)
    sys.exit(code)


# ---------------------------------------------------------------- target options as flags

def all_target_options() -> dict[str, tuple[Option, list[str]]]:
    """flag -> (option, names of the targets that declare it), over every target."""
    out: dict[str, tuple[Option, list[str]]] = {}
    for name in registry.available():
        for opt in registry.target_options(name):
            if not opt.flag:        # set by a generic flag (e.g. --force), not its own
                continue
            if opt.flag in out:
                out[opt.flag][1].append(name)
            else:
                out[opt.flag] = (opt, [name])
    return out


def _param_name(flag: str) -> str:
    return "t_" + flag.replace("-", "_")


def with_target_options(command):
    """Decorator: add every target's options as flags (help says which targets)."""
    for flag, (opt, owners) in sorted(all_target_options().items(), reverse=True):
        env = f"; default ${opt.envvar}" if opt.envvar else ""
        text = f"({'/'.join(owners)}) {opt.help}{env}"
        if opt.is_flag:
            command = click.option(f"--{flag}", _param_name(flag), is_flag=True,
                                   default=False, help=text)(command)
        else:
            command = click.option(f"--{flag}", _param_name(flag), type=opt.type,
                                   default=None, help=text)(command)
    return command


def target_kwargs(target: str, params: dict) -> dict:
    """The options given on the command line for ``target``; a flag of another target
    is a usage error (exit 2)."""
    cls = target_class_of(target)
    mine = {opt.flag: opt for opt in cls.options}
    out = {}
    for flag, (_opt, owners) in all_target_options().items():
        value = params.pop(_param_name(flag), None)
        if value is None or value is False:
            continue
        if flag not in mine:
            raise click.UsageError(f"--{flag} is an option of {'/'.join(owners)}, "
                                   f"not of --target {target}")
        out[mine[flag].name] = value
    return out


def target_class_of(target: str) -> type[Target]:
    try:
        return registry.target_class(target)
    except TargetError as exc:
        fail(str(exc), getattr(exc, "exit_code", EXIT_UNAVAILABLE))


def target_errors(target: str) -> tuple[tuple[type[BaseException], ...],
                                        tuple[type[BaseException], ...]]:
    """(refused, unavailable) exception types of ``target``, for one-line reports."""
    cls = target_class_of(target)
    return ((TargetError, *cls.refused_errors), cls.unavailable_errors)


def report_target_error(target: str, exc: BaseException) -> NoReturn:
    unavailable = target_errors(target)[1]
    if isinstance(exc, unavailable):
        fail(f"{target}: {exc}", EXIT_UNAVAILABLE)
    fail(f"{exc}" if isinstance(exc, TargetError) else f"{target}: {exc}",
         getattr(exc, "exit_code", EXIT_INVALID))
