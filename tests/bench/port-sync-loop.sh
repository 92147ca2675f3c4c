#!/bin/sh
# The baseline `cargo xtask bench port-sync` measures port-sync against: the sidecar the seed
# article describes, written from its description. Every second it asks the JobManager for its
# RPC port with curl and jq and, when the port changed, PATCHes a JSON Patch of /spec/ports/0
# with curl. Like the original it patches by index, and remembers the port even when the PATCH
# failed (so a failed update is lost), and it never looks at the Service again.
#
# Env: JM_URL, API_URL, CA_FILE, TOKEN_FILE, NAMESPACE, SERVICE.
last=""
while true; do
  port=$(curl -s "$JM_URL/jobmanager/config" | jq -r '.[] | select(.key == "jobmanager.rpc.port") | .value')
  if [ -n "$port" ] && [ "$port" != "$last" ]; then
    curl -s -o /dev/null -X PATCH --cacert "$CA_FILE" \
      -H "Authorization: Bearer $(cat "$TOKEN_FILE")" \
      -H "Content-Type: application/json-patch+json" \
      --data "[{\"op\":\"replace\",\"path\":\"/spec/ports/0/port\",\"value\":$port},{\"op\":\"replace\",\"path\":\"/spec/ports/0/targetPort\",\"value\":$port}]" \
      "$API_URL/api/v1/namespaces/$NAMESPACE/services/$SERVICE"
    last=$port
  fi
  sleep 1
done
