"""`edge-agent manifest keygen|create|sign|verify`: the fleet operator's side of updates.

`create` computes every length and SHA-256 itself (a hand-typed hash is a
bricked rollout) and checks its output with the devices' own parser; `sign`
refuses a manifest a device would reject; `verify` does what a device does.
The trust rules live in `edge_agent.update.manifest`; this module is its I/O
shell. It imports them (and `cryptography`, ~30 ms) only when a manifest
command runs: `cli.py` imports this module to build its parser for every command.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urljoin, urlsplit

from edge_agent.errors import (
    ConfigError,
    InputError,
    IntegrityError,
    UpdateError,
)
from edge_agent.util.fs import atomic_write

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from edge_agent.update.manifest import Manifest
    from edge_agent.update.protocols import Fetch

DEFAULT_PRIVATE = Path("update-key.pem")
DEFAULT_PUBLIC = Path("update-key.pub")
_CHUNK = 1 << 20
_DURATION = re.compile(r"([1-9][0-9]*)([smhdw])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def register(commands: Any) -> None:
    """Register `manifest ...` on the CLI's subparsers (called by cli.py)."""
    parser = commands.add_parser("manifest", help="create, sign and verify model update manifests")
    actions = parser.add_subparsers(dest="manifest_command", required=True, metavar="ACTION")
    keygen = actions.add_parser("keygen", help="make an Ed25519 signing key pair")
    keygen.add_argument("--private", type=Path, default=DEFAULT_PRIVATE, help="(update-key.pem)")
    keygen.add_argument("--public", type=Path, default=DEFAULT_PUBLIC, help="(update-key.pub)")
    keygen.set_defaults(handler=cmd_keygen)
    _add_create(actions)
    sign = actions.add_parser("sign", help="sign a manifest: writes MANIFEST.sig")
    sign.add_argument("manifest", type=Path, metavar="MANIFEST")
    sign.add_argument("--key", type=Path, default=DEFAULT_PRIVATE, help="private key (%(default)s)")
    sign.set_defaults(handler=cmd_sign)
    verify = actions.add_parser("verify", help="check a manifest as a device would")
    verify.add_argument(
        "manifest", metavar="MANIFEST", help="path or https:// URL of manifest.json"
    )
    verify.add_argument(
        "--key", type=Path, action="append", help="trusted public key, repeatable (update-key.pub)"
    )
    verify.add_argument("--trusted-version", type=int, help="the version a device trusts now")
    verify.add_argument(
        "--check-files", action="store_true", help="also check the files the manifest lists"
    )
    verify.add_argument("--ca-file", help="CA bundle for an https:// URL (as the device's)")
    verify.add_argument("--allow-http", action="store_true", help="accept an http:// URL")
    verify.set_defaults(handler=cmd_verify)


def _add_create(actions: Any) -> None:
    create = actions.add_parser("create", help="describe model files in a new manifest")
    create.add_argument("models", nargs="+", type=Path, metavar="MODEL", help=".tflite files")
    create.add_argument(
        "--version",
        dest="manifest_version",
        type=int,
        required=True,
        metavar="N",
        help="manifest version: higher than the last published one",
    )
    create.add_argument("--base-url", metavar="URL", help="where the files are (default: relative)")
    create.add_argument(
        "--expires-in",
        type=parse_duration,
        default="30d",
        metavar="DURATION",
        help="e.g. 30d, 12h (default 30d)",
    )
    repeat: dict[str, Any] = {"action": "append", "default": []}
    create.add_argument("--name", **repeat, metavar="NAME=MODEL", help="(default: file stem)")
    create.add_argument("--model-version", **repeat, metavar="NAME=V", help="(default: N)")
    create.add_argument("--labels", **repeat, metavar="NAME=PATH", help="labels file of a model")
    create.add_argument("--golden", **repeat, metavar="NAME=INPUT:TOP1", help="self-test input")
    create.add_argument(
        "--target-tags", **repeat, metavar="NAME:KEY=V1,V2", help="only devices with these tags"
    )
    create.add_argument("--pin", **repeat, metavar="NAME=ID", help="this device always takes it")
    create.add_argument("--exclude", **repeat, metavar="NAME=ID", help="this device never does")
    create.add_argument("--rollout-percent", type=float, metavar="P", help="share of devices")
    create.add_argument("--rollout-salt", metavar="S", help="a new salt picks other devices")
    create.add_argument("-o", "--output", type=Path, default=Path("manifest.json"), metavar="PATH")
    create.add_argument(
        "--encrypt",
        action="store_true",
        help="write MODEL.enc (and labels) beside the manifest, for --recipients only",
    )
    create.add_argument(
        "--recipients",
        type=Path,
        metavar="DIR_OR_FILE",
        help="a device's .pub, or a directory of .pub files and NAME.group/ directories",
    )
    create.add_argument(
        "--cipher", choices=["chacha20-poly1305", "aes-256-gcm"], help="(chacha20-poly1305)"
    )
    create.set_defaults(handler=cmd_create)


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `2w`, `45s`: how long a manifest stays valid."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number and s, m, h, d or w")
    return timedelta(seconds=int(match[1]) * _SECONDS[match[2]])


def cmd_keygen(args: argparse.Namespace) -> int:
    from edge_agent.update import keys  # noqa: PLC0415 - lazy, see above

    keys.generate_keypair(args.private, args.public)
    ident = keys.key_id(keys.load_public_key(args.public))
    print(f"wrote {args.private} (private: keep it off devices), {args.public} (key id {ident})")
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    from edge_agent.update import manifest as spec  # noqa: PLC0415 - lazy, see above

    issued = datetime.now(timezone.utc).replace(microsecond=0)
    describe, groups = _describer(args)
    document: dict[str, object] = {
        "spec_version": 1,
        "version": args.manifest_version,
        "issued": spec.format_time(issued),
        "expires": spec.format_time(issued + args.expires_in),
        "models": _model_documents(args, describe),
    }
    if groups:
        document["groups"] = groups
    if args.rollout_percent is not None or args.rollout_salt is not None:
        if args.rollout_percent is None or args.rollout_salt is None:
            raise ConfigError("--rollout-percent and --rollout-salt go together")
        percent = args.rollout_percent
        percent = int(percent) if percent.is_integer() else percent  # 50, not 50.0
        document["rollout"] = {"percent": percent, "salt": args.rollout_salt}
    data = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
    manifest = spec.parse_manifest(data)  # the devices' rules, before anything is written
    atomic_write(args.output, data)
    print(f"wrote {args.output}: {_summary(manifest)}")
    if _signature_path(args.output).exists():
        print(f"note: {_signature_path(args.output)} no longer matches; sign again")
    return 0


Describe = Callable[[Path], dict[str, object]]


def _describer(args: argparse.Namespace) -> tuple[Describe, list[dict[str, object]]]:
    """How a model or labels file is described: hashed as it is, or with --encrypt
    encrypted first (`encrypt_release`) and described as the ciphertext it wrote;
    and the manifest's groups."""
    if args.recipients is not None and not args.encrypt:
        raise ConfigError("--recipients goes with --encrypt")
    if not args.encrypt:
        if args.cipher is not None:
            raise ConfigError("--cipher goes with --encrypt")
        return (lambda path: _describe(path, args.base_url)), []
    if args.recipients is None:
        raise ConfigError("--encrypt needs --recipients DIR_OR_FILE (the devices' .pub files)")
    _pairs(args.labels, "--labels")  # well-formed before anything is encrypted
    if args.base_url and urlsplit(args.base_url).scheme not in ("http", "https"):
        raise ConfigError(f"--base-url {args.base_url}: expected an http(s) URL")
    from edge_agent.commands.encrypt import encrypt_for_manifest  # noqa: PLC0415 - lazy

    sources = [*args.models, *(Path(v.partition("=")[2]) for v in args.labels)]
    release = encrypt_for_manifest(
        sources, args.recipients, args.output.parent, base_url=args.base_url, cipher=args.cipher
    )

    def describe(path: Path) -> dict[str, object]:
        return release.files[path.resolve()]

    return describe, release.groups


def _model_documents(args: argparse.Namespace, describe: Describe) -> list[dict[str, object]]:
    """One entry per MODEL, with the --name/--model-version/--labels/--golden options."""
    names = {Path(model).resolve(): name for name, model in _pairs(args.name, "--name").items()}
    entries: dict[str, dict[str, object]] = {}
    for path in args.models:
        name = names.pop(path.resolve(), path.stem)
        if name in entries:
            raise ConfigError(f"two models named {name!r}; use --name NAME=MODEL")
        entries[name] = {"name": name, "version": str(args.manifest_version)}
        entries[name].update(describe(path))
    if names:
        raise ConfigError(f"--name: {next(iter(names))} is not one of the MODEL arguments")
    for name, version in _pairs(args.model_version, "--model-version", entries).items():
        entries[name]["version"] = version
    for name, labels in _pairs(args.labels, "--labels", entries).items():
        entries[name]["labels"] = describe(Path(labels))
    for name, golden in _pairs(args.golden, "--golden", entries).items():
        path, _, top1 = golden.partition(":")
        if not path or not top1:
            raise ConfigError(f"--golden {name}={golden}: expected NAME=INPUT:TOP1")
        entries[name]["golden"] = {"input": _describe(Path(path), args.base_url), "top1": top1}
    for name, targets in _targets(args, entries).items():
        entries[name]["targets"] = targets
    return list(entries.values())


def _targets(args: argparse.Namespace, known: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each model's `targets` from --target-tags, --pin and --exclude (repeatable;
    the manifest parser checks names and values afterwards)."""
    targets: dict[str, dict[str, Any]] = {}

    def of(option: str, value: str, form: str) -> tuple[dict[str, Any], str]:
        name, _, rest = value.partition(form[4])  # the separator after NAME
        if not name or not rest:
            raise ConfigError(f"{option} {value}: expected {form}")
        if name not in known:
            raise ConfigError(f"{option} {value}: no model named {name!r} ({', '.join(known)})")
        return targets.setdefault(name, {}), rest

    for value in args.target_tags:
        entry, rest = of("--target-tags", value, "NAME:KEY=V1,V2")
        key, _, values = rest.partition("=")
        if not key or not values:
            raise ConfigError(f"--target-tags {value}: expected NAME:KEY=V1,V2")
        entry.setdefault("tags", {}).setdefault(key, []).extend(values.split(","))
    for option, field, values in (
        ("--pin", "devices", args.pin),
        ("--exclude", "exclude", args.exclude),
    ):
        for value in values:
            entry, device = of(option, value, "NAME=ID")
            entry.setdefault(field, []).append(device)
    return targets


def _pairs(
    values: Sequence[str], option: str, known: dict[str, Any] | None = None
) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        key, _, rest = value.partition("=")
        if not key or not rest or key in pairs:
            raise ConfigError(f"{option} {value}: expected KEY=VALUE, each key once")
        if known is not None and key not in known:
            raise ConfigError(f"{option} {value}: no model named {key!r} ({', '.join(known)})")
        pairs[key] = rest
    return pairs


def _describe(path: Path, base_url: str | None) -> dict[str, object]:
    """A file's url, length and sha256, hashed in chunks: models can be large."""
    digest, length = hashlib.sha256(), 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                length += len(chunk)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    url = quote(path.name)
    if base_url:
        if urlsplit(base_url).scheme not in ("http", "https"):
            raise ConfigError(f"--base-url {base_url}: expected an http(s) URL")
        url = base_url.rstrip("/") + "/" + url
    return {"url": url, "length": length, "sha256": digest.hexdigest()}


def cmd_sign(args: argparse.Namespace) -> int:
    from edge_agent.update import keys  # noqa: PLC0415 - lazy, see above
    from edge_agent.update import manifest as spec  # noqa: PLC0415 - lazy, see above

    key = keys.load_private_key(args.key)
    data = _read_input(args.manifest)
    manifest = spec.parse_manifest(data)
    spec.check_freshness(manifest, trusted_version=None, now=datetime.now(timezone.utc))
    atomic_write(_signature_path(args.manifest), keys.sign(key, data))
    print(
        f"signed {args.manifest} ({_summary(manifest)}) with key {keys.key_id(key.public_key())}: "
        f"wrote {_signature_path(args.manifest)}"
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Prints its verdict itself: a rejection is an answer, not a failure to run."""
    from edge_agent.update.keys import load_public_key  # noqa: PLC0415 - lazy, see above

    keys = [load_public_key(path) for path in args.key or [DEFAULT_PUBLIC]]
    url, fetch = _locate(args)
    now = datetime.now(timezone.utc)
    try:
        verdict = verify_location(
            url, fetch, keys, trusted_version=args.trusted_version, now=now, files=args.check_files
        )
    except UpdateError as exc:
        print(f"REJECTED: {exc}")
        return 1
    print(f"OK: {verdict.describe(args.trusted_version)}")
    return 0


def _locate(args: argparse.Namespace) -> tuple[str, Fetch]:
    """The manifest's URL and what reads it: a local file, or the device's own
    fetcher (same TLS rules, caps, deadline, streaming hashes) for an http(s) URL."""
    source: str = args.manifest
    if urlsplit(source).scheme not in ("http", "https"):
        from edge_agent.update.local import LocalFetch  # noqa: PLC0415 - lazy

        return Path(source).resolve().as_uri(), LocalFetch()
    from edge_agent.update.fetch import Fetcher, FetchOptions  # noqa: PLC0415 - lazy

    return source, Fetcher(FetchOptions(allow_http=args.allow_http, ca_file=args.ca_file))


@dataclass(frozen=True)
class Verdict:
    manifest: Manifest
    newer: bool  # False: the trusted version itself, nothing to install
    checked: int  # files fetched and checked
    unchecked: tuple[str, ...]  # absolute URLs a local verify cannot fetch

    def describe(self, trusted_version: int | None) -> str:
        text = _summary(self.manifest)
        if trusted_version is not None:
            text += ", newer than trusted" if self.newer else ", same as trusted: nothing to do"
        if self.checked or self.unchecked:
            text += f", {self.checked} file(s) checked"
        if self.unchecked:
            text += f", {len(self.unchecked)} remote file(s) NOT checked"
        return text


def verify_location(
    url: str,
    fetch: Fetch,
    keys: Sequence[Ed25519PublicKey],
    *,
    trusted_version: int | None,
    now: datetime,
    files: bool,
) -> Verdict:
    """A device's checks through the device's code path (`update.release`): the
    manifest within the device's size cap, its signature, freshness, and with
    `files` every file it lists, streamed through a hash into a temporary folder."""
    from edge_agent.update import release  # noqa: PLC0415 - lazy, see above

    got = release.read_release(fetch, url, keys, trusted_version=trusted_version, now=now)
    assert got is not None  # unconditional: never "unchanged"
    checked, unchecked = 0, []
    with tempfile.TemporaryDirectory(prefix="edge-agent-verify-") as scratch:
        for index, entry in enumerate(got.manifest.models if files else ()):
            for field, ref in entry.refs():
                target = urljoin(url, ref.url)
                if urlsplit(url).scheme == "file" and urlsplit(ref.url).scheme:
                    unchecked.append(target)
                    continue
                try:
                    release.download(fetch, target, ref, Path(scratch) / f"{index}-{field}")
                except IntegrityError as exc:  # name the field, as the parser's errors do
                    raise type(exc)(f"models[{index}].{field}: {exc}") from None
                checked += 1
    return Verdict(got.manifest, got.newer, checked, tuple(unchecked))


def _summary(manifest: Manifest) -> str:
    rollout = f", rollout {manifest.rollout.percent:g}%" if manifest.rollout else ""
    recipients = {
        i for m in manifest.models if m.file.encryption for i in m.file.encryption.recipients
    }
    encrypted = f", encrypted for {len(recipients)} recipient key(s)" if recipients else ""
    return (
        f"manifest version {manifest.version}, {len(manifest.models)} model(s), "
        f"expires {manifest.expires:%Y-%m-%dT%H:%M:%SZ}{rollout}{encrypted}"
    )


def _signature_path(manifest: Path) -> Path:
    return manifest.with_name(manifest.name + ".sig")


def _read_input(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
