"""Compares two ``gd-jax bench --json`` results and flags the variants that slowed by more than their noise.

A variant slowed when its median seconds per epoch grew by more than the two runs' noise
together (each run's half-range over its median) and by at least 5%; see
``gd_jax.cli.bench.compare_results``. Exit status 1 when any variant slowed, so that a script can
gate on it; 2 for unreadable files.

Run: ``python experiments/benchmarks/compare.py OLD.json NEW.json``
"""

from __future__ import annotations

import argparse
import json
import sys

from gd_jax.cli.bench import compare_results


def _read(path: str) -> dict:
    try:
        with open(path) as f:
            result = json.load(f)
    except FileNotFoundError:
        raise SystemExit(f"compare: {path!r} not found; pass two files written by gd-jax bench --json") from None
    except json.JSONDecodeError as e:
        raise SystemExit(f"compare: {path!r} is not JSON ({e}); pass a file written by gd-jax bench --json") from None
    if "batch_sizes" not in result:
        raise SystemExit(f"compare: {path!r} is not a gd-jax bench result (no 'batch_sizes')")
    return result


def _describe(result: dict) -> str:
    source = result.get("source") or {}
    m = result.get("machine", {})
    load = result.get("load_average_start", ["?"])[0]
    return (f"{(source.get('commit') or '?')[:10]}{' (dirty)' if source.get('dirty') else ''} on "
            f"{m.get('device_kind', '?')}, {result.get('started', '?')}, load average {load}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    args = parser.parse_args(argv)
    try:
        old, new = _read(args.old), _read(args.new)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    print(f"old: {_describe(old)}\nnew: {_describe(new)}")
    rows = compare_results(old, new)
    print(f"{'batch':>6s}  {'variant':<19s} {'old s':>9s} {'new s':>9s} {'change':>8s} {'noise':>7s}")
    for r in rows:
        print(f"{r['batch_size']:6d}  {r['variant']:<19s} {r['old']:9.4f} {r['new']:9.4f} {r['change']:+8.1%} "
              f"{r['noise']:7.1%}{'  SLOWER' if r['slowed'] else ''}")
    slowed = [r for r in rows if r["slowed"]]
    print(f"{len(slowed)} of {len(rows)} slowed by more than their noise")
    return 1 if slowed else 0


if __name__ == "__main__":
    sys.exit(main())
