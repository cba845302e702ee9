# Writing a whole buffer to an unbuffered file (the jsonl display, the file printer).


def write_all(f, data):
    """Unbuffered file (buffering=0): nothing of a failed write lingers to resurface with the
    next; a raw write may be short, so loop."""
    view = memoryview(data)
    while len(view):
        n = f.write(view)
        if not n:
            raise OSError("short write")
        view = view[n:]
