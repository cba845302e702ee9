# Firmware build facts. BUILD_TIME is when this firmware was built (Unix seconds): a clock that
# reads earlier than this is not trusted for coupon validity (SPEC 2.3 step 10).
FW = "0.1.0"
BUILD_TIME = 1795392000  # 2026-11-23T00:00:00Z
