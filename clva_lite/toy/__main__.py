"""``python -m clva_lite.toy train --out data/toy-llava [--quick]`` and ``... card`` (the generated model card)."""

from __future__ import annotations

import argparse
import time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clva_lite.toy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train the toy LLaVA (4 stages) and save it")
    train.add_argument("--out", default="data/toy-llava", help="output folder (default: data/toy-llava)")
    train.add_argument("--quick", action="store_true", help="a ~1 minute run for tests and the recipe notebook")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--recipe", choices=("v1", "v2"), default="v1",
                       help="v1 (default, the bundled model) or v2 (clva_lite/toy/v2: 24 categories, 144 tokens, "
                            "16 x 8 decoder, CLIP-like vision and text-only language pre-training)")
    card = commands.add_parser("card", help="evaluate a trained toy model on the test split and write its card")
    card.add_argument("--model", default="data/toy-llava")
    card.add_argument("--scenes", type=int, default=500, help="test scenes per benchmark")
    card.add_argument("--rescore", action="store_true",
                      help="re-score the saved card records with the current metric code (no model run)")
    args = parser.parse_args(argv)

    if args.command == "train" and args.recipe == "v2":
        from .v2.train import main_train

        out = args.out if args.out != "data/toy-llava" else "runs/toy-v2"
        main_train(out, quick=args.quick, seed=args.seed)
    elif args.command == "train":
        from .train import TrainConfig, train_toy_model

        config = TrainConfig.quick() if args.quick else TrainConfig()
        config.seed = args.seed
        start = time.time()
        train_toy_model(config, out=args.out)
        print(f"trained in {time.time() - start:.0f} s -> {args.out}")
    else:
        from .card import rescore_model_card, write_model_card

        path = rescore_model_card(args.model) if args.rescore else write_model_card(args.model, n_scenes=args.scenes)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
