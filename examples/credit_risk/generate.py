"""Write the seeded Home-Credit-like tables at any scale.

python examples/credit_risk/generate.py --applicants 200000 --out data/credit_200k
"""

from __future__ import annotations

import argparse

from traceprop_frames.datasets import make_credit_risk


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--applicants", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="output folder (default data/credit_<applicants>)")
    args = ap.parse_args(argv)
    paths = make_credit_risk(args.out or f"data/credit_{args.applicants}", args.applicants, args.seed)
    for name, p in paths.items():
        print(f"{name:>22}: {p}")


if __name__ == "__main__":
    main()
