"""Atomic writes, hashing, strict JSON and provenance shared by every output file.

Conventions: ``-`` names standard output (or input) wherever a JSON or text file is named;
outputs are written to a temporary file beside the target and renamed over it only when
complete, and only over a regular file (never a device, a folder or a pipe); every JSON gif
writes is strict (no NaN or infinity); files in the hash chain (masks, influence files, edited
checkpoints) hold no timings, so the same command on the same inputs writes the same bytes.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import math
import os
import platform
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from ..errors import GifError, InputFileError, NonFiniteError, UsageError

STDIO = "-"
MAX_JSON_BYTES = 256 << 20


def gif_version() -> str:
    from .._version import __version__

    return __version__


def provenance(**extra: Any) -> dict[str, Any]:
    """What produced a file: tool versions and the command line."""
    return {
        "gif": gif_version(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        **extra,
    }


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def indices_sha256(indices) -> str:
    """sha256 of int64 indices' bytes (masks, forget sets, validation splits, ledgers)."""
    import numpy as np

    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()


def json_sha256(obj: Any) -> str:
    """sha256 of an object's canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def sha256_tensors(tensors: dict[str, torch.Tensor]) -> str:
    """Content hash of named tensors (names, dtypes, shapes and bytes; order-independent)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


_WRITTEN: contextvars.ContextVar[Optional[list[Path]]] = contextvars.ContextVar("gif_written", default=None)


@contextlib.contextmanager
def write_log() -> Iterator[list[Path]]:
    """The files finished while the block runs, in a list the caller owns (the CLI names them when a
    command is interrupted); outside any block nothing is kept."""
    log: list[Path] = []
    token = _WRITTEN.set(log)
    try:
        yield log
    finally:
        _WRITTEN.reset(token)


def _log_write(target: Path) -> None:
    """Remember a finished file; with ``GIF_WRITE_LOG`` set, also append '<rank> <path>' there
    (to audit that a distributed run writes each file once, from rank 0)."""
    owned = _WRITTEN.get()
    if owned is not None:
        owned.append(target)
    log = os.environ.get("GIF_WRITE_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{os.environ.get('RANK', '0')} {target.resolve()}\n")


def check_writable(path: str | Path) -> None:
    """Refuse, before any work, an output file that could not be written: its folder not writable or
    blocked by a file, or the path a folder, a link or not a regular file (what :func:`atomic_path`
    refuses). A missing folder is made when the file is written."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.exists():  # made, with its parents, when the file is written: nothing may be in the way
        check_folder_creatable(folder)
        return
    if not folder.is_dir():
        raise GifError(f"cannot write {target}: {folder} is a file")
    if not os.access(folder, os.W_OK):
        raise GifError(f"cannot write {target}: folder {folder} is not writable")
    if target.exists() or target.is_symlink():
        mode = os.stat(target).st_mode if target.exists() else 0
        if target.is_symlink() or not stat.S_ISREG(mode):
            what = "a folder" if stat.S_ISDIR(mode) else ("a link" if target.is_symlink() else "not a regular file")
            raise GifError(f"refusing to replace {target}: it is {what}")


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (what a missing folder would be made in)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_folder_creatable(folder: str | Path) -> None:
    """Refuse, before any work, an output folder that could not be made: a file where it or one of its
    parents should be, or the nearest existing parent not writable."""
    path = Path(folder)
    if path.exists():
        if not path.is_dir():
            raise GifError(f"cannot use {path} as a folder: it is a file")
        if not os.access(path, os.W_OK):
            raise GifError(f"cannot write into folder {path}: it is not writable")
        return
    parent = nearest_existing(path.parent)
    if not parent.is_dir():
        raise GifError(f"cannot create folder {path}: {parent} is a file")
    if not os.access(parent, os.W_OK):
        raise GifError(f"cannot create folder {path}: {parent} is not writable")


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Own an output folder for the whole command: a second gif run into the same folder is refused at
    once instead of mixing its files with this one's. The lock is an flock on a hidden file beside the
    folder (released by the system if the process dies), removed when the command ends."""
    import fcntl

    if int(os.environ.get("RANK", "0") or 0) != 0:  # under torchrun rank 0 alone writes, and so owns the folder
        yield
        return
    path = Path(folder).absolute()
    anchor = nearest_existing(path.parent)
    rel = str(path.relative_to(anchor)).replace(os.sep, "__")
    lock = anchor / f".{rel}.gif-lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise GifError(f"cannot lock {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GifError(f"{path} is in use by another gif run: wait for it, or name another folder") from None
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.unlink(lock)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success."""
    target = Path(path)
    if str(path) == STDIO:
        raise UsageError("this output cannot go to standard output ('-'); name a file")
    folder = target.parent if str(target.parent) else Path(".")
    check_writable(target)
    if not folder.exists():
        make_folder(folder)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:200]}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise GifError(f"cannot write {target}: {exc.strerror}") from None
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, target)
        _log_write(target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_finite_json(data: Any, where: str, path: str = "") -> None:
    """Raise NonFiniteError naming the first NaN/infinite number in a JSON-able value."""
    if isinstance(data, float) and not math.isfinite(data):
        raise NonFiniteError(f"refusing to write {where}: {path or 'value'} is {data}")
    if isinstance(data, dict):
        for k, v in data.items():
            check_finite_json(v, where, f"{path}.{k}" if path else str(k))
    elif isinstance(data, (list, tuple)):
        for i, v in enumerate(data):
            check_finite_json(v, where, f"{path}[{i}]")


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def write_json(path: str | Path, data: Any) -> None:
    """Strict JSON, atomically; ``-`` writes to standard output."""
    check_finite_json(data, str(path))
    write_text(path, dumps(data))


def write_text(path: str | Path, text: str) -> None:
    """Text, atomically; ``-`` writes to standard output."""
    if str(path) == STDIO:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_text(path: str | Path, kind: str, limit: int = MAX_JSON_BYTES) -> str:
    """A text input; ``-`` reads standard input."""
    if str(path) == STDIO:
        text = sys.stdin.read(limit + 1)
        if not text.strip():
            raise InputFileError(f"no {kind} on standard input")
    else:
        p = Path(path)
        if not p.is_file():
            raise InputFileError(f"{kind} file not found: {p}")
        try:
            if p.stat().st_size > limit:
                raise InputFileError(f"{p} is too large for a {kind} file")
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputFileError(f"{p} is not a readable {kind} file ({type(exc).__name__})") from None
    if len(text) > limit:
        raise InputFileError(f"{path} is too large for a {kind} file")
    return text


def _reject_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def parse_json(text: str, where: str, kind: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        raise InputFileError(f"{where} is not a readable {kind} JSON file ({type(exc).__name__})") from None
    except RecursionError:
        raise InputFileError(f"{where} is not a readable {kind} JSON file (nested too deeply)") from None


def read_json(path: str | Path, kind: str) -> Any:
    return parse_json(read_text(path, kind), "standard input" if str(path) == STDIO else str(path), kind)


def save_figure(fig, path: str | Path) -> Path:
    """Save a matplotlib figure atomically as PNG."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return Path(path)


def make_folder(folder: str | Path) -> Path:
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GifError(f"cannot create folder {folder}: {exc.strerror}") from None
    return Path(folder)


def input_sha256(path: Optional[str | Path]) -> Optional[str]:
    return None if path is None or str(path) == STDIO else sha256_file(path)


def pick_file(given: Optional[Path], recorded: Optional[str], beside: Optional[Path] = None,
          absolute: Optional[str] = None) -> Optional[Path]:
    """The given file, else the recorded one: as recorded, absolute, or beside the edited checkpoint."""
    if given is not None:
        return given
    for candidate in (recorded, absolute, str(beside / Path(recorded).name) if (beside and recorded) else None):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None
