#!/usr/bin/env python3
"""Docker HEALTHCHECK of the service image: healthy once GET /readyz answers 200 (model loaded, warmed up).

Standard library only, so that the check costs no torch import; the port comes from TLCR_PORT.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("TLCR_PORT", "8000")
    url = f"http://127.0.0.1:{port}/readyz"
    request = urllib.request.Request(url)
    api_key = os.environ.get("TLCR_API_KEY")
    key_file = os.environ.get("TLCR_API_KEY_FILE")
    if not api_key and key_file:  # the entrypoint's secret-file convention; health checks bypass it
        try:
            with open(key_file, encoding="utf-8") as handle:
                api_key = handle.read().strip()
        except OSError as exc:
            print(f"TLCR_API_KEY_FILE={key_file}: {exc}", file=sys.stderr)
            return 1
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=4) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"{url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
