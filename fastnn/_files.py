"""Writing the files fastnn makes (models, predictions, ONNX graphs) without losing any.

`write_file(path, write)` is the one way fastnn writes a file:
- A regular file (or a path not there yet) is written to a temporary file beside it,
  flushed to disk, then renamed over it: a reader sees the old file or the new one,
  never half of one. A symbolic link is followed and its target replaced, so the link
  stays a link.
- A path that is not a regular file (/dev/null, /dev/stdout, a FIFO) is written through,
  as a shell's `>` would: it is never renamed over.
- The temporary file is named `.fastnn-<pid>-<random>.tmp`. It is removed when the write
  fails, when the process is interrupted, and on SIGTERM (while the default action is in
  force, the handler removes it, then the process ends by the signal as it would have);
  a SIGKILL leaves it, and the next write into that folder removes the files of
  processes that no longer exist.
- A failure (a full disk, a read-only folder) is an OSError naming the path.

`check_output(path, inputs, option)` refuses, before any work, an output that is one of
the command's own inputs (the same file, through any link), or a folder that does not
exist.
"""
import contextlib
import errno
import os
import re
import signal
import stat
import tempfile
import threading

__all__ = ["write_file", "check_output"]

_TEMPORARY = re.compile(r"\.fastnn-(\d+)-[^/]*\.tmp")


class _Terminated(BaseException):
    """SIGTERM arrived while a temporary file was open."""


def write_file(path, write, text=False):
    """Call write(f) with a file object open on `path` (binary, or text with newline="")
    and make the result `path`'s content, as the module docstring says."""
    path = os.fspath(path)
    try:
        target = os.stat(path)
    except FileNotFoundError:
        target = None
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from None
    if target is not None and stat.S_ISDIR(target.st_mode):
        raise IsADirectoryError(errno.EISDIR, f"cannot write {path}: it is a folder")
    mode, options = ("w", {"newline": ""}) if text else ("wb", {})
    if target is not None and not stat.S_ISREG(target.st_mode):
        try:  # a device or a pipe: written through, never replaced
            with open(path, mode, **options) as f:
                write(f)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from None
        return
    final = os.path.realpath(path) if os.path.islink(path) else path
    folder = os.path.dirname(os.path.abspath(final))
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, f"cannot write {path}: no folder {folder}")
    _remove_orphans(folder)
    signals = _SigtermRaises()
    tmp = None
    try:
        signals.install()
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".fastnn-{os.getpid()}-",
                                   suffix=".tmp")
        with os.fdopen(fd, mode, **options) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(final))
        os.replace(tmp, final)
    except BaseException as exc:
        signals.leaving = True  # a SIGTERM from here on waits for the cleanup
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):  # (renamed just before)
                os.unlink(tmp)
        elif signals.terminated:  # inside mkstemp: its file is there, its name not yet
            _remove_orphans(folder, ending=os.getpid())
        if isinstance(exc, OSError):
            raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from None
        raise
    finally:
        signals.leaving = True  # (set inline: a call could run the handler before its body)
        signals.restore()


def check_output(path, inputs, option):
    """Refuse (ValueError naming `option`) an output path that is one of `inputs` or whose
    folder does not exist, before any work is done."""
    if path is None:
        return
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{option} {path}: no folder {folder}")
    if os.path.isdir(path):
        raise ValueError(f"{option} {path}: it is a folder, not a file")
    for given in inputs:
        try:
            same = os.path.samefile(path, given)
        except OSError:  # one of them is not there
            continue
        if same:
            raise ValueError(f"{option} {path} is one of the command's inputs ({given}); "
                             f"writing it would destroy it: choose another path")


def _file_mode(path):
    """The permissions a written file gets: those of the file it replaces, else a new
    file's (0666 less the umask), not mkstemp's private 0600."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        pass
    try:
        with open("/proc/self/status") as f:  # the umask, without changing it
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _remove_orphans(folder, ending=None):
    """Remove this user's temporary files in `folder` whose process no longer exists
    (left by a SIGKILL, or a machine that stopped), and those of process `ending` (this
    one, when SIGTERM ends it)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = _TEMPORARY.fullmatch(name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid != ending and _alive(pid):
            continue
        try:
            entry = os.lstat(os.path.join(folder, name))
            if stat.S_ISREG(entry.st_mode) and entry.st_uid == os.geteuid():
                os.unlink(os.path.join(folder, name))
        except OSError:
            pass


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


class _SigtermRaises:
    """While a temporary file is open: SIGTERM raises _Terminated, so the write's cleanup
    runs; `restore()` then ends the process by SIGTERM as the default action would have.
    Only in the main thread, and only where SIGTERM's action is the default (a program's
    own handler is left alone).

    That the signal came is kept apart from the exception it raised: code inside the
    write may replace _Terminated by an exception of its own (numpy's savez, stopped in
    the middle of a member, raises ValueError while closing its zip file) or swallow it,
    and the process ends by SIGTERM all the same. Only the first signal raises, and none
    once `leaving` is set, so the cleanup and `restore()` always run to their end."""

    def __init__(self):
        self.installed = self.terminated = self.leaving = False

    def install(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL):
            signal.signal(signal.SIGTERM, self._raise)
            self.installed = True

    def _raise(self, signum, frame):
        first = not self.terminated
        self.terminated = True
        if first and not self.leaving:
            raise _Terminated()

    def restore(self):
        if self.installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if self.terminated:
                os.kill(os.getpid(), signal.SIGTERM)
