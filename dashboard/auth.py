"""Users and roles of the dashboard.

Two modes:

* **OIDC** (``st.login``) when ``.streamlit/secrets.toml`` has an ``[auth]`` section: the identity
  provider authenticates; the role comes from the users file entry whose ``email`` matches, else
  ``resident`` (who can read and edit but never sign).
* **Local** otherwise: users, roles and password hashes from a YAML file named by
  ``MEDVLM_USERS_FILE`` (``dashboard/users.example.yaml`` is the demo file). Passwords are stored
  only as scrypt hashes (``scrypt$n$r$p$salt$hash``, base64 salt and hash); never in plain text.

Only radiologists sign (``can_sign``); the store's sign function is called only after this check,
and ``dashboard.logic.approve`` refuses (and audits the refusal) for any other role.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = ("radiologist", "resident", "admin")
SIGNING_ROLES = frozenset({"radiologist"})
USERS_FILE_ENV = "MEDVLM_USERS_FILE"
DEFAULT_USERS_FILE = Path(__file__).with_name("users.example.yaml")

# scrypt cost: n=2**14, r=8 (~16 MiB, ~50 ms) is the interactive-login setting of the scrypt paper.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1


class AuthError(RuntimeError):
    """The users file is missing or malformed (the message names the file, never a password)."""


@dataclass(frozen=True)
class User:
    """A dashboard user.

    Attributes:
        username: login name; what the audit log records as actor.
        display_name: shown in the page header.
        role: one of ``ROLES``.
        email: the OIDC e-mail that maps to this user, if any.
        password_hash: ``scrypt$...`` hash (local mode); empty for OIDC-only users.
    """

    username: str
    display_name: str
    role: str
    email: str | None = None
    password_hash: str = ""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise AuthError(f"user {self.username!r}: role must be one of {', '.join(ROLES)}, got {self.role!r}")


def can_sign(role: str) -> bool:
    """True when ``role`` may sign (approve) a report."""
    return role in SIGNING_ROLES


def hash_password(password: str, *, salt: bytes | None = None, n: int = SCRYPT_N, r: int = SCRYPT_R,
                  p: int = SCRYPT_P) -> str:
    """Hash a password with scrypt.

    Args:
        password: the password.
        salt: 16 random bytes by default.
        n: CPU/memory cost (power of two).
        r: block size.
        p: parallelism.

    Returns:
        ``scrypt$n$r$p$salt_b64$hash_b64``.
    """
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=64 * 2**20)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Check a password against a ``hash_password`` string in constant time.

    Args:
        password: what the user typed.
        encoded: the stored hash.

    Returns:
        True when they match; False for a wrong password or a malformed hash.
    """
    try:
        scheme, n, r, p, salt_b64, digest_b64 = encoded.split("$")
        if scheme != "scrypt":
            return False
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
        got = hashlib.scrypt(password.encode(), salt=salt, n=int(n), r=int(r), p=int(p),
                             dklen=len(expected), maxmem=64 * 2**20)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def users_file_path(env: dict[str, str] | None = None) -> Path:
    """The users file named by ``$MEDVLM_USERS_FILE``.

    There is deliberately no fallback to the demo file: its passwords are public, so a deployment that
    forgot to configure users must not accept them. `medvlm demo` names the demo file explicitly.

    Raises:
        AuthError: the variable is not set.
    """
    env = os.environ if env is None else env
    value = env.get(USERS_FILE_ENV)
    if not value:
        raise AuthError(f"no users configured: set {USERS_FILE_ENV} to a users file (format and demo users in "
                        f"{DEFAULT_USERS_FILE.name}; `python -m dashboard.auth hash` makes password hashes), "
                        "or configure single sign-on")
    return Path(value)


def load_users(path: str | Path) -> dict[str, User]:
    """Read users from a YAML file.

    Format::

        users:
          - username: rad1
            display_name: Dr. Rad One
            role: radiologist
            email: rad1@example.org      # optional, for OIDC
            password_hash: scrypt$16384$8$1$...$...

    Args:
        path: the YAML file.

    Returns:
        Users by username.

    Raises:
        AuthError: file missing, not YAML, a user without username/role, a plaintext
            ``password`` key, or a duplicate username.
    """
    import yaml

    p = Path(path)
    try:
        data: Any = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuthError(f"users file not found: {p} (set {USERS_FILE_ENV})") from None
    except yaml.YAMLError:
        raise AuthError(f"users file is not valid YAML: {p}") from None
    rows = (data or {}).get("users") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise AuthError(f"users file {p} must have a top-level 'users' list")
    users: dict[str, User] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not row.get("username") or not row.get("role"):
            raise AuthError(f"users file {p}: entry {i} needs 'username' and 'role'")
        if "password" in row:
            raise AuthError(f"users file {p}: entry {i} has a plaintext 'password'; store 'password_hash' "
                            "(python -m dashboard.auth hash)")
        name = str(row["username"])
        if name in users:
            raise AuthError(f"users file {p}: duplicate username at entry {i}")
        users[name] = User(
            username=name,
            display_name=str(row.get("display_name") or name),
            role=str(row["role"]),
            email=str(row["email"]).lower() if row.get("email") else None,
            password_hash=str(row.get("password_hash") or ""),
        )
    return users


def authenticate(users: dict[str, User], username: str, password: str) -> User | None:
    """Return the user when the password matches, else None (unknown user or wrong password).

    An unknown user still costs one scrypt evaluation, so timing does not reveal which names exist.
    """
    user = users.get(username)
    if user is None or not user.password_hash:
        verify_password(password, hash_password("x", salt=b"\0" * 16))
        return None
    return user if verify_password(password, user.password_hash) else None


def oidc_user(users: dict[str, User], email: str | None, name: str | None) -> User:
    """Map an OIDC identity to a user: the users-file entry with that e-mail, else a resident."""
    email_l = (email or "").lower()
    for user in users.values():
        if email_l and user.email == email_l:
            return user
    username = email_l or (name or "oidc-user")
    return User(username=username, display_name=name or username, role="resident", email=email_l or None)


def oidc_configured(secrets_obj: Any) -> bool:
    """True when Streamlit secrets carry an ``[auth]`` section (then ``st.login`` is used)."""
    try:
        return "auth" in secrets_obj
    except Exception:  # noqa: BLE001 - st.secrets raises when no secrets file exists
        return False


def main(argv: list[str] | None = None) -> int:
    """``python -m dashboard.auth hash``: read a password from stdin, print its hash."""
    import getpass
    import sys

    args = sys.argv[1:] if argv is None else argv
    if args[:1] != ["hash"]:
        print("usage: python -m dashboard.auth hash   (reads the password, prints password_hash)")
        return 2
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    print(hash_password(password))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
