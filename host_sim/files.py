# Files the host side writes whole or not at all: configs holding device secrets, keystores,
# keys, broker password files, printable sheets.
import os


def write_atomic(path, data, mode=0o600):
    """Writes data (bytes or text) to path so that a crash leaves the old file or the new one,
    never a torn one: a temp file beside it with `mode` set before any byte lands (a secret is
    never readable by others, not even for a moment), fsync'd, renamed over path, and the
    directory fsync'd so the rename survives a power cut. Raises OSError."""
    if isinstance(data, str):
        data = data.encode()
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # O_CREAT's mode is cut by the umask; an old tmp keeps its own
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dirfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
    return path
