"""The `borealis` command line. Torch is imported only by the subcommands that need it."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from appliance import drafts_cli
from borealis.processes import idle_session_weight
from borealis.settings import get_settings, masked, unknown_settings
from borealis.version import package_version


def _up(args: argparse.Namespace) -> int:
    from appliance.supervisor import run_appliance

    if args.model:  # the children read the environment the supervisor hands them
        model_dir = Path(args.model).expanduser().resolve()
        if not (model_dir / "config.json").is_file():
            print(
                f"error: {model_dir} is not a Hugging Face model directory (no config.json)", file=sys.stderr
            )
            return 2
        os.environ["BOREALIS_MODEL_PATH"] = str(model_dir)
        os.environ.setdefault("BOREALIS_MODEL_NAME", model_dir.name)
    if args.served_model_name:
        os.environ["BOREALIS_MODEL_NAME"] = args.served_model_name
    get_settings.cache_clear()
    return run_appliance(get_settings(), prepare_model=not args.no_prepare)


def _config_show(_args: argparse.Namespace) -> int:
    print(json.dumps(masked(get_settings()), indent=2, sort_keys=True))
    return 0


def _api(_args: argparse.Namespace) -> int:
    import uvicorn

    from backend.app import create_app

    settings = get_settings()
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_level="info")
    return 0


def _worker_inference(_args: argparse.Namespace) -> int:
    from worker.inference.main import run_inference_worker

    run_inference_worker(get_settings())
    return 0


def _worker_train(args: argparse.Namespace) -> int:
    from worker.training.celery_app import app

    settings = get_settings()
    os.nice(settings.trainer_nice)
    if settings.trainer_sched_idle and hasattr(os, "SCHED_IDLE"):
        # Before torch starts its thread pool: every thread inherits the policy.
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        idle_session_weight()
    app.worker_main(
        [
            "worker",
            "--pool=solo",
            "--concurrency=1",
            # Trainers coordinate through the round chain in Redis, not through worker gossip.
            "--without-gossip",
            "--without-mingle",
            f"--loglevel={args.loglevel}",
            f"--hostname=trainer@{os.uname().nodename}-{os.getpid()}",
        ]
    )
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    from backend.db.migrate import upgrade

    upgrade(get_settings().resolved_database_url, args.revision)
    return 0


def _db_downgrade(args: argparse.Namespace) -> int:
    from backend.db.migrate import downgrade

    downgrade(get_settings().resolved_database_url, args.revision)
    return 0


def _model_prepare(args: argparse.Namespace) -> int:
    from worker.model_prep import ModelPrepError, prepare_embedded_model

    settings = get_settings()
    try:
        path = prepare_embedded_model(settings.embedded_model_dir, force=args.force)
    except ModelPrepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _draft_publish(args: argparse.Namespace) -> int:
    from borealis.control_client import ControlPlaneClient, ControlPlaneError
    from borealis.secrets import resolve_cluster_token

    settings = get_settings()
    token = resolve_cluster_token(settings.security)
    client = ControlPlaneClient(settings.resolved_control_plane_url, token)
    try:
        result = client.publish(
            Path(args.dir),
            args.parent,
            json.loads(args.shadow_eval) if args.shadow_eval else None,
            source="upload",
        )
    except (ControlPlaneError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(result.model_dump_json())
    return 0


def _draft_export(args: argparse.Namespace) -> int:
    import torch

    from worker.draft.eagle3_format import export_eagle3
    from worker.draft.io import DraftArtifactError, load_draft

    dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    try:
        draft, _ = load_draft(args.dir)
        target = Path(args.target) if args.target else get_settings().resolved_model_path
        out = export_eagle3(draft, target, Path(args.out), dtypes[args.dtype])
    except (DraftArtifactError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


def _admin_rotate(_args: argparse.Namespace) -> int:
    from backend.db.migrate import upgrade
    from backend.db.session import make_engine, make_session_factory
    from backend.services.credentials import rotate_admin_credential

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    with make_session_factory(engine)() as session:
        rotate_admin_credential(session, settings.security)
    engine.dispose()
    where = settings.security.admin_token_file
    print(f"new admin credential written to {where} (owner-only); the old one is revoked")
    return 0


def _apikey_create(args: argparse.Namespace) -> int:
    from backend.crud import credentials
    from backend.db.migrate import upgrade
    from backend.db.session import make_engine, make_session_factory
    from borealis.secrets import generate_token

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    token = generate_token("sk")
    with make_session_factory(engine)() as session:
        credentials.add(session, credentials.API_KEY, args.name, token)
    engine.dispose()
    print(token)
    return 0


def _bench(args: argparse.Namespace) -> int:
    """Benchmarks parse their own flags; each lives in ``worker.bench.<name>``."""
    import importlib

    module = importlib.import_module(f"worker.bench.{args.name}")
    return int(module.main(args.rest))


def _draft_import(args: argparse.Namespace) -> int:
    from worker.draft.eagle3_format import import_eagle3
    from worker.draft.io import save_draft

    try:
        draft = import_eagle3(Path(args.dir))
        save_draft(draft, args.out, extra={"imported_from": "eagle3"})
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(args.out)
    return 0


def _draft_train(args: argparse.Namespace) -> int:
    from worker.draft.train import main as train_main

    return int(train_main(args.rest))


DESCRIPTION = """\
Borealis serves an LLM through an OpenAI-compatible API with speculative decoding, and keeps
training the draft model on your own traffic: better drafts are evaluated, approved (automatically
or by you) and hot-swapped into serving without dropping a request."""

QUICK_START = """\
start here:
  borealis up                      the whole appliance on this machine: API, dashboard, one
                                   inference worker, one training worker (SQLite, embedded Redis,
                                   the embedded SmolLM2 model); prints the dashboard URL
  borealis up --model DIR          serve your own Hugging Face model directory instead
  borealis drafts ls               draft versions with their aliases (@champion, @challenger, @previous)
  borealis config show             the settings in effect, secrets masked

several machines (see docker-compose.yml): `borealis api` on one, `borealis worker inference` and
`borealis worker train` wherever the model is. Every setting is a BOREALIS_* environment variable,
also read from ./.env and from files in $BOREALIS_SECRETS_DIR."""

BENCHMARKS = """\
speedup   tokens/s and acceptance: target-only vs speculative, in-process and --through-api
batches   speculative vs target-only at every batch size and workload, with where the time went
swap      request latency and failures while drafts are hot-swapped
load      concurrent clients for minutes while learning and swaps run; memory over time
ablation  learning-recipe arms trained on the same traces, scored by simulated acceptance
drafts    saved drafts scored on the same held-out outputs, paired against the first
shift     static vs online vs scratch drafts through a traffic domain shift
trainer   trainer optimizer steps per CPU-minute, shipped features vs target prefill
drift     the shift detector on real outputs: false alarms and caught shifts per window size
peer      llama.cpp's server against Borealis on the same GGUF and prompts, through both OpenAI APIs
step      a target-only decoding step per weight dtype against its bytes over measured bandwidth"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="borealis",
        description=DESCRIPTION,
        epilog=QUICK_START,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"borealis {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "up",
        help="run the whole appliance on this machine (Ctrl-C stops every process)",
        description="Start the control plane, an inference worker and a training worker on this machine, "
        "with an embedded Redis unless BOREALIS_REDIS_URL is set; logs rotate under $BOREALIS_HOME/logs.",
    )
    up.add_argument("--no-prepare", action="store_true", help="do not prepare the embedded model")
    up.add_argument("--model", default=None, help="serve this local Hugging Face model directory instead")
    up.add_argument(
        "--served-model-name",
        default=None,
        help="the model id clients send (default: the --model directory's name, else smollm2-135m-instruct)",
    )
    up.set_defaults(func=_up)

    commands.add_parser(
        "api", help="run the control plane only: OpenAI API, operator API, dashboard, /metrics"
    ).set_defaults(func=_api)

    config = commands.add_parser("config", help="inspect the settings in effect").add_subparsers(
        dest="action", required=True
    )
    config.add_parser(
        "show", help="the effective settings (environment, .env, secrets directory), secrets masked"
    ).set_defaults(func=_config_show)

    worker = commands.add_parser(
        "worker", help="run one worker process (the multi-machine shape; `up` starts both)"
    ).add_subparsers(dest="kind", required=True)
    worker.add_parser(
        "inference", help="serve the model for the control plane, hot-swap drafts, export traces"
    ).set_defaults(func=_worker_inference)
    train = worker.add_parser("train", help="learn the draft from served traces (a Celery worker, solo pool)")
    train.add_argument("--loglevel", default="info", help="Celery's log level (debug, info, warning)")
    train.set_defaults(func=_worker_train)

    db = commands.add_parser(
        "db", help="database migrations (the control plane also applies them at start)"
    ).add_subparsers(dest="action", required=True)
    db_up = db.add_parser("upgrade", help="migrate to a revision (default: head)")
    db_up.add_argument("revision", nargs="?", default="head")
    db_up.set_defaults(func=_db_upgrade)
    db_down = db.add_parser("downgrade", help="migrate back to a revision")
    db_down.add_argument("revision")
    db_down.set_defaults(func=_db_downgrade)

    model = commands.add_parser("model", help="prepare the embedded SmolLM2 model").add_subparsers(
        dest="action", required=True
    )
    prepare = model.add_parser("prepare", help="convert the embedded GGUF to safetensors (idempotent)")
    prepare.add_argument("--force", action="store_true", help="convert again even if prepared")
    prepare.set_defaults(func=_model_prepare)

    draft = commands.add_parser(
        "draft", help="offline tools for one draft: train, export for SGLang, publish"
    ).add_subparsers(dest="action", required=True)
    publish = draft.add_parser("publish", help="register and upload a draft directory to the control plane")
    publish.add_argument("dir", help="directory with draft.safetensors and manifest.json")
    publish.add_argument("--parent", default=None, help="parent version id")
    publish.add_argument(
        "--shadow-eval", default=None, help='JSON, e.g. {"code": {"candidate": 2.1, "live": 1.8}}'
    )
    publish.set_defaults(func=_draft_publish)
    export = draft.add_parser(
        "export", help="write a draft as an EAGLE-3 checkpoint (LlamaForCausalLMEagle3) for SGLang"
    )
    export.add_argument("dir", help="directory with draft.safetensors and manifest.json")
    export.add_argument("--out", required=True, help="directory for config.json and model.safetensors")
    export.add_argument("--target", default=None, help="the target model directory (default: the served one)")
    export.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    export.set_defaults(func=_draft_export)
    imported = draft.add_parser(
        "import", help="read an EAGLE-3 checkpoint (LlamaForCausalLMEagle3) back as a Borealis draft"
    )
    imported.add_argument("dir", help="directory with config.json and model.safetensors")
    imported.add_argument("--out", required=True, help="directory for draft.safetensors and manifest.json")
    imported.set_defaults(func=_draft_import)
    train_draft = draft.add_parser("train", help="train a static draft offline (see --help)", add_help=False)
    train_draft.add_argument("rest", nargs=argparse.REMAINDER)
    train_draft.set_defaults(func=_draft_train, passthrough=True)

    drafts_cli.add_parser(commands)

    bench = commands.add_parser(
        "bench",
        help="benchmarks that print JSON (borealis bench NAME --help)",
        epilog=BENCHMARKS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    benches = ["speedup", "batches", "swap", "load", "ablation", "drafts", "shift", "trainer", "drift"]
    benches += ["peer", "step"]
    bench.add_argument("name", choices=benches)
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_bench, passthrough=True)

    admin = commands.add_parser("admin", help="the operator's admin credential").add_subparsers(
        dest="action", required=True
    )
    admin.add_parser("rotate-token", help="revoke the admin credential and issue a new one").set_defaults(
        func=_admin_rotate
    )
    apikey = commands.add_parser(
        "apikey", help="inference API keys (required on /v1 when BOREALIS_REQUIRE_API_KEY=true)"
    ).add_subparsers(dest="action", required=True)
    create = apikey.add_parser("create", help="create a key (printed once; only its hash is stored)")
    create.add_argument("name")
    create.set_defaults(func=_apikey_create)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name, closest in unknown_settings(os.environ):
        hint = f"; did you mean {closest}?" if closest else ""
        logging.getLogger("borealis").warning("%s is not a Borealis setting and is ignored%s", name, hint)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):
        # Benchmarks and training parse their own flags; argparse hands leading options back here.
        args.rest = [*unknown, *args.rest]
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
