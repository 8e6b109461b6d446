"""The `aios-serve` command line."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from pathlib import Path

import pydantic
import yaml

from aios_serve import __version__
from aios_serve.app import create_app
from aios_serve.banner import public_url
from aios_serve.config import ServerConfig, load_config
from aios_serve.lifecycle import serve
from aios_serve.models.from_flags import ENGINES, ModelFlags, specs_from_flags
from aios_serve.native_memory import configure_process
from aios_serve.observability.request_ids import LOG_FORMAT, install_request_id_logging
from aios_serve.registry import check_options
from aios_serve.security import KeyRing, parse_api_keys
from aios_serve.usage.cli import add_usage_parser, run_usage

API_KEYS_ENV = "AIOS_API_KEYS"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aios-serve", description="Serve the AIOS API.")
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the configured models")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--config", type=Path, default=None, help="YAML model config (default: bundled models)"
    )
    _add_model_flags(serve)
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="[NAME:]KEY",
        help=f"require this API key (repeatable); also {API_KEYS_ENV}=name:key,name2:key2",
    )
    serve.add_argument(
        "--ray",
        action="store_true",
        help="run each model as a Ray Serve deployment behind the same API (needs ray[serve])",
    )
    add_usage_parser(commands)
    return parser


def _add_model_flags(serve: argparse.ArgumentParser) -> None:
    """`serve --model PATH`: serve local models without a config file."""
    serve.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="PATH",
        help="serve this .gguf file or Hugging Face folder (repeatable); not with --config",
    )
    serve.add_argument(
        "--served-model-name",
        action="append",
        nargs="+",
        default=[],
        metavar="NAME",
        help="the name (then aliases) of the --model of the same rank; default: file or folder name",
    )
    serve.add_argument(
        "--kind",
        action="append",
        default=[],
        choices=["embedding", "cross-encoder", "generate"],
        help="the model's kind (default: read from its files); once for all, or once per --model",
    )
    serve.add_argument(
        "--engine",
        action="append",
        default=[],
        choices=ENGINES,
        help="the engine that runs it (default auto); once for all, or once per --model",
    )
    serve.add_argument(
        "--max-model-len",
        action="append",
        default=[],
        type=int,
        metavar="TOKENS",
        help="longest prompt plus output; once for all, or once per --model",
    )
    serve.add_argument(
        "--data-dir", default=None, help="folder for the usage store (default: config data_dir, ./data)"
    )


def serve_config(args: argparse.Namespace) -> ServerConfig:
    """The config file's, the bundled defaults, or one built from `--model` flags."""
    model_only = ("served_model_name", "kind", "engine", "max_model_len")
    if not args.model:
        given = [f"--{flag.replace('_', '-')}" for flag in model_only if getattr(args, flag)]
        if given:
            raise SystemExit(f"aios-serve: {', '.join(given)} needs --model")
        try:
            config = load_config(args.config)
        except (OSError, yaml.YAMLError, ValueError) as exc:  # ValueError: pydantic's validation
            raise SystemExit(f"aios-serve: config {args.config}: {exc}") from None
    elif args.config is not None:
        raise SystemExit(
            "aios-serve: give either --config or --model, not both (list the model in the config file)"
        )
    else:
        flags = ModelFlags(
            paths=args.model,
            names=args.served_model_name,
            kinds=args.kind,
            engines=args.engine,
            max_model_lens=args.max_model_len,
        )
        try:
            config = ServerConfig(models=specs_from_flags(flags))
        except ValueError as exc:
            raise SystemExit(f"aios-serve: {exc}") from None
    if args.data_dir is not None:
        config = config.model_copy(update={"data_dir": args.data_dir})
    return config


def _with_api_keys(config: ServerConfig, from_args: list[str]) -> ServerConfig:
    """Add keys from the environment and the command line to those in the config."""
    entries = [os.environ.get(API_KEYS_ENV, ""), *from_args]
    try:
        added = parse_api_keys(entries, first_number=len(config.api_keys) + 1)
        KeyRing([*config.api_keys, *added])  # names and keys must be unique
    except ValueError as exc:  # the messages never contain a key
        raise SystemExit(f"aios-serve: invalid API keys: {exc}") from None
    return config.model_copy(update={"api_keys": [*config.api_keys, *added]})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "usage":
        return run_usage(args)
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    install_request_id_logging()
    if args.command == "serve":
        config = _with_api_keys(serve_config(args), args.api_key)
        configure_process(config.memory)  # before any model loads
        try:
            for spec in config.models:
                check_options(spec)
        except pydantic.ValidationError as exc:
            raise SystemExit(f"aios-serve: invalid model options: {exc}") from None
        if args.ray:
            if importlib.util.find_spec("ray") is None:
                raise SystemExit("aios-serve: serve --ray needs ray[serve] here (`make ray-venv`)")
            from aios_serve.deploy.ray_serve import serve_with_ray

            serve_with_ray(config, args.host, args.port)
            return 0
        app = create_app(config, public_url=public_url(args.host, args.port))
        try:
            serve(app, args.host, args.port, args.log_level, config.drain_timeout_s)
        finally:
            if app.state.registry.load_error is not None:
                raise SystemExit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
