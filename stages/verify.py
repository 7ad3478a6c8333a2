"""Stage verify: check data/raw against fetch's manifest and MNIST's published sha256, on every run.

`always_changed` in dvc.yaml, so `dvc repro` runs it even when every stage is cached (a damaged DVC cache
object would otherwise go unnoticed; see digits/verify.py). It writes data/verified.json, the files' sha256:
the same bytes whenever the data is intact, so preprocess, which depends on it, runs after it and is not
rerun because of it.
"""

from digits import paths
from digits.cli import log, run_stage
from digits.files import write_json
from digits.params import Params
from digits.verify import verify_fetched


def main(params: Params) -> None:
    digests = verify_fetched(paths.RAW)
    write_json(paths.VERIFIED, digests)
    log(f"verify: the {len(digests)} files of {paths.RAW} match their sha256")


if __name__ == "__main__":
    run_stage("verify", main)
