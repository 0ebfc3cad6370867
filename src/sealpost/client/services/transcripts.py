"""Transcripts: the copy of a message this device sends, for this account's other devices.

Each send that asks for one (``Outgoing.transcript``) is wrapped in a
:class:`~sealpost.protocol.content.SentTranscript` naming its conversation (the contact,
by account id and name, or the group) and pairwise-encrypted to every other device of this
account, so each of them shows the message as sent from this account. A device alone in
its account has no one to copy to and makes none. Both the pairwise send pipeline
(:mod:`.sending`) and the group encryptor (:mod:`.group_encryptor`) use it.
"""

from __future__ import annotations

from collections.abc import Callable

from sealpost.client.rows import ContactRow, Envelopes, Outgoing
from sealpost.client.services.pairwise import PairwiseEncryptor
from sealpost.protocol.content import SentTranscript, encode_content
from sealpost.protocol.wire import SenderCertificate

__all__ = ["Transcripts"]


class Transcripts:
    """Copies of sent messages, encrypted to this account's other devices (``own_row``:
    them, as a contact; ``gossip``: the tree head each message carries)."""

    def __init__(
        self,
        encryptor: PairwiseEncryptor,
        *,
        own_row: Callable[[], ContactRow],
        gossip: Callable[[], bytes | None],
    ) -> None:
        self._encryptor = encryptor
        self._own_row = own_row
        self._gossip = gossip

    async def of(
        self, item: Outgoing, contact: ContactRow | None, sender_cert: SenderCertificate
    ) -> Envelopes:
        """The copy of ``item`` (sent to ``contact``, or to a group) for the other devices."""
        own = self._own_row()
        if not item.transcript or not own.devices:
            return []
        inner = item.unpadded()
        if item.group is not None:
            copy = SentTranscript(item.content.sent_at, inner, group_id=item.group)
        else:
            assert contact is not None
            copy = SentTranscript(
                item.content.sent_at, inner, account_id=contact.account_id, name=contact.username
            )
        return await self._encryptor.encrypt(own, encode_content(copy, self._gossip()), sender_cert)
