#!/usr/bin/env bash
# An echo tool in bash + jq, speaking line/1 (docs/line-protocol.md).
# stdout carries protocol messages only; anything else goes to stderr.
while IFS= read -r line; do
  case "$(jq -r .type <<<"$line")" in
    heartbeat) echo '{"type":"heartbeat_ack"}' ;;
    invoke) jq -c '{type: "response", session_id, request_id} +
      if .action == "validate" then
        if .data.credentials.api_key == "bad"
        then {status: "error", error: {type: "CredentialsValidationError", message: "invalid api_key"}}
        else {status: "success", data: {result: true}} end
      else {status: "success", data: {type: "text", content: (.data.parameters.text // "" | tostring)}} end' <<<"$line" ;;
  esac
done
