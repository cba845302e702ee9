# Charges in batches (docs/protocol.md, "Charges in batches"; docs/decisions.md 2026-12-04):
# the project's own types, beside SPEC 3.2's `charge` and `charge_result`, that let a terminal
# with many charges pending (a drain after an outage) send up to `batch` of them in one message
# and get their results in one. Only used where both ends said so: the terminal puts "batch" in
# its hello, the host answers with `caps`; a peer that knows only SPEC 3.2 never sees these
# types.
#
# Each item is exactly a `charge` / `charge_result` body and is checked as one by its handler,
# so a bad item is dropped and counted alone; the body check here is the envelope of items.
# Exactly-once still rests on each item's cid (SPEC 3.1): a batch is a carrier, not a unit.
from protocol import schema as s
from protocol.messages import register

# The most items in one `charges` or `charge_results`: 32 one-coupon charges seal to ~4 KB,
# far below the broker's and the terminal's message limits (protocol/limits.py).
MAX_ITEMS = 32
MIN_ITEMS = 2


def items(b, hi=MAX_ITEMS):
    """The items of a batch body: a list of 1..hi maps."""
    xs = s.req(b, "items", s.array, hi)
    if len(xs) < 1:
        raise s.MessageError("items", "at least 1 entry")
    for i, x in enumerate(xs):
        s.mapping(x, "items[%d]" % i)
    return xs


def _caps(b):
    n = s.req(b, "batch", s.uint)
    if n > MAX_ITEMS:
        raise s.MessageError("batch", "at most %d" % MAX_ITEMS)


def hello_batch(body):
    """The batch size a hello offers (the "batch" key, absent in SPEC's hello): an int >= 2,
    or 0 when the terminal does not batch or the value is not one."""
    n = body.get("batch")
    if type(n) is not int or n < MIN_ITEMS:
        return 0
    return min(n, MAX_ITEMS)


register("charges", "up", items)
register("charge_results", "down", items)
register("caps", "down", _caps)
