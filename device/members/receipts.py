# Receipts that wait for the host (SPEC 8.1: `charge_result` may carry "bal", printed on the
# receipt). A member payment or top-up committed online shows `committed` at once ("sent:
# waiting for the host") and its receipt is printed when the answer arrives, with the new
# balance and points (a VIP sale: the period it paid, SPEC 8.2 / issue 10), or after WAIT_S
# seconds without them. A declined answer prints nothing: the charge becomes the supervisor's
# notice like any declined charge. Offline commits and plain sales print at once.
from device.members.screen import day
from device.sales.escpos import format_amount
from device.sales.receipt import build_receipt
from device.screens import messages

WAIT_S = 3
WAITING_KINDS = ("member", "topup", "vip")


class HeldReceipts:
    def __init__(self, queue, shop, clock):
        self.queue = queue
        self.shop = shop
        self.clock = clock
        self._held = []  # [{"rec", "coupons", "member", "until", "result", "answer"}]

    def hold(self, result, coupons, member):
        """The till's commit result, made to wait for the answer when it is an online member
        payment, top-up or VIP sale; any other result is returned as it is."""
        if not result.get("ok") or not result.get("sent") \
                or result.get("kind") not in WAITING_KINDS:
            return result
        found = self.queue.find(result["cid"])
        if found is None:  # compacted away already: nothing to wait for
            return result
        rec, answer = found
        held = dict(result)
        held.pop("receipt", None)
        held["lines"] = [self._title(rec), messages.WAITING_FOR_HOST]
        self._held.append({"rec": rec, "coupons": list(coupons), "member": member,
                           "until": self.clock.now_f() + WAIT_S, "result": held,
                           "answer": answer})
        return held

    def _title(self, rec):
        return messages.member_title(rec["kind"]) + " " + format_amount(rec["amt"], rec["cur"])

    def on_resolve(self, kind, rec, answer):
        """Queue listener: the answer to a charge whose receipt may be waiting."""
        for h in self._held:
            if h["rec"] is rec or h["rec"]["cid"] == rec.get("cid"):
                h["answer"] = answer

    def waiting(self):
        return len(self._held)

    def tick(self, clerk, now):
        """Clerk ticker: prints the receipts whose answer came or whose wait ran out, and puts
        the outcome on `committed` (the result shown there is the held one)."""
        if not self._held:
            return []
        out = []
        t = self.clock.now_f()
        for h in list(self._held):
            answer = h["answer"]
            if answer is None and t < h["until"]:
                continue
            self._held.remove(h)
            title = h["result"]["lines"][0]
            if answer is not None and answer.get("st") == "declined":
                h["result"]["lines"] = [title, messages.declined_code(answer.get("code")),
                                        messages.NO_RECEIPT]
            else:
                rec = h["rec"]
                out.append(("print", build_receipt(rec, self.shop, h["coupons"], h["member"],
                                                   answer)))
                lines = [title]
                if answer is None:
                    lines.append(messages.HOST_SLOW)
                else:
                    lines.append(messages.APPROVED)
                    if "bal" in answer:
                        lines.append(messages.balance_line(format_amount(answer["bal"],
                                                                         rec["cur"])))
                    if "vip" in answer:
                        lines.append(messages.vip_until(day(answer["vip"]["end"])))
                h["result"]["lines"] = lines
            clerk.touch()
        return out
