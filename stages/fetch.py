"""Stage fetch: get MNIST into data/raw as four verified IDX files plus manifest.json.

Which sources are tried, and in what order, is `fetch:` in params.yaml; see digits/fetch.py.
"""

from digits import paths
from digits.cli import run_stage
from digits.fetch import fetch
from digits.params import Params


def main(params: Params) -> None:
    fetch(params.fetch, paths.RAW)


if __name__ == "__main__":
    run_stage("fetch", main)
