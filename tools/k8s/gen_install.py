"""Write the kustomize base manifests/install/ from mlgitops.core.install (the one source).

    .venv/bin/python tools/k8s/gen_install.py          # rewrite the files
    .venv/bin/python tools/k8s/gen_install.py --check  # exit 1 when they differ

tests/test_install_manifests.py fails when the committed files differ from the generator.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mlgitops.core import install

TARGET = Path(__file__).resolve().parents[2] / "manifests" / "install"


def main(argv: list[str]) -> int:
    wanted = install.files()
    if "--check" in argv:
        stale = [n for n, text in wanted.items() if not (TARGET / n).is_file() or (TARGET / n).read_text() != text]
        extra = sorted(p.name for p in TARGET.glob("*.yaml") if p.name not in wanted)
        for name in [*stale, *extra]:
            print(f"manifests/install/{name} differs from mlgitops.core.install; run {__file__}")
        return 1 if stale or extra else 0
    TARGET.mkdir(parents=True, exist_ok=True)
    for name, text in wanted.items():
        (TARGET / name).write_text(text)
    for path in TARGET.glob("*.yaml"):
        if path.name not in wanted:
            path.unlink()
    print(f"wrote {len(wanted)} files to {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
