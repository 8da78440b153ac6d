"""The data structures every stage shares, with no model or dataset logic:

- ``clip_batch``: ``ClipBatch`` (padded frames ``[B, T, 3, H, W]``, padding mask, per-clip targets, meta),
  ``ClipTargets`` (labels, ids, masks ``[N, T, H, W]``, normalised cxcywh boxes ``[N, T, 4]``, valid
  ``[N, T]``) and ``pad_frames``, the one padding to the size divisor;
- ``masks``: segmentation encodings (RLE, polygons) and the one RLE encoder ``encode_rle``;
- ``results``: ``VideoResult`` / ``Track``, what every method's inference returns;
- ``box_ops``: box conversions, IoU and GIoU.
"""
