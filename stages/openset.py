"""How well the served model knows when a picture is not a digit, on sets never used to train or choose.

Every picture goes through the server's preprocessing (digits.mnistify) and the calibration the export
stage ships (models/calibration.json), so these are the answers the app would give. Reads models/model.keras,
models/calibration.json, data/prepared/test.npz, data/fashion/ and data/negatives/test.npz. Writes
metrics/openset.json (the headline shares: MNIST test digits rejected, Fashion-MNIST and the held-out family
rejected, Fashion-MNIST's AUROC, the low-resolution captures of the test digits rejected), plots/openset.csv
(the report: per set, the share rejected and, for digits, accuracy, for non-digits, AUROC and the share
accepted at 95% of the digits) and plots/openset_scores.png.

Sets: the MNIST test digits (false rejections must stay rare), digits rendered from fonts (a style MNIST
lacks: must still be accepted), Fashion-MNIST's test set, every generated family on seeds of its own (the
held-out family never trained on), pure noise, and each robustness corruption of the test digits; and
Fashion-MNIST class by class, to show which clothes pass for digits.
"""

import json

from digits import paths
from digits.cli import log, run_stage
from digits.files import write_csv, write_json
from digits.params import Params

FONT_DIGITS = NOISE = 1000  # pictures generated for each of these sets (at most openset.samples)


def main(params: Params) -> None:
    from digits import negatives, robustness
    from digits.confidence import Calibration, rejection_metrics
    from digits.idx import read_idx
    from digits.models import load_model
    from digits.plots import save_score_histograms
    from digits.seeding import generator
    from digits.served import FASHION_CLASSES, Judged, digits_report, judge
    from digits.splits import load_split

    p = params.openset
    calibration = Calibration.from_dict(json.loads(paths.CALIBRATION.read_text()))
    model = load_model(paths.MODEL)

    test_x, test_y = load_split(paths.prepared("test"))
    keep = robustness.subset(len(test_y), p.samples, p.seed)
    test_x, test_y = test_x[keep], test_y[keep]
    mnist = judge(model, calibration, test_x)
    font_x, font_y = negatives.font_digits(min(FONT_DIGITS, p.samples), generator(p.seed, "font digits"))
    fonts = judge(model, calibration, font_x)
    report = {"mnist": digits_report(mnist, test_y), "font_digits": digits_report(fonts, font_y)}

    fashion = read_idx(paths.FASHION / "t10k-images-idx3-ubyte")[: p.samples]
    labels = read_idx(paths.FASHION / "t10k-labels-idx1-ubyte")[: p.samples]
    judged = {"Fashion-MNIST": judge(model, calibration, fashion)}
    neg_x, neg_family = load_split(paths.negatives("test"))
    neg = judge(model, calibration, neg_x)
    for i, family in enumerate(negatives.FAMILIES):
        held = " (held out)" if family == params.negatives.heldout else ""
        judged[family + held] = neg[neg_family == i]
    noise = negatives.pure_noise(min(NOISE, p.samples), generator(p.seed, "noise"))
    judged["pure noise"] = judge(model, calibration, noise)
    clothes = {
        f"Fashion-MNIST {c}": judged["Fashion-MNIST"][labels == i] for i, c in enumerate(FASHION_CLASSES)
    }

    def rejection(j: Judged) -> dict:
        return rejection_metrics(mnist.scores, j.scores, j.accepted) | {"n": len(j.scores)}

    report["non_digits"] = {name: rejection(j) for name, j in judged.items()}
    report["clothes"] = {name: rejection(j) for name, j in clothes.items() if len(j.scores)}
    report["corruptions"] = {
        name: digits_report(judge(model, calibration, x), test_y)
        for name, x in robustness.corrupt_all(test_x, params.robustness.seed).items()
    }

    fashion, heldout = report["non_digits"]["Fashion-MNIST"], f"{params.negatives.heldout} (held out)"
    write_json(
        paths.metrics("openset"),
        {
            "mnist_rejected": report["mnist"]["rejected"],
            "fashion_rejected": fashion["rejected"],
            "fashion_auroc": fashion["auroc"],
            "heldout_rejected": report["non_digits"][heldout]["rejected"],
            "lowres_rejected": report["corruptions"]["lowres"]["rejected"],
        },
    )
    sets = {"MNIST test": report["mnist"], "font digits": report["font_digits"], **report["non_digits"]}
    sets |= {f"MNIST {k}": m for k, m in report["corruptions"].items()} | report["clothes"]
    columns = ("rejected", "accuracy", "accepted_and_correct", "auroc", "fpr_at_95_tpr", "n")
    rows = [{"set": name, **{k: m.get(k) for k in columns}} for name, m in sets.items()]
    write_csv(paths.OPENSET_REPORT, rows)
    scores = {"MNIST test": mnist.scores, **{name: j.scores for name, j in judged.items()}}
    save_score_histograms(
        paths.OPENSET_SCORES, scores | {"font digits": fonts.scores}, *calibration.score_threshold()
    )
    for row in rows:
        log(f"openset: {row['set']:<25} rejected {row['rejected']:.2%}")


if __name__ == "__main__":
    run_stage("openset", main)
