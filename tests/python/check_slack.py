"""Checks the Block Kit payloads and views the Slack app sent, with the model classes of
Slack's own Python SDK (slack_sdk): every block and view must parse, pass the SDK's
validators (text lengths, element counts, required fields), and come back from the model
unchanged, so that no key the SDK does not know (and Slack would refuse) slips through.

Usage: check_slack.py PAYLOADS.json, a list of {"what": ..., "kind": "message" | "view",
"payload": {...}}. Prints one line per payload; exits 1 on the first that fails.
"""

import json
import sys

from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View


def canonical(value):
    return json.dumps(value, sort_keys=True)


def check_blocks(blocks):
    if not isinstance(blocks, list) or not blocks:
        raise ValueError("blocks must be a non-empty list")
    if len(blocks) > 50:
        raise ValueError(f"{len(blocks)} blocks; Slack takes at most 50 in a message")
    for raw in blocks:
        block = Block.parse(raw)
        if block is None:
            raise ValueError(f"not a block: {raw}")
        # to_dict validates the block and everything in it.
        back = block.to_dict()
        if canonical(back) != canonical(raw):
            raise ValueError(f"block changed by the SDK's model:\n sent {canonical(raw)}\n back {canonical(back)}")


def main():
    items = json.load(open(sys.argv[1]))
    if not items:
        print("no payloads to check")
        sys.exit(1)
    for item in items:
        what, kind, payload = item["what"], item["kind"], item["payload"]
        try:
            if kind == "message":
                if not isinstance(payload.get("text"), str) or not payload["text"]:
                    raise ValueError("a message needs a text fallback")
                check_blocks(payload["blocks"])
            elif kind == "view":
                view = View(**payload)
                back = view.to_dict()
                if canonical(back) != canonical(payload):
                    raise ValueError(f"view changed by the SDK's model:\n sent {canonical(payload)}\n back {canonical(back)}")
            else:
                raise ValueError(f"unknown kind {kind}")
        except Exception as e:  # noqa: BLE001 - every failure is reported the same way
            print(f"FAIL {what}: {e}")
            sys.exit(1)
        print(f"ok {what}")


if __name__ == "__main__":
    main()
