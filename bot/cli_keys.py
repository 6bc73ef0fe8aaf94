"""`sertakan key rotate | retire | list`: the NIK key ring's life (issue 14).

- `rotate` adds a key to the ring file and makes it current (or makes a key
  staged earlier with `rotate --stage` current), records it in `key_check`,
  then re-encrypts every stored ciphertext under it in batches while the bot
  runs (`storage.key_rotation`), printing progress. Passes repeat until no
  row needs an older key (rows the bot changed mid-pass are caught by the
  next). `rotate --resume` only re-encrypts: an interrupted rotation goes on.
- `retire <id>` refuses while any row still needs that key; otherwise removes
  it from the ring file and its check value from `key_check`.
- `list` shows the ring's ids, fingerprints and how many rows each key made.

Every change is an audit entry (`key.rotate`, `key.reencrypt`, `key.retire`).
Running processes read the ring file again within seconds of a change
(`NikCipher`), so the bot keeps serving throughout.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import TextIO

from bot.app import Runtime, StartupError, build_runtime, key_file
from bot.settings import Settings
from storage import audit, key_check, key_rotation
from storage.audit import Actor
from storage.crypto import (
    KeyRing,
    KeyRingError,
    NikKeyError,
    decode_key,
    generate_key,
    write_key_ring,
)

#: Audit actions.
ROTATED = "key.rotate"
REENCRYPTED = "key.reencrypt"
RETIRED = "key.retire"
#: Passes of `rotate` before it gives up on rows the bot keeps writing with an old key.
MAX_PASSES = 10
#: Wait between passes: a flow in progress carries a NIK typed before the rotation
#: from step to step, and its row changes under the pass until the person pauses.
PASS_WAIT_S = 1.0


def add_parsers(key_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`rotate`, `retire` and `list` under `sertakan key`."""
    rotate = key_sub.add_parser(
        "rotate",
        help="add a new NIK key, make it current and re-encrypt every row with it",
    )
    rotate.add_argument(
        "--key", help="the new key (urlsafe base64 of 32 bytes; default: a new random key)"
    )
    mode = rotate.add_mutually_exclusive_group()
    mode.add_argument(
        "--stage",
        action="store_true",
        help="only add the key, readable but not yet used (copy the ring to every host, "
        "then run rotate again)",
    )
    mode.add_argument(
        "--resume",
        action="store_true",
        help="add no key: re-encrypt what still uses an older key (an interrupted rotation)",
    )
    rotate.add_argument("--batch-size", type=int, default=500, help="rows per transaction")
    rotate.add_argument(
        "--pause-ms", type=int, default=0, help="wait after each batch (a busy database)"
    )
    retire = key_sub.add_parser("retire", help="remove an old key no row uses any more")
    retire.add_argument("key_id", type=int)
    key_sub.add_parser("list", help="the key ring's ids and how many rows each key made")


async def dispatch(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    """Run `sertakan key rotate | retire | list` (printing to `out`, default stdout)."""
    out = out or sys.stdout
    command = args.key_command
    if command in ("rotate", "retire") and settings.app.nik_key is not None:
        raise StartupError(
            "the key ring is written to a file: put SERTAKAN_NIK_KEY's value into a file "
            "(mode 0600), set SERTAKAN_NIK_KEY_FILE to it, unset SERTAKAN_NIK_KEY, restart "
            "the bot and run this again"
        )
    runtime = await build_runtime(settings)
    try:
        if command == "rotate":
            return await rotate(
                runtime,
                new_key=args.key,
                stage=args.stage,
                resume=args.resume,
                batch_size=args.batch_size,
                pause_s=args.pause_ms / 1000,
                out=out,
            )
        if command == "retire":
            return await retire(runtime, args.key_id, out=out)
        return await list_keys(runtime, out=out)
    finally:
        await runtime.close()


def _operator() -> Actor:
    try:
        return Actor.admin(getpass.getuser())
    except (KeyError, OSError):
        return Actor.admin("unknown")


async def rotate(
    runtime: Runtime,
    *,
    new_key: str | None,
    stage: bool,
    resume: bool,
    batch_size: int,
    pause_s: float = 0.0,
    out: TextIO,
) -> int:
    """Add (or promote) a key, then re-encrypt; 0 when no row needs an older key afterwards."""
    cipher = runtime.cipher
    path = key_file(runtime.settings)
    ring = cipher.ring
    if not resume:
        try:
            if ring.staged is not None and new_key is None and not stage:
                ring = ring.promoted()
            else:
                raw = decode_key(new_key if new_key is not None else generate_key())
                ring = ring.with_key(raw, stage=stage)
        except NikKeyError as exc:
            print(f"sertakan: {exc}", file=sys.stderr)
            return 1
        write_key_ring(path, ring)
        cipher.adopt(ring)
        async with runtime.db.begin() as connection:
            await key_check.confirm(connection, cipher, now=runtime.clock())
            await audit.record(
                connection,
                _operator(),
                ROTATED,
                record_type="nik_key",
                record_id=ring.staged if stage else ring.current,
                opd_id=None,
                now=runtime.clock(),
                details={"staged": stage, "keys": sorted(ring.keys)},
            )
        fingerprints = cipher.fingerprints()
        if stage:
            staged = ring.staged
            assert staged is not None
            print(
                f"key {staged} (id {fingerprints[staged][0]}) staged in {path}: copy the file "
                f"to every host, then run `sertakan key rotate` to make it current",
                file=out,
            )
            return 0
        print(
            f"key {ring.current} (id {fingerprints[ring.current][0]}) is current in {path}; "
            "back the file up now",
            file=out,
        )
    current = cipher.current_id
    rewritten = 0
    older = 0
    for number in range(1, MAX_PASSES + 1):
        print(f"pass {number}: re-encrypting under key {current}", file=out)
        result = await key_rotation.reencrypt(
            runtime.db,
            cipher,
            batch_size=batch_size,
            pause_s=pause_s,
            progress=lambda line: print(f"  {line}", file=out, flush=True),
        )
        rewritten += sum(result.rewritten.values())
        counts = await key_rotation.census(runtime.db, cipher)
        older = sum(count for key_id, count in counts.items() if key_id != current)
        if older == 0:
            break
        print(f"pass {number}: {older} rows still use an older key", file=out)
        await asyncio.sleep(PASS_WAIT_S)
    async with runtime.db.begin() as connection:
        await audit.record(
            connection,
            _operator(),
            REENCRYPTED,
            record_type="nik_key",
            record_id=current,
            opd_id=None,
            now=runtime.clock(),
            details={"rewritten": rewritten, "older_left": older},
        )
    if older:
        print(
            f"{older} rows still use an older key (the bot kept writing them): "
            "run `sertakan key rotate --resume` again",
            file=out,
        )
        return 1
    retirable = sorted(key_id for key_id in cipher.ring.keys if key_id != current)
    print(f"done: {rewritten} rows re-encrypted; every row uses key {current}", file=out)
    if retirable:
        ids = ", ".join(str(key_id) for key_id in retirable)
        print(f"no row needs key {ids}: retire with `sertakan key retire <id>`", file=out)
    return 0


async def retire(runtime: Runtime, key_id: int, *, out: TextIO) -> int:
    """Remove `key_id` from the ring and `key_check`; 1 (nothing changed) while a row needs it."""
    cipher = runtime.cipher
    ring = cipher.ring
    try:
        smaller = ring.without(key_id)
    except KeyRingError as exc:
        print(f"sertakan: {exc}", file=sys.stderr)
        return 1
    counts = await key_rotation.census(runtime.db, cipher)
    if counts[key_id]:
        print(
            f"sertakan: {counts[key_id]} rows still use key {key_id}; nothing was changed. "
            "Run `sertakan key rotate --resume` first.",
            file=sys.stderr,
        )
        return 1
    fingerprint = cipher.fingerprints()[key_id][0]
    path = key_file(runtime.settings)
    write_key_ring(path, smaller)
    cipher.adopt(smaller)
    async with runtime.db.begin() as connection:
        await key_check.forget(connection, fingerprint)
        await audit.record(
            connection,
            _operator(),
            RETIRED,
            record_type="nik_key",
            record_id=key_id,
            opd_id=None,
            now=runtime.clock(),
            details={"fingerprint": fingerprint, "keys": sorted(smaller.keys)},
        )
    print(f"key {key_id} (id {fingerprint}) retired from {path}", file=out)
    return 0


async def list_keys(runtime: Runtime, *, out: TextIO) -> int:
    """Print the ring's keys, which is current or staged, and the rows each made."""
    cipher = runtime.cipher
    ring: KeyRing = cipher.ring
    counts = await key_rotation.census(runtime.db, cipher)
    print("key\tid\tstate\trows", file=out)
    for key_id, (fingerprint, _) in sorted(cipher.fingerprints().items()):
        state = (
            "current" if key_id == ring.current else "staged" if key_id == ring.staged else "old"
        )
        print(f"{key_id}\t{fingerprint}\t{state}\t{counts[key_id]}", file=out)
    if counts[key_rotation.UNREADABLE]:
        print(f"{counts[key_rotation.UNREADABLE]} rows no key of the ring can read", file=out)
    return 0
