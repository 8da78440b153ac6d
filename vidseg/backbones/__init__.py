"""vidseg.backbones"""
