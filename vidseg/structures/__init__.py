"""vidseg.structures"""
