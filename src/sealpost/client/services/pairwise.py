"""The pairwise encryptor: one plaintext, ratchet-encrypted and sealed to each device of
one account (a contact, or this account's other devices).

For each device it takes the session held for it (loaded from the store once, then kept
in memory), or starts one with PQXDH from the device's prekey bundle (whose certificate
must be the one the directory verified). Each message is a ratchet step
(:meth:`Session.encrypt`), sealed with the sender certificate to the device's identity key
(sealed sender). The steps stay in memory until the send batch commits them
(:meth:`PairwiseEncryptor.session_records`); if that commit fails, :meth:`forget` drops
them, so the stored state is reloaded and nothing produced by them was sent.

Group messages are not encrypted here: the group encryptor (the groups service) seals
one body for every member's devices and uses this encryptor only to hand out its sender
keys.
"""

from __future__ import annotations

from collections.abc import Iterable

from sealpost.client.context import ClientContext
from sealpost.client.errors import ServerError
from sealpost.client.paths import api_path
from sealpost.client.rows import ContactRow, Envelopes
from sealpost.client.transport import unb64
from sealpost.crypto.dh import DhPublicKey
from sealpost.protocol import PreKeyBundle, Session, seal
from sealpost.protocol.session_record import SessionRecord
from sealpost.protocol.wire import SenderCertificate

__all__ = ["Address", "PairwiseEncryptor", "SessionCache"]

Address = tuple[bytes, int]  # (account id, device id)
#: The session record of each remote device as held in memory (shared with the receive
#: pipeline, which steps the same sessions).
SessionCache = dict[Address, SessionRecord]
IDENTITY_KEY_CACHE = 4096  # devices whose identity key object is kept (cleared when full)


class PairwiseEncryptor:
    def __init__(self, ctx: ClientContext, sessions: SessionCache) -> None:
        self._ctx = ctx
        self._sessions = sessions
        #: each device's identity key as a public key object, made once (not per message)
        self._identity_keys: dict[bytes, DhPublicKey] = {}

    def load(self, address: Address) -> SessionRecord:
        """The sessions held for a device (from the store the first time)."""
        sessions = self._sessions.get(address)
        if sessions is None:
            sessions = self._ctx.store.repos().sessions.get(address)
            if len(sessions):
                self._sessions[address] = sessions
        return sessions

    async def session_for(self, contact: ContactRow, device_id: int) -> Session:
        """The current session with a device, or a new one from its prekey bundle."""
        address = (contact.account_id, device_id)
        current = self.load(address).current
        if current is not None:
            return current
        doc = await self._ctx.transport.request(
            "GET", api_path("keys", contact.account_id.hex(), device_id), signed=False
        )
        bundle = PreKeyBundle.decode(unb64(doc.get("bundle") if isinstance(doc, dict) else None))
        if bundle.certificate != contact.devices[device_id]:
            raise ServerError(0, "bad_response", "the bundle's certificate is not the device's")
        session = Session.initiate(
            self._ctx.device, bundle, expected_account_key=contact.account_key, rng=self._ctx.rng
        )
        self._sessions[address] = SessionRecord([session])
        return session

    async def encrypt(
        self, contact: ContactRow, plaintext: bytes, sender_cert: SenderCertificate
    ) -> Envelopes:
        """``plaintext`` ratchet-encrypted and sealed to each of ``contact``'s devices
        (never to this device itself)."""
        me = (self._ctx.account_id, self._ctx.device_id)
        envelopes = []
        for device_id, cert in sorted(contact.devices.items()):
            if (contact.account_id, device_id) == me:
                continue
            session = await self.session_for(contact, device_id)
            sealed = seal(
                session.encrypt(plaintext, rng=self._ctx.rng),
                sender_cert,
                self._identity_key(cert.identity_key),
            )
            envelopes.append((contact.account_id, device_id, sealed))
        return envelopes

    def _identity_key(self, raw: bytes) -> DhPublicKey:
        key = self._identity_keys.get(raw)
        if key is None:
            if len(self._identity_keys) >= IDENTITY_KEY_CACHE:
                self._identity_keys.clear()
            key = self._identity_keys[raw] = DhPublicKey.from_public_bytes(raw)
        return key

    def session_records(self, addresses: Iterable[Address]) -> list[tuple[Address, SessionRecord]]:
        """The sessions of these devices, to commit with what they encrypted."""
        out = []
        for address in addresses:
            sessions = self._sessions.get(address)
            if sessions:
                out.append((address, sessions))
        return out

    def forget_device(self, account_id: bytes, device_id: int | None) -> None:
        """Drop the in-memory sessions with ``account_id``'s device (None: all of them)."""
        if device_id is not None:
            self._sessions.pop((account_id, device_id), None)
            return
        for address in [a for a in self._sessions if a[0] == account_id]:
            del self._sessions[address]

    def forget_account(self, account_id: bytes, keep: Iterable[int]) -> None:
        """Drop the in-memory sessions of an account's devices not in ``keep``."""
        kept = set(keep)
        for address in [a for a in self._sessions if a[0] == account_id and a[1] not in kept]:
            del self._sessions[address]

    def forget(self, addresses: Iterable[Address]) -> None:
        """Drop in-memory sessions that ran ahead of the store (a failed commit)."""
        for address in addresses:
            self._sessions.pop(address, None)
