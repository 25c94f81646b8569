"""``p3d verify PATH``: check the checksums of a feature store (or merged feature file), a ``p3d train`` run folder,
a training checkpoint or a ``.safetensors`` weight file, and say what is intact.

Exit status 0 when nothing is damaged (intact, or unverified: written before checksums), 1 when something is.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="feature store, merged feature file, run folder, checkpoint (.pt) or weights")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from p3d.apps.verify import verify_path

    report = verify_path(args.path)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
        return 0 if report.ok else 1
    for f in report.findings:
        print(f"  {f.status.upper() if f.status == 'damaged' else f.status:<10}  {f.path.name}: {f.detail}")
    counts = ", ".join(f"{report.count(s)} {s}" for s in ("intact", "unverified", "damaged") if report.count(s))
    print(f"{report.kind} {report.path}: {len(report.findings)} file(s) checked: {counts or 'none'}")
    for note in report.notes:
        print(f"  {note}")
    return 0 if report.ok else 1
