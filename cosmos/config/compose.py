"""Compose the Hydra tree `conf/` into `params.yaml`, byte-identical to what `dvc exp run` writes.

DVC's Hydra integration (`dvc config hydra.enabled true`) composes `conf/config.yaml` with the `-S`
overrides, resolves interpolations and dumps the result to `params.yaml`. `dvc repro` never composes, so
after editing `conf/` run `python -m cosmos.config.compose` (a test fails while the two disagree).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf

from cosmos.io.atomic import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[2]


def compose_params(overrides: list[str] | None = None, config_dir: str | Path | None = None,
                   config_name: str = "config") -> str:
    """The YAML text of the composed, resolved config."""
    config_dir = Path(config_dir) if config_dir is not None else REPO_ROOT / "conf"
    with initialize_config_dir(str(config_dir.resolve()), version_base=None):
        cfg = compose(config_name=config_name, overrides=list(overrides or []))
    OmegaConf.resolve(cfg)
    return OmegaConf.to_yaml(cfg)


def explain_composition_error(err: Exception, config_dir: str | Path | None = None) -> str:
    """One line naming the cause and the fix, for a Hydra composition error (a missing group option, an
    unknown key, a malformed override) instead of Hydra's multi-line text and traceback."""
    text = str(err)
    head = text.splitlines()[0].strip() if text else type(err).__name__
    missing = re.search(r"Could not find '([^/']+)/([^']+)'", text)
    if missing:
        options = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], flags=re.M)
        return (f"no option {missing.group(2)!r} in config group {missing.group(1)!r}: use one of "
                f"{', '.join(options) or '(none found)'} (files under conf/{missing.group(1)}/)")
    unknown = re.search(r"Could not override '([^']+)'", text)
    if unknown:
        key = unknown.group(1)
        parent = key.rpartition(".")[0]
        known = _keys_under(parent, config_dir)
        hint = f"; keys of {parent or 'the config'}: {', '.join(known)}" if known else ""
        return f"unknown key {key!r}: check its spelling against conf/{hint}"
    return f"{head} (check the override's syntax: group=option or section.key=value)"


def _keys_under(dotted: str, config_dir: str | Path | None) -> list[str]:
    try:
        node = OmegaConf.create(compose_params(config_dir=config_dir))
        node = OmegaConf.select(node, dotted) if dotted else node
    except Exception:  # noqa: BLE001 - only a hint; the error line stands without it
        return []
    return sorted(node.keys()) if hasattr(node, "keys") else []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. profile=debug data.sizes.train=100")
    parser.add_argument("--out", default=str(REPO_ROOT / "params.yaml"), help="where to write (default: params.yaml)")
    args = parser.parse_args(argv)
    try:
        text = compose_params(args.overrides)
    except HydraException as err:
        sys.exit(f"compose failed: {explain_composition_error(err)}. Nothing was written.")
    atomic_write_text(args.out, text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
