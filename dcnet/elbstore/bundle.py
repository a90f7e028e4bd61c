"""A model and the files it names, read for ``elbctl push`` and written back for agents.

:func:`collect` reads the model through the existing loader (``parse_model`` exactly as
``load_model`` calls it), recording every CIDR list it reads, and adds the files of the
HAProxy template directory (``haproxy.templates``). Every such file must lie inside the
model's directory (a relative path without ``..``): an agent recreates the same tree in
its own cache directory and loads it with ``load_model``, so what a director applies is
what the loader validated at push time. A problem is a :class:`ModelError` naming file,
line and field, raised before anything is written to etcd.

Every file is read through :mod:`dcnet.model.inputs`, like ``load_model`` reads it: size
bounded (a FIFO or ``/dev/zero`` is refused at the limit), UTF-8 only with the line of
the first bad byte, and confined after symlinks are resolved (a list file or template
that is a symlink leading out of the model's directory is refused, never stored).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

from dcnet.lvs.layout import layouts
from dcnet.model import Model, ModelError, Problem, inputs, load_model, parse_model
from dcnet.model.loader import read_model_text

MAX_TEMPLATE_FILES = 1000
MAX_TEMPLATE_BYTES = 1024 * 1024       # one template file


@dataclass(frozen=True)
class Collected:
    model: Model
    files: dict[str, str]
    model_file: str


def inside(name: str) -> bool:
    """A relative path that stays inside its base directory."""
    norm = os.path.normpath(name)
    return not os.path.isabs(name) and norm != ".." and not norm.startswith("../") and \
        norm != "."


def collect(model_path: str) -> Collected:
    """The validated model and every file it needs, keyed by path relative to its dir."""
    path = os.fspath(model_path)
    text = read_model_text(path)
    base = os.path.dirname(os.path.abspath(path))
    model_file = os.path.basename(path)
    files = {model_file: text}
    allowed = [os.path.realpath(base)]

    def read_text(name: str) -> str:
        if not inside(name):
            raise inputs.InputError(f"{name!r} is outside the model's directory; a model "
                                    "stored in etcd may only name files inside it")
        real = inputs.confine(base, name, allowed)
        content = inputs.read_text(real, inputs.MAX_LIST_BYTES)
        files[os.path.normpath(name)] = content
        return content

    model = parse_model(text, source=path, read_text=read_text,
                        files_dir=os.path.dirname(path))
    folder = model.haproxy.templates
    if folder is not None:
        files.update(_templates(path, base, folder))
    return Collected(model, files, model_file)


def _templates(path: str, base: str, folder: str) -> dict[str, str]:
    def problem(message: str) -> ModelError:
        return ModelError([Problem(path, None, "haproxy.templates", message)])

    if not inside(folder):
        raise problem(f"{folder!r} is outside the model's directory; a model stored in etcd "
                      "may only name a template directory inside it")
    root = os.path.join(base, folder)
    if not os.path.isdir(root):
        raise problem(f"template directory {root} does not exist")
    out: dict[str, str] = {}
    allowed = [os.path.realpath(base)]
    for dirpath, _dirs, names in os.walk(root):
        for name in sorted(names):
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.relpath(full, base))
            try:
                out[rel] = inputs.read_text(inputs.confine(base, rel, allowed),
                                            MAX_TEMPLATE_BYTES)
            except inputs.InputError as exc:
                raise ModelError([Problem(full, exc.line, "haproxy.templates",
                                          f"cannot use template: {exc}")]) from None
            if len(out) > MAX_TEMPLATE_FILES:
                raise problem(f"more than {MAX_TEMPLATE_FILES} files under {root}")
    return out


def layout_docs(model: Model) -> list[dict]:
    """The services' layouts as stored with a revision (for ``elbctl backend``)."""
    return [layout.to_json() for layout in layouts(model)]


def materialise(files: dict[str, str], model_file: str, directory: str) -> str:
    """Write ``files`` as a fresh tree at ``directory`` (replacing it atomically) and
    return the model's path there."""
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".stage-", dir=parent)
    try:
        for name, text in files.items():
            if not inside(name):
                raise ValueError(f"stored file name {name!r} leaves the model directory")
            full = os.path.join(staging, name)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w", encoding="utf-8") as fh:
                fh.write(text)
        old = None
        if os.path.exists(directory):
            old = f"{directory}.old.{os.getpid()}"
            os.rename(directory, old)
        os.rename(staging, directory)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return os.path.join(directory, model_file)


def load_files(files: dict[str, str], model_file: str, directory: str) -> Model:
    """Recreate the files under ``directory`` and load them with the existing loader."""
    return load_model(materialise(files, model_file, directory))
