"""Delay every packet of a network namespace's forwarded traffic, without netem.

``python support_delayer.py QUEUE DELAY_MS JITTER_MS LOSS`` runs inside the switch namespace of a
host (tests/support_netns.py), where ``iptables -A FORWARD -j NFQUEUE --queue-num QUEUE`` hands
every forwarded packet to this program through the kernel's nfnetlink_queue; it gives each its
verdict (ACCEPT) DELAY_MS +- JITTER_MS milliseconds later, so the packet goes on late, or drops
it with probability LOSS (a fraction, at random). It talks
netlink itself (no libnetfilter_queue): bind the queue, copy packet metadata only, read packet
ids, send verdicts. Packets keep their order (a later verdict never overtakes an earlier one),
as on a single link.
"""

from __future__ import annotations

import heapq
import os
import random
import select
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_CFG_CMD_PF_BIND = 3
NFQNL_COPY_META = 1
NF_DROP = 0
NF_ACCEPT = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2


def _attribute(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def _message(kind: int, queue: int, attributes: bytes, flags: int = NLM_F_REQUEST) -> bytes:
    # nfgenmsg: family (AF_UNSPEC), version 0, resource id (the queue, big-endian).
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attributes
    header = struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, 0, 0)
    return header + body


def _config(queue: int, command: int, family: int = socket.AF_INET) -> bytes:
    return _message(
        NFQNL_MSG_CONFIG,
        queue,
        _attribute(NFQA_CFG_CMD, struct.pack("!BxH", command, family)),
        NLM_F_REQUEST | NLM_F_ACK,
    )


def _packet_ids(data: bytes) -> list[int]:
    ids = []
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            break
        if kind == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", data, offset + 16)
            if error:
                raise OSError(-error, os.strerror(-error))
        elif kind & 0xFF == NFQNL_MSG_PACKET:
            position = offset + 20  # netlink header, nfgenmsg
            while position + 4 <= offset + length:
                size, attribute = struct.unpack_from("=HH", data, position)
                if size < 4:
                    break
                if attribute & 0x7FFF == NFQA_PACKET_HDR:
                    ids.append(struct.unpack_from("!I", data, position + 4)[0])
                position += (size + 3) & ~3
        offset += (length + 3) & ~3
    return ids


def main(queue: int, delay_ms: float, jitter_ms: float, loss: float) -> None:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((0, 0))
    for command in (
        _config(queue, NFQNL_CFG_CMD_PF_BIND),
        _config(queue, NFQNL_CFG_CMD_BIND),
        _message(
            NFQNL_MSG_CONFIG,
            queue,
            _attribute(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)),
            NLM_F_REQUEST | NLM_F_ACK,
        ),
    ):
        sock.send(command)
        _packet_ids(sock.recv(65536))  # the acknowledgement; raises on an error
    print("ready", flush=True)
    pending: list[tuple[float, int]] = []
    last_due = 0.0
    while True:
        timeout = max(0.0, pending[0][0] - time.monotonic()) if pending else None
        readable, _, _ = select.select([sock], [], [], timeout)
        if readable:
            for packet_id in _packet_ids(sock.recv(65536)):
                jitter = random.uniform(-jitter_ms, jitter_ms) if jitter_ms else 0.0
                due = max(last_due, time.monotonic() + (delay_ms + jitter) / 1000)
                last_due = due
                heapq.heappush(pending, (due, packet_id))
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, packet_id = heapq.heappop(pending)
            decision = NF_DROP if loss and random.random() < loss else NF_ACCEPT
            verdict = _attribute(NFQA_VERDICT_HDR, struct.pack("!II", decision, packet_id))
            sock.send(_message(NFQNL_MSG_VERDICT, queue, verdict))


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
