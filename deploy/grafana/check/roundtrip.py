"""Offline check of a Grafana dashboard: decode it with grafana-foundation-sdk (Grafana's
own schema, generated from its CUE kinds), encode it again, and require that nothing was
lost or changed: a key the schema does not know (a typo, a field of another panel type) is
dropped by the decoder, and a value of the wrong type does not survive. Prints each panel's
PromQL, one per line as `ID<TAB>EXPR`, for the caller to parse with promtool.

    python roundtrip.py DASHBOARD.json
"""

import json
import sys

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard


def lost(original, again, path):
    """Every path of `original` whose value is missing or different in `again`."""
    if isinstance(original, dict):
        if not isinstance(again, dict):
            return [path]
        out = []
        for key, value in original.items():
            if key not in again:
                out.append(f"{path}.{key}")
            else:
                out.extend(lost(value, again[key], f"{path}.{key}"))
        return out
    if isinstance(original, list):
        if not isinstance(again, list) or len(again) != len(original):
            return [path]
        out = []
        for index, (value, other) in enumerate(zip(original, again)):
            out.extend(lost(value, other, f"{path}[{index}]"))
        return out
    return [] if original == again else [f"{path}: {original!r} became {again!r}"]


def main():
    register_default_plugins()
    with open(sys.argv[1], encoding="utf-8") as file:
        original = json.load(file)
    again = json.loads(json.dumps(Dashboard.from_json(original), cls=JSONEncoder))
    problems = lost(original, again, "$")
    if problems:
        print("not kept by the Grafana schema:", *problems, sep="\n  ", file=sys.stderr)
        sys.exit(1)
    for panel in original.get("panels", []):
        for target in panel.get("targets", []):
            print(f"{panel['id']}{target['refId']}\t{target['expr']}")


main()
