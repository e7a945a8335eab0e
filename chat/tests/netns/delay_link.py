#!/usr/bin/env python3
"""A user-space Ethernet wire that delays frames: this kernel has no sch_netem.

Run inside a network namespace that holds two interfaces with no addresses (veth ends whose
peers are in the two namespaces being linked):

    delay_link.py IF_A IF_B DELAY_A_TO_B_MS DELAY_B_TO_A_MS

Every frame that arrives on IF_A leaves on IF_B DELAY_A_TO_B_MS later, and the other way round,
in order. Loss is not done here: the tests drop packets with `iptables -m statistic` on the
routers. The UDP checksum of IPv4 frames is cleared (0 = none, valid for IPv4): a packet socket
may read frames whose checksum the sending veth left for offload, and sending those on would
get them dropped. Prints `ready` once both sockets are bound, then runs until killed.

MIT OR Apache-2.0.
"""
import heapq
import select
import socket
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def clear_udp_checksum(frame):
    # Ethernet II, IPv4 (no VLAN), UDP, first fragment: zero the checksum field.
    if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
        return frame
    ihl = (frame[14] & 0x0F) * 4
    if frame[14 + 9] != 17 or (int.from_bytes(frame[20:22], "big") & 0x1FFF) != 0:
        return frame
    off = 14 + ihl + 6
    if len(frame) < off + 2:
        return frame
    return frame[:off] + b"\x00\x00" + frame[off + 2:]


def main():
    if_a, if_b = sys.argv[1], sys.argv[2]
    delays = {if_a: float(sys.argv[3]) / 1000.0, if_b: float(sys.argv[4]) / 1000.0}
    socks = {}
    for name in (if_a, if_b):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.bind((name, 0))
        s.setblocking(False)
        socks[name] = s
    other = {if_a: socks[if_b], if_b: socks[if_a]}
    by_fd = {s.fileno(): name for name, s in socks.items()}
    print("ready", flush=True)
    queue = []  # (due, seq, out socket, frame)
    seq = 0
    poller = select.poll()
    for s in socks.values():
        poller.register(s.fileno(), select.POLLIN)
    while True:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            try:
                out.send(frame)
            except OSError:
                pass  # a full queue drops, as a real link would
        timeout = None if not queue else max(0.0, queue[0][0] - time.monotonic()) * 1000.0
        for fd, _ in poller.poll(timeout):
            name = by_fd[fd]
            s = socks[name]
            while True:
                try:
                    frame, addr = s.recvfrom(65535)
                except BlockingIOError:
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue  # our own transmissions
                seq += 1
                due = time.monotonic() + delays[name]
                heapq.heappush(queue, (due, seq, other[name], clear_udp_checksum(frame)))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
