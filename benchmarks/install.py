"""The base install (`pip install tlcr`: the reward service's HTTP client) as a training environment meets it.

Builds the wheel from a copy of this checkout, installs it with no extra into a fresh virtual environment, and
measures against the goals (issue 21):

- disk: what the install adds to the fresh venv's site-packages (pip and setuptools were there before): <= 20 MB
- time: `pip install tlcr-*.whl` (its dependencies from the configured index or pip's cache): <= 15 s
- `python -c "import tlcr.service.client"`: <= 0.3 s (median of fresh processes), with no torch, transformers
  or fastapi imported

    python benchmarks/install.py [--runs 5] [--json out.json]

Exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"disk_mb": 20.0, "install_s": 15.0, "import_s": 0.3}
HEAVY = ("torch", "transformers", "fastapi", "uvicorn", "numpy")
IMPORT_SCRIPT = f"""
import sys, time
start = time.perf_counter()
import tlcr.service.client
elapsed = time.perf_counter() - start
print(elapsed, ",".join(m for m in {HEAVY!r} if m in sys.modules))
"""


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def build_wheel(work: Path) -> Path:
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv*", ".git", "build", "dist", "runs", "tests",
                                                                "*.egg-info", "__pycache__", "docs", "docker"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(work / "dist"), str(source)], check=True, capture_output=True)
    return next((work / "dist").glob("tlcr-*.whl"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="fresh processes timing the client's import")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tlcr-install-") as tmp:
        work = Path(tmp)
        wheel = build_wheel(work)
        venv = work / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip())
        before = folder_bytes(site)
        start = time.perf_counter()
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                       check=True, cwd=work)
        install_s = time.perf_counter() - start
        disk_mb = (folder_bytes(site) - before) / 1e6
        freeze = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
                                check=True, capture_output=True, text=True).stdout.split()

        import_times, heavy = [], set()
        for _ in range(args.runs):
            out = subprocess.run([str(python), "-c", IMPORT_SCRIPT], check=True, capture_output=True, text=True,
                                 cwd=work).stdout.split()
            import_times.append(float(out[0]))
            heavy.update(filter(None, out[1:2][0].split(",")) if len(out) > 1 else ())
        import_s = statistics.median(import_times)

    results = {"disk_mb": round(disk_mb, 2), "install_s": round(install_s, 2), "import_s": round(import_s, 4),
               "heavy_modules_imported": sorted(heavy), "installed": freeze}
    print(f"base install: {len(freeze)} distributions: {' '.join(freeze)}")
    rows = [("disk added (MB)", disk_mb, GOALS["disk_mb"]), ("pip install (s)", install_s, GOALS["install_s"]),
            ("import tlcr.service.client (s, median)", import_s, GOALS["import_s"])]
    met = not heavy
    for name, value, goal in rows:
        ok = value <= goal
        met &= ok
        print(f"{name:<42} {value:8.3f}   goal <= {goal:g}   {'met' if ok else 'NOT MET'}")
    print(f"heavy modules imported by the client: {sorted(heavy) or 'none'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
