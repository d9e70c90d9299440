#!/usr/bin/env python3
"""Size of the web UI as frozen into the firmware (shrunk and gzip -9, as scripts/build_assets.py does).
Goal: under 25 KB gzipped in total (it lives in flash and crosses a slow AP link)."""
import gzip
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from build_assets import asset_files, read_asset  # noqa: E402 (what is frozen is what is measured)
BUDGET = 25 * 1024


def sizes(web=os.path.join(ROOT, "web")):
    """[(url, raw bytes, gzipped bytes)] of every file served from `web`, as frozen (the
    budget test, tests/host/test_budgets.py, uses this too)."""
    out = []
    for url, _ in asset_files(web):
        raw = read_asset(web, url)
        out.append((url, len(raw), len(gzip.compress(raw, 9, mtime=0))))
    return out


def main():
    total_raw = total_gz = 0
    print("%-24s %8s %8s" % ("file", "raw", "gzipped"))
    for url, raw, gz in sizes():
        total_raw += raw
        total_gz += gz
        print("%-24s %8d %8d" % (url.lstrip("/") + (" (+ js/*.js)" if url == "/app.js" else ""), raw, gz))
    print("%-24s %8d %8d  (budget %d: %s)" % ("total", total_raw, total_gz, BUDGET,
                                               "ok" if total_gz <= BUDGET else "OVER"))
    return 0 if total_gz <= BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())
