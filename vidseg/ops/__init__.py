"""vidseg.ops"""
