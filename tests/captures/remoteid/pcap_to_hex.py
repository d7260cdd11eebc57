"""Re-encode the opendroneid wireshark-dissector sample captures into towerd's hex line form
(drivers/remoteid/protocol.py): one line per captured frame that carries F3411 data,
``[MAC] SOURCE HEX``, CR LF ended. Usage: python pcap_to_hex.py CAPTURE.pcap > LINES.txt
(see README.md; the goldens were made from its output)."""
import struct
import sys

NAN_SERVICE_ID = bytes.fromhex("8869199d9209")  # SHA-256("org.opendroneid.remoteid")[:6]
BEACON_OUI = bytes.fromhex("fa0bbc0d")  # ASD-STAN OUI + vendor type 0x0D
BLE_SERVICE = bytes.fromhex("16faff0d")  # AD type service data, UUID 0xFFFA, app code 0x0D


def pack_after(pkt, start):
    """The Message Pack (0xF? header, 25-byte messages) that begins after ``start``."""
    for i in range(start, len(pkt) - 3):
        if pkt[i] >> 4 == 0xF and pkt[i + 1] == 0x19 and pkt[i + 2] <= 9:
            end = i + 3 + 25 * pkt[i + 2]
            if end <= len(pkt):
                return pkt[i:end]
    return None


def pcap_packets(data):
    linktype = struct.unpack("<I", data[20:24])[0]
    off = 24
    while off < len(data):
        _s, _u, caplen, _o = struct.unpack("<IIII", data[off:off + 16])
        yield linktype, data[off + 16:off + 16 + caplen]
        off += 16 + caplen


def pcapng_packets(data):
    links, off = [], 0
    while off < len(data):
        btype, blen = struct.unpack("<II", data[off:off + 8])
        body = data[off + 8:off + blen - 4]
        if btype == 1:
            links.append(struct.unpack("<H", body[:2])[0])
        elif btype == 6:
            iface, _h, _l, caplen, _o = struct.unpack("<IIIII", body[:20])
            yield links[iface], body[20:20 + caplen]
        off += blen


def lines(path):
    data = open(path, "rb").read()
    packets = pcapng_packets(data) if data[:4] == b"\x0a\x0d\x0d\x0a" else pcap_packets(data)
    for linktype, pkt in packets:
        if linktype == 127:  # radiotap + 802.11
            wlan = pkt[struct.unpack("<H", pkt[2:4])[0]:]
            mac = ":".join(f"{b:02x}" for b in wlan[10:16])  # addr2, the transmitter
            for marker, source in ((BEACON_OUI, "beacon"), (NAN_SERVICE_ID, "nan")):
                i = wlan.find(marker)
                if i >= 0:
                    pack = pack_after(wlan, i + len(marker))
                    if pack is not None:
                        yield f"{mac} {source} {pack.hex().upper()}"
                    break
        elif linktype == 272:  # Nordic BLE sniffer
            i = pkt.find(BLE_SERVICE)
            if i >= 0:
                # AD: length, 0x16, 0xFFFA, app code 0x0D, counter, then a message or a pack
                payload = pkt[i + 5:i + pkt[i - 1]]
                if payload[0] >> 4 == 0xF and payload[1] == 0x19 and payload[2] <= 9:
                    payload = payload[:3 + 25 * payload[2]]  # the pack; the rest of the AD is zero padding
                yield f"bt5 {payload.hex().upper()}"


if __name__ == "__main__":
    for line in lines(sys.argv[1]):
        sys.stdout.write(line + "\r\n")
