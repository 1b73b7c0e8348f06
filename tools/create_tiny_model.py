"""Write a tiny, randomly initialised masked LM plus a real tokenizer to a directory (src/random_models.py).

    python tools/create_tiny_model.py --model_type roberta|bert|deberta-v2|modernbert --output_dir DIR
"""
import os

from src.checks import ArgumentParser
from src.random_models import TINY_MODELS, create


def main(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_type", required=True, choices=list(TINY_MODELS))
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(create(args.model_type, args.output_dir, args.seed))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
