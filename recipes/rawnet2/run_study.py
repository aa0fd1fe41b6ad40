#!/usr/bin/env python3
"""The RawNet2 study in one command (CPU-sized by default): feature map scaling variants and first layers.

    .venv/bin/python -m recipes.rawnet2.run_study [--seeds 0] [--systems fms_none fms_mul_add ...]
                                                   [--paper] [--epochs N] [--out exp/rawnet2]

Trains every system of recipes/rawnet2/systems/ with softmax (resuming; finished runs are recorded in
docs/results/rawnet2_runs/), scores each on the speechocean762 dev trials by cosine, both with the
paper's test-time augmentation (mean of the unit embeddings of training-length crops overlapping by
20 %) and on the whole utterance at once, and writes docs/results/rawnet2.md with the training-loss
curves and the reading in recipes/rawnet2/reading.md.
"""
import sys
from pathlib import Path

from recipes import study  # run from the repository root: python -m recipes.rawnet2.run_study

HERE = Path(__file__).resolve().parent

SCALING = ("fms_none", "fms_add", "fms_mul", "fms_add_mul", "fms_mul_add", "fms_mul_add_sep", "se")
FIRST_LAYER = ("first_conv", "sinc125", "fms_mul_add", "sinc375")
# The abstract reports that feature map scaling helps; Table 1's system uses a sinc-conv first layer
# where RawNet1 had a strided convolution, and keeps RawNet1's test-time augmentation. The other two
# rows are our own comparisons.
CLAIMS = [study.Claim(f"RawNet2 paper: FMS {mode} beats no FMS", f"fms_{mode.replace('-', '_')}", "fms_none")
          for mode in ("add", "mul", "add-mul", "mul-add", "mul-add-sep")] + [
    study.Claim("RawNet2 design: sinc-conv first layer over the strided convolution", "fms_mul_add", "first_conv"),
    study.Claim("RawNet design: test-time augmentation over whole utterances", "fms_mul_add", "fms_mul_add:full"),
    study.Claim("ours: FMS (mul-add) vs squeeze-excitation", "fms_mul_add", "se"),
    study.Claim("ours: mul-add vs add-mul FMS", "fms_mul_add", "fms_add_mul"),
]

if __name__ == "__main__":
    sys.exit(study.run_study_cli(
        study.Study("rawnet2", HERE / "systems", study.REPO / "exp" / "rawnet2", {"full": study.WHOLE_UTTERANCE}),
        "RawNet2 study (speechocean762, CPU scale)",
        "Each system trains with softmax on 1 s raw-waveform crops of speechocean762/train (125 speakers) and "
        "is scored by cosine on the 114,960 speechocean762 dev trials; ± is the sample standard deviation over seeds. "
        "All systems share the widths of the YAMLs (16 first-layer filters, residual blocks of 32, 32, 64, 64 "
        "filters, GRU 128, 128-d embedding); only the named part changes.",
        [study.Table("Feature map scaling (sinc-conv 251), with test-time augmentation", SCALING),
         study.Table("First layer (FMS mul-add), with test-time augmentation", FIRST_LAYER),
         study.Table("Every system on whole utterances (no test-time augmentation)", None, "full")],
        {"feature map scaling": lambda s: s in SCALING, "first layer": lambda s: s in FIRST_LAYER},
        curve_key="train_loss", claims=CLAIMS))
