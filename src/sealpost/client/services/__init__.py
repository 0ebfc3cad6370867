"""The client's services: each behaviour of :class:`~sealpost.client.Client` in one module.

``Client`` is the facade; the work is done here. Each service is a class that gets what it
needs through its constructor: the :class:`~sealpost.client.context.ClientContext`
(identity, store, transport, clock, rng, batch lock, event sink), and the other services it
calls; none reaches for a global, and none calls back into ``Client``. Services read and
write the profile only through the store's repositories
(:mod:`sealpost.client.store`: ``ctx.store.repos()`` for reads, ``with ctx.store.unit() as
repos:`` for writes); no SQL lives here.

``assembly`` is the composition root: it builds every service from one context and wires
them to each other's methods (where two need each other, the one built first is handed a
function that calls the other). One module per service (issue 15's layout): ``directory``
(lookups checked against the key-transparency log, pinning, key changes, verification),
``conversations`` (names to conversations, history, timers), ``messaging`` (what the user
sends: texts, timers, deletions for everyone), ``search``, ``sending``, ``pairwise`` (the
pairwise encryptor), ``transcripts`` (copies of sent messages for this account's other
devices), ``receiving`` (with ``opening``: one push, ``senders``: whom it is from, and
``batch_commit``: the batch's unit of work), ``absorb`` (pure: content to changes),
``groups``, ``group_encryptor``, ``group_receive``, ``devices`` (the device list),
``device_changes`` (removing a device, telling of a link), ``linking``, ``prekeys``,
``transparency`` (the log view the others are handed, over ``log_heads``: the pinned key,
the newest head, consistency and gossip; ``lookup_proofs``: what a directory answer must
prove; ``alarms``: an alarm raised), ``monitoring`` (the periodic pass: own entries,
contacts again), ``attachments``.
"""
