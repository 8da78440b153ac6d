"""``train_net_genvis.py``, a spelling of the GRAtt-VIS README: ``train_net.py`` under another name.

The GRAtt-VIS README names its script three ways (train_net_grattvis.py, train_net_grattvisvis.py,
train_net_genvis.py); each runs here, as typed:

    python3 train_net_genvis.py --num-gpus 4 --config-file configs/genvis/ovis/grattvis_R50_bs8.yaml \\
        MODEL.WEIGHTS weights/vita_r50_ovis.pth MODEL.GENVIS.USE_MEM False MODEL.GENVIS.GATED_PROP True \\
        OUTPUT_DIR your_output_dir
    python3 train_net_genvis.py --num-gpus 1 --config-file YOUR_MODEL_PATH/config.yaml --eval-only \\
        MODEL.WEIGHTS YOUR_MODEL_PATH/model_checkpoint.pth OUTPUT_DIR your_output_dir

The canonical forms: ``vidseg train --num-gpus 4 --config-file configs/grattvis/ovis/grattvis_R50_bs8.yaml
...`` and ``vidseg eval --config-file ... MODEL.WEIGHTS ...`` (MODEL_ZOO.md lists both for every model).
"""

import sys

from train_net import main

if __name__ == "__main__":
    from vidseg.utils.errors import run_guarded

    sys.exit(run_guarded(main, sys.argv[0]))
