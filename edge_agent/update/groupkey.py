"""Group key files: a group's X25519 private key, wrapped (HPKE) to one member device.

A release's content keys are wrapped to the group's public key once; each member
fetches its own small file, `<group url><its key id>.json`, from beside the
manifest. The file is not signed and need not be: only the member can unwrap it,
and the key it holds is checked against the group public key that the signed
manifest names, so a substituted file can only fail, never inject a key.
Revoking a member = a new group key wrapped to the remaining members only.
"""

from __future__ import annotations

import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from edge_agent.errors import DecryptError, NotRecipientError, TamperedError, WrongKeyError
from edge_agent.update.envelope import (
    b64,
    json_object,
    key_id,
    parse_json,
    parse_wrapped,
    raw_public,
    unwrap,
    wrap,
)

MAX_GROUP_FILE = 4096
GROUP_KEY_INFO = b"edge-agent/enc/v1 group key "
_FIELDS = ("group", "group_key_id", "member_key_id", "wrapped_key")


def group_file_name(device_key_id: str) -> str:
    """A member's file name in its group's directory (the manifest's group `url`)."""
    return f"{device_key_id}.json"


def seal_group_key(group: str, group_key: X25519PrivateKey, member: X25519PublicKey) -> bytes:
    """A member's group key file: the group's private key, wrapped to the member and
    bound (HPKE info) to the group's public key."""
    raw = group_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    info = GROUP_KEY_INFO + raw_public(group_key.public_key())
    document = {
        "group": group,
        "group_key_id": key_id(group_key),
        "member_key_id": key_id(member),
        "wrapped_key": b64(wrap(raw, member, info)),
    }
    return json.dumps(document, indent=1).encode() + b"\n"


def open_group_key(
    data: bytes, device_key: X25519PrivateKey, group_public: X25519PublicKey
) -> X25519PrivateKey:
    """The group private key from this device's group key file, checked against the
    group public key the signed manifest names."""
    if len(data) > MAX_GROUP_FILE:
        raise DecryptError(f"group key file: {len(data)} bytes, more than {MAX_GROUP_FILE}")
    document = json_object(parse_json(data, "group key file"), "group key file")
    if set(document) != set(_FIELDS):
        raise DecryptError(f"group key file: expected the fields {', '.join(_FIELDS)}")
    if document["member_key_id"] != key_id(device_key):
        raise NotRecipientError(
            f"not a recipient: the group key file is for key {document['member_key_id']}, "
            f"this device holds {key_id(device_key)}"
        )
    if document["group_key_id"] != key_id(group_public):
        raise WrongKeyError(
            f"wrong key: the group key file holds group key {document['group_key_id']}, "
            f"the manifest names {key_id(group_public)} (a stale group file?)"
        )
    wrapped = parse_wrapped(document["wrapped_key"], "group key file: wrapped_key")
    raw = unwrap(wrapped, device_key, GROUP_KEY_INFO + raw_public(group_public), "group key")
    try:
        group_key = X25519PrivateKey.from_private_bytes(raw)
    except ValueError:
        raise TamperedError("tampered wrapped key: the group key is not an X25519 key") from None
    if raw_public(group_key.public_key()) != raw_public(group_public):
        raise WrongKeyError("wrong key: the group key file's key is not the manifest's group key")
    return group_key
