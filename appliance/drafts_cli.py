"""``borealis drafts``: the operator API's draft registry from a terminal (ls, show, aliases, decisions).

Talks HTTP to the control plane (``BOREALIS_CONTROL_PLANE_URL``) with the admin credential
(``BOREALIS_ADMIN_TOKEN``, else the token file ``borealis up`` wrote); every decision is audited
with the ``--reason`` given, exactly as from the dashboard.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx

from borealis.settings import Settings, get_settings

ACTIONS = ("approve", "reject", "promote", "rollback")
COLUMNS = ("id", "status", "parent_id", "source", "created_at", "shadow_candidate", "shadow_live")


def admin_client(settings: Settings) -> httpx.Client:
    security = settings.security
    token = security.admin_token
    if not token and security.admin_token_file.is_file():
        token = security.admin_token_file.read_text().strip()
    if not token:
        raise RuntimeError(
            f"no admin credential: set BOREALIS_ADMIN_TOKEN or create {security.admin_token_file}"
        )
    return httpx.Client(
        base_url=settings.resolved_control_plane_url,
        headers={"authorization": f"Bearer {token}"},
        timeout=30,
    )


def table(rows: list[dict[str, Any]], aliases: dict[str, str | None]) -> str:
    """One line per version, newest first, its aliases beside it."""
    named = {version: name for name, version in aliases.items() if version}
    cells = [[*COLUMNS, "alias"]]
    for row in rows:
        values = [_cell(row.get(column)) for column in COLUMNS]
        cells.append([*values, f"@{named[row['id']]}" if row["id"] in named else ""])
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)[:19]


def run(args: argparse.Namespace) -> int:
    try:
        with admin_client(get_settings()) as client:
            return _dispatch(client, args)
    except (RuntimeError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _dispatch(client: httpx.Client, args: argparse.Namespace) -> int:
    if args.action == "ls":
        params = {"status": args.status} if args.status else {}
        response = client.get("/api/drafts", params=params)
    elif args.action == "show":
        response = client.get(f"/api/drafts/{args.version}")
    elif args.action == "aliases":
        response = client.get("/api/drafts/aliases")
    elif args.action == "annotate":
        try:
            tags = dict(_key_value(tag) for tag in args.tag)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        body = {"set_tags": tags, "delete_tags": args.untag, "note": args.note, "reason": args.reason}
        response = client.patch(f"/api/drafts/{args.version}", json=body)
    else:
        response = client.post(f"/api/drafts/{args.version}/{args.action}", json={"reason": args.reason})
    if response.status_code >= 400:
        print(f"error: {response.status_code} {response.text}", file=sys.stderr)
        return 1
    if args.action == "ls" and not args.json:
        print(table(response.json(), client.get("/api/drafts/aliases").json()))
    else:
        print(json.dumps(response.json(), indent=2))
    return 0


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--tag takes KEY=VALUE, not {text!r}")
    return key, value


def add_parser(commands: Any) -> None:
    drafts = commands.add_parser(
        "drafts", help="the draft registry: list, inspect, approve, promote, roll back"
    )
    actions = drafts.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("ls", help="every version, newest first, with its alias")
    listing.add_argument("--status", default=None, help="only this status, e.g. pending_approval")
    listing.add_argument("--json", action="store_true", help="the API's JSON instead of a table")
    actions.add_parser("show", help="one version: metrics, shadow evaluation, lineage").add_argument(
        "version"
    )
    actions.add_parser("aliases", help="@champion (live), @challenger, @previous (what rollback restores)")
    for action in ACTIONS:
        decision = actions.add_parser(action, help=f"{action} a version (audited)")
        decision.add_argument("version")
        decision.add_argument("--reason", default="", help="recorded in the audit log")
    annotate = actions.add_parser("annotate", help="set or delete tags and replace the note (audited)")
    annotate.add_argument("version")
    annotate.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="set a tag")
    annotate.add_argument("--untag", action="append", default=[], metavar="KEY", help="delete a tag")
    annotate.add_argument("--note", default=None, help="replaces the version's note")
    annotate.add_argument("--reason", default="", help="recorded in the audit log")
    drafts.set_defaults(func=run)
