# Drives device/drivers/serial.py and a framer on a real tty, for test_serial_pty.py.
# Runs on MicroPython (MICROPYPATH=<repo>:.frozen) and on CPython (PYTHONPATH=<repo>).
#   probe PORT BAUD scan|key
# stdout, one JSON line each:
#   {"ready": state}                 once the port is open and raw; "HELLO PROBE\r\n" is written
#   {"rx": total, "events": [...]}   after every read that returned bytes
#   {"error": text}                  a SerialError (e.g. the other end hung up); then it exits
#   {"done": state}                  after the scan "END" (or the key F4), or a 20 s limit
import json
import select
import sys
import time

from device.drivers.keypad import KeyFramer
from device.drivers.scanner import ScanFramer
from device.drivers.serial import SerialError, open_serial

LIMIT_MS = 20000

try:
    ticks_ms = time.ticks_ms
except AttributeError:  # CPython
    def ticks_ms():
        return int(time.monotonic() * 1000)


def emit(obj):
    print(json.dumps(obj))
    flush = getattr(sys.stdout, "flush", None)
    if flush:
        flush()


def main(port, baud, mode):
    framer = ScanFramer() if mode == "scan" else KeyFramer()
    last = ("scan", "END") if mode == "scan" else ("key", "F4")
    ser = open_serial({"driver": "serial", "port": port, "baud": baud})
    emit({"ready": ser.state()})
    ser.write(b"HELLO PROBE\r\n")
    poller = select.poll()
    poller.register(ser.fileno(), select.POLLIN)
    start = ticks_ms()
    rx = 0
    while ticks_ms() - start < LIMIT_MS:
        poller.poll(50)  # sleep until bytes (or a hang-up) arrive
        try:
            data = ser.read_available()
        except SerialError as e:
            emit({"error": str(e)})
            return
        if not data:
            continue
        rx += len(data)
        events = [list(e) for e in framer.feed(data)]
        emit({"rx": rx, "events": events})
        if events and tuple(events[-1]) == last:
            break
    emit({"done": ser.state()})
    ser.close()


main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
