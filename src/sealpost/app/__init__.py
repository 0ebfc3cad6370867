"""The terminal chat app, ``sealpost chat`` (Textual), built on the public
:class:`sealpost.client.Client` API only.

Run it with ``sealpost chat [--profile DIR]``, or from Python::

    from sealpost.app import ChatApp
    ChatApp("~/.sealpost-alice").run()

Modules: :mod:`~sealpost.app.chat` (the app and its connection loop),
:mod:`~sealpost.app.unlock`, :mod:`~sealpost.app.main` (the main screen),
:mod:`~sealpost.app.sidebar` (the conversation list), :mod:`~sealpost.app.messages` (the
open conversation), both drawn line by line by :mod:`~sealpost.app.lines`,
:mod:`~sealpost.app.compose`, :mod:`~sealpost.app.commands` (what keys
and ``/commands`` do), :mod:`~sealpost.app.screens` and :mod:`~sealpost.app.dialogs`,
:mod:`~sealpost.app.search`, :mod:`~sealpost.app.notify`, :mod:`~sealpost.app.model`
(summaries, unread marks, settings) and :mod:`~sealpost.app.text` (peer text as plain
``rich`` text: no markup, no control characters).
"""

from sealpost.app.chat import ChatApp

__all__ = ["ChatApp"]
