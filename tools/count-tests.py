#!/usr/bin/env python3
"""Count test cases in a meson testlog.json: TAP subtests ("ok"/"not ok"
lines) for TAP tests, one case per program for the others. Prints
"PASSED FAILED"."""
import json
import re
import sys

passed = failed = 0
with open(sys.argv[1], encoding="utf-8", errors="replace") as log:
    for line in log:
        entry = json.loads(line)
        out = (entry.get("stdout") or "") + (entry.get("stderr") or "")
        oks = len(re.findall(r"^ok\b", out, re.M))
        bad = len(re.findall(r"^not ok\b", out, re.M))
        result = entry.get("result", "")
        if oks or bad:
            passed += oks
            failed += bad
            if bad == 0 and result not in ("OK", "SKIP", "EXPECTEDFAIL"):
                failed += 1  # crashed or timed out outside a test case
        elif result in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif result != "SKIP":
            failed += 1
print(passed, failed)
