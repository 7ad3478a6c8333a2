"""Stage fashion: Fashion-MNIST's 10,000 test pictures into data/fashion (two IDX files + manifest.json).

Clothes, not digits: the open-set evaluation's "is this a digit at all?" set. Which sources are tried, and
in what order, is `fashion:` in params.yaml; see digits/fashion.py.
"""

from digits import paths
from digits.cli import run_stage
from digits.fashion import fetch_fashion
from digits.params import Params


def main(params: Params) -> None:
    fetch_fashion(params.fashion, paths.FASHION)


if __name__ == "__main__":
    run_stage("fashion", main)
