#!/bin/sh
# A demonstration exec connector: appends the action and the grant description (JSON on stdin)
# to grants.log beside the working directory. Exit 0 tells Countersign the call succeeded.
# Real connectors must be idempotent: the same grant id may be sent more than once.
printf '%s %s\n' "$1" "$(cat)" >> grants.log
