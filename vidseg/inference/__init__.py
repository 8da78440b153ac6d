"""vidseg.inference"""
