"""vidseg.models"""
