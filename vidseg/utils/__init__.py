"""vidseg.utils"""
