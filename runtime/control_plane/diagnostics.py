"""Diagnostics the control plane gives operators and agents: what a gateway's state means, why readings were refused,
and what to do about each."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

DLQ_FIX = "look at the example and the validator's rule for this series"
DLQ_FIXES = {
    "out_of_range": "if these values are real, widen min/max of the validator rule matching this series; "
    "otherwise check the sensor's scaling or wiring",
    "rate_of_change": "raise max_rate_per_s of the matching rule if the process can move this fast; else a "
    "spike: check the sensor",
    "duplicate": "the device repeats readings (same device_time): harmless; check its polling/retry settings",
    "late": "readings arrived after their window closed: raise the aggregator's allowed_lateness_s, or fix the "
    "device's clock (see clock-skew events)",
    "missing_value": "the device sent no value: check the read (register address, permissions)",
    "not_finite": "the device sent NaN/inf: check the sensor",
    "source_bad": "the source itself marked the reading BAD: check the device's status",
    # Refused by protocol sources: the payload is kept whole (MQTT: up to max_payload_bytes) for a replay.
    "invalid_json": "the publisher sends something other than JSON on this topic: fix it, or narrow the "
    "subscription's topic filter",
    "too_large": "raise the source's max_payload_bytes if such payloads are expected",
    "missing_field": "the payload lacks the mapped JSON pointer: fix the point's value/array pointer or the publisher",
    "wrong_type": "the mapped field is not a number: point the mapping at a numeric field",
    "bad_time": "the device-time field is neither ISO-8601 nor epoch milliseconds: fix the pointer or the device",
    "bad_topic": "the topic has fewer levels than the {n} placeholders in asset_id/parameter use",
    "unmapped_topic": "a subscription filter matches topics no mapping covers: add a mapping for them",
    "not_an_uplink": "the message is not an uplink of the configured network server (chirpstack or tts)",
    "bad_payload": "the uplink's frame payload is not base64: check the network server's integration",
    "unknown_device": "add a profile for this device (LoRa dev_eui), or wait for its DBIRTH (Sparkplug)",
    "short_payload": "the frame is shorter than the mapped byte fields: check byte_offset/byte_type per device",
    "unknown_remote": "add fields for this XBee remote address, or ignore a radio that is not yours",
    "invalid_payload": "not a Sparkplug B protobuf: the publisher is not a Sparkplug edge node",
    "not_sparkplug": "the topic is not spBv1.0/<group>/<type>/<edge>[/<device>]: narrow the group/edge filter",
    "unknown_message_type": "not a Sparkplug B message type: the publisher does not follow the specification",
    "unknown_edge_node": "data came before the node's NBIRTH; a rebirth was requested, later data will map",
    "unknown_alias": "data used an alias its births did not declare; a rebirth was requested",
}

ERROR_HINTS = [
    (
        re.compile(r"password authentication|authentication failed|permission denied", re.I),
        "credentials were refused: update the secret the node's config references, then redeploy",
    ),
    (
        re.compile(r"connection refused|could not connect|timed out|unreachable|name or service", re.I),
        "the peer is unreachable: check host, port, network and that the device/server is up",
    ),
    (
        re.compile(r"does not exist|unknown topic|no such", re.I),
        "something the node needs is missing (table, topic, path): check the config names",
    ),
]


def suggest_fix(error: str) -> str:
    """What a node's last error usually means, and what to do."""
    return next(
        (hint for pattern, hint in ERROR_HINTS if pattern.search(error)),
        "see get_logs for this node; a node restarting repeatedly stops after 5 restarts in 5 min",
    )


def findings(health: dict[str, Any]) -> list[dict[str, Any]]:
    """What is wrong with a gateway, from its health: Kafka not healthy, nodes not RUNNING or restarting."""
    found: list[dict[str, Any]] = []
    if health["kafka"]["status"] not in ("HEALTHY", "EXTERNAL"):
        found.append({"what": f"Kafka is {health['kafka']['status']}",
                      "fix": "nothing is lost while the broker restarts; if it stays down see get_logs for the "
                      "broker's exit and check disk space"})  # fmt: skip
    for node in health["nodes"]:
        if node["status"] == "RUNNING" and not node["restarts"]:
            continue
        found.append({"flow": node["flow"], "node": node["node"], "status": node["status"],
                      "restarts": node["restarts"], "last_error": node["last_error"],
                      "fix": suggest_fix(node["last_error"] or "")})  # fmt: skip
    return found


def dlq_groups(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dead letters grouped by (reason code, node, asset), biggest first, with an example message and the fix."""
    groups: Counter[tuple[str, str, str]] = Counter()
    examples: dict[tuple[str, str, str], str] = {}
    for record in records:
        for why in record["reasons"]:
            key = (why["code"], record.get("node_id") or "", record.get("asset_id") or "")
            groups[key] += 1
            examples.setdefault(key, why["message"])
    return [{"reason": code, "node": node, "count": count, "fix": DLQ_FIXES.get(code, DLQ_FIX), "asset_id": asset,
             "example": examples[(code, node, asset)]}
            for (code, node, asset), count in groups.most_common()]  # fmt: skip
