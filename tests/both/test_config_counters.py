import json

from device import config
from device.counters import Counters
from device.ports.storage import PosixFS
from tests.both.util import raises, tmpdir

GOOD = {
    "device_id": "T-0001", "store_id": "S-001", "merchant_id": "M-ACME", "currency": "CNY",
    "secret_hex": "ab" * 32, "root_keys": ["cd" * 32], "data_dir": "var/T-0001",
    "broker": {"host": "127.0.0.1", "port": 1883, "tls": False, "username": None,
               "password": None, "root": "pos/v1"},
    "scanner": {"driver": "serial", "port": "/dev/pts/7", "baud": 9600},
    "keypad": {"driver": "serial", "port": "/dev/pts/8"},
    "display": {"driver": "jsonl", "path": "var/T-0001/screen.jsonl"},
    "printer": {"driver": "file", "path": "var/T-0001/printer.bin"},
    "console": {"driver": "serial", "port": "/dev/pts/9"},
    "limits": {"offline_max_charge": 50000, "offline_max_total": 500000,
               "offline_max_count": 2000, "offline_max_age_s": 259200},
    "pins": {"tech": "pbkdf2-sha256$1000$00ff$" + "11" * 32},
}


def _with(path, value):
    cfg = json.loads(json.dumps(GOOD))
    obj = cfg
    keys = path.split(".")
    for k in keys[:-1]:
        obj = obj[k]
    if value is KeyError:
        del obj[keys[-1]]
    else:
        obj[keys[-1]] = value
    return cfg


def test_spec_example_parses_with_defaults():
    cfg = config.parse(GOOD)
    assert cfg["broker"]["root"] == "pos/v1" and cfg["broker"]["keepalive"] == 30
    assert cfg["limits"]["offline_max_count"] == 2000
    assert cfg["status_interval_s"] == 60
    assert cfg["console"]["port"] == "/dev/pts/9"


def test_each_bad_key_is_named():
    cases = [
        ("device_id", KeyError, "device_id"),
        ("device_id", "T/1", "device_id"),
        ("currency", "cny", "currency"),
        ("secret_hex", "AB" * 32, "secret_hex"),
        ("secret_hex", "ab" * 31, "secret_hex"),
        ("root_keys", [], "root_keys"),
        ("root_keys", ["zz" * 32], "root_keys[0]"),
        ("broker.port", 0, "broker.port"),
        ("broker.port", "1883", "broker.port"),
        ("broker.tls", 1, "broker.tls"),
        ("scanner", {"port": "/dev/x"}, "scanner"),
        ("scanner.baud", True, "scanner.baud"),
        ("limits.offline_max_charge", -1, "limits.offline_max_charge"),
        ("limits.bogus", 1, "limits.bogus"),
        ("pins.tech", "sha1$1$00$11", "pins.tech"),
        ("pins.boss", "x", "pins.boss"),
    ]
    for path, value, key in cases:
        e = raises(config.ConfigError, config.parse, _with(path, value))
        assert e.key == key, (path, e.key)
        assert str(e).startswith(key + ": ")


def test_not_an_object():
    assert raises(config.ConfigError, config.parse, [1]).key == "config"


def test_load_bad_json_and_missing_file():
    d = tmpdir("cfg")
    with open(d + "/c.json", "w") as f:
        f.write("{nope")
    assert "not valid JSON" in str(raises(config.ConfigError, config.load, d + "/c.json"))
    assert "cannot read" in str(raises(config.ConfigError, config.load, d + "/none.json"))


def test_seq_and_boot_only_grow_across_reboots():
    fs = PosixFS()
    p = tmpdir("ctr") + "/counters.json"
    c = Counters(fs, p, block=10).open()
    assert c.boot == 1
    seqs = [c.next_seq() for _ in range(25)]
    assert seqs == list(range(1, 26))
    # Reboot without any clean shutdown: numbering resumes above everything sent.
    c2 = Counters(fs, p, block=10).open()
    assert c2.boot == 2
    assert c2.next_seq() > seqs[-1]


def test_seq_costs_no_write_per_message():
    fs = PosixFS()
    p = tmpdir("ctr") + "/counters.json"
    c = Counters(fs, p, block=100).open()
    before = fs.read(p)
    for _ in range(50):
        c.next_seq()
    assert fs.read(p) == before


def test_host_seq_durable_only_when_asked():
    fs = PosixFS()
    p = tmpdir("ctr") + "/counters.json"
    c = Counters(fs, p).open()
    c.accept_host_seq(5, durable=False)
    assert Counters(fs, p).open().host_seq == 0
    c.accept_host_seq(7, durable=True)
    assert Counters(fs, p).open().host_seq == 7


def test_damaged_counters_jump_ahead():
    fs = PosixFS()
    p = tmpdir("ctr") + "/counters.json"
    fs.write_atomic(p, b"{garbage")
    c = Counters(fs, p).open()
    assert c.damaged and c.next_seq() > 1 << 40
