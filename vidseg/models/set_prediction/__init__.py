"""What every DETR-family method shares; constructors only, no module reads the config.

- ``hungarian``: the one-to-one assignment of a cost matrix (scipy), batched per image.
- ``costs``: matching-cost terms (focal / softmax class, box L1, GIoU, mask BCE, dice).
- ``matcher``: ``HungarianMatcher`` on class + box costs (Deformable DETR, the DeVIS image stage).
- ``losses``: loss functions (focal, BCE, dice, box L1, GIoU), normalised by the object count.
- ``matched_losses``: loss terms on matched pairs (focal or CE-with-no-object labels, boxes, full-resolution
  or point-sampled masks).
- ``criterion``: ``SetCriterion``, which dispatches the terms per decoder layer with aux suffixes and an
  all-reduced normaliser.
- ``point_sampling``: ``point_sample`` and uncertainty-biased point coordinates.

Method-specific pieces (DeVIS's clip matcher and aux weighting, Mask2Former's mask matcher) live in the
method's own package and are built from these.
"""
