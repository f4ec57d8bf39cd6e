"""Validates a /metrics scrape with the Prometheus project's own Python parser.

Usage: check_metrics.py SCRAPE_FILE NAME=TYPE...

The whole file is parsed by prometheus_client's text-format parser
(`text_string_to_metric_families`), which raises on any line it cannot read. Then every
family must have a type and help text, appear once, and every NAME=TYPE given must be
present with that type. Histograms must be well formed: per label set, cumulative buckets
that never decrease, a `+Inf` bucket equal to `_count`, and a `_sum`. Prints one line per
family and a summary; exits non-zero with the reasons on any failure.
"""

import math
import sys
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families


def family_key(family):
    # The parser drops the `_total` of a counter's family name; the exposition has it.
    if family.type == "counter":
        return family.name + "_total"
    return family.name


def check_histogram(family, problems):
    series = defaultdict(lambda: {"buckets": [], "count": None, "sum": None})
    for s in family.samples:
        labels = {k: v for k, v in s.labels.items() if k != "le"}
        key = tuple(sorted(labels.items()))
        if s.name.endswith("_bucket"):
            series[key]["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            series[key]["count"] = s.value
        elif s.name.endswith("_sum"):
            series[key]["sum"] = s.value
    if not series:
        problems.append(f"{family.name}: a histogram without samples")
    for key, h in series.items():
        where = f"{family.name}{dict(key)}"
        buckets = sorted(h["buckets"])
        if not buckets or not math.isinf(buckets[-1][0]):
            problems.append(f"{where}: no +Inf bucket")
            continue
        counts = [c for _, c in buckets]
        if counts != sorted(counts):
            problems.append(f"{where}: bucket counts decrease: {buckets}")
        if h["count"] is None or h["count"] != counts[-1]:
            problems.append(f"{where}: _count {h['count']} is not the +Inf bucket {counts[-1]}")
        if h["sum"] is None:
            problems.append(f"{where}: no _sum")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    text = open(sys.argv[1], encoding="utf-8").read()
    expected = dict(arg.split("=", 1) for arg in sys.argv[2:])
    problems = []
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser's own error, with the offending line
        sys.exit(f"the scrape does not parse: {e!r}")
    seen = {}
    samples = 0
    for f in families:
        key = family_key(f)
        if key in seen:
            problems.append(f"{key}: the family appears twice")
        seen[key] = f.type
        samples += len(f.samples)
        if f.type in ("unknown", "untyped"):
            problems.append(f"{key}: no TYPE line")
        if not f.documentation:
            problems.append(f"{key}: no HELP text")
        if f.type == "histogram":
            check_histogram(f, problems)
        print(f"{key} {f.type} {len(f.samples)} samples")
    for name, kind in expected.items():
        if name not in seen:
            problems.append(f"{name}: missing")
        elif seen[name] != kind:
            problems.append(f"{name}: a {seen[name]}, expected a {kind}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    print(f"ok: {len(families)} families, {samples} samples")


if __name__ == "__main__":
    main()
