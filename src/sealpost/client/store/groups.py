"""Groups and sender keys.

A group row is the signed state this device holds (its name, members, admins and version:
:mod:`sealpost.protocol.groupstate`), the chain of states from the genesis up to it (NULL
for a group stored before chains, or provisioned by another device: the state alone),
whether this account is a member, whether this device's sender key must rotate before its
next message (a member was removed), and the out-of-date mark: the newest version a
member's message named above this device's (0: none) and that member's account id
(:mod:`sealpost.client.groupsync`).

Sender keys (:mod:`sealpost.client.groupkeys`): this device's own chain per group
(``own_sender_keys``), the chains other members' devices gave it (``sender_keys``, keyed
by group, account, device and chain id, found for a group-sealed envelope by the chain's
envelope id; a device's two newest chains are kept, the older for late messages), and
which member devices were given which own chain (``sender_key_shared``). Deciding what a
state or chain means is the group services' (:mod:`sealpost.client.services.groups`);
this stores what they decided.
"""

from __future__ import annotations

from dataclasses import dataclass

from sealpost.client.groupkeys import GroupInfo, ReceiverChain, group_info
from sealpost.client.store.connection import Connection

__all__ = ["GroupRepository", "GroupRow", "SenderKeyId", "SenderKeyRepository"]

#: A member device's sender chain: (group id, account id, device id, chain id).
SenderKeyId = tuple[bytes, bytes, int, int]

KEPT_CHAINS = 2  # per member device: the newest chain and the one before (late messages)


@dataclass(frozen=True, slots=True)
class GroupRow:
    """A group as stored (see the module docstring)."""

    info: GroupInfo
    raw: bytes  # the signed state
    member: bool
    rotate: bool  # this device's sender key must be replaced before its next message
    chain: bytes | None = None  # the encoded chain from the root (None: the state alone)
    behind: int = 0  # a newer version a member's message named (0: none)
    behind_from: bytes | None = None  # that member's account id

    @property
    def out_of_date(self) -> bool:
        return self.behind > self.info.version


class GroupRepository:
    def __init__(self, db: Connection) -> None:
        self._db = db

    def get(self, group_id: bytes) -> GroupRow | None:
        row = self._db.one(
            "SELECT state, member, rotate, chain, behind, behind_from FROM groups "
            "WHERE group_id = ?",
            (group_id,),
        )
        if row is None:
            return None
        return GroupRow(
            group_info(bytes(row[0])),
            bytes(row[0]),
            bool(row[1]),
            bool(row[2]),
            None if row[3] is None else bytes(row[3]),
            int(row[4]),
            None if row[5] is None else bytes(row[5]),
        )

    def ids(self) -> list[bytes]:
        """Every group's id, by name."""
        return [bytes(g) for (g,) in self._db.all("SELECT group_id FROM groups ORDER BY name")]

    def names(self, *, member: bool = False) -> list[tuple[bytes, str]]:
        """``(group id, name)`` of every group (only those this account is in, with
        ``member``)."""
        rows = self._db.all(
            "SELECT group_id, name FROM groups WHERE member = 1"
            if member
            else "SELECT group_id, name FROM groups"
        )
        return [(bytes(g), str(n)) for g, n in rows]

    def find(self, name: str) -> bytes | None:
        """The group named ``name`` (one this account is in first), else one whose name
        is ``name`` ignoring case or whose id starts with it in hex."""
        row = self._db.one(
            "SELECT group_id FROM groups WHERE name = ? ORDER BY member DESC", (name,)
        )
        if row is not None:
            return bytes(row[0])
        lowered = name.lower()
        for group_id, other in self.names():
            if other.lower() == lowered or group_id.hex().startswith(lowered):
                return group_id
        return None

    def states(self) -> list[bytes]:
        """The signed states of the groups this account is in (for a new device)."""
        return [bytes(s) for (s,) in self._db.all("SELECT state FROM groups WHERE member = 1")]

    def add_provisioned(self, raw: bytes, now: int) -> None:
        """A group state provisioned by another device of this account (it verified it);
        a group already stored is left as it is."""
        info = group_info(raw)
        self._db.execute(
            "INSERT OR IGNORE INTO groups (group_id, state, name, member, rotate, updated) "
            "VALUES (?, ?, ?, 1, 0, ?)",
            (info.group_id, raw, info.name, now),
        )

    def save(
        self,
        old: GroupRow | None,
        info: GroupInfo,
        raw: bytes,
        chain: bytes,
        *,
        account_id: bytes,
        now: int,
    ) -> None:
        """A verified new state ``raw`` (``info``) after ``old``, and the chain up to it.
        A removal marks this device's sender key to rotate and forgets the removed
        members' chains; a state without ``account_id`` (this account) forgets every key
        of the group. The out-of-date mark stays only while it names a version past this
        one and the member that named it is still in the group."""
        before = {m.account_id for m in old.info.members} if old is not None else set()
        after = {m.account_id for m in info.members}
        removed = before - after
        member = account_id in after
        named_by_member = (
            old is not None
            and old.behind_from is not None
            and info.member(old.behind_from) is not None
        )
        fields = (info.name, int(member), int(bool(removed)), now, chain)
        with self._db.atomic():
            self._db.execute(
                "INSERT INTO groups (group_id, state, name, member, rotate, updated, chain) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (group_id) DO UPDATE SET state = ?, "
                "name = ?, member = ?, rotate = rotate OR ?, updated = ?, chain = ?, "
                "behind = CASE WHEN behind > ? AND ? THEN behind ELSE 0 END",
                (info.group_id, raw, *fields, raw, *fields, info.version, int(named_by_member)),
            )
            keys = SenderKeyRepository(self._db)
            for gone in removed - {account_id}:
                keys.forget_member(info.group_id, gone)
            if not member:  # left or removed: nothing of the group's keys stays
                keys.forget_group(info.group_id)

    def mark_behind(self, group_id: bytes, version: int, by: bytes) -> None:
        """A member (``by``) sent under ``version``, newer than this device's state."""
        self._db.execute(
            "UPDATE groups SET behind = MAX(behind, ?), behind_from = ? WHERE group_id = ?",
            (version, by, group_id),
        )

    def rotated(self, group_id: bytes) -> None:
        """This device's sender key of the group was replaced."""
        self._db.execute("UPDATE groups SET rotate = 0 WHERE group_id = ?", (group_id,))


class SenderKeyRepository:
    def __init__(self, db: Connection) -> None:
        self._db = db

    # -- other members' chains

    def get(self, key: SenderKeyId) -> ReceiverChain | None:
        row = self._db.one(
            "SELECT state FROM sender_keys WHERE group_id = ? AND account_id = ? "
            "AND device_id = ? AND chain_id = ?",
            key,
        )
        return None if row is None else ReceiverChain.from_bytes(bytes(row[0]))

    def has(self, key: SenderKeyId) -> bool:
        return (
            self._db.one(
                "SELECT 1 FROM sender_keys WHERE group_id = ? AND account_id = ? "
                "AND device_id = ? AND chain_id = ?",
                key,
            )
            is not None
        )

    def by_envelope(self, envelope_id: bytes) -> dict[SenderKeyId, ReceiverChain]:
        """Every chain held under an envelope id (normally one)."""
        return {
            (bytes(g), bytes(a), int(d), int(c)): ReceiverChain.from_bytes(bytes(raw))
            for g, a, d, c, raw in self._db.all(
                "SELECT group_id, account_id, device_id, chain_id, state FROM sender_keys "
                "WHERE envelope_id = ?",
                (envelope_id,),
            )
        }

    def put(self, key: SenderKeyId, chain: ReceiverChain, now: int) -> None:
        """A member device's chain as it is now; that device's older chains but one go."""
        group_id, account_id, device_id, _ = key
        with self._db.atomic():
            self._db.execute(
                "INSERT OR REPLACE INTO sender_keys (group_id, account_id, device_id, "
                "chain_id, state, updated, envelope_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*key, chain.to_bytes(), now, chain.envelope_id),
            )
            self._db.execute(
                "DELETE FROM sender_keys WHERE group_id = ? AND account_id = ? "
                "AND device_id = ? AND chain_id NOT IN (SELECT chain_id FROM sender_keys "
                "WHERE group_id = ? AND account_id = ? AND device_id = ? "
                "ORDER BY updated DESC, rowid DESC LIMIT ?)",
                (group_id, account_id, device_id, group_id, account_id, device_id, KEPT_CHAINS),
            )

    def forget_member(self, group_id: bytes, account_id: bytes) -> None:
        """A member left the group: its chains go, and so does the record of what it
        was given."""
        with self._db.atomic():
            self._db.execute(
                "DELETE FROM sender_keys WHERE group_id = ? AND account_id = ?",
                (group_id, account_id),
            )
            self._db.execute(
                "DELETE FROM sender_key_shared WHERE group_id = ? AND account_id = ?",
                (group_id, account_id),
            )

    def forget_group(self, group_id: bytes) -> None:
        """This account left the group: every key of it goes."""
        with self._db.atomic():
            self._db.execute("DELETE FROM sender_keys WHERE group_id = ?", (group_id,))
            self._db.execute("DELETE FROM own_sender_keys WHERE group_id = ?", (group_id,))
            self._db.execute("DELETE FROM sender_key_shared WHERE group_id = ?", (group_id,))

    # -- this device's own chains

    def own(self, group_id: bytes) -> bytes | None:
        """This device's sender chain of a group, encoded."""
        row = self._db.one("SELECT state FROM own_sender_keys WHERE group_id = ?", (group_id,))
        return None if row is None else bytes(row[0])

    def save_own(self, group_id: bytes, state: bytes) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO own_sender_keys (group_id, state) VALUES (?, ?)",
            (group_id, state),
        )

    def shared(self, group_id: bytes, chain_id: int) -> set[tuple[bytes, int]]:
        """The ``(account id, device id)`` pairs this device's chain was sent to."""
        return {
            (bytes(a), int(d))
            for a, d in self._db.all(
                "SELECT account_id, device_id FROM sender_key_shared "
                "WHERE group_id = ? AND chain_id = ?",
                (group_id, chain_id),
            )
        }

    def mark_shared(self, rows: list[SenderKeyId]) -> None:
        """These member devices were sent this device's chain (``chain id`` last)."""
        self._db.executemany(
            "INSERT OR REPLACE INTO sender_key_shared (group_id, account_id, device_id, "
            "chain_id) VALUES (?, ?, ?, ?)",
            rows,
        )
