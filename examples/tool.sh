#!/bin/sh
# An example bundle: a file the hub hands out to nodes by name, with its SHA-256 as the ETag.
# Publish it from the hub's machine:
#   curl -s -X PUT --data-binary @examples/tool.sh -H "X-Sheratan-Token: $TOKEN" \
#        http://127.0.0.1:8788/admin/bundles/tool.sh
# and fetch it anywhere: sheratan bundle fetch tool.sh --out tool.sh
echo "tool.sh from the hub: $(uname -sm)"
