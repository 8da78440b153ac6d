"""vidseg.layers"""
