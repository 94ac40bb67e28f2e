"""The Sendmail milter protocol, version 6, as the MTA side speaks it: sans-I/O.

Job: turn MTA events into milter command packets and the filter's bytes into
typed responses, keeping per-connection state (negotiated actions and steps,
the macros the filter asked for, which reply the next packet must be).
Inputs: calls such as ``connect()``, ``helo()``, ``header()`` and the bytes
read from the filter socket (``receive``).  Outputs: bytes to write
(``data_to_send``) and ``Response`` objects; a broken filter raises
``MilterError`` with a reason fit for the log.  No sockets, no clock.

Wire format (libmilter ``mfdef.h``): a packet is a 4-octet big-endian length
that counts the command octet and the data, the command octet, the data.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

VERSION = 6
MAX_PACKET = 1024 * 1024 + 1024  # the largest reply we accept (SMFIP_MDS_1M bodies)
CHUNK = 65535  # body chunk size (MILTER_CHUNK_SIZE)

# MTA -> filter commands (SMFIC_*)
ABORT, BODY, CONNECT, MACRO, BODYEOB, HELO = b"A", b"B", b"C", b"D", b"E", b"H"
QUIT_NC, HEADER, MAIL, EOH, OPTNEG, QUIT = b"K", b"L", b"M", b"N", b"O", b"Q"
RCPT, DATA, UNKNOWN = b"R", b"T", b"U"

COMMAND_NAMES = {
    ABORT: "SMFIC_ABORT",
    BODY: "SMFIC_BODY",
    CONNECT: "SMFIC_CONNECT",
    BODYEOB: "SMFIC_BODYEOB",
    HELO: "SMFIC_HELO",
    HEADER: "SMFIC_HEADER",
    MAIL: "SMFIC_MAIL",
    EOH: "SMFIC_EOH",
    OPTNEG: "SMFIC_OPTNEG",
    QUIT: "SMFIC_QUIT",
    RCPT: "SMFIC_RCPT",
    DATA: "SMFIC_DATA",
    UNKNOWN: "SMFIC_UNKNOWN",
}

# Actions a filter may ask for (SMFIF_*)
SMFIF_ADDHDRS = 0x01
SMFIF_CHGBODY = 0x02
SMFIF_ADDRCPT = 0x04
SMFIF_DELRCPT = 0x08
SMFIF_CHGHDRS = 0x10
SMFIF_QUARANTINE = 0x20
SMFIF_CHGFROM = 0x40
SMFIF_ADDRCPT_PAR = 0x80
SMFIF_SETSYMLIST = 0x100
ALL_ACTIONS = 0x1FF

# Protocol steps (SMFIP_*)
SMFIP_NOCONNECT = 0x01
SMFIP_NOHELO = 0x02
SMFIP_NOMAIL = 0x04
SMFIP_NORCPT = 0x08
SMFIP_NOBODY = 0x10
SMFIP_NOHDRS = 0x20
SMFIP_NOEOH = 0x40
SMFIP_NR_HDR = 0x80
SMFIP_NOUNKNOWN = 0x100
SMFIP_NODATA = 0x200
SMFIP_SKIP = 0x400
SMFIP_RCPT_REJ = 0x800
SMFIP_NR_CONN = 0x1000
SMFIP_NR_HELO = 0x2000
SMFIP_NR_MAIL = 0x4000
SMFIP_NR_RCPT = 0x8000
SMFIP_NR_DATA = 0x10000
SMFIP_NR_UNKN = 0x20000
SMFIP_NR_EOH = 0x40000
SMFIP_NR_BODY = 0x80000
SMFIP_HDR_LEADSPC = 0x100000
SMFIP_MDS_256K = 0x10000000
SMFIP_MDS_1M = 0x20000000
# What this client supports (Postfix offers the same set for version 6).
ALL_STEPS = 0x1FFFFF | SMFIP_MDS_256K | SMFIP_MDS_1M

# Which step flag skips a command, and which says "no reply".
_SKIP_FLAG = {
    CONNECT: SMFIP_NOCONNECT,
    HELO: SMFIP_NOHELO,
    MAIL: SMFIP_NOMAIL,
    RCPT: SMFIP_NORCPT,
    BODY: SMFIP_NOBODY,
    HEADER: SMFIP_NOHDRS,
    EOH: SMFIP_NOEOH,
    UNKNOWN: SMFIP_NOUNKNOWN,
    DATA: SMFIP_NODATA,
}
_NOREPLY_FLAG = {
    CONNECT: SMFIP_NR_CONN,
    HELO: SMFIP_NR_HELO,
    MAIL: SMFIP_NR_MAIL,
    RCPT: SMFIP_NR_RCPT,
    DATA: SMFIP_NR_DATA,
    UNKNOWN: SMFIP_NR_UNKN,
    EOH: SMFIP_NR_EOH,
    BODY: SMFIP_NR_BODY,
    HEADER: SMFIP_NR_HDR,
}

# Macro stages (SMFIM_*), as the filter names them in its OPTNEG reply.
STAGE_CONNECT, STAGE_HELO, STAGE_MAIL, STAGE_RCPT = 0, 1, 2, 3
STAGE_DATA, STAGE_EOM, STAGE_EOH = 4, 5, 6
STAGE_OF_COMMAND = {
    CONNECT: STAGE_CONNECT,
    HELO: STAGE_HELO,
    MAIL: STAGE_MAIL,
    RCPT: STAGE_RCPT,
    DATA: STAGE_DATA,
    BODYEOB: STAGE_EOM,
    EOH: STAGE_EOH,
}

# Filter -> MTA replies (SMFIR_*)
DECISIONS = {
    b"a": "accept",
    b"c": "continue",
    b"d": "discard",
    b"r": "reject",
    b"t": "tempfail",
    b"y": "replycode",
    b"s": "skip",
}
MODIFICATIONS = {
    b"+": "addrcpt",
    b"-": "delrcpt",
    b"2": "addrcpt_par",
    b"e": "chgfrom",
    b"h": "addheader",
    b"i": "insheader",
    b"m": "chgheader",
    b"b": "replbody",
    b"q": "quarantine",
    b"p": "progress",
}
_MODIFICATION_ACTION = {
    "addrcpt": SMFIF_ADDRCPT,
    "addrcpt_par": SMFIF_ADDRCPT_PAR,
    "delrcpt": SMFIF_DELRCPT,
    "chgfrom": SMFIF_CHGFROM,
    "addheader": SMFIF_ADDHDRS,
    "insheader": SMFIF_ADDHDRS,
    "chgheader": SMFIF_CHGHDRS,
    "replbody": SMFIF_CHGBODY,
    "quarantine": SMFIF_QUARANTINE,
}


class MilterError(Exception):
    """The filter broke the protocol; the text names the fault for the log."""


@dataclass(frozen=True)
class Response:
    """One reply packet from the filter.

    ``kind`` is a decision (accept, continue, discard, reject, tempfail,
    replycode, skip), a modification (addheader, insheader, chgheader,
    addrcpt, addrcpt_par, delrcpt, chgfrom, replbody, quarantine) or
    ``progress``.  ``args`` are the NUL-separated strings of the packet;
    ``index`` the header index of insheader/chgheader; ``data`` the raw
    body of replbody.
    """

    kind: str
    args: tuple[str, ...] = ()
    index: int = 0
    data: bytes = b""

    @property
    def final(self) -> bool:
        """Whether this reply ends the command (progress and the
        modifications come before the end-of-message decision)."""
        return self.kind in DECISIONS.values()


@dataclass
class Negotiated:
    """What OPTNEG agreed: the filter's actions and steps, its macro lists."""

    version: int = VERSION
    actions: int = 0
    steps: int = 0
    macros: dict[int, tuple[str, ...]] = field(default_factory=dict)


def packet(command: bytes, data: bytes = b"") -> bytes:
    """One packet on the wire."""
    return struct.pack(">I", len(data) + 1) + command + data


def _strings(values: Iterable[str]) -> bytes:
    return b"".join(v.encode("utf-8", "surrogateescape") + b"\0" for v in values)


def _split(data: bytes) -> tuple[str, ...]:
    parts = data.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return tuple(p.decode("utf-8", "surrogateescape") for p in parts)


def macro_names(value: str) -> tuple[str, ...]:
    """A Postfix macro list (``"i {auth_authen}"``) as names."""
    return tuple(value.replace(",", " ").split())


class MilterConnection:
    """The state of one conversation with one filter.

    The caller sends one command at a time and reads replies with
    ``receive`` until a final one comes (``awaiting`` is then False).
    """

    def __init__(
        self,
        *,
        actions: int = ALL_ACTIONS,
        steps: int = ALL_STEPS,
        version: int = VERSION,
        max_packet: int = MAX_PACKET,
    ) -> None:
        self.offered_actions = actions
        self.offered_steps = steps
        self.version = version
        self.max_packet = max_packet
        self.negotiated: Negotiated | None = None
        self.awaiting: bytes | None = None  # the command whose reply is due
        self._out = bytearray()
        self._in = bytearray()

    # -- sending -----------------------------------------------------------------
    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def negotiate(self) -> None:
        """SMFIC_OPTNEG: our version, the actions and steps we allow."""
        data = struct.pack(">III", self.version, self.offered_actions, self.offered_steps)
        self._send(OPTNEG, data, expect=True)

    def wants(self, command: bytes) -> bool:
        """Whether the filter asked to see this command at all."""
        flag = _SKIP_FLAG.get(command, 0)
        return not (self._steps & flag)

    def replies(self, command: bytes) -> bool:
        """Whether the filter answers this command."""
        if command in (QUIT, QUIT_NC, ABORT):
            return False
        if command == MACRO:
            return False
        return not (self._steps & _NOREPLY_FLAG.get(command, 0))

    def macros_for(self, command: bytes, defaults: Sequence[str]) -> tuple[str, ...]:
        """The macro names to send before ``command``: the filter's own list
        when it gave one in OPTNEG (SMFIF_SETSYMLIST), else ours."""
        stage = STAGE_OF_COMMAND.get(command)
        neg = self.negotiated
        if stage is not None and neg is not None and stage in neg.macros:
            return neg.macros[stage]
        return tuple(defaults)

    def send_macros(self, command: bytes, values: Sequence[tuple[str, str]]) -> None:
        """SMFIC_MACRO for the next command; nothing when there are none."""
        if not values:
            return
        flat: list[str] = []
        for name, value in values:
            flat += [name, value]
        self._send(MACRO, command + _strings(flat), expect=False)

    def command(self, command: bytes, data: bytes = b"") -> bool:
        """Send one command; True when a reply must be read."""
        expect = self.replies(command)
        self._send(command, data, expect=expect)
        return expect

    def _send(self, command: bytes, data: bytes, *, expect: bool) -> None:
        if self.awaiting is not None:
            raise MilterError(f"internal: {COMMAND_NAMES.get(command)} while awaiting a reply")
        self._out += packet(command, data)
        if expect:
            self.awaiting = command

    @property
    def _steps(self) -> int:
        return self.negotiated.steps if self.negotiated is not None else 0

    # -- receiving ---------------------------------------------------------------
    def receive(self, data: bytes) -> list[Response]:
        """Bytes from the filter; the complete replies they finish."""
        self._in += data
        out: list[Response] = []
        while len(self._in) >= 4:
            (length,) = struct.unpack(">I", self._in[:4])
            if length == 0:
                raise MilterError("malformed reply packet: zero length")
            if length > self.max_packet:
                raise MilterError(f"reply packet too large: {length} octets")
            if len(self._in) < 4 + length:
                break
            cmd = bytes(self._in[4:5])
            body = bytes(self._in[5 : 4 + length])
            del self._in[: 4 + length]
            if self.awaiting is None:
                raise MilterError(f"unexpected reply packet '{cmd.decode('latin-1')}'")
            response = self._parse(cmd, body)
            out.append(response)
            if response.final:
                self.awaiting = None
        return out

    def _parse(self, cmd: bytes, body: bytes) -> Response:
        awaiting = self.awaiting
        name = COMMAND_NAMES.get(awaiting or b"", "?")
        if awaiting == OPTNEG:
            if cmd != OPTNEG:
                raise MilterError(f"{name} reply: unexpected reply '{cmd.decode('latin-1')}'")
            self.negotiated = self._negotiation(body)
            return Response("continue")
        if cmd in DECISIONS:
            kind = DECISIONS[cmd]
            if kind == "replycode":
                text = _split(body)
                if (
                    not text
                    or len(text[0]) < 3
                    or text[0][0] not in "45"
                    or not text[0][:3].isdigit()
                ):
                    raise MilterError(f"{name} reply: malformed reply code")
                return Response(kind, (text[0],))
            if kind == "skip" and awaiting != BODY:
                raise MilterError(f"{name} reply: SMFIR_SKIP outside the body")
            return Response(kind)
        if cmd in MODIFICATIONS:
            kind = MODIFICATIONS[cmd]
            if kind == "progress":
                return Response(kind)
            if awaiting != BODYEOB:
                raise MilterError(f"{name} reply: modification '{kind}' before end of message")
            neg = self.negotiated
            need = _MODIFICATION_ACTION[kind]
            if neg is None or not (neg.actions & need):
                raise MilterError(f"{name} reply: '{kind}' without negotiating it")
            if kind == "replbody":
                return Response(kind, data=body)
            if kind in ("insheader", "chgheader"):
                if len(body) < 4:
                    raise MilterError(f"{name} reply: malformed {kind}")
                (index,) = struct.unpack(">I", body[:4])
                args = _split(body[4:])
                if len(args) != 2:
                    raise MilterError(f"{name} reply: malformed {kind}")
                return Response(kind, args, index=index)
            args = _split(body)
            wanted = {"addheader": 2, "addrcpt": 1, "delrcpt": 1, "quarantine": 1}
            if kind in wanted and len(args) != wanted[kind]:
                raise MilterError(f"{name} reply: malformed {kind}")
            if kind in ("chgfrom", "addrcpt_par") and not 1 <= len(args) <= 2:
                raise MilterError(f"{name} reply: malformed {kind}")
            return Response(kind, args)
        raise MilterError(f"{name} reply: unknown reply code '{cmd.decode('latin-1')}'")

    def _negotiation(self, body: bytes) -> Negotiated:
        if len(body) < 12:
            raise MilterError("SMFIC_OPTNEG reply: malformed packet")
        version, actions, steps = struct.unpack(">III", body[:12])
        if version < 2 or version > VERSION:
            raise MilterError(f"SMFIC_OPTNEG reply: unsupported protocol version {version}")
        if actions & ~self.offered_actions:
            raise MilterError(
                f"SMFIC_OPTNEG reply: requested actions 0x{actions:x}"
                f" beyond 0x{self.offered_actions:x}"
            )
        # Steps we do not know are ignored, as Postfix does for MDS flags.
        steps &= self.offered_steps
        macros: dict[int, tuple[str, ...]] = {}
        rest = body[12:]
        while rest:
            if len(rest) < 5:
                raise MilterError("SMFIC_OPTNEG reply: malformed macro list")
            (stage,) = struct.unpack(">I", rest[:4])
            end = rest.find(b"\0", 4)
            if end < 0:
                raise MilterError("SMFIC_OPTNEG reply: unterminated macro list")
            if actions & SMFIF_SETSYMLIST:
                macros[stage] = macro_names(rest[4:end].decode("utf-8", "replace"))
            rest = rest[end + 1 :]
        return Negotiated(version, actions, steps, macros)


# -- packet bodies of the commands --------------------------------------------------
def connect_data(hostname: str, family: str, port: int, address: str) -> bytes:
    """SMFIC_CONNECT: ``family`` is '4', '6', 'L' (unix socket) or 'U' (unknown)."""
    if family == "U":
        return _strings([hostname]) + b"U"
    return _strings([hostname]) + family.encode() + struct.pack(">H", port) + _strings([address])


def strings_data(*values: str) -> bytes:
    """SMFIC_HELO, SMFIC_MAIL, SMFIC_RCPT, SMFIC_HEADER: NUL-terminated strings."""
    return _strings(values)
