"""``python -m clva_lite.toy train --out data/toy-llava [--quick]`` and ``... card`` (the generated model card)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clva_lite.toy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train the toy LLaVA (4 stages) and save it")
    train.add_argument("--out", default="data/toy-llava", help="output folder (default: data/toy-llava)")
    train.add_argument("--quick", action="store_true", help="a ~1 minute run for tests and the recipe notebook")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--config-json", default=None, help="TrainConfig fields to override, as JSON")
    train.add_argument("--world", default=None, choices=("plain", "decoys"),
                       help="the toy world to train in (default: plain; docs/toy.md, 'Worlds')")
    card = commands.add_parser("card", help="evaluate a trained toy model on the test split and write its card")
    card.add_argument("--model", default="data/toy-llava")
    card.add_argument("--scenes", type=int, default=300, help="test scenes per benchmark (default 300)")
    card.add_argument("--rescore", action="store_true",
                      help="re-score the saved card records with the current metric code (no model run)")
    args = parser.parse_args(argv)

    if args.command == "train":
        import json

        from .train import main_train

        overrides = json.loads(args.config_json) if args.config_json else {}
        if args.world is not None:
            overrides["world"] = args.world
        main_train(args.out, quick=args.quick, seed=args.seed, config_json=json.dumps(overrides) if overrides else None)
    else:
        from .card import rescore_model_card, write_model_card

        path = rescore_model_card(args.model) if args.rescore else write_model_card(args.model, n_scenes=args.scenes)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
