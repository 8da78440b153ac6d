"""vidseg.checkpoints"""
