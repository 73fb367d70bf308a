"""Compose the Hydra tree `conf/` into `params.yaml`, byte-identical to what `dvc exp run` writes.

DVC's Hydra integration (`dvc config hydra.enabled true`) composes `conf/config.yaml` with the `-S`
overrides, resolves interpolations and dumps the result to `params.yaml`. `dvc repro` never composes, so
after editing `conf/` run `python -m cosmos.config.compose` (a test fails while the two disagree).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra import compose, initialize_config_dir
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. profile=debug data.sizes.train=100")
    parser.add_argument("--out", default=str(REPO_ROOT / "params.yaml"), help="where to write (default: params.yaml)")
    args = parser.parse_args(argv)
    atomic_write_text(args.out, compose_params(args.overrides))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
