"""Every limit of the protocol core in one place, with the reason beside it."""

from __future__ import annotations

from typing import Final

__all__ = [
    "MAX_ARCHIVED_SESSIONS",
    "MAX_FORWARD_SKIP",
    "MAX_OLD_RECEIVING_CHAINS",
    "MAX_PLAINTEXT",
    "MAX_SKIPPED_KEYS",
    "MAX_WIRE_MESSAGE",
    "WIRE_VERSION",
]

#: The only wire version this implementation speaks. Anything else is refused.
WIRE_VERSION: Final = 1

#: How far ahead of the next expected message a message may be in one chain. Bounds the
#: work (two HMACs a key) and memory an attacker can make us spend with a forged counter,
#: while tolerating that many lost or delayed messages. (Signal's libsignal allows more;
#: the design asks for 2000.)
MAX_FORWARD_SKIP: Final = 2000

#: How many skipped message keys a session keeps in all, across chains. The oldest are
#: dropped first: a message that late is treated as lost. Bounds session size (~80 KiB).
MAX_SKIPPED_KEYS: Final = 2000

#: How many previous receiving chains are remembered (their skipped keys and, for duplicate
#: detection, their public keys). Matches libsignal's MAX_RECEIVER_CHAINS.
MAX_OLD_RECEIVING_CHAINS: Final = 5

#: Largest plaintext one ratchet message may carry. Attachments travel as separate blobs,
#: so a message is text plus metadata; this matches the server's 96 KiB envelope limit
#: with room for headers.
MAX_PLAINTEXT: Final = 64 * 1024

#: Largest encoded wire message the decoder accepts at all (PreKeyMessage around a maximal
#: ratchet message). Anything larger is refused before it is parsed.
MAX_WIRE_MESSAGE: Final = 96 * 1024

#: How many previous sessions with one remote device are kept behind the current one. Two
#: devices that start a session with each other at the same moment end up with two, and a
#: message may still arrive in the older one; a device re-installed starts a new one. Each
#: is tried in turn on a message the current one cannot decrypt, so this bounds that work
#: and a session record's size (libsignal keeps 40; four is plenty for a few devices).
MAX_ARCHIVED_SESSIONS: Final = 4
