"""Signed bundles, in the OpenSSF model-signing format (docs/fleet.md#signed-bundles).

`bundle.sig` is a Sigstore bundle (v0.3 JSON) holding a DSSE envelope over an in-toto
statement whose predicate (`https://model_signing/signature/v1.0`) lists the sha256 of
every file of the bundle directory: what `model_signing` writes with an elliptic-curve
key (`model_signing.signing.Config().use_elliptic_key_signer(...)`), and what it verifies.
It is implemented here on `cryptography` alone because the `model_signing` package pulls
in sigstore's client (~40 MB, and versions that conflict with the packager's converters);
tests sign and verify across both implementations.

The trust policy: `EDGEPACK_TRUSTED_KEYS` (PEM public keys, paths separated by ':') and
`EDGEPACK_REQUIRE_SIGNATURE=1`, together with a trust file (`keys = [...]`,
`require_signature = true`): `$EDGEPACK_TRUST_FILE`, else
`$XDG_CONFIG_HOME/edgepack/trust.toml`. With trusted keys, every bundle must carry a
signature that verifies under one of them; `require_signature` alone refuses them all
(no key to check with).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from .errors import BackendUnavailableError, SignatureError, UsageError, first_line

if TYPE_CHECKING:
    from .bundle import Bundle

__all__ = ["SIGNATURE_FILE", "sign_bundle", "verify_signature", "check_files", "trust_policy", "check_signature",
           "TrustPolicy", "SignatureError", "key_fingerprint"]

SIGNATURE_FILE = "bundle.sig"
TRUSTED_KEYS_ENV = "EDGEPACK_TRUSTED_KEYS"
REQUIRE_ENV = "EDGEPACK_REQUIRE_SIGNATURE"
TRUST_FILE_ENV = "EDGEPACK_TRUST_FILE"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
# model_signing's default hashing ignores these (git metadata) besides the signature itself.
IGNORED = (SIGNATURE_FILE, ".git", ".gitattributes", ".github", ".gitignore")


def _crypto() -> tuple[Any, Any, Any, Any]:  # cryptography's modules: exceptions, hashes, serialization, ec
    try:
        from cryptography import exceptions
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError:
        raise BackendUnavailableError("signed bundles need cryptography: "
                                      "pip install 'edgepack-runtime[signing]'") from None
    return exceptions, hashes, serialization, ec


def _hash_for(key: Any) -> Any:
    _, hashes, _, _ = _crypto()
    sizes = {256: hashes.SHA256, 384: hashes.SHA384, 521: hashes.SHA512}
    if key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
        raise UsageError(f"key on curve {key.curve.name} is not one model-signing supports; use P-256, P-384 or P-521")
    return sizes[key.curve.key_size]()


def _pae(payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the key actually signs."""
    return b"DSSEv1 %d %s %d " % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload)) + payload


def key_fingerprint(public_key: Any) -> str:
    """sha256 of the PEM public key: the `hint` model-signing puts in the signature."""
    _, _, serialization, _ = _crypto()
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def _file_digests(root: Path, ignored: Sequence[str]) -> dict[str, str]:
    """sha256 of every regular file under `root` but the ignored ones, by posix relative path."""
    digests = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(relative == Path(i) or Path(i) in relative.parents for i in ignored):
            continue
        if path.is_symlink():
            raise SignatureError(f"bundle file {relative} is a symbolic link; signed bundles hold plain files")
        if path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            digests[relative.as_posix()] = digest.hexdigest()
    return digests


def sign_bundle(root: Path, private_key: Path, password: Optional[str] = None) -> Path:
    """Write `root`/bundle.sig: the bundle's files, signed with an EC private key (PEM)."""
    _, _, serialization, ec = _crypto()
    root = Path(root)
    try:
        key = serialization.load_pem_private_key(Path(private_key).read_bytes(),
                                                 password.encode() if password else None)
    except OSError as exc:
        raise UsageError(f"cannot read the signing key {private_key} ({exc.strerror})") from exc
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{private_key} is not a PEM private key this can use ({first_line(exc, 120)}); make one "
                         "with `openssl ecparam -name prime256v1 -genkey -noout -out key.pem`") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UsageError(f"{private_key} is not an elliptic-curve key; model-signing's key mode takes P-256/384/521")
    digests = _file_digests(root, IGNORED)
    resources = [{"name": name, "algorithm": "sha256", "digest": digest} for name, digest in digests.items()]
    root_digest = hashlib.sha256(b"".join(bytes.fromhex(d) for d in digests.values())).hexdigest()
    statement = {"_type": STATEMENT_TYPE, "subject": [{"name": root.name, "digest": {"sha256": root_digest}}],
                 "predicateType": PREDICATE_TYPE,
                 "predicate": {"serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False,
                                                 "ignore_paths": list(IGNORED)},
                               "resources": resources}}
    payload = json.dumps(statement, indent=2).encode()
    signature = key.sign(_pae(payload), ec.ECDSA(_hash_for(key.public_key())))
    document = {"mediaType": BUNDLE_MEDIA_TYPE,
                "verificationMaterial": {"publicKey": {"hint": key_fingerprint(key.public_key())}, "tlogEntries": []},
                "dsseEnvelope": {"payload": base64.b64encode(payload).decode(), "payloadType": PAYLOAD_TYPE,
                                 "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}]}}
    path = root / SIGNATURE_FILE
    tmp = root / f".{SIGNATURE_FILE}.tmp"
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _load_public_key(path: Path) -> Any:
    _, _, serialization, ec = _crypto()
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot read trusted key {path} ({exc.strerror}); "
                         f"fix {TRUSTED_KEYS_ENV} or trust.toml") from exc
    except ValueError:
        raise UsageError(f"trusted key {path} is not a PEM public key (`openssl ec -in key.pem -pubout`)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise UsageError(f"trusted key {path} is not an elliptic-curve key")
    return key


def _read_signature(root: Path) -> tuple[bytes, bytes, Optional[str]]:
    """(signed payload, signature, key hint) from `root`/bundle.sig."""
    try:
        document = json.loads((root / SIGNATURE_FILE).read_text(encoding="utf-8"))
        envelope = document["dsseEnvelope"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        signature = base64.b64decode(envelope["signatures"][0]["sig"], validate=True)
        hint = (document.get("verificationMaterial") or {}).get("publicKey", {}).get("hint")
        if document.get("mediaType") != BUNDLE_MEDIA_TYPE or envelope.get("payloadType") != PAYLOAD_TYPE:
            raise ValueError("not a model-signing key signature")
    except FileNotFoundError:
        raise SignatureError(f"bundle {root} is not signed (no {SIGNATURE_FILE})") from None
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError) as exc:
        raise SignatureError(f"{SIGNATURE_FILE} cannot be read ({first_line(exc, 100)}); "
                             "sign the bundle again") from exc
    return payload, signature, hint


def _check_files(root: Path, payload: bytes) -> None:
    """The signed statement lists every file's sha256: a file that differs from it is
    evidence of modification whoever signed, so this needs no trusted key."""
    try:
        statement = json.loads(payload)
        predicate = statement["predicate"]
        if statement["predicateType"] != PREDICATE_TYPE or predicate["serialization"]["method"] != "files":
            raise ValueError(f"predicate {str(statement['predicateType'])[:60]!r} "
                             "is not a model-signing v1.0 file list")
        signed = {r["name"]: r["digest"] for r in predicate["resources"] if r["algorithm"] == "sha256"}
        ignored = [str(p) for p in predicate["serialization"].get("ignore_paths", [])]
        root_digest = hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in predicate["resources"])).hexdigest()
        if root_digest != statement["subject"][0]["digest"]["sha256"]:
            raise ValueError("its file list does not match its own root digest")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError) as exc:
        raise SignatureError(f"the signed statement of bundle {root.name} is malformed ({first_line(exc, 100)}); "
                             "sign the bundle again") from exc
    actual = _file_digests(root, [SIGNATURE_FILE, *ignored])
    changed = sorted(str(n) for n in set(signed) | set(actual) if signed.get(n) != actual.get(n))
    if changed or "manifest.json" not in signed:
        what = ", ".join(changed[:4]) + (" …" if len(changed) > 4 else "") if changed else "manifest.json unsigned"
        raise SignatureError(f"bundle {root.name}'s signature does not match the files: modified after signing "
                             f"({what}); do not deploy it, rebuild or sign it again")


def check_files(root: Path) -> None:
    """Compare `root`'s files with the digests its bundle.sig lists (no key involved);
    SignatureError when they differ or the signature cannot be read."""
    payload, _, _ = _read_signature(Path(root))
    _check_files(Path(root), payload)


def verify_signature(root: Path, public_keys: Sequence[Path]) -> str:
    """Check `root`/bundle.sig against the trusted keys and the files on disk; the path of
    the key that signed it. SignatureError says what does not match."""
    exceptions, _, _, ec = _crypto()
    root = Path(root)
    payload, signature, hint = _read_signature(root)
    signer = None
    for path in public_keys:
        key = _load_public_key(path)
        if hint and hint != key_fingerprint(key):
            continue
        try:
            key.verify(signature, _pae(payload), ec.ECDSA(_hash_for(key)))
            signer = path
            break
        except exceptions.InvalidSignature:
            continue
    if signer is None:
        _check_files(root, payload)  # modified files are the first thing to say, whoever signed
        raise SignatureError(f"the signature of bundle {root.name} verifies under none of the {len(public_keys)} "
                             "trusted key(s): signed by another key, or its signed statement was altered")
    _check_files(root, payload)
    return str(signer)


@dataclass(frozen=True)
class TrustPolicy:
    keys: tuple[Path, ...] = ()
    require: bool = False
    source: str = "none"


def _config_file() -> Path:
    if os.environ.get(TRUST_FILE_ENV):
        return Path(os.environ[TRUST_FILE_ENV]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "edgepack" / "trust.toml"


def _read_trust_file(path: Path) -> tuple[list[Path], bool]:
    try:
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # the signing extra brings tomli
            import tomli as tomllib
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        keys, require = data.get("keys", []), data.get("require_signature", False)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or not isinstance(require, bool):
            raise ValueError("keys must be a list of paths and require_signature true or false")
    except (ImportError, OSError, ValueError) as exc:
        raise UsageError(f"{path} cannot be used as the trust policy ({first_line(exc, 120)}); fix it") from exc
    return [Path(k).expanduser() for k in keys], require


def trust_policy() -> TrustPolicy:
    """The device's policy: the environment's keys and requirement together with the trust
    file's. Trusted keys imply the requirement: with keys configured, a bundle without a
    signature could be a signed one whose bundle.sig was simply deleted."""
    keys = [Path(p).expanduser() for p in os.environ.get(TRUSTED_KEYS_ENV, "").split(os.pathsep) if p.strip()]
    require = os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")
    sources = [f"${TRUSTED_KEYS_ENV}/${REQUIRE_ENV}"] if keys or require else []
    path = _config_file()
    if path.is_file():
        file_keys, file_require = _read_trust_file(path)
        keys += [k for k in file_keys if k not in keys]
        require = require or file_require
        sources.append(str(path))
    return TrustPolicy(tuple(keys), require or bool(keys), " and ".join(sources) or "none")


def check_signature(bundle: Bundle, require: bool = False) -> dict[str, Any]:
    """Apply the trust policy (and `require`) to an open bundle: raises SignatureError when
    it must be refused; else says what was checked."""
    policy = trust_policy()
    signed = (bundle.root / SIGNATURE_FILE).is_file()
    if not signed:
        if require or policy.require:
            raise SignatureError(f"bundle {bundle.manifest.name} is not signed and the trust policy "
                                 f"({policy.source if policy.require else '--require-signature'}) requires a "
                                 "signature; sign it with `edgepack sign BUNDLE --key KEY.pem`")
        return {"signed": False, "verified": False}
    if not policy.keys:
        check_files(bundle.root)  # no key says who signed, but the file list still says what was signed
        if require or policy.require:
            raise SignatureError("a signature is required but no trusted keys are configured; set "
                                 f"{TRUSTED_KEYS_ENV} or list keys in {_config_file()}")
        return {"signed": True, "verified": False, "reason": "no trusted keys configured; its files match it"}
    return {"signed": True, "verified": True, "key": verify_signature(bundle.root, policy.keys)}
