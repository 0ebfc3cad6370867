"""Write tests/vectors/sealpost-v1.json and kt-map-v1.json (run via `make vectors`).

Keeps the recorded ML-KEM ciphertext of an existing file, so regenerating after an
intended change alters only what that change alters.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "vectors")]

from kt_map_kat import generate as generate_map  # noqa: E402
from sealpost_kat import generate  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "tests/vectors/sealpost-v1.json")
    ciphertext = None
    if out.exists():
        ciphertext = bytes.fromhex(json.loads(out.read_text())["inputs"]["kem_ciphertext"])
    out.write_text(json.dumps(generate(ciphertext), indent=2) + "\n")
    print(f"wrote {out}")
    kt_map = out.with_name("kt-map-v1.json")
    kt_map.write_text(json.dumps(generate_map(), indent=2) + "\n")
    print(f"wrote {kt_map}")


if __name__ == "__main__":
    main()
