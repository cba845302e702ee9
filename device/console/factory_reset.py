# Factory reset: erasing a terminal's config and data so that it boots unprovisioned. Made
# durable first (a marker beside the config), then finished once nothing has the data open.
import json
import os

RESET_SUFFIX = ".reset"


def unsafe_dir(path):
    """True for data_dir values a wipe must never touch: empty, the root, or climbing up."""
    if type(path) is not str:
        return True
    parts = [p for p in path.split("/") if p and p != "."]
    return not parts or ".." in parts


def schedule_factory_reset(fs, config_path, data_dir):
    """Makes the reset durable: a marker beside the config naming the data to wipe. The wipe
    itself is finish_factory_reset(), run once the agent has stopped (device/main.py does it at
    exit and again at every start, so a cut at any point still ends in a clean terminal)."""
    fs.write_atomic(config_path + RESET_SUFFIX, json.dumps({"data_dir": data_dir}).encode())


def finish_factory_reset(fs, config_path):
    """Completes a scheduled reset: wipes data_dir, removes the config, then the marker.
    Returns True when there was one. Run before anything opens the data."""
    raw = fs.read(config_path + RESET_SUFFIX)
    if raw is None:
        return False
    try:
        data_dir = json.loads(raw)["data_dir"]
    except (ValueError, KeyError, TypeError):
        data_dir = None
    if not unsafe_dir(data_dir):
        wipe_tree(data_dir)
    fs.remove(config_path)
    fs.remove(config_path + ".tmp")
    fs.remove(config_path + RESET_SUFFIX)
    return True


def _is_dir(path):
    st = (getattr(os, "lstat", None) or os.stat)(path)
    return st[0] & 0xF000 == 0x4000  # S_IFDIR; with lstat a symlink is removed, not followed


def wipe_tree(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        full = path + "/" + name
        try:
            if _is_dir(full):
                wipe_tree(full)
            else:
                os.remove(full)
        except OSError:
            pass
    try:
        os.rmdir(path)
    except OSError:
        pass
