"""Common defaults shared by every method. Method keys live in each method's own config module.

Key names follow the seeds (DeVIS ``main.py`` and detectron2-style GRAtt-VIS configs) so that the override
commands users already type keep working, e.g. ``SOLVER.BASE_LR 0.0002`` or ``VISDOM_ON False``.
"""

from vidseg.config.config import CfgNode as CN

_C = CN()

# ----------------------------------------------------------------------------------------------------- model
_C.MODEL = CN()
_C.MODEL.META_ARCHITECTURE = ""  # method name: "DeformableDETRSegm", "DeVIS", "ToyVIS", ...
# What the model's labels mean, by label: written by training into OUTPUT_DIR/config.yaml (from the training
# set), so that prediction from that config needs no annotation file. Empty: read from the datasets.
_C.MODEL.CLASS_NAMES = []
_C.MODEL.CATEGORY_IDS = []
_C.MODEL.WEIGHTS = ""  # checkpoint to initialise from (vidseg or official format, detected by its keys)
_C.MODEL.DEVICE = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1"
_C.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]  # RGB, 0-255 (ImageNet)
_C.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
_C.MODEL.DEFORM_ATTN_IMPL = "auto"  # deformable attention backend: "auto" | "torch" | "triton"
_C.MODEL.CPU_THREADS = 0  # intra-op CPU threads per process; 0: the thread rule (docs/training.md)

# ----------------------------------------------------------------------------------------------------- data
_C.DATASETS = CN()
_C.DATASETS.ROOT = ""  # data root; empty: env VIDSEG_DATASETS, else ./datasets
_C.DATASETS.TRAIN = ()  # catalog names (e.g. "ytvis_2019_train") or "custom_train"
_C.DATASETS.TEST = ()
# A custom dataset in YouTube-VIS JSON format, usable as "custom_train" / "custom_val" without code changes.
_C.DATASETS.CUSTOM_TRAIN_JSON = ""
_C.DATASETS.CUSTOM_TRAIN_IMAGES = ""
_C.DATASETS.CUSTOM_VAL_JSON = ""
_C.DATASETS.CUSTOM_VAL_IMAGES = ""
_C.DATASETS.CUSTOM_FORMAT = "ytvis"  # custom_* JSON: "ytvis" (YouTube-VIS/OVIS videos) | "coco" (images)
_C.DATASETS.CUSTOM_CLASSES = []  # optional class names; default: from the JSON's categories
_C.DATASETS.TRAIN_SUBSET = 0  # use only the first N videos (0 = all); for quick runs

_C.INPUT = CN()
_C.INPUT.FORMAT = "RGB"  # channel order fed to the model ("BGR" reproduces DeVIS training)
_C.INPUT.FORMAT_TEST = ""  # inference channel order; empty: INPUT.FORMAT (DeVIS evaluated with RGB)
_C.INPUT.SAMPLER = "consecutive"  # train clips: "consecutive" (DeVIS) | "reference_range" (VITA/GenVIS)
_C.INPUT.NUM_FRAMES = 6  # frames per training clip
_C.INPUT.SAMPLING_FRAME_RANGE = 20  # reference_range: max distance of a frame from the reference frame
_C.INPUT.SAMPLING_FRAME_SHUFFLE = False
_C.INPUT.MIN_SIZE_TRAIN = (288, 320, 352, 392, 416, 448, 480, 512)
_C.INPUT.MAX_SIZE_TRAIN = 768
_C.INPUT.SCALE_FACTOR_TRAIN = 1.0  # scales every train size (DeVIS Swin-L OVIS 0.9)
_C.INPUT.MIN_SIZE_TEST = 360
_C.INPUT.MAX_SIZE_TEST = 640
_C.INPUT.RANDOM_FLIP = "horizontal"  # "none" | "horizontal"
_C.INPUT.CROP = CN()
_C.INPUT.CROP.ENABLED = True  # with p=0.5: resize to CROP.RESIZE_SIZES, crop, then resize as usual
_C.INPUT.CROP.RESIZE_SIZES = (400, 500, 600)
_C.INPUT.CROP.SIZE = (384, 600)  # min/max crop side in pixels
_C.INPUT.CROP.MOVING = False  # GRAtt-VIS/VITA: crop window moves linearly across the clip
_C.INPUT.PHOTOMETRIC = True  # SSD-style photometric distortion, drawn per frame
_C.INPUT.SIZE_DIVISIBILITY = 32
_C.INPUT.MIN_VALID_AREA = 2  # a frame mask with at most this many pixels is an invalid frame (DeVIS)

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 2

# ----------------------------------------------------------------------------------------------------- solver
_C.SOLVER = CN()
_C.SOLVER.OPTIMIZER = "ADAMW"
_C.SOLVER.BASE_LR = 1e-4
_C.SOLVER.WEIGHT_DECAY = 1e-4
_C.SOLVER.BETAS = (0.9, 0.999)
_C.SOLVER.SCHEDULE = "epoch"  # "epoch": MultiStepLR stepped per epoch (DeVIS); "iter": WarmupMultiStepLR
_C.SOLVER.EPOCHS = 10  # epoch schedule
_C.SOLVER.MAX_ITER = 0  # iteration schedule
_C.SOLVER.STEPS = (8,)  # epochs (epoch schedule) or iterations (iter schedule) where LR *= GAMMA
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.WARMUP_ITERS = 0
_C.SOLVER.WARMUP_FACTOR = 1.0
_C.SOLVER.IMS_PER_BATCH = 0  # global batch (clips); split over ranks. 0: use BATCH_SIZE per rank
_C.SOLVER.BATCH_SIZE = 1  # clips per rank (DeVIS), used when IMS_PER_BATCH is 0
_C.SOLVER.GRAD_CLIP_MAX_NORM = 0.1  # total-norm clipping; 0 disables
_C.SOLVER.GRAD_CLIP_TYPE = "full_model"  # "full_model" | "per_group"
_C.SOLVER.AMP = CN()
_C.SOLVER.AMP.ENABLED = False  # autocast on the model device (GPU; CPU works too)
_C.SOLVER.AMP.DTYPE = "bfloat16"  # "bfloat16" | "float16" (with a grad scaler)
_C.SOLVER.CHECKPOINT_PERIOD = 1  # epochs (or iterations for iter schedules); 0: only "last"
# Mid-epoch saves of checkpoint.pth (last), in any schedule (resume is exact from any step); 0: off.
_C.SOLVER.CHECKPOINT_ITERS = 0  # every N iterations
_C.SOLVER.CHECKPOINT_MINUTES = 0.0  # every M minutes of training (rank 0's clock)
_C.SOLVER.FROZEN_PARAMS = []  # parameter-name substrings with requires_grad False
# Optimizer groups by parameter-name substring, used when the method gives no param_groups function. Parallel
# lists: group i takes the parameters whose name contains any of PARAM_GROUP_SUBSTRINGS[i] (first match wins),
# with lr BASE_LR * PARAM_GROUP_LR_MULTS[i] and weight decay PARAM_GROUP_WEIGHT_DECAYS[i] (WEIGHT_DECAY if the
# list is empty or the value is negative). The rest form group "base".
_C.SOLVER.PARAM_GROUP_NAMES = []  # e.g. ["backbone", "linear_proj"]; logged as lr_<name>
_C.SOLVER.PARAM_GROUP_SUBSTRINGS = []  # e.g. [["backbone.0"], ["sampling_offsets", "reference_points"]]
_C.SOLVER.PARAM_GROUP_LR_MULTS = []  # e.g. [0.1, 0.1]
_C.SOLVER.PARAM_GROUP_WEIGHT_DECAYS = []  # e.g. [0.0001, 0.0001]
_C.SOLVER.FIND_UNUSED_PARAMETERS = False  # DistributedDataParallel(find_unused_parameters=...)

_C.TEST = CN()
_C.TEST.EVAL_PERIOD = 1  # epochs (or iterations); 0 disables evaluation during training
_C.TEST.START_EVAL_EPOCH = 1
_C.TEST.SAVE_PATH = "eval_results"  # under OUTPUT_DIR
_C.TEST.BEST_METRIC = "segm/AP"  # "best" checkpoint rule; higher is better

# ----------------------------------------------------------------------------------------------------- run
_C.OUTPUT_DIR = "./output"
_C.SEED = 42
_C.DETERMINISTIC = False  # torch.use_deterministic_algorithms; bit-reproducible runs (slower on GPU)
_C.VISDOM_ON = False  # plot to a Visdom server (env = basename of OUTPUT_DIR); unreachable: one warning
_C.VISDOM_PORT = 8090
_C.VISDOM_SERVER = "http://localhost"
_C.RESUME_VIS = True  # a resumed run redraws its history into the same windows (DeVIS default: False)
_C.VISDOM_AND_LOG_INTERVAL = 20  # iterations between metrics.jsonl / log.txt / Visdom / TensorBoard points
_C.TENSORBOARD_ON = False  # also write TensorBoard events under OUTPUT_DIR/tensorboard
