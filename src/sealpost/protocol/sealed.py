"""Sealed sender: what lets the server deliver a message without learning who sent it.

The sender's identity travels inside the encryption: the ratchet message and a short-lived
:class:`SenderCertificate` (issued by the server, binding account, device, signing key and
identity key) are sealed to the recipient device's identity key, so the server sees only
the destination device. This module holds the certificate now; the sealed envelope itself
(HPKE, RFC 9180) is specified in docs/PROTOCOL.md when it lands.
"""

from sealpost.protocol.wire import SENDER_CERTIFICATE_LEN, SenderCertificate

__all__ = ["SENDER_CERTIFICATE_LEN", "SenderCertificate"]
